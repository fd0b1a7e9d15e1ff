//! The snapshotter conformance suite against the native snapshotter (needs root for
//! mounting).

use std::path::Path;

use berth_core::Result;
use berth_snapshot_native::NativeSnapshotter;

fn open(root: &Path) -> Result<NativeSnapshotter> {
    NativeSnapshotter::open(root)
}

berth_snapshot_testsuite::conformance_tests!(NativeSnapshotter, open);
