//! Container records: the store's contract, namespace rules, persistence, and containers as GC
//! roots of their snapshot and of what their labels reference.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail by panicking"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_core::containers::{Container, ContainerStore, RUNTIME_SPEC_TYPE_URL};
use berth_core::filters::Filters;
use berth_core::gc::{GarbageCollector, REF_CONTENT_PREFIX};
use berth_core::labels::Labels;
use berth_core::namespaces::NamespaceStore;
use berth_core::snapshots::SnapshotStore;
use berth_core::{AnyValue, ErrorKind, Namespace, RequestContext};
use berth_snapshot_native::NativeSnapshotter;
use common::{Env, assert_kind, ctx, eventually, labels};

fn containers(env: &Env) -> &dyn ContainerStore {
    &*env.md
}

fn spec(json: &str) -> AnyValue {
    AnyValue::new(RUNTIME_SPEC_TYPE_URL, json.as_bytes())
}

fn container(id: &str) -> Container {
    let mut c = Container::new(
        id,
        "io.containerd.runc.v2",
        spec(r#"{"ociVersion":"1.0.2"}"#),
    );
    c.runtime.options = Some(AnyValue::new("containerd.runc.v1.Options", vec![]));
    c.image = "docker.io/library/busybox:latest".into();
    c
}

fn ids(env: &Env, c: &RequestContext, filters: &[&str]) -> Vec<String> {
    containers(env)
        .list(c, &Filters::parse(filters).unwrap())
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[test]
fn create_get_list_update_delete() {
    let env = Env::new();
    let c = ctx("default");
    let before = SystemTime::now();

    let mut web = container("web");
    web.labels = labels(&[("tier", "front")]);
    web.snapshotter = "overlayfs".into();
    web.snapshot_key = "web".into();
    web.extensions
        .insert("berth".into(), AnyValue::new("x.Y", b"data".to_vec()));
    // Times the client sends (Go's year 1 arrives as the epoch) are ignored.
    web.created_at = SystemTime::UNIX_EPOCH;
    let created = containers(&env).create(&c, web.clone()).unwrap();
    assert!(created.created_at >= before, "{created:?}");
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        Container {
            created_at: web.created_at,
            updated_at: web.updated_at,
            ..created.clone()
        },
        web
    );
    assert_eq!(containers(&env).get(&c, "web").unwrap(), created);

    let err = assert_kind(
        containers(&env).create(&c, web.clone()),
        ErrorKind::AlreadyExists,
    );
    assert!(err.to_string().contains("\"web\""), "{err}");

    let mut db = container("db");
    db.runtime.name = "io.berth.v1".into();
    db.image = "postgres:16".into();
    db.snapshotter = "native".into();
    db.snapshot_key = "db-rootfs".into();
    containers(&env).create(&c, db).unwrap();
    containers(&env).create(&c, container("cache")).unwrap();

    assert_eq!(ids(&env, &c, &[]), ["cache", "db", "web"]);
    assert_eq!(ids(&env, &c, &[""]), ["cache", "db", "web"]);
    assert_eq!(ids(&env, &c, &["id==web"]), ["web"]);
    assert_eq!(ids(&env, &c, &["labels.tier==front"]), ["web"]);
    assert_eq!(ids(&env, &c, &["runtime.name==io.berth.v1"]), ["db"]);
    assert_eq!(ids(&env, &c, &["image~=busybox"]), ["cache", "web"]);
    assert_eq!(
        ids(&env, &c, &["snapshotter==native", "id==cache"]),
        ["cache", "db"]
    );
    assert_eq!(ids(&env, &c, &["image~=busybox,labels.tier"]), ["web"]);
    assert!(ids(&env, &c, &["id==nope"]).is_empty());

    // A label update under a mask keeps everything else and the creation time.
    std::thread::sleep(Duration::from_millis(2));
    let mut change = container("web");
    change.labels = labels(&[("extra", "1"), ("tier", "")]);
    change.image = "ignored".into();
    let updated = containers(&env)
        .update(&c, change, &["labels.extra".into(), "labels.tier".into()])
        .unwrap();
    assert_eq!(updated.labels, labels(&[("extra", "1")]));
    assert_eq!(updated.image, web.image);
    assert_eq!(updated.snapshot_key, "web");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at > created.updated_at);

    // Named fields, then an empty mask that replaces every mutable field.
    let mut change = container("web");
    change.spec = Some(spec(r#"{"ociVersion":"1.1.0"}"#));
    change.snapshot_key = "web-2".into();
    change.snapshotter = "overlayfs".into();
    let updated = containers(&env)
        .update(&c, change.clone(), &["spec".into(), "snapshotkey".into()])
        .unwrap();
    assert_eq!(updated.spec, change.spec);
    assert_eq!(updated.snapshot_key, "web-2");
    assert_eq!(updated.extensions.len(), 1, "extensions untouched");
    let updated = containers(&env).update(&c, change.clone(), &[]).unwrap();
    assert_eq!(updated.labels, Labels::new());
    assert!(updated.extensions.is_empty());
    assert_eq!(updated.image, change.image);
    assert_eq!(containers(&env).get(&c, "web").unwrap(), updated);

    containers(&env).delete(&c, "web").unwrap();
    let err = assert_kind(containers(&env).get(&c, "web"), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "container \"web\" in namespace \"default\": not found"
    );
    assert_kind(containers(&env).delete(&c, "web"), ErrorKind::NotFound);
    assert_eq!(ids(&env, &c, &[]), ["cache", "db"]);
}

#[test]
fn errors() {
    let env = Env::new();
    let c = ctx("default");
    assert_kind(containers(&env).get(&c, "missing"), ErrorKind::NotFound);
    assert_kind(
        containers(&env).update(&c, container("missing"), &[]),
        ErrorKind::NotFound,
    );
    assert_kind(
        containers(&env).get(&c, "bad/id"),
        ErrorKind::InvalidArgument,
    );
    let mut with_key = container("key-only");
    with_key.snapshot_key = "k".into();
    for bad in [
        container(""),
        container("bad/id"),
        container("-dash"),
        Container {
            runtime: Default::default(),
            ..container("no-runtime")
        },
        Container {
            spec: None,
            ..container("no-spec")
        },
        with_key,
        Container {
            labels: labels(&[("k", &"v".repeat(4096))]),
            ..container("big-label")
        },
    ] {
        let id = bad.id.clone();
        let err = assert_kind(containers(&env).create(&c, bad), ErrorKind::InvalidArgument);
        assert!(!err.to_string().is_empty(), "{id}");
    }
    assert!(ids(&env, &c, &[]).is_empty(), "nothing invalid was stored");

    let mut web = container("web");
    web.snapshotter = "overlayfs".into();
    web.snapshot_key = "web".into();
    containers(&env).create(&c, web.clone()).unwrap();
    for path in ["runtime", "snapshotter", "id", "bogus"] {
        let err = assert_kind(
            containers(&env).update(&c, web.clone(), &[path.into()]),
            ErrorKind::InvalidArgument,
        );
        assert!(err.to_string().contains("cannot update"), "{err}");
    }
    // An empty mask may not change what is immutable.
    let mut other = web.clone();
    other.runtime.name = "io.berth.v1".into();
    assert_kind(
        containers(&env).update(&c, other, &[]),
        ErrorKind::InvalidArgument,
    );
    let mut other = web.clone();
    other.snapshotter = "native".into();
    assert_kind(
        containers(&env).update(&c, other, &[]),
        ErrorKind::InvalidArgument,
    );
    // A mask that breaks validation is refused and changes nothing.
    let cleared = Container {
        spec: None,
        ..web.clone()
    };
    assert_kind(
        containers(&env).update(&c, cleared, &["spec".into()]),
        ErrorKind::InvalidArgument,
    );
    assert!(containers(&env).get(&c, "web").unwrap().spec.is_some());
}

#[test]
fn namespaces_are_separate_implicit_and_guarded() {
    let env = Env::new();
    let a = ctx("team-a");
    let b = ctx("team-b");
    containers(&env).create(&a, container("same")).unwrap();
    assert_kind(containers(&env).get(&b, "same"), ErrorKind::NotFound);
    containers(&env).create(&b, container("same")).unwrap();
    containers(&env).delete(&b, "same").unwrap();
    assert!(containers(&env).get(&a, "same").is_ok());

    // Creating a container created its namespace, which now cannot be deleted.
    let ns = Namespace::new("team-a").unwrap();
    assert!(NamespaceStore::get(&*env.md, &ns).is_ok());
    let err = assert_kind(
        NamespaceStore::delete(&*env.md, &ns),
        ErrorKind::FailedPrecondition,
    );
    assert!(err.to_string().contains("must be empty"), "{err}");
    assert!(err.to_string().contains("containers"), "{err}");
    containers(&env).delete(&a, "same").unwrap();
    NamespaceStore::delete(&*env.md, &ns).unwrap();
}

#[test]
fn records_survive_a_restart() {
    let env = Env::new();
    let c = ctx("default");
    let mut web = container("web");
    web.labels = labels(&[("a", "b")]);
    web.extensions
        .insert("e".into(), AnyValue::new("x.Y", vec![0, 255]));
    let created = containers(&env).create(&c, web).unwrap();
    let env = env.restart();
    assert_eq!(containers(&env).get(&c, "web").unwrap(), created);
}

#[test]
fn containers_keep_their_snapshot_and_labelled_content() {
    let env = Env::new();
    let c = ctx("default");
    let backend = Arc::new(NativeSnapshotter::open(env.dir.path().join("native")).unwrap());
    env.md.add_snapshotter("native", backend).unwrap();
    let snapshots: &dyn SnapshotStore = &*env.md;
    snapshots
        .prepare(&c, "native", "extract", None, Labels::new())
        .unwrap();
    snapshots
        .commit(&c, "native", "sha256:layer", "extract", Labels::new())
        .unwrap();
    snapshots
        .prepare(&c, "native", "web", Some("sha256:layer"), Labels::new())
        .unwrap();
    let checkpoint = env.ingest(&c, b"checkpoint", Labels::new());

    let mut web = container("web");
    web.snapshotter = "native".into();
    web.snapshot_key = "web".into();
    web.labels = labels(&[(&format!("{REF_CONTENT_PREFIX}.cp"), checkpoint.as_str())]);
    containers(&env).create(&c, web).unwrap();
    // The same key in another namespace is another snapshot: it holds nothing here.
    containers(&env)
        .create(
            &ctx("other"),
            Container {
                snapshotter: "native".into(),
                snapshot_key: "sha256:layer".into(),
                ..container("elsewhere")
            },
        )
        .unwrap();

    let stats = env.md.collect().unwrap();
    assert_eq!(stats.snapshots_removed, 0);
    assert_eq!(stats.records_removed, 0);
    assert!(snapshots.stat(&c, "native", "web").is_ok());
    assert!(snapshots.stat(&c, "native", "sha256:layer").is_ok());
    assert!(env.on_disk(&checkpoint));

    // Deleting the container schedules a collection that frees what only it held.
    containers(&env).delete(&c, "web").unwrap();
    eventually("the container's snapshot chain and content go", || {
        snapshots.stat(&c, "native", "web").is_err()
            && snapshots.stat(&c, "native", "sha256:layer").is_err()
            && !env.on_disk(&checkpoint)
    });
    assert_kind(env.info(&c, &checkpoint), ErrorKind::NotFound);
}

#[test]
fn a_container_without_a_snapshot_holds_nothing() {
    let env = Env::new();
    let c = ctx("default");
    let loose = env.ingest(&c, b"loose", Labels::new());
    containers(&env).create(&c, container("bare")).unwrap();
    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 1);
    assert!(!env.on_disk(&loose));
    assert!(containers(&env).get(&c, "bare").is_ok());
}
