//! Garbage collection end to end: what a live berthd removes from its metadata and from disk,
//! through berth-client, `berthctl gc` and containerd's `ctr leases rm --sync`.
//!
//! The daemons here run with a background-collection delay of ten minutes, so every collection
//! a test sees is one it asked for: counts are exact, and "removed before the call returned"
//! cannot be a background pass winning a race.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use berth_client::{Client, LeaseOptions};
use berth_core::gc::{REF_CONTENT_PREFIX, ROOT_LABEL};
use berth_core::labels::Labels;
use berth_core::leases::EXPIRE_LABEL;
use berth_core::{Digest, ErrorKind};
use berth_integration::{Daemon, random_bytes};
use berth_proto::containerd::services::content::v1 as pb;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

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

fn blob_path(d: &Daemon, digest: &Digest) -> PathBuf {
    d.root().join("content/blobs/sha256").join(digest.hex())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[track_caller]
fn assert_on_disk(d: &Daemon, digest: &Digest, what: &str) {
    assert!(
        blob_path(d, digest).is_file(),
        "{what} ({digest}) should be on disk at {}",
        blob_path(d, digest).display()
    );
}

#[track_caller]
fn assert_gone(d: &Daemon, digest: &Digest, what: &str) {
    assert!(
        !blob_path(d, digest).exists(),
        "{what} ({digest}) should be gone from disk"
    );
}

async fn assert_not_found(c: &Client, digest: &Digest, what: &str) {
    match c.content().info(digest).await {
        Ok(info) => panic!("{what}: still recorded: {info:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{what}: {e}"),
    }
}

#[tokio::test]
async fn unreferenced_blob_is_collected_and_leased_blob_kept() {
    let d = quiet_daemon();
    let c = d.client("default").await;
    let lease = c.leases().create(LeaseOptions::default()).await.unwrap();
    let leased = c.with_lease(&lease.id);

    let loose_data = b"nobody holds me".to_vec();
    let loose = c
        .content()
        .write_blob(&loose_data, Labels::new())
        .await
        .unwrap();
    let kept = leased
        .content()
        .write_blob(b"held by a lease", Labels::new())
        .await
        .unwrap();
    assert_on_disk(&d, &loose, "the unleased blob before GC");
    assert_on_disk(&d, &kept, "the leased blob before GC");

    let stats = c.gc().await.unwrap();
    assert_eq!(stats.records_removed, 1, "{stats:?}");
    assert_eq!(stats.blobs_removed, 1, "{stats:?}");
    assert_eq!(stats.bytes_removed, loose_data.len() as u64, "{stats:?}");

    assert_gone(&d, &loose, "the unleased blob");
    assert_not_found(&c, &loose, "the unleased blob").await;
    assert_on_disk(&d, &kept, "the leased blob");
    assert_eq!(
        c.content().read_all(&kept).await.unwrap(),
        b"held by a lease"
    );
}

#[tokio::test]
async fn roots_and_what_they_reference_survive() {
    let d = quiet_daemon();
    let c = d.client("default").await;
    let write = |data: &'static [u8], l: Labels| {
        let c = c.clone();
        async move { c.content().write_blob(data, l).await.unwrap() }
    };
    let grandchild = write(b"a file in a layer", Labels::new()).await;
    let layer_ref = format!("{REF_CONTENT_PREFIX}.x");
    let layer = write(
        b"a layer",
        labels(&[(layer_ref.as_str(), grandchild.as_str())]),
    )
    .await;
    let config = write(b"a config", Labels::new()).await;
    let orphan = write(b"an orphan", Labels::new()).await;
    let l0 = format!("{REF_CONTENT_PREFIX}.l.0");
    let cfg = format!("{REF_CONTENT_PREFIX}.config");
    let manifest = write(
        b"a manifest",
        labels(&[
            (ROOT_LABEL, "2024-01-01T00:00:00Z"),
            (l0.as_str(), layer.as_str()),
            (cfg.as_str(), config.as_str()),
        ]),
    )
    .await;

    let stats = c.gc().await.unwrap();
    assert_eq!(stats.blobs_removed, 1, "only the orphan goes: {stats:?}");
    assert_gone(&d, &orphan, "the orphan");
    assert_not_found(&c, &orphan, "the orphan").await;
    for (digest, what) in [
        (&manifest, "the root"),
        (&layer, "content the root references"),
        (&config, "content the root references"),
        (&grandchild, "content referenced through a reference"),
    ] {
        assert_on_disk(&d, digest, what);
        c.content().info(digest).await.unwrap();
    }

    // Without the root label nothing holds the tree any more.
    c.content()
        .update_labels(&manifest, &labels(&[(ROOT_LABEL, "")]))
        .await
        .unwrap();
    let stats = c.gc().await.unwrap();
    assert_eq!(stats.blobs_removed, 4, "{stats:?}");
    for digest in [&manifest, &layer, &config, &grandchild] {
        assert_gone(&d, digest, "content of an unrooted tree");
    }
}

