//! The architecture's dependency rules, checked against `cargo metadata`: a crate that reaches
//! for something its layer forbids fails this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Normal (non-dev) dependencies of every workspace crate.
fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut deps = BTreeMap::new();
    for pkg in meta["packages"].as_array().unwrap() {
        let name = pkg["name"].as_str().unwrap().to_owned();
        let set = pkg["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null() || d["kind"] == "build")
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        deps.insert(name, set);
    }
    deps
}

/// (crate, forbidden dependencies, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "berth-core",
        &[
            "tonic",
            "prost",
            "berth-proto",
            "redb",
            "tokio",
            "nix",
            "libc",
            "berth-content",
            "berth-metadata",
            "berth-grpc",
        ],
        "core holds types and traits only: no wire, database, runtime or syscalls",
    ),
    (
        "berth-grpc",
        &["berth-content", "berth-metadata", "redb", "berthd"],
        "gRPC adapters never name a backend",
    ),
    (
        "berth-content",
        &["tonic", "prost", "berth-proto", "redb", "berth-metadata"],
        "the raw store knows nothing of the wire or of metadata",
    ),
    (
        "berth-metadata",
        &["tonic", "prost", "berth-proto", "berth-content"],
        "metadata sees the blob store through berth-core's trait",
    ),
    (
        "berth-client",
        &[
            "berth-content",
            "berth-metadata",
            "berth-grpc",
            "berthd",
            "redb",
        ],
        "clients talk to berthd over the socket only",
    ),
    (
        "berthctl",
        &[
            "berth-content",
            "berth-metadata",
            "berth-grpc",
            "berthd",
            "redb",
            "tonic",
        ],
        "berthctl goes through berth-client",
    ),
    (
        "berth-snapshot-storage",
        &[
            "tonic",
            "prost",
            "berth-proto",
            "berth-metadata",
            "berth-content",
        ],
        "snapshot bookkeeping is local to each snapshotter",
    ),
    (
        "berth-snapshot-overlay",
        &[
            "tonic",
            "prost",
            "berth-proto",
            "berth-metadata",
            "berth-content",
            "redb",
        ],
        "snapshotters manage directories and mounts; storage keeps their books",
    ),
    (
        "berth-snapshot-native",
        &[
            "tonic",
            "prost",
            "berth-proto",
            "berth-metadata",
            "berth-content",
            "redb",
        ],
        "snapshotters manage directories and mounts; storage keeps their books",
    ),
    (
        "berthd",
        &["berth-runtime", "berth-shim"],
        "containers are created by shims; the daemon never links the runtime",
    ),
];

#[test]
fn crates_respect_the_layering() {
    let deps = workspace_deps();
    let mut violations = Vec::new();
    for (krate, forbidden, why) in RULES {
        let have = deps
            .get(*krate)
            .unwrap_or_else(|| panic!("workspace has no crate {krate}"));
        for f in *forbidden {
            if have.contains(*f) {
                violations.push(format!("{krate} depends on {f}: {why}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

/// Crates allowed to open the embedded database: the daemon's metadata, and each snapshotter's
/// own bookkeeping (containerd likewise keeps a bolt file per snapshotter).
const DATABASE_USERS: &[&str] = &["berth-metadata", "berth-snapshot-storage"];

#[test]
fn only_metadata_and_snapshot_storage_use_the_database() {
    let deps = workspace_deps();
    let users: Vec<_> = deps
        .iter()
        .filter(|(_, d)| d.contains("redb"))
        .map(|(k, _)| k.as_str())
        .collect();
    for user in &users {
        assert!(
            DATABASE_USERS.contains(user),
            "{user} uses redb directly; only {DATABASE_USERS:?} may"
        );
    }
}
