//! The snapshotter conformance suite against the overlay snapshotter (needs root and
//! overlayfs).

use std::path::Path;

use berth_core::Result;
use berth_snapshot_overlay::OverlaySnapshotter;

fn open(root: &Path) -> Result<OverlaySnapshotter> {
    OverlaySnapshotter::open(root)
}

berth_snapshot_testsuite::conformance_tests!(OverlaySnapshotter, open);
