use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

use berth_core::content::BlobStore;
use berth_core::labels::Labels;
use berth_core::{Digest, ErrorKind};
use tempfile::TempDir;

use crate::LocalStore;

fn store() -> (TempDir, PathBuf, LocalStore) {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("content");
    let store = LocalStore::open(&root).unwrap();
    (tmp, root, store)
}

/// Deterministic, non-repeating-looking bytes (so offsets really matter in comparisons).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn read_all(store: &LocalStore, digest: &Digest) -> Vec<u8> {
    let reader = store.reader(digest).unwrap();
    let mut out = vec![0; reader.size() as usize];
    let mut off = 0;
    while off < out.len() {
        let n = reader.read_at(&mut out[off..], off as u64).unwrap();
        assert!(n > 0, "short blob");
        off += n;
    }
    out
}

fn ingest_dirs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every path under `dir`, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

#[test]
fn ingest_and_read_back() {
    let (_tmp, root, store) = store();
    let data = bytes(2 * 1024 * 1024 + 12345, 1);
    let digest = Digest::of(&data);

    let mut w = store
        .writer("layer-1", data.len() as u64, Some(digest.clone()))
        .unwrap();
    for chunk in data.chunks(1 << 20) {
        w.write(chunk).unwrap();
    }
    let st = w.status().unwrap();
    assert_eq!(st.reference, "layer-1");
    assert_eq!(st.offset, data.len() as u64);
    assert_eq!(st.total, data.len() as u64);
    assert_eq!(st.expected, Some(digest.clone()));
    assert!(st.updated_at >= st.started_at);
    assert_eq!(w.digest(), digest);
    assert_eq!(
        w.commit(data.len() as u64, Some(digest.clone()), Labels::new())
            .unwrap(),
        digest
    );

    assert_eq!(read_all(&store, &digest), data);
    let reader = store.reader(&digest).unwrap();
    assert_eq!(reader.size(), data.len() as u64);
    let mut buf = [0u8; 100];
    assert_eq!(reader.read_at(&mut buf, 1_000_000).unwrap(), 100);
    assert_eq!(&buf[..], &data[1_000_000..1_000_100]);
    // Straddling the end: only the tail.
    let tail = data.len() as u64 - 7;
    assert_eq!(reader.read_at(&mut buf, tail).unwrap(), 7);
    assert_eq!(&buf[..7], &data[data.len() - 7..]);
    assert_eq!(reader.read_at(&mut buf, data.len() as u64).unwrap(), 0);
    assert_eq!(reader.read_at(&mut buf, data.len() as u64 + 99).unwrap(), 0);

    let info = store.info(&digest).unwrap();
    assert_eq!(info.digest, digest);
    assert_eq!(info.size, data.len() as u64);

    let blob = store.blob_path(&digest);
    assert_eq!(blob, root.join("blobs/sha256").join(digest.hex()));
    assert_eq!(fs::read(&blob).unwrap(), data);
    assert_eq!(mode(&blob), 0o444);
    assert!(ingest_dirs(&root).is_empty());
    assert!(store.list_statuses().unwrap().is_empty());
    assert_eq!(
        store.status("layer-1").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn commit_without_expectations_computes_digest() {
    let (_tmp, _root, store) = store();
    let mut w = store.writer("tar-index.json", 0, None).unwrap();
    w.write(b"{}").unwrap();
    w.write(b"").unwrap();
    assert_eq!(w.commit(0, None, Labels::new()).unwrap(), Digest::of(b"{}"));
    assert_eq!(read_all(&store, &Digest::of(b"{}")), b"{}");
}

#[test]
fn empty_blob_commits() {
    let (_tmp, _root, store) = store();
    let w = store.writer("empty", 0, None).unwrap();
    let d = w.commit(0, Some(Digest::of(b"")), Labels::new()).unwrap();
    assert_eq!(store.info(&d).unwrap().size, 0);
    let mut buf = [0u8; 4];
    assert_eq!(store.reader(&d).unwrap().read_at(&mut buf, 0).unwrap(), 0);
}

#[test]
fn resume_after_dropping_the_writer() {
    let (_tmp, _root, store) = store();
    let data = bytes(300_000, 2);
    let digest = Digest::of(&data);

    let mut w = store
        .writer("ref", data.len() as u64, Some(digest.clone()))
        .unwrap();
    w.write(&data[..100_000]).unwrap();
    let started = w.status().unwrap().started_at;
    drop(w);

    let st = store.status("ref").unwrap();
    assert_eq!(st.offset, 100_000);
    assert_eq!(st.total, data.len() as u64);
    assert_eq!(st.expected, Some(digest.clone()));
    assert_eq!(st.started_at, started);

    // Announcing nothing keeps what was stored.
    let mut w = store.writer("ref", 0, None).unwrap();
    let st = w.status().unwrap();
    assert_eq!(st.offset, 100_000);
    assert_eq!(st.total, data.len() as u64);
    assert_eq!(st.expected, Some(digest.clone()));
    assert_eq!(w.digest(), Digest::of(&data[..100_000]));
    w.write(&data[100_000..]).unwrap();
    assert_eq!(
        w.commit(data.len() as u64, Some(digest.clone()), Labels::new())
            .unwrap(),
        digest
    );
    assert_eq!(read_all(&store, &digest), data);
}

#[test]
fn resume_after_restart() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("content");
    let data = bytes(500_000, 3);
    let digest = Digest::of(&data);
    {
        let store = LocalStore::open(&root).unwrap();
        let mut w = store.writer("ref", 0, None).unwrap();
        w.write(&data[..123_457]).unwrap();
        w.set_expectations(Some(data.len() as u64), Some(digest.clone()))
            .unwrap();
        // No drop of the writer on a crash: forget it so nothing runs on the way out.
        std::mem::forget(w);
    }
    let store = LocalStore::open(&root).unwrap();
    let statuses = store.list_statuses().unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].reference, "ref");
    assert_eq!(statuses[0].offset, 123_457);
    assert_eq!(statuses[0].total, data.len() as u64);
    assert_eq!(statuses[0].expected, Some(digest.clone()));

    let mut w = store.writer("ref", data.len() as u64, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 123_457);
    assert_eq!(w.digest(), Digest::of(&data[..123_457]));
    w.write(&data[123_457..]).unwrap();
    w.commit(data.len() as u64, Some(digest.clone()), Labels::new())
        .unwrap();
    assert_eq!(read_all(&store, &digest), data);
}

