//! Containers end to end: records made through berth-client and by containerd's `ctr`, listed,
//! shown, labelled and removed by both; validation errors as containerd's; a container keeping
//! its snapshot alive through garbage collection; a namespace with containers refusing deletion.
//!
//! The daemons run with a ten-minute background-collection delay, so snapshots disappear only
//! through the collections the tests ask for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_core::containers::{Container, RUNTIME_SPEC_TYPE_URL};
use berth_core::snapshots::Kind;
use berth_core::{AnyValue, ErrorKind};
use berth_integration::Daemon;
use berth_integration::testimage::TestImage;
use serde_json::{Value, json};
use tempfile::TempDir;

/// A daemon whose background collector never gets to run during a test.
struct Quiet {
    daemon: Daemon,
    _config: TempDir,
}

impl std::ops::Deref for Quiet {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

fn quiet_daemon() -> Quiet {
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("berthd.toml");
    std::fs::write(&path, "version = 1\n\n[gc]\ndebounce_ms = 600000\n").unwrap();
    let daemon = Daemon::start_with(&["--config", path.to_str().unwrap()]);
    Quiet {
        daemon,
        _config: config,
    }
}

/// A minimal runtime spec as ctr stores it: JSON under containerd's type URL.
fn spec(args: &[&str]) -> AnyValue {
    let spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
    });
    AnyValue::new(RUNTIME_SPEC_TYPE_URL, serde_json::to_vec(&spec).unwrap())
}

/// A container as `ctr run` makes one: runc v2 with (empty) runc options.
fn container(id: &str, image: &str) -> Container {
    let mut c = Container::new(id, "io.containerd.runc.v2", spec(&["sleep", "1"]));
    c.runtime.options = Some(AnyValue::new("containerd.runc.v1.Options", vec![]));
    c.image = image.to_owned();
    c
}

