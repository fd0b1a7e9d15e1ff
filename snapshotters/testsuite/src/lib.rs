//! Conformance tests for [`Snapshotter`] implementations.
//!
//! Each public function is one test case, generic over a snapshotter opened by `open(root)` in
//! a fresh temporary directory. Cases **mount** what the snapshotter returns (so they need
//! root, and a kernel with overlayfs for overlay mounts), check file contents through the
//! mounts, and always unmount, even when an assertion fails. They assume containerd's layout
//! convention that per-snapshot directories live in `<root>/snapshots/`.
//!
//! Layer contents are written the way the diff applier writes them: when the mounts are a
//! single overlay mount with an `upperdir=`, straight into the upper directory, with deletions
//! as overlay whiteouts (character device 0/0); otherwise by mounting and changing files.
//!
//! Run every case with [`run_all`] or name them one by one in a crate's tests.
//!
//! It lives in its own crate rather than in berth-core because it mounts (syscalls), which the
//! core crate never does.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use berth_core::ErrorKind;
use berth_core::filters::Filters;
use berth_core::labels::Labels;
use berth_core::mount::{MAX_MOUNT_DATA, Mount};
use berth_core::snapshots::{Info, Kind, Snapshotter};

/// A case's name and function.
pub type Case<F> = (&'static str, fn(&F));

/// Every case, by name, for [`run_all`].
pub fn cases<S, F>() -> Vec<Case<F>>
where
    S: Snapshotter,
    F: Fn(&Path) -> berth_core::Result<S>,
{
    vec![
        ("layers", layers::<S, F> as fn(&F)),
        ("stat_and_usage", stat_and_usage::<S, F>),
        ("views_are_read_only", views_are_read_only::<S, F>),
        ("errors", errors::<S, F>),
        ("remove_with_children", remove_with_children::<S, F>),
        ("labels", labels::<S, F>),
        ("list_filters", list_filters::<S, F>),
        ("cleanup_orphans", cleanup_orphans::<S, F>),
        ("reopen", reopen::<S, F>),
        ("metadata_preserved", metadata_preserved::<S, F>),
        ("deep_chain", deep_chain::<S, F>),
        ("concurrent_prepares", concurrent_prepares::<S, F>),
    ]
}

/// Runs every case, each in its own temporary directory, and panics naming the failed ones.
pub fn run_all<S, F>(open: F)
where
    S: Snapshotter,
    F: Fn(&Path) -> berth_core::Result<S>,
{
    let mut failed = Vec::new();
    for (name, case) in cases::<S, F>() {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&open))).is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "snapshotter cases failed: {failed:?}");
}

// ---------------------------------------------------------------------------------------------
// Harness

/// A temporary directory holding the snapshotter's root and mount points.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        Self {
            _tmp: tmp,
            root,
            work,
        }
    }

    fn open<S, F: Fn(&Path) -> berth_core::Result<S>>(&self, open: &F) -> S {
        open(&self.root).unwrap_or_else(|e| panic!("open snapshotter at {:?}: {e}", self.root))
    }

    /// Mounts `mounts` on a fresh directory; unmounted when the guard drops.
    fn mount(&self, mounts: &[Mount]) -> Mounted {
        let dir = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(&self.work)
            .unwrap();
        mount_all(mounts, dir).unwrap_or_else(|e| panic!("mount {mounts:?}: {e}"))
    }

    fn snapshot_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Mounts stacked on one temporary directory, unmounted (lazily, so a busy mount cannot keep
/// a test's files alive) on drop.
pub struct Mounted {
    dir: Option<tempfile::TempDir>,
    target: PathBuf,
    count: usize,
}

impl Mounted {
    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mut ok = true;
        for _ in 0..self.count {
            if let Err(e) = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH) {
                eprintln!("unmount {}: {e}", self.target.display());
                ok = false;
            }
        }
        if !ok {
            // Deleting the mount point recursively would delete through a stuck mount.
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
    }
}

/// Mounts each of `mounts` on `dir` in order, like containerd's `mount.All`.
pub fn mount_all(mounts: &[Mount], dir: tempfile::TempDir) -> io::Result<Mounted> {
    let mut guard = Mounted {
        target: dir.path().to_path_buf(),
        dir: Some(dir),
        count: 0,
    };
    for m in mounts {
        mount_one(m, &guard.target)?;
        guard.count += 1;
    }
    Ok(guard)
}

