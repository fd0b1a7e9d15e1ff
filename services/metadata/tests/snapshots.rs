//! The namespaced snapshot view over real native snapshotters: per-namespace keys, errors,
//! leases, namespace deletion, garbage collection of snapshots and cleanup of orphans.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::filters::Filters;
use berth_core::gc::{GarbageCollector, REF_CONTENT_PREFIX, REF_SNAPSHOT_PREFIX, ROOT_LABEL};
use berth_core::labels::Labels;
use berth_core::leases::{FLAT_LABEL, LeaseManager, Resource};
use berth_core::mount::Mount;
use berth_core::namespaces::NamespaceStore;
use berth_core::snapshots::{Info, Kind, SnapshotStore, Snapshotter};
use berth_core::{ErrorKind, Namespace, RequestContext};
use berth_snapshot_native::NativeSnapshotter;
use common::{Env, assert_kind, ctx, labels};

const SN: &str = "native";
/// A second backend (also native) under the name image configs reference.
const OTHER: &str = "overlayfs";

/// A metadata store with two native backends registered.
struct Snaps {
    backend: Arc<NativeSnapshotter>,
    other: Arc<NativeSnapshotter>,
    env: Env,
}

impl Snaps {
    fn new() -> Self {
        Self::on(Env::new())
    }

    fn on(env: Env) -> Self {
        let backend = Arc::new(NativeSnapshotter::open(env.dir.path().join("native")).unwrap());
        let other = Arc::new(NativeSnapshotter::open(env.dir.path().join("other")).unwrap());
        env.md.add_snapshotter(SN, backend.clone()).unwrap();
        env.md.add_snapshotter(OTHER, other.clone()).unwrap();
        Self {
            backend,
            other,
            env,
        }
    }

    /// Drops everything and opens the same directories again, as a daemon restart does.
    fn restart(self) -> Self {
        let Snaps {
            backend,
            other,
            env,
        } = self;
        drop((backend, other));
        Self::on(env.restart())
    }

    fn store(&self) -> &dyn SnapshotStore {
        &*self.env.md
    }

    fn prepare(&self, c: &RequestContext, key: &str, parent: Option<&str>) -> PathBuf {
        let mounts = self
            .store()
            .prepare(c, SN, key, parent, Labels::new())
            .unwrap();
        dir_of(&mounts)
    }

    fn commit(&self, c: &RequestContext, name: &str, key: &str, with: Labels) {
        self.store().commit(c, SN, name, key, with).unwrap();
    }

    /// The backend's own keys.
    fn backend_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .backend
            .list(&Filters::all())
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        keys.sort();
        keys
    }

    fn names(&self, c: &RequestContext) -> Vec<String> {
        self.store()
            .list(c, SN, &Filters::all())
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    /// Prepares `key` on `parent`, writes `file`, and commits it as `name`.
    fn layer(
        &self,
        c: &RequestContext,
        name: &str,
        parent: Option<&str>,
        file: &str,
        with: Labels,
    ) {
        let key = format!("extract-{name}");
        let dir = self.prepare(c, &key, parent);
        std::fs::write(dir.join(file), name).unwrap();
        self.commit(c, name, &key, with);
    }
}

