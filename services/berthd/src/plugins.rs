//! The plugin table introspection reports, in containerd's types and ids. It is the one place
//! that says which backends berthd runs.

use std::collections::BTreeMap;

use berth_grpc::PluginEntry;

use crate::Config;

/// The overlayfs snapshotter's root under the daemon's root, named as containerd names it.
pub const OVERLAYFS_ROOT: &str = "io.containerd.snapshotter.v1.overlayfs";
/// The native snapshotter's root under the daemon's root.
pub const NATIVE_ROOT: &str = "io.containerd.snapshotter.v1.native";

fn entry(kind: &str, id: &str, requires: &[&str]) -> PluginEntry {
    PluginEntry {
        kind: kind.to_owned(),
        id: id.to_owned(),
        requires: requires.iter().map(|s| (*s).to_owned()).collect(),
        exports: BTreeMap::new(),
        capabilities: Vec::new(),
        init_error: None,
    }
}

/// Every plugin, loaded or not; those not built yet carry an init error, as containerd shows a
/// plugin that failed to load.
pub fn table(config: &Config) -> Vec<PluginEntry> {
    let mut content = entry("io.containerd.content.v1", "content", &[]);
    content.exports.insert(
        "root".to_owned(),
        config.root.join("content").display().to_string(),
    );
    let mut table = vec![content];
    for (id, dir) in [("overlayfs", OVERLAYFS_ROOT), ("native", NATIVE_ROOT)] {
        let mut e = entry("io.containerd.snapshotter.v1", id, &[]);
        e.exports.insert(
            "root".to_owned(),
            config.root.join(dir).display().to_string(),
        );
        table.push(e);
    }
    table.extend([
        entry(
            "io.containerd.metadata.v1",
            "redb",
            &["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
        ),
        entry(
            "io.containerd.gc.v1",
            "scheduler",
            &["io.containerd.metadata.v1"],
        ),
        entry(
            "io.containerd.lease.v1",
            "manager",
            &["io.containerd.metadata.v1"],
        ),
        entry("io.containerd.event.v1", "exchange", &[]),
    ]);
    for id in [
        "content",
        "namespaces",
        "leases",
        "snapshots",
        "images",
        "containers",
        "events",
        "diff",
        "introspection",
        "version",
        "healthcheck",
    ] {
        table.push(entry("io.containerd.grpc.v1", id, &[]));
    }
    table.push(entry("io.berth.grpc.v1", "admin", &["io.containerd.gc.v1"]));
    table.push(entry(
        "io.berth.grpc.v1",
        "transfer",
        &["io.containerd.metadata.v1", "io.containerd.differ.v1"],
    ));
    table.push(entry(
        "io.containerd.differ.v1",
        "walking",
        &["io.containerd.metadata.v1"],
    ));
    table.push(entry(
        "io.containerd.runtime.v2",
        "task",
        &["io.containerd.event.v1", "io.containerd.metadata.v1"],
    ));
    table.push(entry(
        "io.containerd.grpc.v1",
        "tasks",
        &["io.containerd.runtime.v2", "io.containerd.metadata.v1"],
    ));
    table.push(entry(
        "io.berth.grpc.v1",
        "logs",
        &["io.containerd.runtime.v2", "io.containerd.metadata.v1"],
    ));
    table
}
