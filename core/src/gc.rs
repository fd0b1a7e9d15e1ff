//! Garbage collection: what a collection removed, and the trait that runs one.

use std::time::Duration;

use crate::Result;

/// The label that makes content or a snapshot a GC root.
pub const ROOT_LABEL: &str = "containerd.io/gc.root";
/// Labels with this prefix (`containerd.io/gc.ref.content`, `…content.<x>`, `…content/<x>`)
/// reference the content digest in their value.
pub const REF_CONTENT_PREFIX: &str = "containerd.io/gc.ref.content";
/// Labels with this prefix plus `<snapshotter>` reference the snapshot key in their value.
pub const REF_SNAPSHOT_PREFIX: &str = "containerd.io/gc.ref.snapshot.";

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Namespace content records removed.
    pub records_removed: u64,
    /// Blobs removed from disk.
    pub blobs_removed: u64,
    /// Bytes freed on disk.
    pub bytes_removed: u64,
    /// Ingests removed.
    pub ingests_removed: u64,
    /// Snapshots removed from their snapshotters.
    pub snapshots_removed: u64,
    /// How long the collection took.
    pub duration: Duration,
}

/// Runs garbage collection.
pub trait GarbageCollector: Send + Sync {
    /// Collects now and returns what was removed.
    fn collect(&self) -> Result<GcStats>;
    /// Asks for a collection soon (debounced); returns at once.
    fn schedule(&self);
}
