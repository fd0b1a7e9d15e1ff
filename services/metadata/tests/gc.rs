//! Garbage collection: roots, references, leases, ingests, debouncing and root sources.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail by panicking"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_core::content::{BlobStore, ContentStore};
use berth_core::gc::{GarbageCollector, REF_CONTENT_PREFIX, ROOT_LABEL};
use berth_core::labels::Labels;
use berth_core::leases::{EXPIRE_LABEL, LeaseManager};
use berth_core::{Digest, Error, ErrorKind, RequestContext};
use common::{Env, assert_kind, ctx, eventually, labels};

fn create_lease(env: &Env, c: &RequestContext, id: &str, with: Labels) {
    LeaseManager::create(&*env.md, c, id, with).unwrap();
}

fn delete_content(env: &Env, c: &RequestContext, digest: &Digest) {
    ContentStore::delete(&*env.md, c, digest).unwrap();
}

#[test]
fn removes_unreferenced_content_and_keeps_leased() {
    let env = Env::new();
    let c = ctx("default");
    create_lease(&env, &c, "pull-1", Labels::new());
    let leased = c.clone().with_lease("pull-1");

    let loose = env.ingest(&c, b"nobody holds me", Labels::new());
    let kept = env.ingest(&leased, b"a lease holds me", Labels::new());
    assert!(env.on_disk(&loose) && env.on_disk(&kept));

    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 1);
    assert_eq!(stats.blobs_removed, 1);
    assert_eq!(stats.bytes_removed, b"nobody holds me".len() as u64);
    assert!(!env.on_disk(&loose));
    assert!(env.on_disk(&kept));
    assert_kind(env.info(&c, &loose), ErrorKind::NotFound);
    assert_eq!(env.info(&c, &kept).unwrap().size, 16);

    // Nothing left to do: a second collection removes nothing.
    let stats = env.md.collect().unwrap();
    assert_eq!((stats.records_removed, stats.blobs_removed), (0, 0));
}

#[test]
fn keeps_roots_and_what_they_reference() {
    let env = Env::new();
    let c = ctx("default");
    let grandchild = env.ingest(&c, b"grandchild", Labels::new());
    let child1 = env.ingest(
        &c,
        b"child one",
        labels(&[(&format!("{REF_CONTENT_PREFIX}/layer"), grandchild.as_str())]),
    );
    let child2 = env.ingest(&c, b"child two", Labels::new());
    let not_an_edge = env.ingest(&c, b"not referenced", Labels::new());
    let root = env.ingest(
        &c,
        b"the root",
        labels(&[
            (ROOT_LABEL, "2024-01-01T00:00:00Z"),
            (&format!("{REF_CONTENT_PREFIX}.m.0"), child1.as_str()),
            (REF_CONTENT_PREFIX, child2.as_str()),
            (&format!("{REF_CONTENT_PREFIX}.bad"), "not-a-digest"),
            (&format!("{REF_CONTENT_PREFIX}x"), not_an_edge.as_str()),
        ]),
    );

    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 1);
    for d in [&root, &child1, &child2, &grandchild] {
        assert!(env.on_disk(d), "{d} was collected");
        env.info(&c, d).unwrap();
    }
    assert!(!env.on_disk(&not_an_edge));

    // Dropping the root label leaves the whole tree unreachable.
    let mut info = env.info(&c, &root).unwrap();
    info.labels.remove(ROOT_LABEL);
    env.update(&c, info, &[format!("labels.{ROOT_LABEL}")])
        .unwrap();
    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 4);
    assert_eq!(stats.blobs_removed, 4);
    assert!(env.blobs.files().is_empty());
}

#[test]
fn sync_lease_delete_removes_its_content_before_returning() {
    let env = Env::with_debounce(Duration::from_secs(3600));
    let c = ctx("default");
    create_lease(&env, &c, "tmp", Labels::new());
    let digest = env.ingest(&c.clone().with_lease("tmp"), b"temporary", Labels::new());
    assert!(env.on_disk(&digest));
    LeaseManager::delete(&*env.md, &c, "tmp", true).unwrap();
    assert!(!env.on_disk(&digest));
    assert_kind(env.md.list_resources(&c, "tmp"), ErrorKind::NotFound);
    assert_kind(
        LeaseManager::delete(&*env.md, &c, "tmp", true),
        ErrorKind::NotFound,
    );
}

