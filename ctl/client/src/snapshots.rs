//! Snapshot helpers: one snapshotter of the daemon, seen from the client's namespace.

use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::snapshots::{Info, Kind, Usage};
use berth_core::{Error, Result};
use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::types;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

/// The snapshotter `ctr` uses when none is named.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

impl Client {
    /// Helpers for the snapshotter `snapshotter` (`"overlayfs"`, `"native"`).
    pub fn snapshots(&self, snapshotter: impl Into<String>) -> Snapshots<'_> {
        Snapshots {
            client: self,
            snapshotter: snapshotter.into(),
        }
    }
}

/// Snapshot helpers; see [`Client::snapshots`].
#[derive(Debug, Clone)]
pub struct Snapshots<'a> {
    client: &'a Client,
    snapshotter: String,
}

/// A mount from the wire.
pub fn mount(m: types::Mount) -> Mount {
    Mount {
        kind: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

/// A snapshot's info from the wire; an unknown kind is the server's bug.
pub fn info(info: pb::Info) -> Result<Info> {
    let kind = Kind::from_proto(info.kind).ok_or_else(|| {
        Error::internal(format!(
            "server sent snapshot {:?} with unknown kind {}",
            info.name, info.kind
        ))
    })?;
    Ok(Info {
        parent: (!info.parent.is_empty()).then_some(info.parent),
        name: info.name,
        kind,
        created_at: convert::system_time(info.created_at.as_ref()),
        updated_at: convert::system_time(info.updated_at.as_ref()),
        labels: convert::labels(info.labels),
    })
}

impl Snapshots<'_> {
    /// The snapshotter these helpers talk to.
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// Creates a writable snapshot `key` on the committed `parent` (`None`: empty) and returns
    /// its mounts.
    pub async fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: &Labels,
    ) -> Result<Vec<Mount>> {
        self.client
            .call(|| format!("prepare snapshot {key:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .snapshots()
                    .prepare(pb::PrepareSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.to_owned(),
                        parent: parent.unwrap_or_default().to_owned(),
                        labels: convert::wire_labels(labels),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(resp.into_inner().mounts.into_iter().map(mount).collect())
            })
            .await
    }

    /// Creates a read-only snapshot `key` of the committed `parent` and returns its mounts.
    pub async fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: &Labels,
    ) -> Result<Vec<Mount>> {
        self.client
            .call(|| format!("view snapshot {key:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .snapshots()
                    .view(pb::ViewSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.to_owned(),
                        parent: parent.unwrap_or_default().to_owned(),
                        labels: convert::wire_labels(labels),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(resp.into_inner().mounts.into_iter().map(mount).collect())
            })
            .await
    }

    /// The mounts of the active or view snapshot `key`.
    pub async fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.client
            .call(|| format!("mounts of snapshot {key:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .snapshots()
                    .mounts(pb::MountsRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.to_owned(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(resp.into_inner().mounts.into_iter().map(mount).collect())
            })
            .await
    }

    /// Commits the active snapshot `key` as `name` with `labels`.
    pub async fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<()> {
        self.client
            .call(|| format!("commit snapshot {key:?} as {name:?}"), async {
                self.client
                    .rpc()
                    .snapshots()
                    .commit(pb::CommitSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        name: name.to_owned(),
                        key: key.to_owned(),
                        labels: convert::wire_labels(labels),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Removes snapshot `key` (children first).
    pub async fn remove(&self, key: &str) -> Result<()> {
        self.client
            .call(|| format!("remove snapshot {key:?}"), async {
                self.client
                    .rpc()
                    .snapshots()
                    .remove(pb::RemoveSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.to_owned(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Snapshot `key`; NotFound when the namespace has none.
    pub async fn stat(&self, key: &str) -> Result<Info> {
        self.client
            .call(|| format!("stat snapshot {key:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .snapshots()
                    .stat(pb::StatSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                info(resp.info.ok_or_else(|| {
                    Error::internal(format!("server sent no info for snapshot {key:?}"))
                })?)
            })
            .await
    }

    /// Sets each label in `labels` on `key`, removing those whose value is empty; other labels
    /// are kept. Returns the updated info.
    pub async fn update_labels(&self, key: &str, labels: &Labels) -> Result<Info> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.update(key, labels, paths).await
    }

    /// Replaces all labels of `key` with `labels`.
    pub async fn replace_labels(&self, key: &str, labels: &Labels) -> Result<Info> {
        self.update(key, labels, vec!["labels".to_owned()]).await
    }

    async fn update(&self, key: &str, labels: &Labels, paths: Vec<String>) -> Result<Info> {
        self.client
            .call(|| format!("update labels of snapshot {key:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .snapshots()
                    .update(pb::UpdateSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        info: Some(pb::Info {
                            name: key.to_owned(),
                            labels: convert::wire_labels(labels),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                info(resp.info.ok_or_else(|| {
                    Error::internal(format!("server sent no info for snapshot {key:?}"))
                })?)
            })
            .await
    }

    /// The namespace's snapshots matching any of `filters` (all when empty).
    pub async fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        self.client
            .call(
                || format!("list snapshots of {}", self.snapshotter),
                async {
                    let mut stream = self
                        .client
                        .rpc()
                        .snapshots()
                        .list(pb::ListSnapshotsRequest {
                            snapshotter: self.snapshotter.clone(),
                            filters: filters.to_vec(),
                        })
                        .await
                        .map_err(from_status)?
                        .into_inner();
                    let mut out = Vec::new();
                    while let Some(batch) = stream.message().await.map_err(from_status)? {
                        for i in batch.info {
                            out.push(info(i)?);
                        }
                    }
                    Ok(out)
                },
            )
            .await
    }

    /// The disk snapshot `key` takes.
    pub async fn usage(&self, key: &str) -> Result<Usage> {
        self.client
            .call(|| format!("usage of snapshot {key:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .snapshots()
                    .usage(pb::UsageRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(Usage {
                    size: convert::size(resp.size, "snapshot size")?,
                    inodes: convert::size(resp.inodes, "snapshot inode count")?,
                })
            })
            .await
    }

    /// Removes what the snapshotter holds that no snapshot owns (e.g. after a crash).
    pub async fn cleanup(&self) -> Result<()> {
        self.client
            .call(
                || format!("clean up snapshotter {}", self.snapshotter),
                async {
                    self.client
                        .rpc()
                        .snapshots()
                        .cleanup(pb::CleanupRequest {
                            snapshotter: self.snapshotter.clone(),
                        })
                        .await
                        .map_err(from_status)?;
                    Ok(())
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infos_from_the_wire() {
        let i = info(pb::Info {
            name: "k".into(),
            parent: String::new(),
            kind: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((i.kind, i.parent), (Kind::Active, None));
        let i = info(pb::Info {
            name: "c".into(),
            parent: "p".into(),
            kind: 3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((i.kind, i.parent.as_deref()), (Kind::Committed, Some("p")));
        let err = info(pb::Info {
            name: "x".into(),
            kind: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::Internal);
    }

    #[test]
    fn mounts_from_the_wire() {
        let m = mount(types::Mount {
            r#type: "bind".into(),
            source: "/s".into(),
            target: String::new(),
            options: vec!["ro".into(), "rbind".into()],
        });
        assert_eq!(m, Mount::bind("/s", true));
    }
}