/// The directory a native snapshot's single bind mount shows.
fn dir_of(mounts: &[Mount]) -> PathBuf {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].kind, "bind");
    PathBuf::from(&mounts[0].source)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn keys_are_per_namespace() {
    let s = Snaps::new();
    let (a, b) = (ctx("team-a"), ctx("team-b"));
    let dir_a = s.prepare(&a, "rootfs", None);
    let dir_b = s.prepare(&b, "rootfs", None);
    assert_ne!(dir_a, dir_b);
    std::fs::write(dir_a.join("who"), "a").unwrap();
    std::fs::write(dir_b.join("who"), "b").unwrap();

    // Each namespace's key is its own backend snapshot, named <ns>/<seq>/<key>.
    let keys = s.backend_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("team-a/") && k.ends_with("/rootfs"))
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("team-b/") && k.ends_with("/rootfs"))
    );

    assert_eq!(s.names(&a), ["rootfs"]);
    assert_eq!(s.names(&ctx("team-c")), Vec::<String>::new());
    assert_kind(
        s.store().stat(&ctx("team-c"), SN, "rootfs"),
        ErrorKind::NotFound,
    );
    // The other snapshotter has nothing under the same key.
    assert_kind(s.store().stat(&a, OTHER, "rootfs"), ErrorKind::NotFound);

    s.commit(&a, "base", "rootfs", Labels::new());
    // Committed names are per namespace too: b cannot build on a's layer.
    let err = assert_kind(
        s.store()
            .prepare(&b, SN, "child", Some("base"), Labels::new()),
        ErrorKind::NotFound,
    );
    assert!(err.to_string().contains("base"), "{err}");
    s.commit(&b, "base", "rootfs", Labels::new());
    let child_b = s.prepare(&b, "child", Some("base"));
    assert_eq!(read(&child_b.join("who")), "b");
    let child_a = s.prepare(&a, "child", Some("base"));
    assert_eq!(read(&child_a.join("who")), "a");

    // Removing in one namespace leaves the other's alone.
    s.store().remove(&a, SN, "child").unwrap();
    assert_kind(s.store().stat(&a, SN, "child"), ErrorKind::NotFound);
    assert_eq!(s.store().stat(&b, SN, "child").unwrap().kind, Kind::Active);
    assert!(
        !child_a.exists(),
        "the backend's files go with the snapshot"
    );
    assert!(child_b.exists());
}

#[test]
fn lifecycle_and_info() {
    let s = Snaps::new();
    let c = ctx("default");
    let l1 = s.prepare(&c, "extract-1", None);
    std::fs::write(l1.join("etc-file"), "one").unwrap();
    let active = s.store().stat(&c, SN, "extract-1").unwrap();
    assert_eq!(
        (active.kind, active.parent.as_deref()),
        (Kind::Active, None)
    );
    assert!(s.store().usage(&c, SN, "extract-1").unwrap().size >= 3);
    assert_eq!(dir_of(&s.store().mounts(&c, SN, "extract-1").unwrap()), l1);

    s.commit(&c, "sha256:c1", "extract-1", labels(&[("layer", "1")]));
    assert_kind(s.store().stat(&c, SN, "extract-1"), ErrorKind::NotFound);
    let committed = s.store().stat(&c, SN, "sha256:c1").unwrap();
    assert_eq!(committed.kind, Kind::Committed);
    assert_eq!(committed.labels, labels(&[("layer", "1")]));
    assert!(s.store().usage(&c, SN, "sha256:c1").unwrap().size >= 3);
    // A committed snapshot has no mounts of its own.
    assert_kind(
        s.store().mounts(&c, SN, "sha256:c1"),
        ErrorKind::FailedPrecondition,
    );

    let l2 = s.prepare(&c, "extract-2", Some("sha256:c1"));
    assert_eq!(read(&l2.join("etc-file")), "one");
    std::fs::write(l2.join("etc-file"), "two").unwrap();
    s.commit(&c, "sha256:c2", "extract-2", Labels::new());
    let view = s
        .store()
        .view(&c, SN, "look", Some("sha256:c2"), Labels::new())
        .unwrap();
    assert!(view[0].is_read_only());
    assert_eq!(read(&dir_of(&view).join("etc-file")), "two");
    let info = s.store().stat(&c, SN, "look").unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::View, Some("sha256:c2"))
    );

    // Lists see the namespace's records; filters apply to them.
    let f = |x: &str| Filters::parse(&[x]).unwrap();
    let names = |list: Vec<Info>| list.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.store().list(&c, SN, &f("kind==committed")).unwrap()),
        ["sha256:c1", "sha256:c2"]
    );
    assert_eq!(
        names(s.store().list(&c, SN, &f("parent==sha256:c2")).unwrap()),
        ["look"]
    );
    assert_eq!(
        names(s.store().list(&c, SN, &f("labels.layer==1")).unwrap()),
        ["sha256:c1"]
    );

    // Label updates under a field mask.
    let mut update = committed.clone();
    update.labels = labels(&[("extra", "x")]);
    let updated = s
        .store()
        .update(&c, SN, update, &["labels.extra".to_owned()])
        .unwrap();
    assert_eq!(updated.labels, labels(&[("extra", "x"), ("layer", "1")]));
    assert!(updated.updated_at >= committed.updated_at);
    assert_eq!(
        s.store().stat(&c, SN, "sha256:c1").unwrap().labels,
        updated.labels
    );
    assert_kind(
        s.store()
            .update(&c, SN, committed.clone(), &["kind".to_owned()]),
        ErrorKind::InvalidArgument,
    );

    // Children first.
    assert_kind(
        s.store().remove(&c, SN, "sha256:c2"),
        ErrorKind::FailedPrecondition,
    );
    s.store().remove(&c, SN, "look").unwrap();
    s.store().remove(&c, SN, "sha256:c2").unwrap();
    s.store().remove(&c, SN, "sha256:c1").unwrap();
    assert!(s.names(&c).is_empty());
    assert!(s.backend_keys().is_empty());
}