#[test]
fn async_lease_delete_schedules_a_collection() {
    let env = Env::new();
    let c = ctx("default");
    create_lease(&env, &c, "tmp", Labels::new());
    let digest = env.ingest(&c.clone().with_lease("tmp"), b"temporary", Labels::new());
    LeaseManager::delete(&*env.md, &c, "tmp", false).unwrap();
    eventually("the background collector removes the blob", || {
        !env.on_disk(&digest)
    });
}

#[test]
fn expired_leases_do_not_protect_and_are_removed() {
    let env = Env::new();
    let c = ctx("default");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    create_lease(
        &env,
        &c,
        "old",
        labels(&[(EXPIRE_LABEL, "2000-01-01T00:00:00Z")]),
    );
    create_lease(&env, &c, "fresh", labels(&[(EXPIRE_LABEL, &future)]));
    let old = c.clone().with_lease("old");
    let expired = env.ingest(&old, b"under the expired lease", Labels::new());
    let fresh = env.ingest(
        &c.clone().with_lease("fresh"),
        b"under the fresh lease",
        Labels::new(),
    );
    {
        let mut w = env.writer(&old, "half-done", 0, None).unwrap();
        w.write(b"partial").unwrap();
    }

    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 1);
    assert_eq!(stats.ingests_removed, 1);
    assert!(!env.on_disk(&expired));
    assert!(env.on_disk(&fresh));
    assert_kind(env.status(&c, "half-done"), ErrorKind::NotFound);
    let ids: Vec<String> = LeaseManager::list(&*env.md, &c, &berth_core::filters::Filters::all())
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, vec!["fresh"]);
    assert_kind(env.md.list_resources(&c, "old"), ErrorKind::NotFound);
}

#[test]
fn ingests_survive_only_under_a_lease_or_an_open_writer() {
    let env = Env::new();
    let c = ctx("default");
    create_lease(&env, &c, "l", Labels::new());
    let leased = c.clone().with_lease("l");
    for (ctx, reference) in [(&c, "orphan"), (&leased, "leased")] {
        let mut w = env.writer(ctx, reference, 0, None).unwrap();
        w.write(b"some bytes").unwrap();
    }
    let mut open = env.writer(&c, "open", 0, None).unwrap();
    open.write(b"still writing").unwrap();
    // An ingest the raw store holds outside any namespace is not the metadata's to remove.
    drop(env.blobs.writer("outside", 0, None).unwrap());

    let stats = env.md.collect().unwrap();
    assert_eq!(stats.ingests_removed, 1);
    assert_kind(env.status(&c, "orphan"), ErrorKind::NotFound);
    assert_eq!(env.status(&c, "leased").unwrap().offset, 10);
    assert_eq!(env.status(&c, "open").unwrap().offset, 13);
    env.blobs.status("outside").unwrap();

    // The open writer can still finish.
    open.write(b"!").unwrap();
    let digest = open.commit(14, None, Labels::new()).unwrap();
    assert_eq!(digest, Digest::of(b"still writing!"));

    let mut again = env.writer(&c, "open-2", 0, None).unwrap();
    again.write(b"x").unwrap();
    drop(again);
    let stats = env.md.collect().unwrap();
    assert_eq!(stats.ingests_removed, 1);
    assert_kind(env.status(&c, "open-2"), ErrorKind::NotFound);
}

#[test]
fn a_blob_stays_while_any_namespace_records_it() {
    let env = Env::new();
    let (a, b) = (ctx("ns-a"), ctx("ns-b"));
    let root = labels(&[(ROOT_LABEL, "")]);
    let digest = env.ingest(&a, b"shared bytes", root.clone());
    assert_eq!(env.ingest(&b, b"shared bytes", root), digest);

    delete_content(&env, &a, &digest);
    env.md.collect().unwrap();
    assert!(env.on_disk(&digest));
    assert_eq!(env.info(&b, &digest).unwrap().size, 12);

    delete_content(&env, &b, &digest);
    let stats = env.md.collect().unwrap();
    assert_eq!(stats.blobs_removed, 1);
    assert!(!env.on_disk(&digest));
}

