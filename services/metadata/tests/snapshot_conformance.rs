//! The snapshotter conformance suite against the namespaced metadata view: the same cases the
//! raw backends pass must hold when every call goes through a namespace's keys, records and
//! backend-key mapping (over the real overlayfs and native backends).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use berth_core::filters::Filters;
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::snapshots::{Info, SnapshotStore, Snapshotter, Usage};
use berth_core::{Namespace, RequestContext, Result};
use berth_metadata::{GcOptions, Metadata};
use berth_snapshot_testsuite as suite;

/// One namespace's view of one snapshotter, seen through the plain `Snapshotter` contract.
struct NamespacedView {
    metadata: Arc<Metadata>,
    ctx: RequestContext,
    snapshotter: &'static str,
}

impl Snapshotter for NamespacedView {
    fn stat(&self, key: &str) -> Result<Info> {
        self.metadata.stat(&self.ctx, self.snapshotter, key)
    }
    fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        self.metadata
            .update(&self.ctx, self.snapshotter, info, paths)
    }
    fn usage(&self, key: &str) -> Result<Usage> {
        self.metadata.usage(&self.ctx, self.snapshotter, key)
    }
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.metadata.mounts(&self.ctx, self.snapshotter, key)
    }
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.metadata
            .prepare(&self.ctx, self.snapshotter, key, parent, labels)
    }
    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.metadata
            .view(&self.ctx, self.snapshotter, key, parent, labels)
    }
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.metadata
            .commit(&self.ctx, self.snapshotter, name, key, labels)
    }
    fn remove(&self, key: &str) -> Result<()> {
        SnapshotStore::remove(&*self.metadata, &self.ctx, self.snapshotter, key)
    }
    fn list(&self, filters: &Filters) -> Result<Vec<Info>> {
        SnapshotStore::list(&*self.metadata, &self.ctx, self.snapshotter, filters)
    }
    fn cleanup(&self) -> Result<()> {
        SnapshotStore::cleanup(&*self.metadata, &self.ctx, self.snapshotter)
    }
}

/// The backend owns `root` (so the suite's checks of `<root>/snapshots/` see its directories);
/// the metadata database sits beside its own.
fn open_with(
    root: &Path,
    snapshotter: &'static str,
    backend: Arc<dyn Snapshotter>,
) -> Result<NamespacedView> {
    let metadata = Metadata::open(
        &root.join("namespaced-metadata.redb"),
        Arc::new(common::DirBlobs::new(&root.join("blobs"))),
        GcOptions::default(),
    )?;
    metadata.add_snapshotter(snapshotter, backend)?;
    Ok(NamespacedView {
        metadata,
        ctx: RequestContext::new(Namespace::new("suite")?),
        snapshotter,
    })
}

fn overlay(root: &Path) -> Result<NamespacedView> {
    let backend = berth_snapshot_overlay::OverlaySnapshotter::open(root)?;
    open_with(root, "overlayfs", Arc::new(backend))
}

fn native(root: &Path) -> Result<NamespacedView> {
    let backend = berth_snapshot_native::NativeSnapshotter::open(root)?;
    open_with(root, "native", Arc::new(backend))
}

#[test]
fn conformance_overlayfs_through_namespaces() {
    suite::run_all(overlay);
}

#[test]
fn conformance_native_through_namespaces() {
    suite::run_all(native);
}
