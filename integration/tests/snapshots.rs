//! Snapshots end to end: containerd's own `ctr`, berth-client and berthctl against a real
//! berthd, with the returned mounts mounted for real (`mount` as `ctr snapshots mounts` prints
//! it) and their files checked through the overlay stack and through native copies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_client::LeaseOptions;
use berth_core::ErrorKind;
use berth_core::gc::{REF_SNAPSHOT_PREFIX, ROOT_LABEL};
use berth_core::labels::Labels;
use berth_integration::mounts::{Mounted, ctr_sn, mount_point, mount_with_ctr};
use berth_integration::{CmdOutput, Daemon, bin};
use serde_json::Value;

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// The data rows of a `ctr … ls` table, split into columns.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .filter(|r: &Vec<String>| !r.is_empty())
        .collect()
}

/// Three layers through `ctr`: a file added in layer 1, changed in layer 2, deleted in layer 3,
/// each written through the mounted active snapshot, then checked through views of each layer,
/// and every other `ctr snapshots` command on the way.
fn layers_through_ctr(sn: &str) {
    let d = Daemon::start();
    let ctr = |args: &[&str]| ctr_sn(&d, &[], sn, args);

    ctr(&["prepare", "l1"]).ok();
    {
        let m = mount_with_ctr(&d, &[], sn, "l1");
        fs::write(m.path().join("file"), "v1").unwrap();
        fs::create_dir(m.path().join("dir")).unwrap();
        fs::write(m.path().join("dir/keep"), "keep").unwrap();
    }
    ctr(&["commit", "layer1", "l1"]).ok();

    ctr(&["prepare", "l2", "layer1"]).ok();
    {
        let m = mount_with_ctr(&d, &[], sn, "l2");
        assert_eq!(read(&m.path().join("file")), "v1");
        fs::write(m.path().join("file"), "v2").unwrap();
    }
    ctr(&["commit", "layer2", "l2"]).ok();

    ctr(&["prepare", "l3", "layer2"]).ok();
    let l3_mounts = ctr(&["mounts", "/target", "l3"]).ok();
    {
        let m = mount_with_ctr(&d, &[], sn, "l3");
        assert_eq!(read(&m.path().join("file")), "v2");
        fs::remove_file(m.path().join("file")).unwrap();
        assert!(!m.path().join("file").exists());
        assert_eq!(read(&m.path().join("dir/keep")), "keep");
    }
    if sn == "overlayfs" {
        // The deletion through the overlay left the kernel's own whiteout in the upper dir.
        assert!(
            l3_mounts.starts_with("mount -t overlay overlay /target -o "),
            "{l3_mounts}"
        );
        let upper = l3_mounts
            .split(',')
            .find_map(|o| o.trim().strip_prefix("upperdir="))
            .unwrap_or_else(|| panic!("no upperdir in {l3_mounts}"));
        let meta = fs::symlink_metadata(Path::new(upper).join("file")).unwrap();
        assert!(meta.file_type().is_char_device(), "{meta:?}");
        assert_eq!(meta.rdev(), 0, "a whiteout is device 0/0");
    } else {
        assert!(l3_mounts.starts_with("mount -t bind "), "{l3_mounts}");
    }
    ctr(&["commit", "layer3", "l3"]).ok();

    for (layer, want) in [
        ("layer1", Some("v1")),
        ("layer2", Some("v2")),
        ("layer3", None),
    ] {
        let key = format!("view-{layer}");
        ctr(&["view", &key, layer]).ok();
        let m = mount_with_ctr(&d, &[], sn, &key);
        match want {
            Some(text) => assert_eq!(read(&m.path().join("file")), text, "{key}"),
            None => assert!(!m.path().join("file").exists(), "{key} still has the file"),
        }
        assert_eq!(read(&m.path().join("dir/keep")), "keep", "{key}");
        assert!(
            fs::write(m.path().join("new"), "x").is_err(),
            "{key} is writable"
        );
    }

    let ls = rows(&ctr(&["ls"]).ok());
    let row = |name: &str| {
        ls.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {ls:?}"))
            .clone()
    };
    assert_eq!(row("layer1"), ["layer1", "Committed"]);
    assert_eq!(row("layer2"), ["layer2", "layer1", "Committed"]);
    assert_eq!(row("layer3"), ["layer3", "layer2", "Committed"]);
    assert_eq!(row("view-layer3"), ["view-layer3", "layer3", "View"]);
    assert_eq!(ls.len(), 6, "{ls:?}");

    let info = json(&ctr(&["info", "layer2"]).ok());
    assert_eq!(info["Name"], "layer2");
    assert_eq!(info["Parent"], "layer1");
    assert_eq!(info["Kind"], "Committed");
    // ctr marks what it makes as a GC root.
    assert!(info["Labels"][ROOT_LABEL].is_string(), "{info}");

    ctr(&["label", "layer1", "team=storage"]).ok();
    let info = json(&ctr(&["info", "layer1"]).ok());
    assert_eq!(info["Labels"]["team"], "storage", "{info}");

    let usage = rows(&ctr(&["usage", "-b"]).ok());
    let layer1 = usage.iter().find(|r| r[0] == "layer1").unwrap();
    assert!(layer1[1].parse::<u64>().unwrap() > 0, "{usage:?}");
    let one = rows(&ctr(&["usage", "-b", "layer2"]).ok());
    assert_eq!(one.len(), 1, "{one:?}");

    let tree = ctr(&["tree"]).ok();
    for needle in ["layer1", "\\_ layer2", "\\_ layer3", "\\_ view-layer1"] {
        assert!(tree.contains(needle), "{needle} missing:\n{tree}");
    }

    let err = ctr(&["rm", "layer1"]).fails();
    assert!(err.contains("children"), "{err}");
    ctr(&[
        "rm",
        "view-layer1",
        "view-layer2",
        "view-layer3",
        "layer3",
        "layer2",
        "layer1",
    ])
    .ok();
    assert!(rows(&ctr(&["ls"]).ok()).is_empty());
    assert!(
        d.snapshot_dirs(sn).is_empty(),
        "files left: {:?}",
        d.snapshot_dirs(sn)
    );
}