#[tokio::test]
async fn deleting_a_lease_with_sync_collects_before_returning() {
    let d = quiet_daemon();
    let c = d.client("default").await;
    let lazy = c.leases().create(LeaseOptions::default()).await.unwrap();
    let eager = c.leases().create(LeaseOptions::default()).await.unwrap();
    let lazy_blob = c
        .with_lease(&lazy.id)
        .content()
        .write_blob(&random_bytes(4096), Labels::new())
        .await
        .unwrap();
    let eager_blob = c
        .with_lease(&eager.id)
        .content()
        .write_blob(&random_bytes(4096), Labels::new())
        .await
        .unwrap();
    assert_eq!(c.gc().await.unwrap().blobs_removed, 0);

    // Without sync the collection is only scheduled (and this daemon waits ten minutes).
    c.leases().delete(&lazy.id, false).await.unwrap();
    assert_on_disk(&d, &lazy_blob, "content of a lease deleted without sync");
    c.content().info(&lazy_blob).await.unwrap();

    c.leases().delete(&eager.id, true).await.unwrap();
    assert_gone(&d, &eager_blob, "content of a lease deleted with sync");
    assert_not_found(&c, &eager_blob, "content of a lease deleted with sync").await;
    // The synchronous pass is a full one: the other lease's content goes too.
    assert_gone(&d, &lazy_blob, "content of the lease deleted earlier");
    assert!(c.leases().list(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_lease_does_not_protect() {
    let d = quiet_daemon();
    let c = d.client("default").await;
    let expired = c
        .leases()
        .create(LeaseOptions::with_id("expired").label(EXPIRE_LABEL, "2000-01-01T00:00:00Z"))
        .await
        .unwrap();
    let live = c
        .leases()
        .create(LeaseOptions::with_id("live").expires_in(Duration::from_secs(3600)))
        .await
        .unwrap();
    let stale = c
        .with_lease(&expired.id)
        .content()
        .write_blob(b"under an expired lease", Labels::new())
        .await
        .unwrap();
    let fresh = c
        .with_lease(&live.id)
        .content()
        .write_blob(b"under a live lease", Labels::new())
        .await
        .unwrap();

    let stats = c.gc().await.unwrap();
    assert_eq!(stats.blobs_removed, 1, "{stats:?}");
    assert_gone(&d, &stale, "content of an expired lease");
    assert_not_found(&c, &stale, "content of an expired lease").await;
    assert_on_disk(&d, &fresh, "content of a live lease");
    let ids: Vec<String> = c
        .leases()
        .list(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, ["live"], "the expired lease itself is collected");
}

#[tokio::test]
async fn a_shared_blob_stays_until_every_namespace_deletes_it() {
    let d = quiet_daemon();
    let a = d.client("team-a").await;
    let b = d.client("team-b").await;
    let data = random_bytes(10_000);
    let root = labels(&[(ROOT_LABEL, "1")]);
    let digest = a.content().write_blob(&data, root.clone()).await.unwrap();
    assert_eq!(b.content().write_blob(&data, root).await.unwrap(), digest);
    assert_on_disk(&d, &digest, "the shared blob");

    a.content().delete(&digest).await.unwrap();
    let stats = a.gc().await.unwrap();
    assert_eq!(stats.blobs_removed, 0, "{stats:?}");
    assert_on_disk(&d, &digest, "a blob team-b still holds");
    assert_not_found(&a, &digest, "team-a's deleted record").await;
    assert_eq!(b.content().read_all(&digest).await.unwrap(), data);

    b.content().delete(&digest).await.unwrap();
    let stats = b.gc().await.unwrap();
    assert_eq!(stats.blobs_removed, 1, "{stats:?}");
    assert_eq!(stats.bytes_removed, data.len() as u64, "{stats:?}");
    assert_gone(&d, &digest, "a blob no namespace holds");
}

/// Leaves an ingest of `data` under `reference` with no writer open.
async fn abandon_ingest(c: &Client, reference: &str, data: &[u8]) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::WriteContentRequest {
        action: pb::WriteAction::Stat as i32,
        r#ref: reference.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(pb::WriteContentRequest {
        action: pb::WriteAction::Write as i32,
        data: data.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut replies = c
        .rpc()
        .content()
        .write(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    replies.message().await.unwrap().unwrap();
    let written = replies.message().await.unwrap().unwrap();
    assert_eq!(written.offset, data.len() as i64);
    drop(tx);
    // The server ends the stream once its writer is gone.
    while replies.message().await.unwrap().is_some() {}
}

#[tokio::test]
async fn berthctl_gc_reports_what_it_removed() {
    let d = quiet_daemon();
    let c = d.client("default").await;
    let small = c
        .content()
        .write_blob(&random_bytes(100), Labels::new())
        .await
        .unwrap();
    let large = c
        .content()
        .write_blob(&random_bytes(250), Labels::new())
        .await
        .unwrap();
    let rooted = c
        .content()
        .write_blob(b"rooted", labels(&[(ROOT_LABEL, "1")]))
        .await
        .unwrap();
    abandon_ingest(&c, "abandoned", b"half a blob").await;
    assert_eq!(c.content().statuses(&[]).await.unwrap().len(), 1);

    let gc = |what: &str| -> serde_json::Value {
        let out = d.berthctl(&["gc", "--format", "json"]).ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"))
    };
    let first = gc("first gc");
    assert_eq!(first["records_removed"], 2, "{first}");
    assert_eq!(first["blobs_removed"], 2, "{first}");
    assert_eq!(first["bytes_removed"], 350, "{first}");
    assert_eq!(first["ingests_removed"], 1, "{first}");
    assert!(
        first["duration_seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{first}"
    );
    assert_gone(&d, &small, "an unreferenced blob");
    assert_gone(&d, &large, "an unreferenced blob");
    assert_on_disk(&d, &rooted, "a rooted blob");
    assert!(c.content().statuses(&[]).await.unwrap().is_empty());

    let second = gc("second gc");
    for key in [
        "records_removed",
        "blobs_removed",
        "bytes_removed",
        "ingests_removed",
    ] {
        assert_eq!(second[key], 0, "nothing is left to collect: {second}");
    }
}

#[tokio::test]
async fn ctr_leases_rm_sync_frees_the_leases_content() {
    let d = quiet_daemon();
    let c = d.client("default").await;
    let lease = c
        .leases()
        .create(LeaseOptions::with_id("ctr-lease"))
        .await
        .unwrap();
    let data = random_bytes(1 << 20);
    let digest = c
        .with_lease(&lease.id)
        .content()
        .write_blob(&data, Labels::new())
        .await
        .unwrap();
    assert_eq!(c.gc().await.unwrap().blobs_removed, 0);
    assert_on_disk(&d, &digest, "content under a lease");
    assert!(d.ctr(&["leases", "ls"]).ok().contains("ctr-lease"));

    d.ctr(&["leases", "rm", "--sync", "ctr-lease"]).ok();
    assert_gone(&d, &digest, "content of a lease ctr removed with --sync");
    assert_not_found(&c, &digest, "content of a removed lease").await;
    assert!(!d.ctr(&["leases", "ls"]).ok().contains("ctr-lease"));
}