fn mount_one(m: &Mount, target: &Path) -> io::Result<()> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other.to_owned()),
        }
    }
    if m.kind == "bind" {
        flags |= MsFlags::MS_BIND;
    }
    // Keeps the anchor directory open until the mount call has resolved the lower directories.
    let mut _anchor = None;
    if m.kind == "overlay" && data.join(",").len() >= MAX_MOUNT_DATA {
        // containerd mounts from the common parent with relative lower directories; a
        // /proc/self/fd anchor does the same without changing the (shared) working directory.
        let (common, compacted) = m
            .compact_lowerdirs()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "overlay data too long"))?;
        let anchor = std::fs::File::open(&common)?;
        let prefix = format!(
            "/proc/self/fd/{}/",
            std::os::fd::AsRawFd::as_raw_fd(&anchor)
        );
        let lower = compacted.option_value("lowerdir").unwrap_or_default();
        let lower: Vec<String> = lower.split(':').map(|d| format!("{prefix}{d}")).collect();
        for d in &mut data {
            if d.starts_with("lowerdir=") {
                *d = format!("lowerdir={}", lower.join(":"));
            }
        }
        _anchor = Some(anchor);
    }
    let data = data.join(",");
    let fstype = (m.kind != "bind").then_some(m.kind.as_str());
    let initial = if flags.contains(MsFlags::MS_BIND) {
        flags & !MsFlags::MS_RDONLY
    } else {
        flags
    };
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        fstype,
        initial,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| io::Error::other(format!("mount {m:?} on {}: {e}", target.display())))?;
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        // A bind mount ignores MS_RDONLY until remounted.
        let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
        {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(io::Error::other(format!(
                "remount {} read-only: {e}",
                target.display()
            )));
        }
    }
    Ok(())
}

/// A change to a layer, applied as the diff applier would.
enum Change<'a> {
    Write(&'a str, &'a str),
    Mkdir(&'a str),
    Delete(&'a str),
}

fn apply(env: &Env, mounts: &[Mount], changes: &[Change<'_>]) {
    let upper = match mounts {
        [m] if m.kind == "overlay" => m.option_value("upperdir").map(PathBuf::from),
        _ => None,
    };
    if let Some(upper) = upper {
        for change in changes {
            match change {
                Change::Write(p, content) => std::fs::write(upper.join(p), content).unwrap(),
                Change::Mkdir(p) => std::fs::create_dir(upper.join(p)).unwrap(),
                Change::Delete(p) => {
                    let path = upper.join(p);
                    if let Ok(meta) = std::fs::symlink_metadata(&path) {
                        if meta.is_dir() {
                            std::fs::remove_dir_all(&path).unwrap();
                        } else {
                            std::fs::remove_file(&path).unwrap();
                        }
                    }
                    nix::sys::stat::mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
                }
            }
        }
        return;
    }
    let m = env.mount(mounts);
    for change in changes {
        let path = m.path().join(match change {
            Change::Write(p, _) | Change::Mkdir(p) | Change::Delete(p) => p,
        });
        match change {
            Change::Write(_, content) => std::fs::write(&path, content).unwrap(),
            Change::Mkdir(_) => std::fs::create_dir(&path).unwrap(),
            Change::Delete(_) => {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).unwrap()
                } else {
                    std::fs::remove_file(&path).unwrap()
                }
            }
        }
    }
}

