//! The snapshotter conformance suite against the native snapshotter (needs root for
//! mounting).

use std::path::Path;

use berth_core::Result;
use berth_snapshot_native::NativeSnapshotter;

use berth_snapshot_testsuite as suite;

fn open(root: &Path) -> Result<NativeSnapshotter> {
    NativeSnapshotter::open(root)
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { suite::$name(&open) })*
        #[test]
        fn every_case_is_listed() {
            let listed: Vec<&str> = suite::cases::<NativeSnapshotter, fn(&Path) -> Result<NativeSnapshotter>>()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            assert_eq!(listed, [$(stringify!($name)),*]);
        }
    };
}

cases!(
    layers,
    stat_and_usage,
    views_are_read_only,
    errors,
    remove_with_children,
    labels,
    list_filters,
    cleanup_orphans,
    reopen,
    metadata_preserved,
    deep_chain,
    concurrent_prepares,
);
