//! Namespaces, leases and their resources, and reopening the database.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail by panicking"
)]

mod common;

use berth_core::content::ContentStore;
use berth_core::filters::Filters;
use berth_core::gc::{GarbageCollector, ROOT_LABEL};
use berth_core::labels::Labels;
use berth_core::leases::{LeaseManager, Resource};
use berth_core::namespaces::{NamespaceInfo, NamespaceStore};
use berth_core::{Digest, ErrorKind, Namespace};
use common::{Env, assert_kind, ctx, labels};

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn res(kind: &str, id: &str) -> Resource {
    Resource {
        id: id.into(),
        kind: kind.into(),
    }
}

fn names(infos: Vec<NamespaceInfo>) -> Vec<String> {
    infos.into_iter().map(|i| i.name.to_string()).collect()
}

fn paths(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

#[test]
fn namespace_crud() {
    let env = Env::new();
    let md = &*env.md;
    let snap = labels(&[("containerd.io/defaults/snapshotter", "overlayfs")]);
    let info = NamespaceStore::create(md, &ns("ns1"), snap.clone()).unwrap();
    assert_eq!(info.labels, snap);
    assert_kind(
        NamespaceStore::create(md, &ns("ns1"), Labels::new()),
        ErrorKind::AlreadyExists,
    );
    assert_kind(
        NamespaceStore::create(md, &ns("ns2"), labels(&[("", "v")])),
        ErrorKind::InvalidArgument,
    );
    assert_eq!(md.get(&ns("ns1")).unwrap().labels, snap);
    assert_kind(md.get(&ns("missing")), ErrorKind::NotFound);

    let update = NamespaceInfo {
        name: ns("ns1"),
        labels: labels(&[("a", "1"), ("b", "2")]),
    };
    let got = NamespaceStore::update(md, update.clone(), &paths(&["labels.a"])).unwrap();
    assert_eq!(
        got.labels,
        labels(&[
            ("a", "1"),
            ("containerd.io/defaults/snapshotter", "overlayfs")
        ])
    );
    assert_kind(
        NamespaceStore::update(md, update.clone(), &paths(&["name"])),
        ErrorKind::InvalidArgument,
    );
    let got = NamespaceStore::update(md, update, &[]).unwrap();
    assert_eq!(got.labels, labels(&[("a", "1"), ("b", "2")]));
    assert_eq!(md.get(&ns("ns1")).unwrap().labels, got.labels);

    // An update is a write: it creates the namespace.
    NamespaceStore::update(
        md,
        NamespaceInfo {
            name: ns("made-by-update"),
            labels: labels(&[("x", "y")]),
        },
        &[],
    )
    .unwrap();
    assert_eq!(
        md.get(&ns("made-by-update")).unwrap().labels,
        labels(&[("x", "y")])
    );

    assert_eq!(
        names(NamespaceStore::list(md, &Filters::all()).unwrap()),
        vec!["made-by-update", "ns1"]
    );
    assert_eq!(
        names(NamespaceStore::list(md, &Filters::parse(&["labels.a==1"]).unwrap()).unwrap()),
        vec!["ns1"]
    );
}

#[test]
fn writes_create_their_namespace() {
    let env = Env::new();
    let md = &*env.md;
    LeaseManager::create(md, &ctx("by-lease"), "l", Labels::new()).unwrap();
    md.get(&ns("by-lease")).unwrap();
    drop(md.writer(&ctx("by-writer"), "r", 0, None).unwrap());
    md.get(&ns("by-writer")).unwrap();
    env.ingest(&ctx("by-commit"), b"x", Labels::new());
    md.get(&ns("by-commit")).unwrap();
    // Reads do not.
    assert!(
        ContentStore::list(md, &ctx("by-read"), &Filters::all())
            .unwrap()
            .is_empty()
    );
    assert_kind(md.get(&ns("by-read")), ErrorKind::NotFound);
}

#[test]
fn namespace_delete_requires_it_to_be_empty() {
    // No background collection: it would sweep the unleased ingest this test relies on.
    let env = Env::with_debounce(std::time::Duration::from_secs(3600));
    let md = &*env.md;
    let c = ctx("busy");
    let name = ns("busy");
    assert_kind(NamespaceStore::delete(md, &name), ErrorKind::NotFound);

    let digest = env.ingest(&c, b"content", Labels::new());
    let err = assert_kind(
        NamespaceStore::delete(md, &name),
        ErrorKind::FailedPrecondition,
    );
    assert_eq!(
        err.message(),
        "namespace busy must be empty, but it still has content"
    );
    ContentStore::delete(md, &c, &digest).unwrap();

    drop(md.writer(&c, "partial", 0, None).unwrap());
    LeaseManager::create(md, &c, "l", Labels::new()).unwrap();
    let err = assert_kind(
        NamespaceStore::delete(md, &name),
        ErrorKind::FailedPrecondition,
    );
    assert_eq!(
        err.message(),
        "namespace busy must be empty, but it still has ingests, leases"
    );
    md.abort(&c, "partial").unwrap();
    LeaseManager::delete(md, &c, "l", false).unwrap();

    NamespaceStore::delete(md, &name).unwrap();
    assert_kind(md.get(&name), ErrorKind::NotFound);
}

#[test]
fn leases_and_resources() {
    let env = Env::new();
    let md = &*env.md;
    let c = ctx("default");
    let digest = Digest::of(b"x");

    assert_kind(
        LeaseManager::create(md, &c, "", Labels::new()),
        ErrorKind::InvalidArgument,
    );
    // containerd's generated ids (e.g. "650140003-L9-_") are accepted as they are.
    LeaseManager::create(md, &ctx("generated"), "650140003-L9-_", Labels::new()).unwrap();
    let lease = LeaseManager::create(md, &c, "l1", labels(&[("k", "v")])).unwrap();
    assert_eq!(lease.id, "l1");
    assert_eq!(lease.labels, labels(&[("k", "v")]));
    assert_kind(
        LeaseManager::create(md, &c, "l1", Labels::new()),
        ErrorKind::AlreadyExists,
    );
    LeaseManager::create(md, &c, "l2", Labels::new()).unwrap();
    LeaseManager::create(md, &ctx("elsewhere"), "l3", Labels::new()).unwrap();

    let ids = |f: &[&str]| -> Vec<String> {
        LeaseManager::list(md, &c, &Filters::parse(f).unwrap())
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect()
    };
    assert_eq!(ids(&[]), vec!["l1", "l2"]);
    assert_eq!(ids(&["id==l2"]), vec!["l2"]);
    assert_eq!(ids(&["labels.k==v"]), vec!["l1"]);

    for r in [
        res("content", digest.as_str()),
        res("ingests", "layer-sha256:abc"),
        res("snapshots/overlayfs", "extract-1 sha256:def"),
    ] {
        md.add_resource(&c, "l1", r).unwrap();
    }
    for bad in [
        res("content", "not-a-digest"),
        res("images", "x"),
        res("snapshots/", "k"),
    ] {
        assert_kind(md.add_resource(&c, "l1", bad), ErrorKind::InvalidArgument);
    }
    assert_kind(
        md.add_resource(&c, "nope", res("ingests", "r")),
        ErrorKind::NotFound,
    );
    let mut got = md.list_resources(&c, "l1").unwrap();
    got.sort();
    let mut want = vec![
        res("content", digest.as_str()),
        res("ingests", "layer-sha256:abc"),
        res("snapshots/overlayfs", "extract-1 sha256:def"),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(md.list_resources(&c, "l2").unwrap().is_empty());
    assert_kind(md.list_resources(&c, "nope"), ErrorKind::NotFound);
    // Leases are per namespace.
    assert_kind(md.list_resources(&c, "l3"), ErrorKind::NotFound);

    md.delete_resource(&c, "l1", res("ingests", "layer-sha256:abc"))
        .unwrap();
    assert_eq!(md.list_resources(&c, "l1").unwrap().len(), 2);
    assert_kind(
        md.delete_resource(&c, "nope", res("ingests", "r")),
        ErrorKind::NotFound,
    );

    LeaseManager::delete(md, &c, "l1", false).unwrap();
    assert_kind(
        LeaseManager::delete(md, &c, "l1", false),
        ErrorKind::NotFound,
    );
    assert_eq!(ids(&[]), vec!["l2"]);
    // Recreating the id starts with no resources.
    LeaseManager::create(md, &c, "l1", Labels::new()).unwrap();
    assert!(md.list_resources(&c, "l1").unwrap().is_empty());
}

#[test]
fn writers_attach_ingests_then_content_to_their_lease() {
    let env = Env::new();
    let md = &*env.md;
    let c = ctx("default");
    assert_kind(
        md.writer(&c.clone().with_lease("missing"), "r", 0, None),
        ErrorKind::NotFound,
    );
    LeaseManager::create(md, &c, "pull", Labels::new()).unwrap();
    let leased = c.clone().with_lease("pull");
    let mut w = md.writer(&leased, "layer-1", 0, None).unwrap();
    assert_eq!(
        md.list_resources(&c, "pull").unwrap(),
        vec![res("ingests", "layer-1")]
    );
    w.write(b"layer bytes").unwrap();
    let digest = w.commit(0, None, Labels::new()).unwrap();
    assert_eq!(
        md.list_resources(&c, "pull").unwrap(),
        vec![res("content", digest.as_str())]
    );
}

#[test]
fn a_writer_for_content_already_held_still_leases_it() {
    let env = Env::new();
    let md = &*env.md;
    let c = ctx("default");
    let digest = env.ingest(&c, b"already here", Labels::new());
    LeaseManager::create(md, &c, "pull", Labels::new()).unwrap();
    let leased = c.clone().with_lease("pull");
    assert_kind(
        md.writer(&leased, "layer-x", 0, Some(digest.clone())),
        ErrorKind::AlreadyExists,
    );
    assert_eq!(
        md.list_resources(&c, "pull").unwrap(),
        vec![res("content", digest.as_str())],
        "the lease must hold the blob the pull skipped"
    );
    // So a collection keeps it while the lease lives, and takes it once the lease goes.
    md.collect().unwrap();
    assert!(md.info(&c, &digest).is_ok());
    LeaseManager::delete(md, &c, "pull", true).unwrap();
    assert_kind(md.info(&c, &digest), ErrorKind::NotFound);
}

#[test]
fn restart_keeps_everything() {
    let env = Env::new();
    let c = ctx("default");
    NamespaceStore::create(&*env.md, &ns("default"), labels(&[("team", "a")])).unwrap();
    LeaseManager::create(&*env.md, &c, "pull", labels(&[("k", "v")])).unwrap();
    let leased = c.clone().with_lease("pull");
    let held = env.ingest(&leased, b"held by the lease", Labels::new());
    let rooted = env.ingest(&c, b"a root", labels(&[(ROOT_LABEL, "")]));
    env.md
        .add_resource(&c, "pull", res("snapshots/overlayfs", "key-1"))
        .unwrap();
    {
        let mut w = env.writer(&leased, "in-progress", 100, None).unwrap();
        w.write(&[7; 40]).unwrap();
    }
    let before = env.info(&c, &rooted).unwrap();

    let env = env.restart();
    let md = &*env.md;
    assert_eq!(
        md.get(&ns("default")).unwrap().labels,
        labels(&[("team", "a")])
    );
    let leases = LeaseManager::list(md, &c, &Filters::all()).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].labels, labels(&[("k", "v")]));
    let mut resources = md.list_resources(&c, "pull").unwrap();
    resources.sort();
    let mut want = vec![
        res("content", held.as_str()),
        res("ingests", "in-progress"),
        res("snapshots/overlayfs", "key-1"),
    ];
    want.sort();
    assert_eq!(resources, want);
    assert_eq!(md.info(&c, &rooted).unwrap(), before);
    assert_eq!(md.status(&c, "in-progress").unwrap().offset, 40);

    let stats = md.collect().unwrap();
    assert_eq!((stats.records_removed, stats.ingests_removed), (0, 0));
    assert!(env.on_disk(&held) && env.on_disk(&rooted));

    // The resumed ingest finishes after the restart.
    let mut w = md.writer(&leased, "in-progress", 100, None).unwrap();
    w.write(&[7; 60]).unwrap();
    let digest = w.commit(100, None, Labels::new()).unwrap();
    assert_eq!(digest, Digest::of(&[7; 100]));
}

/// Lease creates (and deletes of expiring leases) are committed without their own flush; a
/// clean restart still keeps every one of them.
#[test]
fn lease_creates_and_deletes_survive_a_restart() {
    let env = Env::new();
    let c = ctx("default");
    let expiring = labels(&[(berth_core::leases::EXPIRE_LABEL, "2099-01-01T00:00:00Z")]);
    for (id, l) in [
        ("keep", Labels::new()),
        ("keep-expiring", expiring.clone()),
        ("gone", Labels::new()),
        ("gone-expiring", expiring),
    ] {
        LeaseManager::create(&*env.md, &c, id, l).unwrap();
    }
    LeaseManager::delete(&*env.md, &c, "gone", false).unwrap();
    LeaseManager::delete(&*env.md, &c, "gone-expiring", false).unwrap();
    let env = env.restart();
    let mut ids: Vec<String> = LeaseManager::list(&*env.md, &c, &Filters::all())
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["keep", "keep-expiring"]);
}