/// Every regular file below `dir` → its contents (directories as "<dir>", symlinks as "-> t").
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(rel, "<dir>".into());
                walk(base, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("-> {}", target.display()));
            } else if meta.is_file() {
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            } else {
                out.insert(rel, "<special>".into());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn t(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kind<T: std::fmt::Debug>(r: berth_core::Result<T>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kind(),
    }
}

fn erofs(path: &Path) {
    let err = std::fs::write(path, b"x").expect_err("write to a read-only view");
    assert_eq!(err.raw_os_error(), Some(Errno::EROFS as i32), "{err}");
}

/// Prepares `key` on `parent`, applies `changes` and commits it as `name`.
fn layer<S: Snapshotter>(
    env: &Env,
    sn: &S,
    name: &str,
    parent: Option<&str>,
    changes: &[Change<'_>],
) {
    let key = format!("extract-{name}");
    let mounts = sn.prepare(&key, parent, Labels::new()).unwrap();
    apply(env, &mounts, changes);
    sn.commit(name, &key, Labels::new()).unwrap();
}

fn names(infos: Vec<Info>) -> Vec<String> {
    let mut names: Vec<String> = infos.into_iter().map(|i| i.name).collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Cases

/// A file added in layer 1, changed in layer 2 and deleted in layer 3, seen through views of
/// each layer and through a container snapshot on top that makes its own changes.
pub fn layers<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    layer(
        &env,
        &sn,
        "l1",
        None,
        &[
            Change::Write("a", "one"),
            Change::Mkdir("dir"),
            Change::Write("dir/b", "bee"),
        ],
    );
    layer(&env, &sn, "l2", Some("l1"), &[Change::Write("a", "two")]);
    layer(
        &env,
        &sn,
        "l3",
        Some("l2"),
        &[Change::Delete("a"), Change::Write("c", "sea")],
    );

    let expect = [
        ("l1", t(&[("a", "one"), ("dir", "<dir>"), ("dir/b", "bee")])),
        ("l2", t(&[("a", "two"), ("dir", "<dir>"), ("dir/b", "bee")])),
        ("l3", t(&[("c", "sea"), ("dir", "<dir>"), ("dir/b", "bee")])),
    ];
    for (name, want) in &expect {
        let key = format!("view-{name}");
        let mounts = sn.view(&key, Some(name), Labels::new()).unwrap();
        assert_eq!(sn.mounts(&key).unwrap(), mounts);
        let m = env.mount(&mounts);
        assert_eq!(&tree(m.path()), want, "view of {name}");
    }

    let mounts = sn.prepare("ctr", Some("l3"), Labels::new()).unwrap();
    assert_eq!(sn.mounts("ctr").unwrap(), mounts);
    {
        let m = env.mount(&mounts);
        assert_eq!(tree(m.path()), expect[2].1);
        std::fs::write(m.path().join("new"), "fresh").unwrap();
        std::fs::remove_file(m.path().join("dir/b")).unwrap();
        std::fs::write(m.path().join("c"), "changed").unwrap();
    }
    let want = t(&[("c", "changed"), ("dir", "<dir>"), ("new", "fresh")]);
    {
        let m = env.mount(&sn.mounts("ctr").unwrap());
        assert_eq!(tree(m.path()), want, "container changes survive a remount");
    }
    // The layers below did not change.
    let m = env.mount(&sn.view("again", Some("l3"), Labels::new()).unwrap());
    assert_eq!(tree(m.path()), expect[2].1);
    drop(m);

    // Committing the container makes a new layer with all of it.
    sn.commit("image2", "ctr", Labels::new()).unwrap();
    let m = env.mount(&sn.view("v-image2", Some("image2"), Labels::new()).unwrap());
    assert_eq!(tree(m.path()), want);
    assert_eq!(sn.stat("image2").unwrap().parent.as_deref(), Some("l3"));
}

/// Stat answers kind, parent and times; usage counts blocks and inodes (hard links once) live
/// for active snapshots and as recorded for committed ones.
pub fn stat_and_usage<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    let before = SystemTime::now();
    let mounts = sn.prepare("a", None, l(&[("k", "v")])).unwrap();
    let info = sn.stat("a").unwrap();
    assert_eq!(info.name, "a");
    assert_eq!(info.kind, Kind::Active);
    assert_eq!(info.parent, None);
    assert_eq!(info.labels, l(&[("k", "v")]));
    assert!(info.created_at >= before && info.updated_at >= info.created_at);

    let empty = sn.usage("a").unwrap();
    assert_eq!(
        empty.inodes, 1,
        "an empty snapshot is its root directory: {empty:?}"
    );
    {
        let m = env.mount(&mounts);
        std::fs::create_dir(m.path().join("d")).unwrap();
        std::fs::write(m.path().join("d/big"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(m.path().join("d/big"), m.path().join("link")).unwrap();
    }
    let live = sn.usage("a").unwrap();
    assert_eq!(live.inodes, 3, "root, d, big (= link): {live:?}");
    assert!(
        live.size >= 100_000 && live.size < 150_000,
        "blocks of one 100 kB file plus directories, hard link once: {live:?}"
    );

    sn.commit("c", "a", Labels::new()).unwrap();
    assert_eq!(kind(sn.stat("a")), ErrorKind::NotFound);
    let committed = sn.stat("c").unwrap();
    assert_eq!(committed.kind, Kind::Committed);
    assert!(committed.created_at >= info.created_at);
    assert_eq!(sn.usage("c").unwrap(), live, "usage recorded at commit");

    sn.prepare("child", Some("c"), Labels::new()).unwrap();
    let child = sn.stat("child").unwrap();
    assert_eq!(child.parent.as_deref(), Some("c"));
    assert_eq!(child.kind, Kind::Active);
    // What a child's own files cost depends on the backend (a copy-based one copies the
    // parent), so only its existence is checked here.
    assert!(sn.usage("child").unwrap().inodes >= 1);
    assert_eq!(kind(sn.usage("nope")), ErrorKind::NotFound);
}

/// Views with zero, one and two parents show their parent's files and refuse writes.
pub fn views_are_read_only<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    layer(&env, &sn, "p1", None, &[Change::Write("one", "1")]);
    layer(&env, &sn, "p2", Some("p1"), &[Change::Write("two", "2")]);

    let cases = [
        ("v0", None, t(&[])),
        ("v1", Some("p1"), t(&[("one", "1")])),
        ("v2", Some("p2"), t(&[("one", "1"), ("two", "2")])),
    ];
    for (key, parent, want) in &cases {
        let mounts = sn.view(key, *parent, Labels::new()).unwrap();
        assert!(
            mounts
                .iter()
                .all(|m| m.is_read_only() || m.option_value("upperdir").is_none()),
            "{mounts:?}"
        );
        assert_eq!(sn.stat(key).unwrap().kind, Kind::View);
        let m = env.mount(&mounts);
        assert_eq!(&tree(m.path()), want, "{key}");
        erofs(&m.path().join("new"));
        if !want.is_empty() {
            erofs(&m.path().join("one"));
        }
        assert_eq!(
            kind(sn.commit(&format!("c-{key}"), key, Labels::new())),
            ErrorKind::FailedPrecondition
        );
    }
    // Views are children too.
    assert_eq!(kind(sn.remove("p2")), ErrorKind::FailedPrecondition);
    sn.remove("v2").unwrap();
    sn.remove("p2").unwrap();
}

/// Every error the trait documents, and failed calls leave nothing behind.
pub fn errors<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    layer(&env, &sn, "base", None, &[Change::Write("f", "x")]);
    sn.prepare("active", Some("base"), Labels::new()).unwrap();
    sn.view("view", Some("base"), Labels::new()).unwrap();
    let dirs = env.snapshot_dirs();
    let none = Labels::new;

    assert_eq!(
        kind(sn.prepare("", None, none())),
        ErrorKind::InvalidArgument
    );
    assert_eq!(kind(sn.view("", None, none())), ErrorKind::InvalidArgument);
    assert_eq!(kind(sn.stat("")), ErrorKind::InvalidArgument);
    assert_eq!(
        kind(sn.commit("", "active", none())),
        ErrorKind::InvalidArgument
    );

    assert_eq!(
        kind(sn.prepare("active", None, none())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(sn.view("active", None, none())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(sn.prepare("base", None, none())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(sn.commit("base", "active", none())),
        ErrorKind::AlreadyExists
    );

    assert_eq!(kind(sn.stat("missing")), ErrorKind::NotFound);
    assert_eq!(kind(sn.mounts("missing")), ErrorKind::NotFound);
    assert_eq!(kind(sn.remove("missing")), ErrorKind::NotFound);
    assert_eq!(kind(sn.commit("n", "missing", none())), ErrorKind::NotFound);
    assert_eq!(
        kind(sn.prepare("x", Some("missing"), none())),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(sn.view("x", Some("missing"), none())),
        ErrorKind::NotFound
    );

    assert_eq!(
        kind(sn.prepare("x", Some("active"), none())),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(sn.view("x", Some("view"), none())),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(sn.commit("n", "base", none())),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(sn.commit("n", "view", none())),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(kind(sn.mounts("base")), ErrorKind::FailedPrecondition);
    assert_eq!(kind(sn.remove("base")), ErrorKind::FailedPrecondition);

    let big = l(&[("k", &"v".repeat(5000))]);
    assert_eq!(kind(sn.prepare("x", None, big)), ErrorKind::InvalidArgument);

    // None of the failures recorded a snapshot or left a directory.
    assert_eq!(kind(sn.stat("x")), ErrorKind::NotFound);
    assert_eq!(kind(sn.stat("n")), ErrorKind::NotFound);
    assert_eq!(env.snapshot_dirs(), dirs);
    assert_eq!(
        names(sn.list(&Filters::all()).unwrap()),
        ["active", "base", "view"]
    );
    assert_eq!(sn.stat("active").unwrap().kind, Kind::Active);
}

/// Removal goes children first and deletes the files.
pub fn remove_with_children<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    layer(&env, &sn, "l1", None, &[Change::Write("f", "1")]);
    layer(&env, &sn, "l2", Some("l1"), &[Change::Write("g", "2")]);
    layer(&env, &sn, "l3", Some("l2"), &[Change::Write("h", "3")]);
    sn.prepare("ctr", Some("l3"), Labels::new()).unwrap();

    for key in ["l1", "l2", "l3"] {
        assert_eq!(kind(sn.remove(key)), ErrorKind::FailedPrecondition, "{key}");
    }
    sn.remove("ctr").unwrap();
    assert_eq!(kind(sn.remove("l2")), ErrorKind::FailedPrecondition);
    sn.remove("l3").unwrap();
    sn.remove("l2").unwrap();
    assert_eq!(kind(sn.stat("l2")), ErrorKind::NotFound);
    // l1 survives its children intact.
    let m = env.mount(&sn.view("v", Some("l1"), Labels::new()).unwrap());
    assert_eq!(tree(m.path()), t(&[("f", "1")]));
    drop(m);
    sn.remove("v").unwrap();
    sn.remove("l1").unwrap();
    assert!(sn.list(&Filters::all()).unwrap().is_empty());
    // The files go in the background, soon after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !env.snapshot_dirs().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(env.snapshot_dirs().is_empty(), "{:?}", env.snapshot_dirs());
    // A removed name is free again.
    sn.prepare("l1", None, Labels::new()).unwrap();
}

/// Labels on create, field-mask updates, and commit labels that replace the active ones.
pub fn labels<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    sn.prepare("a", None, l(&[("x", "1"), ("y", "2")])).unwrap();
    let before = sn.stat("a").unwrap();

    let mut info = before.clone();
    info.labels = l(&[("x", "9"), ("z", "3")]);
    let updated = sn
        .update(info.clone(), &["labels.x".into(), "labels.y".into()])
        .unwrap();
    assert_eq!(updated.labels, l(&[("x", "9")]));
    assert_eq!(updated.created_at, before.created_at);
    assert!(updated.updated_at >= before.updated_at);
    assert_eq!(sn.stat("a").unwrap(), updated);

    let all = sn.update(info.clone(), &["labels".into()]).unwrap();
    assert_eq!(all.labels, l(&[("x", "9"), ("z", "3")]));
    info.labels = l(&[("only", "this")]);
    assert_eq!(sn.update(info.clone(), &[]).unwrap().labels, info.labels);

    assert_eq!(
        kind(sn.update(info.clone(), &["parent".into()])),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(sn.update(info.clone(), &["kind".into()])),
        ErrorKind::InvalidArgument
    );
    assert_eq!(sn.stat("a").unwrap().labels, l(&[("only", "this")]));
    let mut missing = info.clone();
    missing.name = "missing".into();
    assert_eq!(kind(sn.update(missing, &[])), ErrorKind::NotFound);
    let mut big = info.clone();
    big.labels = l(&[("k", &"v".repeat(5000))]);
    assert_eq!(kind(sn.update(big, &[])), ErrorKind::InvalidArgument);

    sn.commit("c", "a", l(&[("committed", "yes")])).unwrap();
    assert_eq!(sn.stat("c").unwrap().labels, l(&[("committed", "yes")]));
    let mut c = sn.stat("c").unwrap();
    c.labels = l(&[("containerd.io/gc.root", "now")]);
    sn.update(c, &["labels.containerd.io/gc.root".into()])
        .unwrap();
    assert_eq!(
        sn.stat("c").unwrap().labels,
        l(&[("committed", "yes"), ("containerd.io/gc.root", "now")])
    );
}

/// List with containerd's filter fields: name, parent, kind, labels.
pub fn list_filters<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    sn.prepare("k1", None, l(&[("tier", "base")])).unwrap();
    sn.commit("c1", "k1", l(&[("tier", "base")])).unwrap();
    sn.prepare("k2", Some("c1"), Labels::new()).unwrap();
    sn.commit("c2", "k2", Labels::new()).unwrap();
    sn.prepare("a1", Some("c2"), l(&[("tier", "app")])).unwrap();
    sn.view("v1", Some("c2"), Labels::new()).unwrap();

    let list = |f: &[&str]| names(sn.list(&Filters::parse(f).unwrap()).unwrap());
    assert_eq!(list(&[]), ["a1", "c1", "c2", "v1"]);
    assert_eq!(list(&[""]), ["a1", "c1", "c2", "v1"]);
    assert_eq!(list(&["kind==committed"]), ["c1", "c2"]);
    assert_eq!(list(&["kind==active"]), ["a1"]);
    assert_eq!(list(&["kind==view"]), ["v1"]);
    assert_eq!(list(&["parent==c2"]), ["a1", "v1"]);
    assert_eq!(list(&["parent==c1"]), ["c2"]);
    assert_eq!(list(&["name==c1"]), ["c1"]);
    assert_eq!(list(&["name~=^c"]), ["c1", "c2"]);
    assert_eq!(list(&["labels.tier"]), ["a1", "c1"]);
    assert_eq!(list(&["labels.tier==app"]), ["a1"]);
    assert_eq!(list(&["labels.tier!=app"]), ["c1", "c2", "v1"]);
    assert_eq!(list(&["kind==view", "name==c1"]), ["c1", "v1"]);
    assert_eq!(list(&["kind==committed,labels.tier==base"]), ["c1"]);
    let info = sn
        .list(&Filters::parse(&["name==a1"]).unwrap())
        .unwrap()
        .remove(0);
    assert_eq!(info, sn.stat("a1").unwrap());
}

/// Cleanup removes directories no snapshot owns and keeps every snapshot working.
pub fn cleanup_orphans<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    layer(&env, &sn, "base", None, &[Change::Write("f", "kept")]);
    let mounts = sn.prepare("ctr", Some("base"), Labels::new()).unwrap();
    apply(&env, &mounts, &[Change::Write("g", "also kept")]);
    let live = env.snapshot_dirs();

    let snapshots = env.root.join("snapshots");
    std::fs::create_dir_all(snapshots.join("999999/fs/deep")).unwrap();
    std::fs::write(snapshots.join("999999/fs/deep/file"), "orphan").unwrap();
    std::fs::create_dir(snapshots.join("new-crashed")).unwrap();
    std::fs::create_dir(snapshots.join("rm-17")).unwrap();
    std::fs::write(snapshots.join("stray"), "x").unwrap();
    assert_eq!(env.snapshot_dirs().len(), live.len() + 4);

    sn.cleanup().unwrap();
    assert_eq!(env.snapshot_dirs(), live);
    sn.cleanup().unwrap();
    assert_eq!(env.snapshot_dirs(), live);
    let m = env.mount(&sn.mounts("ctr").unwrap());
    assert_eq!(tree(m.path()), t(&[("f", "kept"), ("g", "also kept")]));
}

/// Everything survives dropping the snapshotter and opening it again.
pub fn reopen<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let (infos, usage, mounts) = {
        let sn = env.open(open);
        layer(&env, &sn, "l1", None, &[Change::Write("f", "1")]);
        layer(&env, &sn, "l2", Some("l1"), &[Change::Write("g", "2")]);
        let mounts = sn.prepare("ctr", Some("l2"), l(&[("app", "web")])).unwrap();
        apply(&env, &mounts, &[Change::Write("h", "3")]);
        sn.view("v", Some("l2"), Labels::new()).unwrap();
        let mut c = sn.stat("l1").unwrap();
        c.labels = l(&[("containerd.io/gc.root", "x")]);
        sn.update(c, &[]).unwrap();
        let infos = sn.list(&Filters::all()).unwrap();
        (infos, sn.usage("l2").unwrap(), mounts)
    };
    let sn = env.open(open);
    let mut after = sn.list(&Filters::all()).unwrap();
    after.sort_by(|a, b| a.name.cmp(&b.name));
    let mut infos = infos;
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(after, infos);
    assert_eq!(sn.usage("l2").unwrap(), usage);
    assert_eq!(sn.mounts("ctr").unwrap(), mounts);
    {
        let m = env.mount(&mounts);
        assert_eq!(tree(m.path()), t(&[("f", "1"), ("g", "2"), ("h", "3")]));
    }
    // New snapshots get fresh ids and directories next to the old ones.
    layer(&env, &sn, "l3", Some("l2"), &[Change::Write("i", "4")]);
    let m = env.mount(&sn.view("v3", Some("l3"), Labels::new()).unwrap());
    assert_eq!(tree(m.path()), t(&[("f", "1"), ("g", "2"), ("i", "4")]));
    drop(m);
    assert_eq!(kind(sn.remove("l2")), ErrorKind::FailedPrecondition);
    sn.remove("ctr").unwrap();
    assert_eq!(kind(sn.stat("ctr")), ErrorKind::NotFound);
}