#[test]
fn root_sources_add_roots_and_their_errors_abort_the_collection() {
    let env = Env::new();
    let c = ctx("default");
    let layer = env.ingest(&c, b"layer", Labels::new());
    let manifest = env.ingest(
        &c,
        b"manifest",
        labels(&[(&format!("{REF_CONTENT_PREFIX}.l.0"), layer.as_str())]),
    );
    let garbage = env.ingest(&c, b"garbage", Labels::new());
    let other_ns = env.ingest(&ctx("other"), b"other namespace", Labels::new());

    let fail = Arc::new(AtomicUsize::new(1));
    let target = manifest.clone();
    let failing = fail.clone();
    env.md.add_root_source(Box::new(move |ns| {
        if failing.load(Ordering::SeqCst) == 1 {
            return Err(Error::internal("image store unavailable"));
        }
        Ok(if ns.as_str() == "default" {
            vec![target.clone()]
        } else {
            vec![]
        })
    }));

    let err = env.md.collect().unwrap_err();
    assert!(err.to_string().contains("image store unavailable"), "{err}");
    assert_eq!(env.blobs.files().len(), 4, "nothing removed");

    fail.store(0, Ordering::SeqCst);
    let stats = env.md.collect().unwrap();
    assert_eq!(stats.records_removed, 2);
    assert!(env.on_disk(&manifest) && env.on_disk(&layer));
    assert!(!env.on_disk(&garbage) && !env.on_disk(&other_ns));
}

#[test]
fn a_burst_of_deletes_costs_one_collection() {
    let env = Env::with_debounce(Duration::from_millis(500));
    let c = ctx("default");
    env.ingest(
        &c,
        b"keeps the namespace non-empty",
        labels(&[(ROOT_LABEL, "")]),
    );
    let doomed: Vec<Digest> = (0..5)
        .map(|i| env.ingest(&c, format!("doomed {i}").as_bytes(), Labels::new()))
        .collect();
    let collections = Arc::new(AtomicUsize::new(0));
    let counter = collections.clone();
    env.md.add_root_source(Box::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }));

    for d in &doomed {
        delete_content(&env, &c, d);
    }
    eventually("the scheduled collection ran", || {
        doomed.iter().all(|d| !env.on_disk(d))
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(collections.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_the_store_stops_the_collector() {
    let env = Env::with_debounce(Duration::from_millis(50));
    let weak = Arc::downgrade(&env.md);
    let c = ctx("default");
    let d = env.ingest(&c, b"x", Labels::new());
    delete_content(&env, &c, &d);
    let common::Env { md, blobs, dir } = env;
    drop(md);
    // The collector holds no strong reference, so the store is gone at once.
    assert!(weak.upgrade().is_none());
    drop((blobs, dir));
}

#[test]
fn a_collection_that_finds_nothing_leaves_the_database_file_untouched() {
    let env = Env::new();
    let c = ctx("default");
    create_lease(&env, &c, "pull-1", Labels::new());
    let kept = env.ingest(&c.clone().with_lease("pull-1"), b"leased", Labels::new());
    let loose = env.ingest(&c, b"loose", Labels::new());
    let file = env.dir.path().join("metadata").join("meta.db");
    let read = || std::fs::read(&file).unwrap();

    let before = read();
    assert_eq!(env.md.collect().unwrap().records_removed, 1);
    assert_ne!(
        read(),
        before,
        "a collection that removed a record commits it"
    );
    assert!(!env.on_disk(&loose) && env.on_disk(&kept));

    // Every later collection finds nothing: it must not commit (and flush) an empty change,
    // since one runs after every lease deletion.
    let settled = read();
    for _ in 0..3 {
        let stats = env.md.collect().unwrap();
        assert_eq!((stats.records_removed, stats.blobs_removed), (0, 0));
    }
    assert_eq!(read(), settled, "an empty collection wrote to the database");
    assert_eq!(env.info(&c, &kept).unwrap().size, 6);
}
