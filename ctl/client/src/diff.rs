//! Diff helpers: applying a layer blob onto a snapshot's mounts and writing the difference
//! between two sets of mounts as a new layer blob (`containerd.services.diff.v1.Diff`).

use berth_core::diff::Descriptor;
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::{Error, Result};
use berth_proto::containerd::services::diff::v1 as pb;
use berth_proto::containerd::types;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

impl Client {
    /// Diff service helpers.
    pub fn diff(&self) -> Diff<'_> {
        Diff { client: self }
    }
}

/// Diff service helpers; see [`Client::diff`].
#[derive(Debug, Clone, Copy)]
pub struct Diff<'a> {
    client: &'a Client,
}

/// A descriptor from the wire.
pub fn descriptor(d: types::Descriptor) -> Result<Descriptor> {
    Ok(Descriptor {
        digest: convert::digest(&d.digest, "a descriptor digest")?,
        size: convert::size(d.size, "descriptor size")?,
        media_type: d.media_type,
        annotations: convert::labels(d.annotations),
    })
}

/// A descriptor for the wire; a size beyond `i64` is refused rather than sent negative.
pub fn wire_descriptor(d: &Descriptor) -> Result<types::Descriptor> {
    let size = i64::try_from(d.size).map_err(|_| {
        Error::invalid_argument(format!(
            "descriptor {}: size {} too large",
            d.digest, d.size
        ))
    })?;
    Ok(types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size,
        annotations: convert::wire_labels(&d.annotations),
    })
}

/// A mount for the wire.
pub fn wire_mount(m: &Mount) -> types::Mount {
    types::Mount {
        r#type: m.kind.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

impl Diff<'_> {
    /// Unpacks the layer blob `layer` (already in the content store) onto `mounts`, an active
    /// snapshot's. Returns the applied layer: media type
    /// [`MEDIA_TYPE_LAYER`](berth_core::diff::MEDIA_TYPE_LAYER), digest = diffID, size =
    /// uncompressed size.
    pub async fn apply(&self, layer: &Descriptor, mounts: &[Mount]) -> Result<Descriptor> {
        let diff = wire_descriptor(layer)?;
        self.client
            .call(|| format!("apply layer {}", layer.digest), async {
                let resp = self
                    .client
                    .rpc()
                    .diff()
                    .apply(pb::ApplyRequest {
                        diff: Some(diff),
                        mounts: mounts.iter().map(wire_mount).collect(),
                        payloads: Default::default(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                descriptor(resp.applied.ok_or_else(|| {
                    Error::internal(format!(
                        "server sent no applied descriptor for layer {}",
                        layer.digest
                    ))
                })?)
            })
            .await
    }

    /// Writes the changes that turn `lower` into `upper` as a layer blob in the content store
    /// and returns its descriptor. `media_type` picks the compression (`None`: gzip);
    /// `reference` names the ingest (`None`: the server picks one); `labels` go on the blob
    /// besides `containerd.io/uncompressed`, which the server always sets. An empty `lower`
    /// is the empty directory.
    pub async fn compare(
        &self,
        lower: &[Mount],
        upper: &[Mount],
        media_type: Option<&str>,
        reference: Option<&str>,
        labels: &Labels,
    ) -> Result<Descriptor> {
        self.client
            .call(|| "diff mounts".to_owned(), async {
                let resp = self
                    .client
                    .rpc()
                    .diff()
                    .diff(pb::DiffRequest {
                        left: lower.iter().map(wire_mount).collect(),
                        right: upper.iter().map(wire_mount).collect(),
                        media_type: media_type.unwrap_or_default().to_owned(),
                        r#ref: reference.unwrap_or_default().to_owned(),
                        labels: convert::wire_labels(labels),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                descriptor(
                    resp.diff
                        .ok_or_else(|| Error::internal("server sent no diff descriptor"))?,
                )
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::Digest;

    #[test]
    fn descriptors_round_trip() {
        let mut d = Descriptor::new(berth_core::diff::MEDIA_TYPE_LAYER_GZIP, Digest::of(b"x"), 7);
        d.annotations.insert("a".into(), "b".into());
        assert_eq!(descriptor(wire_descriptor(&d).unwrap()).unwrap(), d);
    }

    #[test]
    fn bad_descriptors_are_refused() {
        let wire = types::Descriptor {
            media_type: "m".into(),
            digest: Digest::of(b"x").to_string(),
            size: -1,
            annotations: Default::default(),
        };
        assert_eq!(
            descriptor(wire.clone()).unwrap_err().kind(),
            berth_core::ErrorKind::Internal
        );
        let bad_digest = types::Descriptor {
            size: 1,
            digest: "sha256:zz".into(),
            ..wire
        };
        assert!(descriptor(bad_digest).is_err());
        let huge = Descriptor::new("m", Digest::of(b"x"), u64::MAX);
        assert_eq!(
            wire_descriptor(&huge).unwrap_err().kind(),
            berth_core::ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn mounts_round_trip() {
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec!["lowerdir=/a:/b".into()],
        };
        assert_eq!(crate::snapshots::mount(wire_mount(&m)), m);
    }
}
