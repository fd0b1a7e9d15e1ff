//! Layers as content: applying a layer blob onto mounts, and computing one from two mounts.
//!
//! An image layer is a tar (OCI "changeset") that may be compressed. Its *diffID* is the sha256
//! of the uncompressed tar; the blob in the content store is addressed by the digest of the
//! compressed bytes and carries the label [`LABEL_UNCOMPRESSED`]`=<diffID>`.
//!
//! - [`Applier`] unpacks a layer blob onto the mounts of an active snapshot (Diff.Apply).
//! - [`Comparer`] writes the changes between two sets of mounts as a new layer blob (Diff.Diff).
//!
//! Implementations mount, untar and walk files; nothing here does.

use crate::labels::Labels;
use crate::mount::Mount;
use crate::{Digest, RequestContext, Result};

/// An uncompressed OCI layer tar.
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip-compressed OCI layer tar: the default for new layers.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A zstd-compressed OCI layer tar.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker's gzip-compressed layer.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's uncompressed layer (containerd detects its compression from the bytes).
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// The content label naming a compressed layer blob's diffID.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// Whether `media_type` names an image layer, as containerd's `IsLayerType` decides: any OCI
/// layer type (including non-distributable and encrypted variants) and Docker's layer types.
pub fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || matches!(
            media_type,
            MEDIA_TYPE_DOCKER_LAYER
                | MEDIA_TYPE_DOCKER_LAYER_GZIP
                | "application/vnd.docker.image.rootfs.foreign.diff.tar"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        )
}

/// Describes a blob by type, digest and size, as OCI descriptors do (`urls` and `platform`
/// are not needed by Berth's services).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Free-form annotations.
    pub annotations: Labels,
}

impl Descriptor {
    /// A descriptor without annotations.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            annotations: Labels::new(),
        }
    }
}

/// How [`Comparer::compare`] writes the layer it computes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// The layer's media type; `None` means [`MEDIA_TYPE_LAYER_GZIP`]. Its suffix picks the
    /// compression (`+gzip`, `+zstd`, none).
    pub media_type: Option<String>,
    /// The content-store ingest ref to write through; `None` means a generated one.
    pub reference: Option<String>,
    /// Labels for the committed blob, besides [`LABEL_UNCOMPRESSED`], which is always set.
    pub labels: Labels,
}

/// Applies layer blobs onto mounts (containerd's `diff.Applier`).
pub trait Applier: Send + Sync {
    /// Unpacks the layer blob `desc` from the content store onto `mounts` (an active
    /// snapshot's), honouring OCI whiteouts. Returns the applied layer: media type
    /// [`MEDIA_TYPE_LAYER`], digest = diffID, size = uncompressed size.
    ///
    /// Errors: NotImplemented for a media type that is not a plain or compressed layer (e.g.
    /// `+encrypted`), NotFound when the blob is missing, DataLoss when the blob's bytes do not
    /// match `desc.digest`, InvalidArgument for a malformed or hostile tar. On any error the
    /// mounts may hold part of the layer: the caller discards the snapshot.
    fn apply(
        &self,
        ctx: &RequestContext,
        desc: &Descriptor,
        mounts: &[Mount],
    ) -> Result<Descriptor>;
}

/// Computes layers from two filesystem states (containerd's `diff.Comparer`).
pub trait Comparer: Send + Sync {
    /// Writes the changes that turn `lower` into `upper` as a layer blob into the content
    /// store, committed with [`LABEL_UNCOMPRESSED`] and `opts.labels`, and returns its
    /// descriptor (compressed digest and size, the chosen media type). An empty `lower` is the
    /// empty directory.
    ///
    /// Errors: NotImplemented for a media type the comparer cannot write.
    fn compare(
        &self,
        ctx: &RequestContext,
        lower: &[Mount],
        upper: &[Mount],
        opts: DiffOptions,
    ) -> Result<Descriptor>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types() {
        for yes in [
            MEDIA_TYPE_LAYER,
            MEDIA_TYPE_LAYER_GZIP,
            MEDIA_TYPE_LAYER_ZSTD,
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            MEDIA_TYPE_DOCKER_LAYER,
            MEDIA_TYPE_DOCKER_LAYER_GZIP,
        ] {
            assert!(is_layer_media_type(yes), "{yes}");
        }
        for no in [
            "",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/octet-stream",
        ] {
            assert!(!is_layer_media_type(no), "{no}");
        }
    }
}
