//! Conformance tests every [`ContentStore`] must pass, run by each implementation's own tests
//! (`features = ["testsuite"]`).
//!
//! Each case gets a fresh, empty store and panics with a message naming the step on failure.
//! Run them all with [`content_store_suite`], or one by one from [`CONTENT_STORE_CASES`] to get a
//! test per case:
//!
//! ```text
//! #[test]
//! fn content_store_conformance() {
//!     berth_core::testsuite::content_store_suite(&|| -> Box<dyn ContentStore> {
//!         Box::new(make_store())
//!     });
//! }
//! ```
//!
//! `make` may return anything that derefs to the store (a `Box`, an `Arc`, or a guard that also
//! owns the store's temporary directory), so the directory lives exactly as long as the case.
//!
//! The cases use namespaces `suite-a` and `suite-b` and no lease.

use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::content::{ContentStore, Info, IngestStatus};
use crate::filters::Filters;
use crate::labels::Labels;
use crate::{Digest, Error, ErrorKind, Namespace, RequestContext, Result};

/// One named conformance case.
pub type ContentStoreCase = (&'static str, fn(&dyn ContentStore));

/// Every content-store case, in the order [`content_store_suite`] runs them.
pub const CONTENT_STORE_CASES: &[ContentStoreCase] = &[
    ("ingest_and_read", ingest_and_read),
    ("empty_blob", empty_blob),
    ("commit_without_expected", commit_without_expected),
    ("resume_after_drop", resume_after_drop),
    ("truncate_restarts", truncate_restarts),
    ("abort_discards", abort_discards),
    ("concurrent_refs", concurrent_refs),
    ("wrong_digest", wrong_digest),
    ("wrong_size", wrong_size),
    ("already_exists", already_exists),
    ("labels_update", labels_update),
    ("list_filters", list_filters),
    ("statuses", statuses),
    ("namespace_isolation", namespace_isolation),
    ("delete", delete),
];

/// Runs every case against a fresh store from `make`; panics on the first failure, naming it.
pub fn content_store_suite<S>(make: &dyn Fn() -> S)
where
    S: Deref<Target = dyn ContentStore>,
{
    for (name, case) in CONTENT_STORE_CASES {
        let store = make();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(&*store))) {
            eprintln!("content store conformance case `{name}` failed");
            resume_unwind(panic);
        }
    }
}

#[track_caller]
fn ok<T>(result: Result<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error ({:?}): {e}", e.kind()),
    }
}

#[track_caller]
fn fails<T>(result: Result<T>, kind: ErrorKind, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what}: succeeded, want {kind:?}"),
        Err(e) if e.kind() == kind => e,
        Err(e) => panic!("{what}: got {:?} ({e}), want {kind:?}", e.kind()),
    }
}