#[test]
fn errors() {
    let s = Snaps::new();
    let c = ctx("default");
    for name in ["", "zfs"] {
        let err = assert_kind(
            s.store().prepare(&c, name, "k", None, Labels::new()),
            ErrorKind::InvalidArgument,
        );
        assert!(
            err.to_string()
                .contains(&format!("snapshotter not loaded: {name}")),
            "{err}"
        );
        assert_kind(
            s.store().list(&c, name, &Filters::all()),
            ErrorKind::InvalidArgument,
        );
    }
    assert_eq!(s.store().snapshotters(), ["native", "overlayfs"]);

    assert_kind(
        s.store().prepare(&c, SN, "", None, Labels::new()),
        ErrorKind::InvalidArgument,
    );
    s.prepare(&c, "k", None);
    let err = assert_kind(
        s.store().prepare(&c, SN, "k", None, Labels::new()),
        ErrorKind::AlreadyExists,
    );
    assert!(err.to_string().contains("\"k\""), "{err}");
    assert_kind(
        s.store().view(&c, SN, "v", Some("missing"), Labels::new()),
        ErrorKind::NotFound,
    );
    // An active snapshot cannot be a parent.
    assert_kind(
        s.store().prepare(&c, SN, "k2", Some("k"), Labels::new()),
        ErrorKind::FailedPrecondition,
    );
    // A view cannot be committed; the name must be free.
    s.store().view(&c, SN, "v", None, Labels::new()).unwrap();
    assert_kind(
        s.store().commit(&c, SN, "x", "v", Labels::new()),
        ErrorKind::FailedPrecondition,
    );
    s.prepare(&c, "k3", None);
    assert_kind(
        s.store().commit(&c, SN, "k", "k3", Labels::new()),
        ErrorKind::AlreadyExists,
    );
    assert_kind(
        s.store().commit(&c, SN, "x", "gone", Labels::new()),
        ErrorKind::NotFound,
    );
    assert_kind(s.store().remove(&c, SN, "gone"), ErrorKind::NotFound);
    // Failures leave nothing behind in the backend.
    assert_eq!(s.backend_keys().len(), 3, "{:?}", s.backend_keys());
    // Backend errors name the namespace's key, not the backend's.
    let err = assert_kind(s.store().mounts(&c, SN, "x"), ErrorKind::NotFound);
    assert!(!err.to_string().contains("default/"), "{err}");
}

#[test]
fn leases_hold_what_was_made_under_them() {
    let s = Snaps::new();
    let c = ctx("default");
    LeaseManager::create(&*s.env.md, &c, "unpack", Labels::new()).unwrap();
    let leased = c.clone().with_lease("unpack");
    s.store()
        .prepare(&leased, SN, "extract-1", None, Labels::new())
        .unwrap();
    let res = |kind: &str, id: &str| Resource {
        kind: kind.to_owned(),
        id: id.to_owned(),
    };
    assert_eq!(
        s.env.md.list_resources(&c, "unpack").unwrap(),
        [res("snapshots/native", "extract-1")]
    );
    s.store()
        .commit(&leased, SN, "sha256:c1", "extract-1", Labels::new())
        .unwrap();
    assert_eq!(
        s.env.md.list_resources(&c, "unpack").unwrap(),
        [res("snapshots/native", "sha256:c1")]
    );
    // A lease that does not exist is refused before anything is made.
    assert_kind(
        s.store()
            .prepare(&c.clone().with_lease("nope"), SN, "k", None, Labels::new()),
        ErrorKind::NotFound,
    );
    assert_eq!(s.backend_keys().len(), 1);

    // Held by the lease, the layer survives collection; once the lease goes, it does not.
    s.env.md.collect().unwrap();
    assert!(s.store().stat(&c, SN, "sha256:c1").is_ok());
    LeaseManager::delete(&*s.env.md, &c, "unpack", true).unwrap();
    assert_kind(s.store().stat(&c, SN, "sha256:c1"), ErrorKind::NotFound);
    assert!(s.backend_keys().is_empty());
}

