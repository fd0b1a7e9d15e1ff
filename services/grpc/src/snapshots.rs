//! `containerd.services.snapshots.v1.Snapshots` over a [`SnapshotStore`].

use std::pin::Pin;
use std::sync::Arc;

use berth_core::filters::Filters;
use berth_core::mount::Mount;
use berth_core::snapshots::{Info, Kind, SnapshotStore};
use berth_core::{Error, RequestContext};
use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::types;
use futures::Stream;
use pb::snapshots_server::Snapshots;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert::{self, timestamp};
use crate::{blocking, error::to_status, inline};

/// How many infos go in one List response, as containerd does.
const LIST_BATCH: usize = 100;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Snapshots service.
pub struct SnapshotsService {
    store: Arc<dyn SnapshotStore>,
}

impl SnapshotsService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        Self { store }
    }

    /// Runs `f` on a blocking thread with the store and the request's context.
    async fn call<T, F>(&self, ctx: RequestContext, f: F) -> Result<T, Status>
    where
        F: FnOnce(&dyn SnapshotStore, &RequestContext) -> berth_core::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        blocking(move || f(&*store, &ctx)).await
    }
}

/// A mount for the wire; the target stays empty for the caller to choose.
pub fn wire_mount(m: &Mount) -> types::Mount {
    types::Mount {
        r#type: m.kind.clone(),
        source: m.source.clone(),
        target: String::new(),
        options: m.options.clone(),
    }
}

fn wire_mounts(mounts: &[Mount]) -> Vec<types::Mount> {
    mounts.iter().map(wire_mount).collect()
}

/// The wire kind of `kind`.
pub fn wire_kind(kind: Kind) -> pb::Kind {
    match kind {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    }
}

/// A snapshot's info for the wire; the empty parent is `""`.
pub fn wire_info(info: &Info) -> pb::Info {
    pb::Info {
        name: info.name.clone(),
        parent: info.parent.clone().unwrap_or_default(),
        kind: wire_kind(info.kind) as i32,
        created_at: Some(timestamp(info.created_at)),
        updated_at: Some(timestamp(info.updated_at)),
        labels: convert::wire_labels(&info.labels),
    }
}

/// The info an Update carries: only the name and labels matter; kind, parent and times are
/// the server's and are ignored, as containerd does.
fn update_info(wire: pb::Info) -> Info {
    Info {
        name: wire.name,
        parent: None,
        kind: Kind::from_proto(wire.kind).unwrap_or(Kind::Committed),
        created_at: std::time::UNIX_EPOCH,
        updated_at: std::time::UNIX_EPOCH,
        labels: convert::labels(wire.labels),
    }
}

/// An optional parent: the wire's `""` is the empty parent.
fn parent(p: String) -> Option<String> {
    (!p.is_empty()).then_some(p)
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let labels = convert::labels(r.labels);
        let mounts = self
            .call(ctx, move |s, ctx| {
                s.prepare(
                    ctx,
                    &r.snapshotter,
                    &r.key,
                    parent(r.parent).as_deref(),
                    labels,
                )
            })
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: wire_mounts(&mounts),
        }))
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let labels = convert::labels(r.labels);
        let mounts = self
            .call(ctx, move |s, ctx| {
                s.view(
                    ctx,
                    &r.snapshotter,
                    &r.key,
                    parent(r.parent).as_deref(),
                    labels,
                )
            })
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse {
            mounts: wire_mounts(&mounts),
        }))
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let mounts = inline(|| self.store.mounts(&ctx, &r.snapshotter, &r.key))?;
        Ok(Response::new(pb::MountsResponse {
            mounts: wire_mounts(&mounts),
        }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let labels = convert::labels(r.labels);
        self.call(ctx, move |s, ctx| {
            s.commit(ctx, &r.snapshotter, &r.name, &r.key, labels)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        self.call(ctx, move |s, ctx| s.remove(ctx, &r.snapshotter, &r.key))
            .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let info = inline(|| self.store.stat(&ctx, &r.snapshotter, &r.key))?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(wire_info(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let info = update_info(
            r.info
                .ok_or_else(|| to_status(Error::invalid_argument("update needs info")))?,
        );
        let paths = convert::mask_paths(r.update_mask);
        let info = self
            .call(ctx, move |s, ctx| {
                s.update(ctx, &r.snapshotter, info, &paths)
            })
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(wire_info(&info)),
        }))
    }

    type ListStream = BoxStream<pb::ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let filters = Filters::parse(&r.filters).map_err(to_status)?;
        let infos = self
            .call(ctx, move |s, ctx| s.list(ctx, &r.snapshotter, &filters))
            .await?;
        let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|chunk| {
                Ok(pb::ListSnapshotsResponse {
                    info: chunk.iter().map(wire_info).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        let usage = self
            .call(ctx, move |s, ctx| s.usage(ctx, &r.snapshotter, &r.key))
            .await?;
        Ok(Response::new(pb::UsageResponse {
            size: i64::try_from(usage.size).unwrap_or(i64::MAX),
            inodes: i64::try_from(usage.inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(&self, req: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let r = req.into_inner();
        self.call(ctx, move |s, ctx| s.cleanup(ctx, &r.snapshotter))
            .await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use berth_core::labels::Labels;

    use super::*;

    #[test]
    fn kinds_match_containerd_numbers() {
        assert_eq!(wire_kind(Kind::View) as i32, 1);
        assert_eq!(wire_kind(Kind::Active) as i32, 2);
        assert_eq!(wire_kind(Kind::Committed) as i32, 3);
        for k in [Kind::View, Kind::Active, Kind::Committed] {
            assert_eq!(wire_kind(k) as i32, k.as_proto());
        }
    }

    #[test]
    fn infos_and_mounts_on_the_wire() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 7);
        let info = Info {
            name: "sha256:c2".into(),
            parent: None,
            kind: Kind::Committed,
            created_at: t,
            updated_at: t,
            labels: Labels::from([("a".to_owned(), "b".to_owned())]),
        };
        let w = wire_info(&info);
        assert_eq!(w.parent, "");
        assert_eq!(w.kind, 3);
        assert_eq!(convert::system_time(w.created_at.as_ref()), Some(t));
        assert_eq!(w.labels.get("a").map(String::as_str), Some("b"));

        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: "/should/not/leak".into(),
            options: vec!["lowerdir=/a:/b".into()],
        };
        let wm = wire_mount(&m);
        assert_eq!(
            (wm.r#type.as_str(), wm.source.as_str(), wm.target.as_str()),
            ("overlay", "overlay", "")
        );
        assert_eq!(wm.options, m.options);

        assert_eq!(parent(String::new()), None);
        assert_eq!(parent("p".into()).as_deref(), Some("p"));
    }
}