#[test]
fn writer_updates_expectations() {
    let (_tmp, _root, store) = store();
    let d1 = Digest::of(b"one");
    let d2 = Digest::of(b"two");
    drop(store.writer("ref", 10, Some(d1.clone())).unwrap());
    let mut w = store.writer("ref", 20, Some(d2.clone())).unwrap();
    let st = w.status().unwrap();
    assert_eq!((st.total, st.expected), (20, Some(d2.clone())));
    w.set_expectations(Some(30), None).unwrap();
    drop(w);
    let st = store.status("ref").unwrap();
    assert_eq!((st.total, st.expected), (30, Some(d2)));
}

#[test]
fn abort_removes_the_ingest() {
    let (_tmp, root, store) = store();
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"partial").unwrap();
    drop(w);
    store.abort("ref").unwrap();
    assert!(ingest_dirs(&root).is_empty());
    assert_eq!(store.status("ref").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.abort("ref").unwrap_err().kind(), ErrorKind::NotFound);
    assert!(store.list_statuses().unwrap().is_empty());
    // A new writer starts from nothing.
    let w = store.writer("ref", 0, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    assert_eq!(w.digest(), Digest::of(b""));
}

#[test]
fn abort_under_a_live_writer_prevents_its_commit() {
    let (_tmp, root, store) = store();
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"doomed").unwrap();
    store.abort("ref").unwrap();
    let err = w.commit(0, None, Labels::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        store.info(&Digest::of(b"doomed")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(ingest_dirs(&root).is_empty());
}

#[test]
fn one_writer_per_ref() {
    let (_tmp, _root, store) = store();
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"abc").unwrap();
    let err = store.writer("ref", 0, None).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.message(), "ref \"ref\" locked");
    // A clone shares the locks.
    let err = store.clone().writer("ref", 0, None).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    // Other refs are unaffected.
    drop(store.writer("other", 0, None).unwrap());
    drop(w);
    let w = store.writer("ref", 0, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 3);
}

#[test]
fn lock_is_released_after_commit_and_failed_commit() {
    let (_tmp, _root, store) = store();
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"abc").unwrap();
    assert_eq!(
        w.commit(99, None, Labels::new()).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    let w = store.writer("ref", 0, None).unwrap();
    w.commit(3, None, Labels::new()).unwrap();
    drop(store.writer("ref", 0, None).unwrap());
}