#[test]
fn namespace_delete_refuses_snapshots() {
    let s = Snaps::new();
    let c = ctx("web");
    s.prepare(&c, "k", None);
    let ns = Namespace::new("web").unwrap();
    let err = assert_kind(
        NamespaceStore::delete(&*s.env.md, &ns),
        ErrorKind::FailedPrecondition,
    );
    assert!(err.to_string().contains("snapshots"), "{err}");
    s.store().remove(&c, SN, "k").unwrap();
    NamespaceStore::delete(&*s.env.md, &ns).unwrap();
}

#[test]
fn gc_removes_unreferenced_chains_and_keeps_referenced_ones() {
    let s = Snaps::new();
    let c = ctx("default");
    // A loose chain: nothing holds it.
    s.layer(&c, "loose-1", None, "f", Labels::new());
    s.layer(&c, "loose-2", Some("loose-1"), "f", Labels::new());
    // A chain whose top is a GC root keeps its parents.
    s.layer(&c, "root-1", None, "f", Labels::new());
    s.layer(
        &c,
        "root-2",
        Some("root-1"),
        "f",
        labels(&[(ROOT_LABEL, "2024-01-01T00:00:00Z")]),
    );
    // A chain an image config references through content; the config is a root.
    s.layer(&c, "img-1", None, "f", Labels::new());
    s.layer(&c, "img-2", Some("img-1"), "f", Labels::new());
    let config = s.env.ingest(
        &c,
        b"{\"config\":1}",
        labels(&[
            (ROOT_LABEL, "x"),
            (&format!("{REF_SNAPSHOT_PREFIX}{SN}"), "img-2"),
        ]),
    );
    // A snapshot's content reference keeps that content.
    let referenced = s.env.ingest(&c, b"kept by a snapshot", Labels::new());
    s.layer(
        &c,
        "holder",
        None,
        "f",
        labels(&[
            (ROOT_LABEL, "x"),
            (&format!("{REF_CONTENT_PREFIX}.l.0"), referenced.as_str()),
        ]),
    );
    // The same key under another snapshotter is another snapshot, and nothing holds it.
    s.env
        .md
        .prepare(&c, OTHER, "img-2", None, Labels::new())
        .unwrap();
    // An active snapshot nothing holds goes too.
    s.prepare(&c, "scratch", None);

    s.env.md.collect().unwrap();
    let mut names = s.names(&c);
    names.sort();
    assert_eq!(
        names,
        ["holder", "img-1", "img-2", "root-1", "root-2"],
        "what survives"
    );
    assert_eq!(s.backend_keys().len(), 5, "{:?}", s.backend_keys());
    assert!(s.other.list(&Filters::all()).unwrap().is_empty());
    assert!(s.env.info(&c, &referenced).is_ok());
    assert!(s.env.info(&c, &config).is_ok());
    // Only the backend's snapshot directories of live snapshots are left, once the removed
    // ones (renamed to `rm-*`) are deleted in the background.
    let dir = s.backend.root().join("snapshots");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let dirs = loop {
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if !names.iter().any(|n| n.starts_with("rm-")) || std::time::Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(dirs.len(), 5, "{dirs:?}");

    // Dropping the config's root label lets the image chain go too.
    drop_root_label(&s.env, &c, &config);
    s.env.md.collect().unwrap();
    let mut names = s.names(&c);
    names.sort();
    assert_eq!(names, ["holder", "root-1", "root-2"]);
    assert_eq!(s.backend_keys().len(), 3);
}

fn drop_root_label(env: &Env, c: &RequestContext, digest: &berth_core::Digest) {
    let mut info = env.info(c, digest).unwrap();
    info.labels.remove(ROOT_LABEL);
    env.update(c, info, &["labels".to_owned()]).unwrap();
}

#[test]
fn flat_leases_do_not_follow_labels() {
    let s = Snaps::new();
    let c = ctx("default");
    let blob = s.env.ingest(&c, b"only a label names me", Labels::new());
    LeaseManager::create(&*s.env.md, &c, "flat", labels(&[(FLAT_LABEL, "1")])).unwrap();
    let leased = c.clone().with_lease("flat");
    s.layer(&c, "base", None, "f", Labels::new());
    s.store()
        .prepare(
            &leased,
            SN,
            "top",
            Some("base"),
            labels(&[(REF_CONTENT_PREFIX, blob.as_str())]),
        )
        .unwrap();
    s.env.md.collect().unwrap();
    // The lease keeps its snapshot and the parent it needs, not what its labels name.
    let mut names = s.names(&c);
    names.sort();
    assert_eq!(names, ["base", "top"]);
    assert_kind(s.env.info(&c, &blob), ErrorKind::NotFound);
}

#[test]
fn cleanup_removes_what_no_record_names() {
    let s = Snaps::new();
    let c = ctx("default");
    s.prepare(&c, "kept", None);
    // What a crash between the backend's prepare and the record's commit leaves behind.
    s.backend
        .prepare("default/99/half-made", None, Labels::new())
        .unwrap();
    assert_eq!(s.backend_keys().len(), 2);
    assert!(s.names(&c) == ["kept"], "the orphan is not visible");
    s.store().cleanup(&c, SN).unwrap();
    let keys = s.backend_keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("/kept"));
    assert!(s.store().stat(&c, SN, "kept").is_ok());
}