fn ids(list: &[Container]) -> Vec<&str> {
    list.iter().map(|c| c.id.as_str()).collect()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[tokio::test]
async fn client_create_get_list_update_delete() {
    let d = quiet_daemon();
    let client = d.client("ct-api").await;
    let containers = client.containers();

    let mut web = container("web", "busybox:latest");
    web.labels.insert("tier".into(), "front".into());
    web.snapshotter = "overlayfs".into();
    web.snapshot_key = "web".into();
    web.extensions
        .insert("berth.test".into(), AnyValue::new("x.Y", b"ext".to_vec()));
    let created = containers.create(&web).await.unwrap();
    assert!(created.created_at > std::time::UNIX_EPOCH);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.spec, web.spec);
    assert_eq!(created.extensions, web.extensions);
    assert_eq!(containers.get("web").await.unwrap(), created);

    let mut db = container("db", "postgres:16");
    db.runtime.name = "io.berth.v1".into();
    containers.create(&db).await.unwrap();

    assert_eq!(ids(&containers.list(&[]).await.unwrap()), ["db", "web"]);
    let filtered = |f: &[&str]| {
        let f: Vec<String> = f.iter().map(|s| (*s).to_owned()).collect();
        let containers = client.containers();
        async move { containers.list(&f).await }
    };
    assert_eq!(ids(&filtered(&["id==web"]).await.unwrap()), ["web"]);
    assert_eq!(ids(&filtered(&["image~=^postgres"]).await.unwrap()), ["db"]);
    assert_eq!(
        ids(&filtered(&["runtime.name==io.containerd.runc.v2"])
            .await
            .unwrap()),
        ["web"]
    );
    assert_eq!(
        ids(&filtered(&["labels.tier==front", "id==db"]).await.unwrap()),
        ["db", "web"]
    );
    assert_eq!(
        filtered(&["id~=("]).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // Another namespace sees none of them.
    let other = client.with_namespace("ct-api-other");
    assert!(other.containers().list(&[]).await.unwrap().is_empty());

    // Masks: one label, then named fields, then everything mutable.
    let mut change = web.clone();
    change.labels.insert("extra".into(), "1".into());
    change.labels.remove("tier");
    change.image = "ignored".into();
    let updated = containers
        .update(&change, &["labels.extra".into(), "labels.tier".into()])
        .await
        .unwrap();
    assert_eq!(updated.labels.len(), 1);
    assert_eq!(updated.labels["extra"], "1");
    assert_eq!(updated.image, "busybox:latest");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);

    let mut change = web.clone();
    change.spec = Some(spec(&["true"]));
    change.image = "busybox:1.36".into();
    let updated = containers
        .update(&change, &["spec".into(), "image".into()])
        .await
        .unwrap();
    assert_eq!(updated.spec, change.spec);
    assert_eq!(updated.image, "busybox:1.36");
    assert_eq!(updated.labels["extra"], "1");

    let mut change = web.clone();
    change.labels.clear();
    change.extensions.clear();
    change.snapshot_key = "web-2".into();
    let updated = containers.update(&change, &[]).await.unwrap();
    assert!(updated.labels.is_empty() && updated.extensions.is_empty());
    assert_eq!(updated.snapshot_key, "web-2");

    // The runtime and snapshotter are immutable.
    for path in ["runtime", "snapshotter"] {
        let err = containers.update(&web, &[path.into()]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    let mut moved = web.clone();
    moved.snapshotter = "native".into();
    let err = containers.update(&moved, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    containers.delete("web").await.unwrap();
    let err = containers.get("web").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.message()
            .contains("container \"web\" in namespace \"ct-api\""),
        "{err}"
    );
    assert_eq!(
        containers.delete("web").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(ids(&containers.list(&[]).await.unwrap()), ["db"]);
}

#[tokio::test]
async fn validation_errors_are_containerds() {
    let d = quiet_daemon();
    let client = d.client("ct-errors").await;
    let containers = client.containers();

    let mut no_spec = container("no-spec", "");
    no_spec.spec = None;
    let mut no_runtime = container("no-runtime", "");
    no_runtime.runtime.name.clear();
    let mut key_only = container("key-only", "");
    key_only.snapshot_key = "k".into();
    for (bad, needle) in [
        (container("bad/id", ""), "bad/id"),
        (container("", ""), "container id"),
        (no_spec, "spec must be set"),
        (no_runtime, "runtime name must be set"),
        (key_only, "snapshotter must be set"),
    ] {
        let err = containers.create(&bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains(needle), "{needle}: {err}");
    }
    assert!(containers.list(&[]).await.unwrap().is_empty());

    containers.create(&container("dup", "")).await.unwrap();
    let err = containers.create(&container("dup", "")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let err = containers
        .update(&container("missing", ""), &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A namespace holding a container cannot be deleted.
    let err = client.namespaces().delete("ct-errors").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains("containers"), "{err}");
    containers.delete("dup").await.unwrap();
    client.namespaces().delete("ct-errors").await.unwrap();
}

#[tokio::test]
async fn ctr_lists_shows_labels_and_removes_containers() {
    let d = quiet_daemon();
    let ns = "ct-ctr";
    let client = d.client(ns).await;
    let mut web = container("web", "docker.io/library/busybox:latest");
    web.labels.insert("tier".into(), "front".into());
    client.containers().create(&web).await.unwrap();
    let mut bare = container("bare", "");
    bare.runtime.options = None;
    client.containers().create(&bare).await.unwrap();

    let ls = d.ctr(&["-n", ns, "containers", "ls"]).ok();
    let mut lines = ls.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["CONTAINER", "IMAGE", "RUNTIME"], "{ls}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["bare", "-", "io.containerd.runc.v2"],
            vec![
                "web",
                "docker.io/library/busybox:latest",
                "io.containerd.runc.v2"
            ],
        ],
        "{ls}"
    );
    let quiet = d.ctr(&["-n", ns, "containers", "ls", "-q"]).ok();
    assert_eq!(quiet, "bare\nweb\n");
    let filtered = d
        .ctr(&["-n", ns, "containers", "ls", "-q", "labels.tier==front"])
        .ok();
    assert_eq!(filtered, "web\n");
    // The default namespace has none.
    assert_eq!(d.ctr(&["containers", "ls", "-q"]).ok(), "");

    let info = json_of(&d.ctr(&["-n", ns, "containers", "info", "web"]).ok());
    assert_eq!(info["ID"], "web");
    assert_eq!(info["Image"], "docker.io/library/busybox:latest");
    assert_eq!(info["Runtime"]["Name"], "io.containerd.runc.v2");
    assert_eq!(info["Labels"]["tier"], "front");
    assert_eq!(info["Spec"]["ociVersion"], "1.0.2-dev");
    assert_eq!(info["Spec"]["process"]["args"], json!(["sleep", "1"]));
    let spec_only = json_of(
        &d.ctr(&["-n", ns, "containers", "info", "--spec", "web"])
            .ok(),
    );
    assert_eq!(spec_only["root"]["path"], "rootfs");
    let missing = d.ctr(&["-n", ns, "containers", "info", "nope"]).fails();
    assert!(missing.contains("not found"), "{missing}");

    // `ctr containers label` updates under `labels.<key>` masks.
    d.ctr(&[
        "-n",
        ns,
        "containers",
        "label",
        "web",
        "owner=alice",
        "tier=",
    ])
    .ok();
    let labels = client.containers().get("web").await.unwrap().labels;
    assert_eq!(labels.len(), 1, "{labels:?}");
    assert_eq!(labels["owner"], "alice");

    d.ctr(&["-n", ns, "containers", "rm", "web"]).ok();
    assert_eq!(d.ctr(&["-n", ns, "containers", "ls", "-q"]).ok(), "bare\n");
    assert_eq!(
        client.containers().get("web").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_container_keeps_its_snapshot_until_it_is_deleted() {
    let d = quiet_daemon();
    let ns = "ct-gc";
    let image = TestImage::one_layer();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    image.write_oci_archive(&archive);
    d.ctr(&["-n", ns, "images", "import", archive.to_str().unwrap()])
        .ok();

    // ctr builds the spec from the image and prepares the container's snapshot on the top layer.
    d.ctr(&["-n", ns, "containers", "create", &image.name, "c1"])
        .ok();
    let client = d.client(ns).await;
    let c1 = client.containers().get("c1").await.unwrap();
    assert_eq!(c1.image, image.name);
    assert_eq!(c1.runtime.name, "io.containerd.runc.v2");
    assert_eq!(
        (c1.snapshotter.as_str(), c1.snapshot_key.as_str()),
        ("overlayfs", "c1")
    );
    let spec: Value = serde_json::from_slice(&c1.spec.as_ref().unwrap().value).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    assert_eq!(spec["linux"]["cgroupsPath"], format!("/{ns}/c1"));
    let ls = d.ctr(&["-n", ns, "containers", "ls"]).ok();
    assert!(ls.contains(&image.name), "{ls}");

    let snapshots = client.snapshots("overlayfs");
    let top = image.chain_ids().last().unwrap().to_string();
    let info = snapshots.stat("c1").await.unwrap();
    assert_eq!(info.kind, Kind::Active);
    assert_eq!(info.parent.as_deref(), Some(top.as_str()));

    // The container is what holds its snapshot: ctr created it under a lease that is gone now.
    client.gc().await.unwrap();
    assert!(snapshots.stat("c1").await.is_ok(), "collected while held");

    client.containers().delete("c1").await.unwrap();
    let stats = client.gc().await.unwrap();
    assert!(stats.snapshots_removed >= 1, "{stats:?}");
    assert_eq!(
        snapshots.stat("c1").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The image still holds its layers.
    assert!(snapshots.stat(&top).await.is_ok());
}