#[test]
fn wrong_digest_stores_nothing_and_drops_the_ingest() {
    let (_tmp, root, store) = store();
    let wrong = Digest::of(b"something else");
    let mut w = store.writer("ref", 0, Some(wrong.clone())).unwrap();
    w.write(b"actual bytes").unwrap();
    let err = w
        .commit(12, Some(wrong.clone()), Labels::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!(
            "unexpected commit digest {}, expected {wrong}",
            Digest::of(b"actual bytes")
        )
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(root.join("blobs/sha256")).unwrap().count(), 0);
    assert!(ingest_dirs(&root).is_empty());
    assert_eq!(store.status("ref").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn wrong_size_keeps_the_ingest() {
    let (_tmp, _root, store) = store();
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"12345").unwrap();
    let err = w.commit(6, None, Labels::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(err.message(), "unexpected commit size 5, expected 6");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.status("ref").unwrap().offset, 5);

    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"6").unwrap();
    assert_eq!(
        w.commit(6, Some(Digest::of(b"123456")), Labels::new())
            .unwrap(),
        Digest::of(b"123456")
    );
}

#[test]
fn committing_existing_content_is_already_exists() {
    let (_tmp, root, store) = store();
    let digest = Digest::of(b"same");
    let mut w = store.writer("first", 0, None).unwrap();
    w.write(b"same").unwrap();
    w.commit(4, Some(digest.clone()), Labels::new()).unwrap();

    let mut w = store.writer("second", 4, Some(digest.clone())).unwrap();
    w.write(b"same").unwrap();
    let err = w
        .commit(4, Some(digest.clone()), Labels::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.message(), format!("content {digest}: already exists"));
    assert!(ingest_dirs(&root).is_empty());
    assert_eq!(read_all(&store, &digest), b"same");
    assert_eq!(mode(&store.blob_path(&digest)), 0o444);
}

#[test]
fn truncate_restarts_the_ingest() {
    let (_tmp, root, store) = store();
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"garbage that the client abandons").unwrap();
    w.truncate().unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    assert_eq!(w.digest(), Digest::of(b""));
    let data_file = root
        .join("ingest")
        .join(crate::ingest::dir_name("ref"))
        .join("data");
    assert_eq!(fs::metadata(&data_file).unwrap().len(), 0);
    w.write(b"good").unwrap();
    w.write(b" bytes").unwrap();
    assert_eq!(fs::read(&data_file).unwrap(), b"good bytes");
    let d = w
        .commit(10, Some(Digest::of(b"good bytes")), Labels::new())
        .unwrap();
    assert_eq!(read_all(&store, &d), b"good bytes");
}

#[test]
fn lists_blobs_and_ingests() {
    let (_tmp, root, store) = store();
    let mut want = BTreeSet::new();
    for (i, content) in [&b"a"[..], b"bb", b"ccc"].into_iter().enumerate() {
        let mut w = store.writer(&format!("blob-{i}"), 0, None).unwrap();
        w.write(content).unwrap();
        want.insert((
            w.commit(0, None, Labels::new()).unwrap(),
            content.len() as u64,
        ));
    }
    // Strays in the blob directory are not blobs.
    let blobs = root.join("blobs/sha256");
    fs::write(blobs.join("not-a-digest"), b"x").unwrap();
    fs::write(blobs.join("A".repeat(64)), b"x").unwrap();
    fs::create_dir(blobs.join("b".repeat(64))).unwrap();

    let got: BTreeSet<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| (i.digest, i.size))
        .collect();
    assert_eq!(got, want);

    let mut w = store.writer("ingest-a", 7, None).unwrap();
    w.write(b"xy").unwrap();
    let _held = store.writer("ingest-b", 0, None).unwrap();
    drop(w);
    let statuses = store.list_statuses().unwrap();
    let got: Vec<_> = statuses
        .iter()
        .map(|s| (s.reference.as_str(), s.offset, s.total))
        .collect();
    assert_eq!(got, [("ingest-a", 2, 7), ("ingest-b", 0, 0)]);
}

#[test]
fn hostile_refs_stay_inside_the_root() {
    let (tmp, root, store) = store();
    let refs = [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "..",
        ".",
        "nul\0byte",
        "new\nline",
    ];
    for (i, r) in refs.iter().enumerate() {
        let mut w = store.writer(r, 0, None).unwrap();
        w.write(format!("hostile {i}").as_bytes()).unwrap();
        assert_eq!(w.status().unwrap().reference, *r);
    }
    // Nothing appeared beside the root.
    let beside: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["content"]);
    // Every ingest directory is the hash of its ref, directly under ingest/.
    let mut want: Vec<_> = refs.iter().map(|r| crate::ingest::dir_name(r)).collect();
    want.sort();
    assert_eq!(ingest_dirs(&root), want);
    let mut all = Vec::new();
    walk(&root, &mut all);
    for path in &all {
        assert!(path.starts_with(&root), "{}", path.display());
    }
    let mut got: Vec<_> = store
        .list_statuses()
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .collect();
    got.sort();
    let mut want: Vec<_> = refs.iter().map(|r| r.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(
            store.status(r).unwrap().offset,
            format!("hostile {i}").len() as u64
        );
        store.abort(r).unwrap();
    }
    assert!(ingest_dirs(&root).is_empty());
}