#[test]
fn records_survive_a_restart_and_keys_are_not_reused() {
    let s = Snaps::new();
    let c = ctx("default");
    s.layer(&c, "base", None, "f", labels(&[(ROOT_LABEL, "x")]));
    let before = s.backend_keys();
    let s = s.restart();
    assert_eq!(
        s.store().stat(&c, SN, "base").unwrap().kind,
        Kind::Committed
    );
    let dir = s.prepare(&c, "extract-base", Some("base"));
    assert_eq!(read(&dir.join("f")), "base");
    let after = s.backend_keys();
    assert_eq!(after.len(), 2);
    // The new backend key has a sequence number never used before.
    let new = after.iter().find(|k| !before.contains(k)).unwrap();
    let seq = |k: &str| k.split('/').nth(1).unwrap().parse::<u64>().unwrap();
    assert!(before.iter().all(|b| seq(b) < seq(new)), "{before:?} {new}");
}

#[test]
fn a_backend_removal_a_crash_undid_is_redone_by_the_next_collection() {
    let s = Snaps::new();
    let c = ctx("default");
    s.layer(&c, "base", None, "f", labels(&[(ROOT_LABEL, "x")]));
    let base_key = s
        .backend_keys()
        .into_iter()
        .find(|k| k.ends_with("/base"))
        .unwrap();
    // The backend commits a removal without its own flush, after the metadata store has
    // durably forgotten the snapshot. A crash in between brings the backend's record back,
    // while its directory is already set aside or deleted: that state, made by hand.
    let mounts = s
        .backend
        .prepare("default/97/lost", Some(&base_key), Labels::new())
        .unwrap();
    std::fs::remove_dir_all(dir_of(&mounts)).unwrap();
    assert!(s.names(&c) == ["base"], "nothing records the lost removal");
    // While it lingers its parent cannot go from the backend; the collection clears both.
    s.store().remove(&c, SN, "base").unwrap();
    assert_eq!(s.backend_keys().len(), 2, "{:?}", s.backend_keys());
    s.env.md.collect().unwrap();
    assert!(s.backend_keys().is_empty(), "{:?}", s.backend_keys());
    assert!(s.names(&c).is_empty());
}