fn ctx(ns: &str) -> RequestContext {
    RequestContext::new(ok(Namespace::new(ns), "namespace"))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn filters(f: &[&str]) -> Filters {
    ok(Filters::parse(f), "parse filters")
}

fn len(data: &[u8]) -> u64 {
    data.len() as u64
}

/// Writes `data` under `reference` in one go and commits it with its digest.
#[track_caller]
fn ingest(
    store: &dyn ContentStore,
    ctx: &RequestContext,
    reference: &str,
    data: &[u8],
    with: Labels,
) -> Digest {
    let digest = Digest::of(data);
    let mut w = ok(
        store.writer(ctx, reference, len(data), Some(digest.clone())),
        "open writer",
    );
    ok(w.write(data), "write");
    let got = ok(w.commit(len(data), Some(digest.clone()), with), "commit");
    assert_eq!(got, digest, "commit returned the wrong digest");
    digest
}

#[track_caller]
fn read_all(store: &dyn ContentStore, ctx: &RequestContext, digest: &Digest) -> Vec<u8> {
    let reader = ok(store.reader(ctx, digest), "open reader");
    let mut out = Vec::new();
    let mut buf = vec![0; 1000];
    loop {
        let n = ok(reader.read_at(&mut buf, len(&out)), "read_at");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(reader.size(), len(&out), "reader size");
    out
}

fn sorted_digests(infos: &[Info]) -> Vec<Digest> {
    let mut out: Vec<Digest> = infos.iter().map(|i| i.digest.clone()).collect();
    out.sort();
    out
}

fn sorted(mut digests: Vec<Digest>) -> Vec<Digest> {
    digests.sort();
    digests
}

fn refs(statuses: &[IngestStatus]) -> Vec<String> {
    let mut out: Vec<String> = statuses.iter().map(|s| s.reference.clone()).collect();
    out.sort();
    out
}

/// Write in pieces, commit with labels, read back whole and at offsets; the ingest is gone.
pub fn ingest_and_read(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"hello, conformance ".repeat(100);
    let digest = Digest::of(&data);
    let mut w = ok(
        store.writer(&c, "ingest-1", len(&data), Some(digest.clone())),
        "open writer",
    );
    let st = ok(w.status(), "status of a new writer");
    assert_eq!(st.reference, "ingest-1");
    assert_eq!(st.offset, 0);
    assert_eq!(st.total, len(&data));
    ok(w.write(&data[..1000]), "write first part");
    ok(w.write(&data[1000..]), "write second part");
    assert_eq!(ok(w.status(), "writer status").offset, len(&data));
    assert_eq!(w.digest(), digest, "digest of the bytes written");
    let st = ok(
        store.status(&c, "ingest-1"),
        "store status of an open ingest",
    );
    assert_eq!(st.offset, len(&data));

    let got = ok(
        w.commit(len(&data), Some(digest.clone()), labels(&[("k", "v")])),
        "commit",
    );
    assert_eq!(got, digest);

    let info = ok(store.info(&c, &digest), "info");
    assert_eq!(info.digest, digest);
    assert_eq!(info.size, len(&data));
    assert_eq!(info.labels, labels(&[("k", "v")]));
    assert!(info.updated_at >= info.created_at);
    assert_eq!(read_all(store, &c, &digest), data);

    let reader = ok(store.reader(&c, &digest), "open reader");
    let mut buf = [0; 5];
    assert_eq!(ok(reader.read_at(&mut buf, 7), "read_at 7"), 5);
    assert_eq!(&buf, &data[7..12]);
    assert_eq!(ok(reader.read_at(&mut buf, len(&data)), "read_at end"), 0);

    fails(
        store.status(&c, "ingest-1"),
        ErrorKind::NotFound,
        "status after commit",
    );
    assert!(ok(store.list_statuses(&c, &Filters::all()), "list_statuses").is_empty());
    assert_eq!(
        sorted_digests(&ok(store.list(&c, &Filters::all()), "list")),
        vec![digest]
    );
}

/// A zero-length blob commits and reads back empty.
pub fn empty_blob(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let digest = ingest(store, &c, "empty", b"", Labels::new());
    assert_eq!(digest, Digest::of(b""));
    assert_eq!(ok(store.info(&c, &digest), "info").size, 0);
    assert!(read_all(store, &c, &digest).is_empty());
}

/// Without an expected digest (as `ctr images import` writes), commit computes and returns it.
pub fn commit_without_expected(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"imported without a digest".to_vec();
    let mut w = ok(
        store.writer(&c, "tar-blobs/x", len(&data), None),
        "open writer",
    );
    ok(w.write(&data), "write");
    let digest = ok(w.commit(len(&data), None, Labels::new()), "commit");
    assert_eq!(digest, Digest::of(&data));
    assert_eq!(read_all(store, &c, &digest), data);
}

/// Bytes survive the writer being dropped; a new writer on the ref resumes at the offset.
pub fn resume_after_drop(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"resumable ".repeat(450);
    let digest = Digest::of(&data);
    {
        let mut w = ok(
            store.writer(&c, "resume-1", len(&data), Some(digest.clone())),
            "open writer",
        );
        ok(w.write(&data[..2000]), "write first part");
    }
    let st = ok(store.status(&c, "resume-1"), "status after drop");
    assert_eq!(st.reference, "resume-1");
    assert_eq!(st.offset, 2000);
    assert_eq!(st.total, len(&data));

    let mut w = ok(
        store.writer(&c, "resume-1", len(&data), Some(digest.clone())),
        "reopen writer",
    );
    assert_eq!(ok(w.status(), "resumed status").offset, 2000);
    assert_eq!(w.digest(), Digest::of(&data[..2000]), "resumed digest");
    ok(w.write(&data[2000..]), "write rest");
    let got = ok(
        w.commit(len(&data), Some(digest.clone()), Labels::new()),
        "commit",
    );
    assert_eq!(got, digest);
    assert_eq!(read_all(store, &c, &digest), data);
}

/// Truncate restarts an ingest from offset 0.
pub fn truncate_restarts(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"the bytes that count".to_vec();
    let digest = Digest::of(&data);
    let mut w = ok(store.writer(&c, "trunc-1", 0, None), "open writer");
    ok(w.write(b"garbage first"), "write garbage");
    ok(w.truncate(), "truncate");
    assert_eq!(ok(w.status(), "status after truncate").offset, 0);
    assert_eq!(w.digest(), Digest::of(b""));
    ok(w.write(&data), "write");
    let got = ok(w.commit(0, Some(digest.clone()), Labels::new()), "commit");
    assert_eq!(got, digest);
    assert_eq!(read_all(store, &c, &digest), data);
}

/// Abort drops an ingest and its bytes; a new writer on the ref starts from 0.
pub fn abort_discards(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    {
        let mut w = ok(store.writer(&c, "abort-1", 0, None), "open writer");
        ok(w.write(b"partial"), "write");
    }
    ok(store.abort(&c, "abort-1"), "abort");
    fails(
        store.status(&c, "abort-1"),
        ErrorKind::NotFound,
        "status after abort",
    );
    fails(
        store.abort(&c, "abort-1"),
        ErrorKind::NotFound,
        "second abort",
    );
    fails(
        store.abort(&c, "never-started"),
        ErrorKind::NotFound,
        "abort of an unknown ref",
    );
    let w = ok(store.writer(&c, "abort-1", 0, None), "reopen writer");
    assert_eq!(ok(w.status(), "status of the new writer").offset, 0);
}

/// Only one writer holds a ref; others get Unavailable until it is dropped.
pub fn concurrent_refs(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let first = ok(store.writer(&c, "busy-1", 0, None), "open first writer");
    fails(
        store.writer(&c, "busy-1", 0, None),
        ErrorKind::Unavailable,
        "second writer on a held ref",
    );
    let other = ok(store.writer(&c, "busy-2", 0, None), "writer on another ref");
    drop(first);
    let again = ok(
        store.writer(&c, "busy-1", 0, None),
        "writer after the first is dropped",
    );
    drop((other, again));
}

/// A digest mismatch fails with FailedPrecondition and stores nothing.
pub fn wrong_digest(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"the real bytes".to_vec();
    let wrong = Digest::of(b"some other bytes");
    let mut w = ok(store.writer(&c, "wrong-digest", 0, None), "open writer");
    ok(w.write(&data), "write");
    fails(
        w.commit(len(&data), Some(wrong.clone()), Labels::new()),
        ErrorKind::FailedPrecondition,
        "commit with the wrong digest",
    );
    for digest in [Digest::of(&data), wrong] {
        fails(
            store.info(&c, &digest),
            ErrorKind::NotFound,
            "info after a failed commit",
        );
        fails(
            store.reader(&c, &digest),
            ErrorKind::NotFound,
            "reader after a failed commit",
        );
    }
    assert!(ok(store.list(&c, &Filters::all()), "list").is_empty());
}

/// A size mismatch fails with FailedPrecondition and stores nothing.
pub fn wrong_size(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"twelve bytes".to_vec();
    for (reference, size) in [("short", len(&data) + 1), ("long", len(&data) - 1)] {
        let mut w = ok(store.writer(&c, reference, 0, None), "open writer");
        ok(w.write(&data), "write");
        fails(
            w.commit(size, None, Labels::new()),
            ErrorKind::FailedPrecondition,
            "commit with the wrong size",
        );
    }
    fails(
        store.info(&c, &Digest::of(&data)),
        ErrorKind::NotFound,
        "info after a failed commit",
    );
    assert!(ok(store.list(&c, &Filters::all()), "list").is_empty());
}

/// Asking to write a digest the namespace holds, or committing it again, is AlreadyExists.
pub fn already_exists(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"already here".to_vec();
    let digest = ingest(store, &c, "exists-1", &data, labels(&[("keep", "me")]));
    let err = fails(
        store.writer(&c, "exists-2", len(&data), Some(digest.clone())),
        ErrorKind::AlreadyExists,
        "writer for a held digest",
    );
    assert!(
        err.to_string().contains(digest.as_str()),
        "error names the digest: {err}"
    );
    let mut w = ok(
        store.writer(&c, "exists-3", 0, None),
        "writer without a digest",
    );
    ok(w.write(&data), "write");
    fails(
        w.commit(len(&data), Some(digest.clone()), Labels::new()),
        ErrorKind::AlreadyExists,
        "committing held bytes again",
    );
    let info = ok(store.info(&c, &digest), "info");
    assert_eq!(
        info.labels,
        labels(&[("keep", "me")]),
        "the record is untouched"
    );
    assert_eq!(read_all(store, &c, &digest), data);
}

/// Label updates follow containerd's field-mask rules; other fields are InvalidArgument.
pub fn labels_update(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let digest = ingest(
        store,
        &c,
        "labels-1",
        b"labelled",
        labels(&[("a", "1"), ("b", "2")]),
    );
    let base = ok(store.info(&c, &digest), "info");
    let with = |pairs: &[(&str, &str)]| Info {
        labels: labels(pairs),
        ..base.clone()
    };
    let paths = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let got = ok(
        store.update(&c, with(&[("a", "9"), ("c", "3")]), &paths(&["labels.a"])),
        "update labels.a",
    );
    assert_eq!(got.labels, labels(&[("a", "9"), ("b", "2")]));
    assert_eq!(got.size, base.size);
    assert!(got.updated_at >= base.updated_at);
    assert_eq!(ok(store.info(&c, &digest), "info").labels, got.labels);

    let got = ok(
        store.update(&c, with(&[("c", "3")]), &paths(&["labels.b", "labels.c"])),
        "update labels.b (absent: delete) and labels.c",
    );
    assert_eq!(got.labels, labels(&[("a", "9"), ("c", "3")]));

    let got = ok(
        store.update(&c, with(&[("a", "")]), &paths(&["labels.a"])),
        "update labels.a to empty (delete)",
    );
    assert_eq!(got.labels, labels(&[("c", "3")]));

    let got = ok(
        store.update(&c, with(&[("z", "1")]), &paths(&["labels"])),
        "replace labels",
    );
    assert_eq!(got.labels, labels(&[("z", "1")]));

    let got = ok(
        store.update(&c, with(&[("y", "2")]), &[]),
        "update with an empty mask",
    );
    assert_eq!(got.labels, labels(&[("y", "2")]));

    fails(
        store.update(&c, with(&[("q", "1")]), &paths(&["size"])),
        ErrorKind::InvalidArgument,
        "update of a non-label field",
    );
    assert_eq!(
        ok(store.info(&c, &digest), "info").labels,
        labels(&[("y", "2")]),
        "a rejected update changes nothing"
    );

    let missing = Info {
        digest: Digest::of(b"not stored"),
        ..with(&[("a", "1")])
    };
    fails(
        store.update(&c, missing, &[]),
        ErrorKind::NotFound,
        "update of a missing blob",
    );
}

/// List applies containerd filters: digest equality, label values and label presence, OR/AND.
pub fn list_filters(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let d1 = ingest(
        store,
        &c,
        "list-1",
        b"one",
        labels(&[("k", "v"), ("tier", "front")]),
    );
    let d2 = ingest(store, &c, "list-2", b"two", labels(&[("k", "w")]));
    let d3 = ingest(store, &c, "list-3", b"three", Labels::new());
    let list = |f: &[&str]| sorted_digests(&ok(store.list(&c, &filters(f)), "list"));

    let all = sorted(vec![d1.clone(), d2.clone(), d3.clone()]);
    assert_eq!(list(&[]), all);
    assert_eq!(list(&[""]), all);
    assert_eq!(list(&[&format!("digest=={d1}")]), vec![d1.clone()]);
    assert_eq!(list(&[r#"labels."k"==v"#]), vec![d1.clone()]);
    assert_eq!(
        list(&[r#"labels."k""#]),
        sorted(vec![d1.clone(), d2.clone()])
    );
    assert_eq!(
        list(&["labels.tier==front,labels.k==w"]),
        Vec::<Digest>::new()
    );
    assert_eq!(
        list(&[&format!("digest=={d3}"), r#"labels."k"==w"#]),
        sorted(vec![d2.clone(), d3.clone()])
    );
    let sizes: Vec<u64> = ok(
        store.list(&c, &filters(&[&format!("digest=={d3}")])),
        "list",
    )
    .iter()
    .map(|i| i.size)
    .collect();
    assert_eq!(sizes, vec![5]);
}

/// Status and ListStatuses report open and dropped ingests, by the namespace's ref.
pub fn statuses(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let mut a = ok(store.writer(&c, "status-a", 100, None), "open writer a");
    ok(a.write(&[b'x'; 10]), "write a");
    let mut b = ok(store.writer(&c, "status-b", 0, None), "open writer b");
    ok(b.write(b"yy"), "write b");

    let st = ok(store.status(&c, "status-a"), "status a");
    assert_eq!(st.reference, "status-a");
    assert_eq!(st.offset, 10);
    assert_eq!(st.total, 100);
    assert!(st.updated_at >= st.started_at);

    let all = ok(store.list_statuses(&c, &filters(&[""])), "list_statuses");
    assert_eq!(refs(&all), vec!["status-a", "status-b"]);
    let one = ok(
        store.list_statuses(&c, &filters(&["ref==status-b"])),
        "list_statuses ref==",
    );
    assert_eq!(refs(&one), vec!["status-b"]);
    assert_eq!(one[0].offset, 2);
    let re = ok(
        store.list_statuses(&c, &filters(&["ref~=^status-"])),
        "list_statuses ref~=",
    );
    assert_eq!(refs(&re).len(), 2);

    fails(
        store.status(&c, "status-missing"),
        ErrorKind::NotFound,
        "status of an unknown ref",
    );
    drop((a, b));
    let all = ok(
        store.list_statuses(&c, &Filters::all()),
        "list_statuses after drop",
    );
    assert_eq!(refs(&all), vec!["status-a", "status-b"]);
}

/// A blob committed in one namespace is invisible in another until that one writes it too;
/// ingests are per namespace.
pub fn namespace_isolation(store: &dyn ContentStore) {
    let a = ctx("suite-a");
    let b = ctx("suite-b");
    let data = b"shared between namespaces".to_vec();
    let digest = ingest(store, &a, "shared", &data, labels(&[("owner", "a")]));

    fails(store.info(&b, &digest), ErrorKind::NotFound, "info in B");
    fails(
        store.reader(&b, &digest),
        ErrorKind::NotFound,
        "reader in B",
    );
    assert!(ok(store.list(&b, &Filters::all()), "list in B").is_empty());
    fails(
        store.update(
            &b,
            Info {
                labels: labels(&[("x", "y")]),
                ..ok(store.info(&a, &digest), "info in A")
            },
            &[],
        ),
        ErrorKind::NotFound,
        "update in B",
    );

    // The same ref names two different ingests, open at the same time.
    let mut wa = ok(store.writer(&a, "same-ref", 0, None), "writer in A");
    ok(wa.write(b"aaa"), "write in A");
    let mut wb = ok(
        store.writer(&b, "same-ref", len(&data), Some(digest.clone())),
        "writer in B for a digest only A holds",
    );
    let in_a = ok(store.list_statuses(&a, &Filters::all()), "statuses in A");
    let in_b = ok(store.list_statuses(&b, &Filters::all()), "statuses in B");
    assert_eq!(refs(&in_a), vec!["same-ref"]);
    assert_eq!(refs(&in_b), vec!["same-ref"]);
    assert_eq!(in_a[0].offset, 3);
    assert_eq!(in_b[0].offset, 0);

    ok(wb.write(&data), "write in B");
    let got = ok(
        wb.commit(len(&data), Some(digest.clone()), labels(&[("owner", "b")])),
        "commit in B of bytes A holds",
    );
    assert_eq!(got, digest);
    assert_eq!(
        ok(store.info(&b, &digest), "info in B").labels,
        labels(&[("owner", "b")])
    );
    assert_eq!(
        ok(store.info(&a, &digest), "info in A").labels,
        labels(&[("owner", "a")])
    );
    assert_eq!(read_all(store, &b, &digest), data);
    fails(
        store.status(&b, "same-ref"),
        ErrorKind::NotFound,
        "B's ingest after commit",
    );
    assert_eq!(
        ok(store.status(&a, "same-ref"), "A's ingest after B's commit").offset,
        3
    );
    drop(wa);

    ok(store.delete(&a, &digest), "delete in A");
    fails(
        store.info(&a, &digest),
        ErrorKind::NotFound,
        "info in A after delete",
    );
    assert_eq!(
        read_all(store, &b, &digest),
        data,
        "B still reads what A deleted"
    );
}

/// Delete removes the namespace's record; the digest can be written again afterwards.
pub fn delete(store: &dyn ContentStore) {
    let c = ctx("suite-a");
    let data = b"short-lived".to_vec();
    let digest = ingest(store, &c, "delete-1", &data, Labels::new());
    ok(store.delete(&c, &digest), "delete");
    fails(
        store.info(&c, &digest),
        ErrorKind::NotFound,
        "info after delete",
    );
    fails(
        store.reader(&c, &digest),
        ErrorKind::NotFound,
        "reader after delete",
    );
    fails(
        store.delete(&c, &digest),
        ErrorKind::NotFound,
        "second delete",
    );
    assert!(ok(store.list(&c, &Filters::all()), "list after delete").is_empty());

    let again = ingest(store, &c, "delete-2", &data, Labels::new());
    assert_eq!(again, digest);
    assert_eq!(read_all(store, &c, &again), data);
}