#[test]
fn empty_ref_is_invalid() {
    let (_tmp, _root, store) = store();
    assert_eq!(
        store.writer("", 0, None).err().unwrap().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn missing_blobs_are_not_found() {
    let (_tmp, _root, store) = store();
    let d = Digest::of(b"absent");
    for err in [
        store.info(&d).unwrap_err(),
        store.reader(&d).err().unwrap(),
        store.delete(&d).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), format!("content digest {d}: not found"));
    }
}

#[test]
fn delete_removes_the_blob() {
    let (_tmp, _root, store) = store();
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"bye").unwrap();
    let d = w.commit(0, None, Labels::new()).unwrap();
    // An open reader keeps working after the delete, as an unlinked file does.
    let reader = store.reader(&d).unwrap();
    store.delete(&d).unwrap();
    assert!(!store.blob_path(&d).exists());
    assert_eq!(store.info(&d).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.delete(&d).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(store.list().unwrap().is_empty());
    let mut buf = [0u8; 3];
    assert_eq!(reader.read_at(&mut buf, 0).unwrap(), 3);
    assert_eq!(&buf, b"bye");
    // The same bytes can be committed again.
    let mut w = store.writer("ref", 0, None).unwrap();
    w.write(b"bye").unwrap();
    assert_eq!(w.commit(0, None, Labels::new()).unwrap(), d);
}

#[test]
fn concurrent_commits_of_the_same_bytes() {
    let (_tmp, root, store) = store();
    for round in 0..20u64 {
        let data = bytes(64 * 1024, 100 + round);
        let digest = Digest::of(&data);
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let store = store.clone();
                let barrier = Arc::clone(&barrier);
                let data = data.clone();
                let digest = digest.clone();
                thread::spawn(move || {
                    let mut w = store.writer(&format!("race-{round}-{i}"), 0, None).unwrap();
                    for chunk in data.chunks(4096) {
                        w.write(chunk).unwrap();
                    }
                    barrier.wait();
                    w.commit(data.len() as u64, Some(digest), Labels::new())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let exists = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.kind() == ErrorKind::AlreadyExists))
            .count();
        assert_eq!((ok, exists), (1, 1), "round {round}: {results:?}");
        assert_eq!(read_all(&store, &digest), data);
        assert_eq!(mode(&store.blob_path(&digest)), 0o444);
    }
    assert!(ingest_dirs(&root).is_empty());
    assert_eq!(store.list().unwrap().len(), 20);
}

#[test]
fn recovers_from_crash_leftovers() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("content");
    let store = LocalStore::open(&root).unwrap();
    let mut w = store.writer("committed", 0, None).unwrap();
    w.write(b"abc").unwrap();
    drop(w);
    // A crash after a commit's rename but before the ingest's removal leaves no data file.
    let dir = root
        .join("ingest")
        .join(crate::ingest::dir_name("committed"));
    fs::remove_file(dir.join("data")).unwrap();
    // A crash while assembling an ingest leaves debris under tmp/.
    fs::create_dir(root.join("tmp/ingest-stale")).unwrap();
    // A torn ref file must not pass for some other ingest.
    let torn = root.join("ingest").join(crate::ingest::dir_name("torn"));
    fs::create_dir(&torn).unwrap();
    fs::write(torn.join("ref"), b"").unwrap();
    drop(store);

    let store = LocalStore::open(&root).unwrap();
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(store.status("committed").unwrap().offset, 0);
    assert_eq!(
        store.status("torn").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let refs: Vec<_> = store
        .list_statuses()
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .collect();
    assert_eq!(refs, ["committed"]);

    let mut w = store.writer("committed", 0, None).unwrap();
    assert_eq!(w.status().unwrap().offset, 0);
    w.write(b"abc").unwrap();
    w.commit(3, Some(Digest::of(b"abc")), Labels::new())
        .unwrap();
    // Opening the torn ref replaces the broken directory with a fresh ingest.
    let mut w = store.writer("torn", 0, None).unwrap();
    w.write(b"x").unwrap();
    drop(w);
    assert_eq!(store.status("torn").unwrap().offset, 1);
}