const FILE_TIME: (i64, i64) = (1_500_000_000, 123_456_789);
const DIR_TIME: (i64, i64) = (1_000_000_000, 5);

fn set_mtime(path: &Path, (sec, nsec): (i64, i64)) {
    let ts = TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn make_special_tree(dir: &Path) {
    let root_mode = std::fs::metadata(dir).unwrap().mode() & 0o7777;
    assert_eq!(root_mode, 0o755, "a new snapshot's root is 0755");
    let d = dir.join("d");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    let f = d.join("f");
    std::fs::write(&f, "data").unwrap();
    std::os::unix::fs::chown(&f, Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(&f, d.join("h")).unwrap();
    std::os::unix::fs::symlink("d/f", dir.join("s")).unwrap();
    std::os::unix::fs::lchown(dir.join("s"), Some(1002), Some(1003)).unwrap();
    nix::unistd::mkfifo(&dir.join("p"), Mode::from_bits_truncate(0o640)).unwrap();
    std::fs::set_permissions(dir.join("p"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let null = nix::sys::stat::makedev(1, 3);
    nix::sys::stat::mknod(
        &dir.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        null,
    )
    .unwrap();
    std::fs::set_permissions(dir.join("null"), std::fs::Permissions::from_mode(0o666)).unwrap();
    set_mtime(&f, FILE_TIME);
    set_mtime(&d, DIR_TIME);
}

fn check_special_tree(dir: &Path, what: &str) {
    let meta = |p: &str| std::fs::symlink_metadata(dir.join(p)).unwrap();
    let d = meta("d");
    assert!(d.is_dir(), "{what}");
    assert_eq!(
        (d.uid(), d.gid(), d.mode() & 0o7777),
        (1000, 1001, 0o750),
        "{what}: d"
    );
    assert_eq!((d.mtime(), d.mtime_nsec()), DIR_TIME, "{what}: d mtime");
    let f = meta("d/f");
    assert_eq!(
        (f.uid(), f.gid(), f.mode() & 0o7777),
        (1000, 1001, 0o4755),
        "{what}: f"
    );
    assert_eq!((f.mtime(), f.mtime_nsec()), FILE_TIME, "{what}: f mtime");
    assert_eq!(std::fs::read_to_string(dir.join("d/f")).unwrap(), "data");
    let h = meta("d/h");
    assert_eq!(h.ino(), f.ino(), "{what}: hard link kept as a hard link");
    assert_eq!(f.nlink(), 2, "{what}");
    let s = meta("s");
    assert!(s.file_type().is_symlink(), "{what}");
    assert_eq!(std::fs::read_link(dir.join("s")).unwrap(), Path::new("d/f"));
    assert_eq!((s.uid(), s.gid()), (1002, 1003), "{what}: symlink owner");
    let p = meta("p");
    assert!(p.file_type().is_fifo(), "{what}");
    assert_eq!(p.mode() & 0o7777, 0o640, "{what}: fifo mode");
    let n = meta("null");
    assert!(n.file_type().is_char_device(), "{what}");
    assert_eq!(
        n.rdev(),
        nix::sys::stat::makedev(1, 3),
        "{what}: device number"
    );
    assert_eq!(n.mode() & 0o7777, 0o666, "{what}: device mode");
}

/// Owners, modes (setuid included), times, hard links, symlinks, fifos and device nodes look
/// the same in children and views as in the layer that made them.
pub fn metadata_preserved<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    let env = Env::new();
    let sn = env.open(open);
    let mounts = sn.prepare("k1", None, Labels::new()).unwrap();
    {
        let m = env.mount(&mounts);
        make_special_tree(m.path());
    }
    sn.commit("m1", "k1", Labels::new()).unwrap();
    {
        let m = env.mount(&sn.view("v1", Some("m1"), Labels::new()).unwrap());
        check_special_tree(m.path(), "view of m1");
    }
    let mounts = sn.prepare("k2", Some("m1"), Labels::new()).unwrap();
    {
        let m = env.mount(&mounts);
        check_special_tree(m.path(), "child of m1");
        assert_eq!(
            std::fs::metadata(m.path()).unwrap().mode() & 0o7777,
            0o755,
            "child root"
        );
        std::fs::write(m.path().join("extra"), "e").unwrap();
    }
    sn.commit("m2", "k2", Labels::new()).unwrap();
    let m = env.mount(&sn.view("v2", Some("m2"), Labels::new()).unwrap());
    check_special_tree(m.path(), "view of m2");
    assert_eq!(
        std::fs::read_to_string(m.path().join("extra")).unwrap(),
        "e"
    );
}

/// 128 layers: each adds a file and rewrites a shared one; a container on top and a view see
/// all of it. Overlay options for this many layers pass the kernel's one-page limit with
/// absolute paths, so this also checks they can be mounted the way containerd mounts them.
pub fn deep_chain<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    const LAYERS: usize = 128;
    let env = Env::new();
    let sn = env.open(open);
    let mut parent: Option<String> = None;
    for i in 1..=LAYERS {
        let name = format!("layer-{i}");
        let file = format!("file-{i}");
        let top = i.to_string();
        layer(
            &env,
            &sn,
            &name,
            parent.as_deref(),
            &[Change::Write(&file, &top), Change::Write("top", &top)],
        );
        parent = Some(name);
    }
    let mut want: BTreeMap<String, String> = (1..=LAYERS)
        .map(|i| (format!("file-{i}"), i.to_string()))
        .collect();
    want.insert("top".into(), LAYERS.to_string());

    let mounts = sn.prepare("ctr", parent.as_deref(), Labels::new()).unwrap();
    {
        let m = env.mount(&mounts);
        assert_eq!(tree(m.path()), want);
        std::fs::write(m.path().join("top"), "container").unwrap();
        assert_eq!(
            std::fs::read_to_string(m.path().join("top")).unwrap(),
            "container"
        );
    }
    let view = sn.view("view", parent.as_deref(), Labels::new()).unwrap();
    let m = env.mount(&view);
    assert_eq!(tree(m.path()), want);
    erofs(&m.path().join("top"));
}

/// Prepares and commits from several threads at once on a shared parent.
pub fn concurrent_prepares<S: Snapshotter, F: Fn(&Path) -> berth_core::Result<S>>(open: &F) {
    const THREADS: usize = 8;
    let env = Env::new();
    let sn = env.open(open);
    layer(&env, &sn, "base", None, &[Change::Write("base", "b")]);
    std::thread::scope(|scope| {
        for i in 0..THREADS {
            let (sn, env) = (&sn, &env);
            scope.spawn(move || {
                let key = format!("k{i}");
                let mounts = sn.prepare(&key, Some("base"), Labels::new()).unwrap();
                let content = i.to_string();
                apply(env, &mounts, &[Change::Write("mine", &content)]);
                sn.commit(&format!("c{i}"), &key, Labels::new()).unwrap();
            });
        }
    });
    let committed = names(
        sn.list(&Filters::parse(&["kind==committed"]).unwrap())
            .unwrap(),
    );
    assert_eq!(committed.len(), THREADS + 1);
    for i in 0..THREADS {
        let m = env.mount(
            &sn.view(&format!("v{i}"), Some(&format!("c{i}")), Labels::new())
                .unwrap(),
        );
        assert_eq!(
            tree(m.path()),
            t(&[("base", "b"), ("mine", &i.to_string())])
        );
    }
    let leftovers: Vec<String> = env
        .snapshot_dirs()
        .into_iter()
        .filter(|d| d.parse::<u64>().is_err())
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left: {leftovers:?}"
    );
}

#[doc(hidden)]
pub use berth_core as __core;

/// Generates one `#[test]` per conformance case for a snapshotter type opened by `$open`
/// (`fn(&Path) -> Result<$snapshotter>`), plus a test that the list here matches [`cases`], so a
/// case added to the suite cannot be silently skipped by an implementation.
#[macro_export]
macro_rules! conformance_tests {
    ($snapshotter:ty, $open:path) => {
        $crate::conformance_tests!(@cases $snapshotter, $open;
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
    };
    (@cases $snapshotter:ty, $open:path; $($name:ident),* $(,)?) => {
        $(#[test] fn $name() { $crate::$name(&$open) })*

        #[test]
        fn every_case_is_listed() {
            type Open = fn(&::std::path::Path) -> $crate::__core::Result<$snapshotter>;
            let listed: Vec<&str> = $crate::cases::<$snapshotter, Open>()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            assert_eq!(listed, [$(stringify!($name)),*]);
        }
    };
}
