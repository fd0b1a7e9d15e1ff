use berth_core::ErrorKind;

use super::*;

fn store() -> (tempfile::TempDir, MetaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(dir.path().join("metadata.redb")).unwrap();
    (dir, store)
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kind_of(err: Error) -> ErrorKind {
    err.kind()
}

/// base ← mid ← top, all committed; returns their ids.
fn chain(store: &MetaStore) -> [u64; 3] {
    let mut ids = [0; 3];
    let mut parent = None;
    for (i, name) in ["base", "mid", "top"].into_iter().enumerate() {
        let key = format!("extract {name}");
        let s = store
            .write(|tx| tx.create(Kind::Active, &key, parent, Labels::new()))
            .unwrap();
        let id = store
            .write(|tx| tx.commit(&key, name, Usage::default(), Labels::new()))
            .unwrap();
        assert_eq!(s.id, id, "commit keeps the id");
        ids[i] = id;
        parent = Some(name);
    }
    ids
}

#[test]
fn ids_grow_and_parent_chain_is_nearest_first() {
    let (_d, store) = store();
    let [b, m, t] = chain(&store);
    assert!(b < m && m < t);
    let s = store
        .write(|tx| tx.create(Kind::Active, "ctr", Some("top"), Labels::new()))
        .unwrap();
    assert_eq!(s.parent_ids, vec![t, m, b]);
    assert!(s.id > t);
    assert_eq!(store.read(|tx| tx.snapshot("ctr")).unwrap(), s);
    let v = store
        .write(|tx| tx.create(Kind::View, "v", None, Labels::new()))
        .unwrap();
    assert!(v.parent_ids.is_empty());
    assert_eq!(v.kind, Kind::View);
    assert_eq!(
        store.read(|tx| tx.ids()).unwrap(),
        BTreeSet::from([b, m, t, s.id, v.id])
    );
}

#[test]
fn create_errors() {
    let (_d, store) = store();
    chain(&store);
    store
        .write(|tx| tx.create(Kind::Active, "a", Some("top"), Labels::new()))
        .unwrap();
    let create = |kind, key: &str, parent: Option<&str>| {
        store
            .write(|tx| tx.create(kind, key, parent, Labels::new()))
            .map_err(kind_of)
    };
    assert_eq!(
        create(Kind::Active, "", None),
        Err(ErrorKind::InvalidArgument)
    );
    assert_eq!(
        create(Kind::Committed, "c", None),
        Err(ErrorKind::InvalidArgument)
    );
    assert_eq!(
        create(Kind::Active, "a", None),
        Err(ErrorKind::AlreadyExists)
    );
    assert_eq!(
        create(Kind::View, "top", None),
        Err(ErrorKind::AlreadyExists)
    );
    assert_eq!(
        create(Kind::Active, "x", Some("nope")),
        Err(ErrorKind::NotFound)
    );
    assert_eq!(
        create(Kind::Active, "x", Some("a")),
        Err(ErrorKind::FailedPrecondition)
    );
    let big = l(&[("k", &"v".repeat(5000))]);
    assert_eq!(
        store
            .write(|tx| tx.create(Kind::Active, "x", None, big.clone()))
            .map_err(kind_of),
        Err(ErrorKind::InvalidArgument)
    );
    // Nothing was recorded by the failures, and no id was spent on them.
    assert_eq!(
        store.read(|tx| tx.get("x")).map_err(kind_of),
        Err(ErrorKind::NotFound)
    );
    let next = store
        .write(|tx| tx.create(Kind::Active, "y", None, Labels::new()))
        .unwrap();
    assert_eq!(next.id, 5);
}

#[test]
fn commit_moves_key_to_name_with_usage_and_new_labels() {
    let (_d, store) = store();
    let s = store
        .write(|tx| tx.create(Kind::Active, "k", None, l(&[("old", "1")])))
        .unwrap();
    let usage = Usage {
        size: 4096,
        inodes: 3,
    };
    let before = store.read(|tx| tx.get("k")).unwrap();
    assert_eq!(before.usage, Usage::default());
    store
        .write(|tx| tx.commit("k", "n", usage, l(&[("new", "2")])))
        .unwrap();
    let e = store.read(|tx| tx.get("n")).unwrap();
    assert_eq!(e.id, s.id);
    assert_eq!(e.info.kind, Kind::Committed);
    assert_eq!(e.info.labels, l(&[("new", "2")]));
    assert_eq!(e.usage, usage);
    assert!(e.info.created_at >= before.info.created_at);
    assert_eq!(
        store.read(|tx| tx.get("k")).map_err(kind_of),
        Err(ErrorKind::NotFound)
    );
    assert_eq!(
        store.read(|tx| tx.snapshot("n")).map_err(kind_of),
        Err(ErrorKind::FailedPrecondition)
    );

    store
        .write(|tx| tx.create(Kind::View, "v", Some("n"), Labels::new()))
        .unwrap();
    store
        .write(|tx| tx.create(Kind::Active, "k2", None, Labels::new()))
        .unwrap();
    let commit = |key: &str, name: &str| {
        store
            .write(|tx| tx.commit(key, name, Usage::default(), Labels::new()))
            .map_err(kind_of)
    };
    assert_eq!(commit("v", "x"), Err(ErrorKind::FailedPrecondition));
    assert_eq!(commit("n", "x"), Err(ErrorKind::FailedPrecondition));
    assert_eq!(commit("missing", "x"), Err(ErrorKind::NotFound));
    assert_eq!(commit("k2", "n"), Err(ErrorKind::AlreadyExists));
    assert_eq!(commit("k2", ""), Err(ErrorKind::InvalidArgument));
    // The failed commits left k2 active.
    assert_eq!(
        store.read(|tx| tx.get("k2")).unwrap().info.kind,
        Kind::Active
    );
}

#[test]
fn remove_refuses_parents_and_returns_ids() {
    let (_d, store) = store();
    let [b, m, t] = chain(&store);
    let remove = |key: &str| store.write(|tx| tx.remove(key));
    let err = remove("mid").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("\"top\""), "{err}");
    assert_eq!(remove("missing").map_err(kind_of), Err(ErrorKind::NotFound));
    assert_eq!(remove("top").unwrap(), (t, Kind::Committed));
    assert_eq!(remove("mid").unwrap(), (m, Kind::Committed));
    assert_eq!(remove("base").unwrap(), (b, Kind::Committed));
    assert!(store.read(|tx| tx.ids()).unwrap().is_empty());
    assert!(
        store
            .read(|tx| tx.list(&Filters::all()))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn child_link_follows_commit() {
    let (_d, store) = store();
    chain(&store);
    // A child that was committed under a new name still blocks its parent's removal.
    store
        .write(|tx| tx.create(Kind::Active, "k", Some("top"), Labels::new()))
        .unwrap();
    store
        .write(|tx| tx.commit("k", "above", Usage::default(), Labels::new()))
        .unwrap();
    let err = store.write(|tx| tx.remove("top")).unwrap_err();
    assert!(err.to_string().contains("\"above\""), "{err}");
    store.write(|tx| tx.remove("above")).unwrap();
    store.write(|tx| tx.remove("top")).unwrap();
}

#[test]
fn update_applies_masks() {
    let (_d, store) = store();
    store
        .write(|tx| tx.create(Kind::Active, "k", None, l(&[("a", "1"), ("b", "2")])))
        .unwrap();
    let before = store.read(|tx| tx.get("k")).unwrap().info;
    let mut info = before.clone();
    info.labels = l(&[("a", "9"), ("c", "3")]);
    let updated = store
        .write(|tx| tx.update(&info, &["labels.a".into(), "labels.b".into()]))
        .unwrap();
    assert_eq!(updated.labels, l(&[("a", "9")]));
    assert!(updated.updated_at >= before.updated_at);
    assert_eq!(updated.created_at, before.created_at);
    assert_eq!(store.read(|tx| tx.get("k")).unwrap().info, updated);

    let replaced = store.write(|tx| tx.update(&info, &[])).unwrap();
    assert_eq!(replaced.labels, l(&[("a", "9"), ("c", "3")]));
    assert_eq!(
        store
            .write(|tx| tx.update(&info, &["parent".into()]))
            .map_err(kind_of),
        Err(ErrorKind::InvalidArgument)
    );
    info.name = "missing".into();
    assert_eq!(
        store.write(|tx| tx.update(&info, &[])).map_err(kind_of),
        Err(ErrorKind::NotFound)
    );
}

#[test]
fn list_filters() {
    let (_d, store) = store();
    chain(&store);
    store
        .write(|tx| tx.create(Kind::Active, "a", Some("top"), l(&[("tier", "app")])))
        .unwrap();
    store
        .write(|tx| tx.create(Kind::View, "v", Some("mid"), Labels::new()))
        .unwrap();
    let names = |f: &[&str]| -> Vec<String> {
        let filters = Filters::parse(f).unwrap();
        store
            .read(|tx| tx.list(&filters))
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(names(&[]), ["a", "base", "mid", "top", "v"]);
    assert_eq!(names(&["kind==committed"]), ["base", "mid", "top"]);
    assert_eq!(names(&["parent==mid"]), ["top", "v"]);
    assert_eq!(names(&["labels.tier==app"]), ["a"]);
    assert_eq!(names(&["kind==view", "name==base"]), ["base", "v"]);
}

#[test]
fn reopen_keeps_records_and_counter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.redb");
    let (ids, infos) = {
        let store = MetaStore::open(&path).unwrap();
        let ids = chain(&store);
        (ids, store.read(|tx| tx.list(&Filters::all())).unwrap())
    };
    let store = MetaStore::open(&path).unwrap();
    assert_eq!(store.path(), path);
    assert_eq!(store.read(|tx| tx.list(&Filters::all())).unwrap(), infos);
    let s = store
        .write(|tx| tx.create(Kind::Active, "next", Some("top"), Labels::new()))
        .unwrap();
    assert_eq!(s.id, ids[2] + 1);
    assert_eq!(s.parent_ids, vec![ids[2], ids[1], ids[0]]);
}

#[test]
fn failed_transaction_rolls_back() {
    let (_d, store) = store();
    let err = store
        .write(|tx| {
            tx.create(Kind::Active, "k", None, Labels::new())?;
            Err::<(), _>(Error::internal("rename failed"))
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(
        store.read(|tx| tx.get("k")).map_err(kind_of),
        Err(ErrorKind::NotFound)
    );
    // The id the failed transaction took is handed out again.
    let s = store
        .write(|tx| tx.create(Kind::Active, "k", None, Labels::new()))
        .unwrap();
    assert_eq!(s.id, 1);
}

#[test]
fn cleanup_removes_orphans_and_writes_nothing_to_the_store() {
    let (d, store) = store();
    let dirs = dirs::SnapshotDirs::open(d.path().join("snapshots")).unwrap();
    chain(&store);
    let orphan = d.path().join("snapshots").join("999");
    std::fs::create_dir(&orphan).unwrap();
    let db = d.path().join("metadata.redb");
    let before = std::fs::read(&db).unwrap();

    cleanup(&store, &dirs).unwrap();
    assert!(!orphan.exists(), "the directory no snapshot owns is gone");
    // Garbage collection cleans up after every lease deletion: an unchanged store must not
    // be committed (and flushed) each time.
    cleanup(&store, &dirs).unwrap();
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "cleanup wrote to the store"
    );
    assert_eq!(store.read(|tx| tx.ids()).unwrap().len(), 3);
}