#[test]
fn ctr_overlayfs_layers() {
    layers_through_ctr("overlayfs");
}

#[test]
fn ctr_native_layers() {
    layers_through_ctr("native");
}

#[test]
fn keys_are_per_namespace() {
    let d = Daemon::start();
    for (ns, who) in [("team-a", "a"), ("team-b", "b")] {
        ctr_sn(&d, &["-n", ns], "overlayfs", &["prepare", "shared"]).ok();
        let m = mount_with_ctr(&d, &["-n", ns], "overlayfs", "shared");
        fs::write(m.path().join("who"), who).unwrap();
    }
    for (ns, who) in [("team-a", "a"), ("team-b", "b")] {
        let m = mount_with_ctr(&d, &["-n", ns], "overlayfs", "shared");
        assert_eq!(read(&m.path().join("who")), who, "{ns}");
        let ls = rows(&ctr_sn(&d, &["-n", ns], "overlayfs", &["ls"]).ok());
        assert_eq!(ls, [["shared", "Active"]], "{ns}");
    }
    let err = ctr_sn(&d, &["-n", "team-c"], "overlayfs", &["info", "shared"]).fails();
    assert!(err.contains("not found"), "{err}");

    // A namespace holding snapshots cannot go.
    let err = d.ctr(&["namespaces", "rm", "team-a"]).fails();
    assert!(err.contains("snapshots"), "{err}");
    ctr_sn(&d, &["-n", "team-a"], "overlayfs", &["rm", "shared"]).ok();
    d.ctr(&["namespaces", "rm", "team-a"]).ok();
    let m = mount_with_ctr(&d, &["-n", "team-b"], "overlayfs", "shared");
    assert_eq!(read(&m.path().join("who")), "b");
}

/// Commits `name` on `parent` with `labels` through `sn`.
async fn layer(sn: &berth_client::Snapshots<'_>, name: &str, parent: Option<&str>, labels: Labels) {
    let key = format!("extract-{name}");
    sn.prepare(&key, parent, &Labels::new()).await.unwrap();
    sn.commit(name, &key, &labels).await.unwrap();
}

async fn names(sn: &berth_client::Snapshots<'_>) -> Vec<String> {
    let mut names: Vec<String> = sn
        .list(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    names
}

fn one(k: &str, v: &str) -> Labels {
    Labels::from([(k.to_owned(), v.to_owned())])
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_unheld_snapshots() {
    let d = Daemon::start();
    let c = d.client("default").await;
    let overlay = c.snapshots("overlayfs");

    layer(&overlay, "loose-1", None, Labels::new()).await;
    layer(&overlay, "loose-2", Some("loose-1"), Labels::new()).await;
    layer(&overlay, "root-1", None, Labels::new()).await;
    layer(&overlay, "root-2", Some("root-1"), one(ROOT_LABEL, "x")).await;
    // An image config (itself a root) references the top of its chain.
    layer(&overlay, "img-1", None, Labels::new()).await;
    layer(&overlay, "img-2", Some("img-1"), Labels::new()).await;
    let config = c
        .content()
        .write_blob(
            b"{\"rootfs\":{}}",
            Labels::from([
                (ROOT_LABEL.to_owned(), "x".to_owned()),
                (
                    format!("{REF_SNAPSHOT_PREFIX}overlayfs"),
                    "img-2".to_owned(),
                ),
            ]),
        )
        .await
        .unwrap();
    // A lease holds what was made under it.
    c.leases()
        .create(LeaseOptions {
            id: Some("hold".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    let leased = c.with_lease("hold");
    layer(
        &leased.snapshots("overlayfs"),
        "leased",
        None,
        Labels::new(),
    )
    .await;
    // ctr labels what it makes as a root; an unheld native snapshot goes too.
    ctr_sn(&d, &[], "overlayfs", &["prepare", "from-ctr"]).ok();
    let native = c.snapshots("native");
    native
        .prepare("n-loose", None, &Labels::new())
        .await
        .unwrap();

    let stats = c.gc().await.unwrap();
    assert_eq!(
        stats.snapshots_removed, 3,
        "loose-2, loose-1 and the unheld native one"
    );
    assert_eq!(
        names(&overlay).await,
        ["from-ctr", "img-1", "img-2", "leased", "root-1", "root-2"]
    );
    assert!(names(&native).await.is_empty());
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 6);
    assert!(d.snapshot_dirs("native").is_empty());

    // Each hold let go, the next collection takes what it held.
    ctr_sn(
        &d,
        &[],
        "overlayfs",
        &["label", "from-ctr", &format!("{ROOT_LABEL}=")],
    )
    .ok();
    c.gc().await.unwrap();
    assert!(!names(&overlay).await.contains(&"from-ctr".to_owned()));

    c.leases().delete("hold", true).await.unwrap();
    assert!(!names(&overlay).await.contains(&"leased".to_owned()));

    c.content()
        .update_labels(&config, &one(ROOT_LABEL, ""))
        .await
        .unwrap();
    let stats = c.gc().await.unwrap();
    assert_eq!(
        stats.snapshots_removed, 2,
        "img-2 and then its parent img-1"
    );
    assert_eq!(names(&overlay).await, ["root-1", "root-2"]);
    assert_eq!(
        c.content().info(&config).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_and_after_prepare() {
    let mut d = Daemon::start();
    let c = d.client("default").await;
    // A parent with many files, so copying it for a native prepare takes a while.
    let native = c.snapshots("native");
    let mounts = native
        .prepare("base-active", None, &Labels::new())
        .await
        .unwrap();
    let base_dir = PathBuf::from(&mounts[0].source);
    for i in 0..20 {
        let sub = base_dir.join(format!("d{i}"));
        fs::create_dir(&sub).unwrap();
        for j in 0..100 {
            fs::write(sub.join(format!("f{j}")), "x").unwrap();
        }
    }
    native
        .commit("base", "base-active", &Labels::new())
        .await
        .unwrap();
    let overlay = c.snapshots("overlayfs");
    overlay.prepare("kept", None, &Labels::new()).await.unwrap();

    let temp_dirs = |d: &Daemon| {
        d.snapshot_dirs("native")
            .into_iter()
            .filter(|n| n.starts_with("new-"))
            .count()
    };
    let pending = tokio::spawn({
        let c = c.clone();
        async move {
            c.snapshots("native")
                .prepare("half", Some("base"), &Labels::new())
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while temp_dirs(&d) == 0 {
        assert!(Instant::now() < deadline, "the copy never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    d.kill9();
    let result = pending.await.unwrap();
    assert!(result.is_err(), "the prepare finished before the kill");
    assert_eq!(temp_dirs(&d), 1, "a half-made copy is left on disk");

    d.restart();
    let c = d.client("default").await;
    let native = c.snapshots("native");
    assert_eq!(names(&native).await, ["base"]);
    assert_eq!(
        native.stat("half").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(rows(&ctr_sn(&d, &[], "native", &["ls"]).ok()).len(), 1);
    // What finished before the kill is still there.
    assert_eq!(names(&c.snapshots("overlayfs")).await, ["kept"]);

    native.cleanup().await.unwrap();
    assert_eq!(temp_dirs(&d), 0);
    assert_eq!(d.snapshot_dirs("native").len(), 1, "only the base is left");

    // The key is free, and a prepare that returned survives a SIGKILL right after.
    let mounts = native
        .prepare("half", Some("base"), &Labels::new())
        .await
        .unwrap();
    d.kill9();
    d.restart();
    let c = d.client("default").await;
    let native = c.snapshots("native");
    assert_eq!(native.mounts("half").await.unwrap(), mounts);
    let m = mount_with_ctr(&d, &[], "native", "half");
    assert_eq!(read(&m.path().join("d19/f99")), "x");
}

/// A snapshot prepared under a lease that expires is provisional until a durable commit
/// follows: a SIGKILL right after its Prepare loses it whole (the record, and after Cleanup
/// the directory), while one followed by a durable change (here a Prepare outside any lease)
/// survives with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_provisional_prepare_is_kept_or_lost_whole_across_a_sigkill() {
    let mut d = Daemon::start();
    let c = d.client("default").await;
    let expiring = || LeaseOptions::default().expires_in(Duration::from_secs(3600));
    let lease = c.leases().create(expiring()).await.unwrap();
    c.with_lease(&lease.id)
        .snapshots("overlayfs")
        .prepare("provisional", None, &Labels::new())
        .await
        .unwrap();
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 1);
    d.kill9();
    d.restart();
    let c = d.client("default").await;
    let overlay = c.snapshots("overlayfs");
    assert_eq!(
        overlay.stat("provisional").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    overlay.cleanup().await.unwrap();
    assert!(d.snapshot_dirs("overlayfs").is_empty());

    let lease = c.leases().create(expiring()).await.unwrap();
    let mounts = c
        .with_lease(&lease.id)
        .snapshots("overlayfs")
        .prepare("provisional", None, &Labels::new())
        .await
        .unwrap();
    overlay
        .prepare("durable", None, &Labels::new())
        .await
        .unwrap();
    d.kill9();
    d.restart();
    let c = d.client("default").await;
    let overlay = c.snapshots("overlayfs");
    assert_eq!(names(&overlay).await, ["durable", "provisional"]);
    assert_eq!(overlay.mounts("provisional").await.unwrap(), mounts);
    overlay.cleanup().await.unwrap();
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 2);
    // The lease came through too: it still holds its snapshot.
    assert_eq!(c.leases().list(&[]).await.unwrap().len(), 1);
}

/// berthctl with `BERTH_SNAPSHOTTER` set.
fn berthctl_env(d: &Daemon, snapshotter: &str, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(bin("berthctl"));
    cmd.env("BERTH_SNAPSHOTTER", snapshotter)
        .arg("--address")
        .arg(d.socket())
        .args(args);
    CmdOutput::run_public(&mut cmd)
}

#[test]
fn berthctl_snapshot_commands() {
    let d = Daemon::start();
    let ctl = |args: &[&str]| d.berthctl(args);

    assert_eq!(ctl(&["snapshot", "prepare", "k1"]).ok(), "");
    let created = json(&ctl(&["--format", "json", "snapshot", "prepare", "k2"]).ok());
    assert_eq!(created["key"], "k2");
    assert_eq!(created["mounts"][0]["type"], "bind");

    {
        let (dir, target) = mount_point();
        let commands = ctl(&["snapshot", "mounts", target.to_str().unwrap(), "k1"]).ok();
        let m = Mounted::run(&commands, target, dir);
        fs::write(m.path().join("hello"), "world").unwrap();
    }
    let committed = ctl(&["snapshot", "commit", "c1", "k1", "-l", "a=b"]).ok();
    assert!(
        committed.contains("c1") && committed.contains("committed"),
        "{committed}"
    );
    {
        let (dir, target) = mount_point();
        let commands = ctl(&[
            "snapshot",
            "prepare",
            "k3",
            "c1",
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
        assert!(
            commands.starts_with("mount -t overlay overlay "),
            "{commands}"
        );
        let m = Mounted::run(&commands, target, dir);
        assert_eq!(read(&m.path().join("hello")), "world");
    }

    let listed = json(&ctl(&["--format", "json", "snapshot", "ls", "kind==committed"]).ok());
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "c1");
    assert_eq!(listed[0]["labels"]["a"], "b");
    let table = ctl(&["snapshots", "ls"]).ok();
    assert!(table.starts_with("KEY"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    let tree = ctl(&["snapshot", "tree"]).ok();
    assert!(tree.contains("c1 (committed)\n  \\_ k3 (active)"), "{tree}");

    let usage = json(&ctl(&["--format", "json", "snapshot", "usage", "c1"]).ok());
    assert!(usage[0]["size"].as_u64().unwrap() > 0, "{usage}");

    ctl(&["snapshot", "label", "c1", "team=x", "a="]).ok();
    let info = json(&ctl(&["--format", "json", "snapshot", "info", "c1"]).ok());
    assert_eq!(info["labels"], serde_json::json!({"team": "x"}));
    assert_eq!(info["kind"], "committed");
    assert_eq!(info["parent"], Value::Null);

    let err = ctl(&["snapshot", "rm", "c1"]).fails();
    assert!(err.contains("children"), "{err}");
    assert_eq!(
        ctl(&["snapshot", "rm", "k3", "k2", "c1"]).ok(),
        "k3\nk2\nc1\n"
    );
    assert_eq!(ctl(&["snapshot", "ls"]).ok().lines().count(), 1);

    // The snapshotter comes from --snapshotter or BERTH_SNAPSHOTTER.
    ctl(&["snapshot", "--snapshotter", "native", "prepare", "n1"]).ok();
    let native = berthctl_env(&d, "native", &["snapshot", "ls"]).ok();
    assert!(native.contains("n1"), "{native}");
    assert!(!ctl(&["snapshot", "ls"]).ok().contains("n1"));
    let err = ctl(&["snapshot", "--snapshotter", "zfs", "ls"]).fails();
    assert!(err.contains("snapshotter not loaded: zfs"), "{err}");
}

#[test]
fn plugins_report_the_snapshotters() {
    let d = Daemon::start();
    let out = d.ctr(&["plugins", "ls"]).ok();
    for (kind, id) in [
        ("io.containerd.snapshotter.v1", "overlayfs"),
        ("io.containerd.snapshotter.v1", "native"),
        ("io.containerd.grpc.v1", "snapshots"),
    ] {
        let line = out
            .lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&kind) && cols.get(1) == Some(&id)
            })
            .unwrap_or_else(|| panic!("{kind} {id} not listed:\n{out}"));
        assert!(line.trim_end().ends_with("ok"), "{line}");
    }
    // Each snapshotter exports its root, as containerd's do.
    let detailed = d.ctr(&["plugins", "ls", "--detailed"]).ok();
    let root = d.root().join("io.containerd.snapshotter.v1.overlayfs");
    assert!(
        detailed.contains(root.to_str().unwrap()),
        "the overlay root is not exported:\n{detailed}"
    );
    assert!(root.join("metadata.redb").exists());
}
