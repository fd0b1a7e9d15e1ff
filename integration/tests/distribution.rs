//! berth-distribution end to end: pulls from and pushes to a real registry (Debian's
//! docker-registry on loopback) through the real stores, wired in-process as berthd wires them
//! (LocalStore + Metadata + overlayfs + WalkingDiff in a tempdir).
//!
//! Pulls unpack and the tree is compared with the test image's; labels are checked by letting
//! GC run; pushes are checked with skopeo. Bad registries are made by tampering with the
//! registry's storage, with a tiny fake HTTP server, or with a fault-injecting proxy in front
//! of the real registry (500s, resets, truncated bodies). The fake server also plays the
//! outside host a foreign layer's URLs point at.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use berth_core::content::ContentStore;
use berth_core::diff::Descriptor;
use berth_core::filters::Filters;
use berth_core::gc::{GarbageCollector, ROOT_LABEL};
use berth_core::images::{Image, ImageStore};
use berth_core::labels::Labels;
use berth_core::leases::{EXPIRE_LABEL, LeaseManager};
use berth_core::snapshots::{Kind, SnapshotStore};
use berth_core::transfer::{
    BlobState, Credentials, Platform, Progress, ProgressSink, PullRequest, PushRequest, Transfer,
};
use berth_core::{Digest, ErrorKind, Namespace, RequestContext, Result};
use berth_distribution::{PULL_REFERENCE_LABEL, RegistryTransfer, TransferOptions};
use berth_integration::mounts::{Mounted, mount_point};
use berth_integration::registry::Registry;
use berth_integration::testimage::{Rootfs, TestImage, assert_tree, big_image};
use berth_metadata::{GcOptions, Metadata};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SN: &str = "overlayfs";

/// The daemon's stores in a tempdir, and a transfer over them.
struct Stack {
    _dir: TempDir,
    md: Arc<Metadata>,
    transfer: RegistryTransfer,
    ctx: RequestContext,
}

type Events = Arc<Mutex<Vec<Progress>>>;

fn recorder() -> (ProgressSink, Events) {
    let events: Events = Arc::default();
    let sink_events = Arc::clone(&events);
    let sink: ProgressSink = Box::new(move |p| sink_events.lock().unwrap().push(p));
    (sink, events)
}

fn stack_with(options: TransferOptions) -> Stack {
    let dir = tempfile::Builder::new()
        .prefix("berth-dist-")
        .tempdir()
        .unwrap();
    let blobs = berth_content::LocalStore::open(dir.path().join("content")).unwrap();
    let md = Metadata::open(
        &dir.path().join("metadata.redb"),
        Arc::new(blobs),
        GcOptions::default(),
    )
    .unwrap();
    let overlay =
        berth_snapshot_overlay::OverlaySnapshotter::open(dir.path().join("overlayfs")).unwrap();
    md.add_snapshotter(SN, Arc::new(overlay)).unwrap();
    let tmpmounts = dir.path().join("tmpmounts");
    std::fs::create_dir(&tmpmounts).unwrap();
    let differ = Arc::new(berth_diff::WalkingDiff::new(md.clone()).with_temp_dir(tmpmounts));
    let transfer = RegistryTransfer::new(
        md.clone(),
        md.clone(),
        md.clone(),
        md.clone(),
        differ,
        options,
    )
    .unwrap();
    Stack {
        _dir: dir,
        md,
        transfer,
        ctx: RequestContext::new(Namespace::new("dist-test").unwrap()),
    }
}

fn stack() -> Stack {
    stack_with(TransferOptions::default())
}

fn pull_req(reference: &str) -> PullRequest {
    PullRequest {
        reference: reference.to_owned(),
        unpack: true,
        ..Default::default()
    }
}

impl Stack {
    async fn pull(&self, req: PullRequest) -> (Result<Image>, Vec<Progress>) {
        let (sink, events) = recorder();
        let result = self.transfer.pull(&self.ctx, req, sink).await;
        let events = events.lock().unwrap().clone();
        (result, events)
    }

    async fn push(&self, req: PushRequest) -> (Result<Image>, Vec<Progress>) {
        let (sink, events) = recorder();
        let result = self.transfer.push(&self.ctx, req, sink).await;
        let events = events.lock().unwrap().clone();
        (result, events)
    }

    fn labels(&self, digest: &Digest) -> Labels {
        ContentStore::info(&*self.md, &self.ctx, digest)
            .unwrap_or_else(|e| panic!("{digest}: {e}"))
            .labels
    }

    fn has_blob(&self, digest: &Digest) -> bool {
        match ContentStore::info(&*self.md, &self.ctx, digest) {
            Ok(_) => true,
            Err(e) if e.is(ErrorKind::NotFound) => false,
            Err(e) => panic!("{digest}: {e}"),
        }
    }

    fn committed(&self, chain: &Digest) -> bool {
        match SnapshotStore::stat(&*self.md, &self.ctx, SN, chain.as_str()) {
            Ok(info) => info.kind == Kind::Committed,
            Err(e) if e.is(ErrorKind::NotFound) => false,
            Err(e) => panic!("{chain}: {e}"),
        }
    }

    fn leases(&self) -> Vec<berth_core::leases::Lease> {
        LeaseManager::list(&*self.md, &self.ctx, &Filters::parse::<&str>(&[]).unwrap()).unwrap()
    }

    /// Mounts a view of `top` and compares it with `expected`.
    fn check_rootfs(&self, top: &Digest, expected: &Rootfs) {
        let key = format!("check-view-{}", top.hex());
        // A GC root: the lease deletes of earlier pulls schedule collections.
        let labels = Labels::from([(ROOT_LABEL.to_owned(), "1".to_owned())]);
        let mounts =
            SnapshotStore::view(&*self.md, &self.ctx, SN, &key, Some(top.as_str()), labels)
                .unwrap();
        let (dir, target) = mount_point();
        let commands: Vec<String> = mounts
            .iter()
            .map(|m| {
                format!(
                    "mount -t {} {} {} -o {}",
                    m.kind,
                    m.source,
                    target.display(),
                    m.options.join(",")
                )
            })
            .collect();
        {
            let mounted = Mounted::run(&commands.join("\n"), target, dir);
            assert_tree(expected, mounted.path());
        }
        SnapshotStore::remove(&*self.md, &self.ctx, SN, &key).unwrap();
    }
}

/// The states one blob went through, in order.
fn states(events: &[Progress], digest: &Digest) -> Vec<BlobState> {
    events
        .iter()
        .filter_map(|p| match p {
            Progress::Blob {
                descriptor, state, ..
            } if descriptor.digest == *digest => Some(*state),
            _ => None,
        })
        .collect()
}

/// The offsets of one blob's Transferring events.
fn offsets(events: &[Progress], digest: &Digest) -> Vec<u64> {
    events
        .iter()
        .filter_map(|p| match p {
            Progress::Blob {
                descriptor,
                state: BlobState::Transferring,
                offset,
            } if descriptor.digest == *digest => Some(*offset),
            _ => None,
        })
        .collect()
}

/// Every registry of these tests is on 127.0.0.1; the label leaves the port out.
const SOURCE_LABEL: &str = "containerd.io/distribution.source.127.0.0.1";

/// The file holding blob `digest` in the registry's filesystem storage.
fn registry_blob_file(registry: &Registry, digest: &Digest) -> PathBuf {
    registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex())
        .join("data")
}

fn all_blobs(image: &TestImage) -> Vec<Digest> {
    image.blobs.keys().cloned().collect()
}

async fn pull_unpack_and_verify(image: TestImage, repo: &str) {
    let registry = Registry::start();
    let reference = image.push(&registry, repo, "v1");
    let s = stack();

    let (result, events) = s.pull(pull_req(&reference)).await;
    let pulled = result.unwrap_or_else(|e| panic!("pull {reference}: {e}\n{}", registry.log()));
    assert_eq!(pulled.name, reference);
    assert_eq!(pulled.target.digest, image.root.digest);
    assert_eq!(pulled.target.media_type, image.root.media_type);
    assert_eq!(pulled.target.size, image.root.size);
    assert_eq!(
        ImageStore::get(&*s.md, &s.ctx, &reference).unwrap().target,
        pulled.target
    );
    match (events.first(), events.last()) {
        (Some(Progress::Resolved { name, root }), Some(Progress::Done { image: done })) => {
            assert_eq!(name, &reference);
            assert_eq!(root.digest, image.root.digest);
            assert_eq!(done.target.digest, image.root.digest);
        }
        other => panic!("first/last events: {other:?}"),
    }

    // Every blob is stored with the labels containerd sets.
    for digest in all_blobs(&image) {
        assert_eq!(
            s.labels(&digest).get(SOURCE_LABEL).map(String::as_str),
            Some(repo),
            "{digest}"
        );
    }
    let manifest = image.manifest();
    let labels = s.labels(&manifest.descriptor.digest);
    assert_eq!(
        labels["containerd.io/gc.ref.content.config"],
        manifest.config.digest.to_string()
    );
    let chains = image.chain_ids();
    for (i, (layer, diff_id)) in image.layers().iter().zip(image.diff_ids()).enumerate() {
        let digest = &layer.descriptor.digest;
        assert_eq!(
            labels[&format!("containerd.io/gc.ref.content.l.{i}")],
            digest.to_string()
        );
        assert_eq!(
            s.labels(digest)["containerd.io/uncompressed"],
            diff_id.to_string()
        );
        let st = states(&events, digest);
        for want in [
            BlobState::Waiting,
            BlobState::Transferring,
            BlobState::Done,
            BlobState::Unpacking,
            BlobState::Unpacked,
        ] {
            assert!(
                st.contains(&want),
                "layer {i}: {want:?} missing from {st:?}"
            );
        }
        assert!(s.committed(&chains[i]), "chain {i} not committed");
    }
    let top = chains.last().unwrap();
    assert_eq!(
        s.labels(&manifest.config.digest)["containerd.io/gc.ref.snapshot.overlayfs"],
        top.to_string()
    );
    assert!(s.leases().is_empty(), "the pull's lease is gone");

    // The labels hold the tree together: a collection keeps every blob and snapshot.
    s.md.collect().unwrap();
    for digest in all_blobs(&image) {
        assert!(s.has_blob(&digest), "{digest} collected");
    }
    for chain in &chains {
        assert!(s.committed(chain), "{chain} collected");
    }
    s.check_rootfs(top, &image.expected_rootfs());

    // A second pull moves nothing and unpacks nothing.
    let (result, events) = s.pull(pull_req(&reference)).await;
    result.unwrap();
    for digest in all_blobs(&image) {
        let st = states(&events, &digest);
        assert!(st.contains(&BlobState::Exists), "{digest}: {st:?}");
        assert!(!st.contains(&BlobState::Transferring), "{digest}: {st:?}");
    }
    let snapshots =
        SnapshotStore::list(&*s.md, &s.ctx, SN, &Filters::parse::<&str>(&[]).unwrap()).unwrap();
    assert_eq!(snapshots.len(), chains.len(), "{snapshots:?}");

    // Removing the image frees everything the pull made.
    ImageStore::delete(&*s.md, &s.ctx, &reference, true).unwrap();
    for digest in all_blobs(&image) {
        assert!(!s.has_blob(&digest), "{digest} kept");
    }
    for chain in &chains {
        assert!(!s.committed(chain), "{chain} kept");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_one_layer_image() {
    pull_unpack_and_verify(TestImage::one_layer(), "one/layer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_three_layer_image_with_whiteouts() {
    pull_unpack_and_verify(TestImage::three_layer(), "three/layer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_index_selects_platforms() {
    let image = TestImage::two_platform_index();
    let registry = Registry::start();
    let reference = image.push(&registry, "multi/platform", "v1");
    let host = image.manifest().clone();
    let other = image
        .manifests
        .iter()
        .find(|m| m.descriptor.digest != host.descriptor.digest)
        .unwrap()
        .clone();

    // Default: the host's platform only.
    let s = stack();
    let (result, _) = s.pull(pull_req(&reference)).await;
    let pulled = result.unwrap();
    assert_eq!(pulled.target.digest, image.root.digest);
    let index_labels = s.labels(&image.root.digest);
    for (i, m) in image.manifests.iter().enumerate() {
        assert_eq!(
            index_labels[&format!("containerd.io/gc.ref.content.m.{i}")],
            m.descriptor.digest.to_string(),
            "every child is labelled, fetched or not"
        );
    }
    assert!(s.has_blob(&host.descriptor.digest));
    assert!(s.has_blob(&host.config.digest));
    assert!(!s.has_blob(&other.descriptor.digest));
    assert!(!s.has_blob(&other.config.digest));
    s.check_rootfs(image.chain_ids().last().unwrap(), &image.expected_rootfs());

    // Every platform fetched, still only the host's unpacked and labelled with its snapshot.
    let s = stack();
    let mut req = pull_req(&reference);
    req.all_platforms = true;
    let (result, _) = s.pull(req).await;
    result.unwrap();
    for digest in all_blobs(&image) {
        assert!(s.has_blob(&digest), "{digest}");
    }
    assert!(
        s.labels(&host.config.digest)
            .contains_key("containerd.io/gc.ref.snapshot.overlayfs")
    );
    assert!(
        !s.labels(&other.config.digest)
            .contains_key("containerd.io/gc.ref.snapshot.overlayfs")
    );

    // An explicit platform, without unpacking.
    let s = stack();
    let mut req = pull_req(&reference);
    req.unpack = false;
    req.platforms = vec![Platform {
        os: other.platform.os.clone(),
        architecture: other.platform.architecture.clone(),
        variant: String::new(),
    }];
    let (result, _) = s.pull(req).await;
    result.unwrap();
    assert!(s.has_blob(&other.descriptor.digest));
    assert!(!s.has_blob(&host.descriptor.digest));
    assert!(!s.committed(&image.chain_ids()[0]), "nothing unpacked");

    // A platform the index lacks.
    let mut req = pull_req(&reference);
    req.platforms = vec![Platform::parse("linux/s390x").unwrap()];
    let (result, _) = s.pull(req).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string()
            .contains("no manifest for platform linux/s390x"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn push_mounts_uploads_and_round_trips() {
    let image = TestImage::three_layer();
    let registry = Registry::start();
    let reference = image.push(&registry, "src/three", "v1");
    // Small limits so the busybox layer goes up in PATCH chunks.
    let s = stack_with(TransferOptions {
        monolithic_upload_limit: 64 << 10,
        upload_chunk_size: 256 << 10,
        ..Default::default()
    });
    s.pull(pull_req(&reference)).await.0.unwrap();
    let blobs: Vec<Descriptor> = std::iter::once(image.config().clone())
        .chain(image.layers().iter().map(|l| l.descriptor.clone()))
        .collect();

    // Another repository of the same registry: every blob is mounted, not uploaded.
    let copy = registry.reference("copy/three", "v2");
    let (result, events) = s
        .push(PushRequest {
            image: reference.clone(),
            reference: copy.clone(),
            ..Default::default()
        })
        .await;
    let pushed = result.unwrap_or_else(|e| panic!("push {copy}: {e}\n{}", registry.log()));
    assert_eq!(pushed.name, copy);
    assert_eq!(pushed.target.digest, image.root.digest);
    for blob in &blobs {
        let st = states(&events, &blob.digest);
        assert!(st.contains(&BlobState::Mounted), "{}: {st:?}", blob.digest);
    }
    let raw = registry.inspect("copy/three:v2", true);
    let raw_bytes = raw.output.stdout.clone();
    assert!(raw.output.status.success(), "{}", raw.stderr());
    let trimmed = raw_bytes.strip_suffix(b"\n").unwrap_or(&raw_bytes);
    assert_eq!(
        Digest::of(trimmed),
        image.root.digest,
        "skopeo sees the same manifest"
    );

    // Another registry: uploads, chunked for the big layer.
    let other = Registry::start();
    let dest = other.reference("up/three", "v3");
    let (result, events) = s
        .push(PushRequest {
            image: reference.clone(),
            reference: dest.clone(),
            ..Default::default()
        })
        .await;
    result.unwrap_or_else(|e| panic!("push {dest}: {e}\n{}", other.log()));
    for blob in &blobs {
        let st = states(&events, &blob.digest);
        assert_eq!(st.last(), Some(&BlobState::Done), "{}: {st:?}", blob.digest);
        assert!(!st.contains(&BlobState::Mounted), "{}: {st:?}", blob.digest);
    }
    let big = &image.layers()[0].descriptor;
    assert!(
        big.size > 256 << 10,
        "the base layer is larger than a chunk"
    );
    let chunks = offsets(&events, &big.digest);
    assert!(chunks.len() > 2, "chunked upload progress: {chunks:?}");
    assert_eq!(chunks.last(), Some(&big.size));
    let inspect = other.inspect("up/three:v3", false);
    assert!(inspect.output.status.success(), "{}", inspect.stderr());
    let info: serde_json::Value = serde_json::from_slice(&inspect.output.stdout).unwrap();
    assert_eq!(info["Digest"], image.root.digest.as_str());

    // Pushing again finds everything there.
    let (result, events) = s
        .push(PushRequest {
            image: reference.clone(),
            reference: dest.clone(),
            ..Default::default()
        })
        .await;
    result.unwrap();
    for blob in &blobs {
        assert_eq!(
            states(&events, &blob.digest),
            [BlobState::Waiting, BlobState::Exists]
        );
    }

    // What we pushed pulls and unpacks to the same tree.
    let fresh = stack();
    let (result, _) = fresh.pull(pull_req(&dest)).await;
    assert_eq!(result.unwrap().target.digest, image.root.digest);
    fresh.check_rootfs(image.chain_ids().last().unwrap(), &image.expected_rootfs());

    // An index pushes with its children first.
    let index = TestImage::two_platform_index();
    let index_ref = index.push(&registry, "src/multi", "v1");
    let mut req = pull_req(&index_ref);
    req.all_platforms = true;
    s.pull(req).await.0.unwrap();
    let (result, _) = s
        .push(PushRequest {
            image: index_ref.clone(),
            reference: other.reference("up/multi", "v1"),
            ..Default::default()
        })
        .await;
    assert_eq!(result.unwrap().target.digest, index.root.digest);
    let raw = other.inspect("up/multi:v1", true);
    assert!(raw.output.status.success(), "{}", raw.stderr());
    let raw_bytes = raw.output.stdout.clone();
    let trimmed = raw_bytes.strip_suffix(b"\n").unwrap_or(&raw_bytes);
    assert_eq!(Digest::of(trimmed), index.root.digest);

    // A missing local image.
    let (result, _) = s
        .push(PushRequest {
            image: "nope:latest".into(),
            reference: dest,
            ..Default::default()
        })
        .await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_registry_needs_the_right_password() {
    let registry = Registry::start_with_auth("berth", "s3cret");
    let image = TestImage::one_layer();
    let reference = image.push(&registry, "private/one", "v1");
    let host = registry.host();
    let s = stack();

    let (result, _) = s.pull(pull_req(&reference)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("authentication required for {host}")),
        "{err}"
    );

    let mut req = pull_req(&reference);
    req.credentials = Some(Credentials {
        username: "berth".into(),
        secret: "wrong".into(),
    });
    let (result, _) = s.pull(req).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("authentication failed for {host}")),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("wrong"), "no secret in errors");

    let creds = Credentials {
        username: "berth".into(),
        secret: "s3cret".into(),
    };
    let mut req = pull_req(&reference);
    req.credentials = Some(creds.clone());
    let (result, _) = s.pull(req).await;
    assert_eq!(result.unwrap().target.digest, image.root.digest);
    s.check_rootfs(image.chain_ids().last().unwrap(), &image.expected_rootfs());

    // Push needs them too.
    let dest = registry.reference("private/copy", "v1");
    let (result, _) = s
        .push(PushRequest {
            image: reference.clone(),
            reference: dest.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::PermissionDenied);
    let (result, _) = s
        .push(PushRequest {
            image: reference.clone(),
            reference: dest,
            credentials: Some(creds),
            ..Default::default()
        })
        .await;
    result.unwrap();
    let inspect = registry.inspect("private/copy:v1", false);
    assert!(inspect.output.status.success(), "{}", inspect.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_pull_resumes() {
    let registry = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    let big = big_image(layout.path(), 3, 24 << 20);
    let reference = big.push(&registry, "big/img", "v1");
    let first = big.layers[0].0.clone();
    let middle = big.layers[1].0.clone();
    // One download at a time, so the cancel lands in the middle layer.
    let s = stack_with(TransferOptions {
        max_concurrent_downloads: 1,
        ..Default::default()
    });
    let (cancel_tx, mut cancel_rx) = tokio::sync::mpsc::unbounded_channel();
    let target = middle.digest.clone();
    let sink: ProgressSink = Box::new(move |p| {
        if let Progress::Blob {
            descriptor,
            state: BlobState::Transferring,
            offset,
        } = &p
            && descriptor.digest == target
            && *offset >= 2 << 20
        {
            let _ = cancel_tx.send(());
        }
    });
    {
        let pull = s.transfer.pull(&s.ctx, pull_req(&reference), sink);
        tokio::select! {
            biased;
            _ = cancel_rx.recv() => {}
            r = pull => panic!("the pull finished before it was cancelled: {r:?}"),
        }
    }
    // A write in flight finishes on the blocking pool and releases the ingest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.has_blob(&first.digest), "the first layer was committed");
    assert!(!s.has_blob(&middle.digest));
    let statuses =
        ContentStore::list_statuses(&*s.md, &s.ctx, &Filters::parse::<&str>(&[]).unwrap()).unwrap();
    let ingest = statuses
        .iter()
        .find(|st| st.reference == format!("layer-{}", middle.digest))
        .unwrap_or_else(|| panic!("no ingest for the middle layer: {statuses:?}"));
    assert!(
        ingest.offset >= 2 << 20 && ingest.offset < middle.size,
        "{ingest:?}"
    );
    let leases = s.leases();
    assert_eq!(leases.len(), 1, "the cancelled pull's lease stays");
    assert!(leases[0].labels.contains_key(EXPIRE_LABEL));

    let (result, events) = s.pull(pull_req(&reference)).await;
    result.unwrap();
    assert_eq!(
        states(&events, &first.digest)[..2],
        [BlobState::Waiting, BlobState::Exists]
    );
    assert_eq!(
        states(&events, &big.config.digest)[..2],
        [BlobState::Waiting, BlobState::Exists]
    );
    let resumed = offsets(&events, &middle.digest);
    assert_eq!(
        resumed.first(),
        Some(&ingest.offset),
        "resumed where it stopped"
    );
    assert_eq!(resumed.last(), Some(&middle.size));
    assert!(states(&events, &middle.digest).contains(&BlobState::Done));
    for chain in big.chain_ids() {
        assert!(s.committed(&chain), "{chain}");
    }
    assert!(
        ContentStore::list_statuses(&*s.md, &s.ctx, &Filters::parse::<&str>(&[]).unwrap())
            .unwrap()
            .is_empty(),
        "no ingest left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_registry_content_is_refused() {
    let registry = Registry::start();
    let s = stack();

    // Nothing there.
    let missing = registry.reference("nothing/here", "v1");
    let (result, _) = s.pull(pull_req(&missing)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{missing}: not found")),
        "{err}"
    );
    assert!(
        s.leases().is_empty(),
        "a pull that fetched nothing keeps no lease"
    );

    // A manifest whose bytes no longer match its digest.
    let image = TestImage::one_layer();
    let reference = image.push(&registry, "tamper/manifest", "v1");
    let file = registry_blob_file(&registry, &image.root.digest);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.push(b' ');
    std::fs::write(&file, &bytes).unwrap();
    let (result, _) = s.pull(pull_req(&reference)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!s.has_blob(&image.root.digest));

    // A truncated layer.
    let image = TestImage::three_layer().with_name("berth.test/truncated:latest");
    let reference = image.push(&registry, "tamper/truncated", "v1");
    let layer = image.layers()[0].descriptor.clone();
    let file = registry_blob_file(&registry, &layer.digest);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (result, _) = s.pull(pull_req(&reference)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "ended the blob after {} of {} bytes",
            bytes.len() / 2,
            layer.size
        )),
        "{err}"
    );
    assert!(!s.has_blob(&layer.digest));
    let leases = s.leases();
    assert_eq!(leases.len(), 1, "a failed pull keeps its lease: {leases:?}");
    assert_eq!(
        leases[0].labels[PULL_REFERENCE_LABEL], reference,
        "labelled with what it pulled"
    );

    // A layer of the right size with the wrong bytes.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    std::fs::write(&file, &flipped).unwrap();
    let (result, _) = s.pull(pull_req(&reference)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("digest mismatch: expected {}", layer.digest)),
        "{err}"
    );
    assert!(!s.has_blob(&layer.digest));
    // Repaired, the same pull succeeds (the bad bytes were not kept for a resume), and the
    // leases of the failed attempts go with it.
    std::fs::write(&file, &bytes).unwrap();
    let (result, _) = s.pull(pull_req(&reference)).await;
    result.unwrap();
    s.check_rootfs(image.chain_ids().last().unwrap(), &image.expected_rootfs());
    assert!(s.leases().is_empty(), "{:?}", s.leases());
}

// ---- A tiny fake registry, for answers a real one never gives. ----

#[derive(Debug, Clone)]
struct FakeRequest {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
}

struct FakeResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl FakeResponse {
    fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.into(),
        }
    }
}

type Handler = Arc<dyn Fn(&FakeRequest) -> FakeResponse + Send + Sync>;

struct FakeServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<FakeRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    async fn start(handler: impl Fn(&FakeRequest) -> FakeResponse + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(handler);
        let requests: Arc<Mutex<Vec<FakeRequest>>> = Arc::default();
        let log = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
                tokio::spawn(async move {
                    let _ = serve_one(sock, handler, log).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn requests(&self) -> Vec<FakeRequest> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve_one(
    mut sock: tokio::net::TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<FakeRequest>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 << 10 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let req = FakeRequest {
        method,
        target,
        headers,
    };
    log.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut out = format!("HTTP/1.1 {} Fake\r\nConnection: close\r\n", resp.status);
    if !resp
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    sock.write_all(out.as_bytes()).await?;
    if req.method != "HEAD" {
        sock.write_all(&resp.body).await?;
    }
    sock.shutdown().await
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_schema1_manifests_are_refused() {
    let big_digest = Digest::of(b"big").to_string();
    let digest_for_head = big_digest.clone();
    let server = FakeServer::start(move |req| {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        match (req.method.as_str(), req.target.as_str()) {
            // Says it is 5 MiB up front.
            ("HEAD", "/v2/big/head/manifests/v1") => FakeResponse::new(
                200,
                &[
                    ("Content-Type", oci),
                    ("Content-Length", "5242880"),
                    ("Docker-Content-Digest", &digest_for_head),
                ],
                Vec::new(),
            ),
            // Tells nothing on HEAD, then streams more than 4 MiB.
            ("HEAD", "/v2/big/body/manifests/v1") => FakeResponse::new(405, &[], Vec::new()),
            ("GET", "/v2/big/body/manifests/v1") => {
                let mut body = br#"{"schemaVersion":2,"config":{},"x":""#.to_vec();
                body.resize(5 << 20, b'a');
                FakeResponse::new(200, &[("Content-Type", oci)], body)
            }
            ("HEAD", "/v2/old/schema1/manifests/v1") => FakeResponse::new(405, &[], Vec::new()),
            ("GET", "/v2/old/schema1/manifests/v1") => FakeResponse::new(
                200,
                &[(
                    "Content-Type",
                    "application/vnd.docker.distribution.manifest.v1+prettyjws",
                )],
                r#"{"schemaVersion":1,"name":"old/schema1","tag":"v1","fsLayers":[]}"#,
            ),
            _ => FakeResponse::new(
                404,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
        }
    })
    .await;
    let s = stack();
    let host = server.host();

    for repo in ["big/head", "big/body"] {
        let (result, _) = s.pull(pull_req(&format!("{host}/{repo}:v1"))).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{repo}: {err}");
        assert!(err.to_string().contains("4 MiB limit"), "{repo}: {err}");
    }
    let (result, _) = s.pull(pull_req(&format!("{host}/old/schema1:v1"))).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented, "{err}");
    assert!(
        err.to_string()
            .contains("schema 1 manifests are not supported"),
        "{err}"
    );
    // The registry's error JSON is part of the message.
    let (result, _) = s.pull(pull_req(&format!("{host}/gone:v1"))).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains(&format!(
            "{host}/gone:v1: not found: MANIFEST_UNKNOWN: manifest unknown"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_flow() {
    let addr: Arc<Mutex<String>> = Arc::default();
    let realm_host = Arc::clone(&addr);
    let basic = format!("Basic {}", STANDARD.encode("alice:pw"));
    let server = FakeServer::start(move |req| {
        let realm = format!("http://{}/token", realm_host.lock().unwrap());
        if req.target.starts_with("/token?") {
            let scope_ok = req
                .target
                .contains("scope=repository%3Aapp%2Fweb%3Apull");
            let service_ok = req.target.contains("service=fake-registry");
            return if req.headers.get("authorization") == Some(&basic) && scope_ok && service_ok {
                FakeResponse::new(200, &[], r#"{"token":"tok-1","expires_in":300}"#)
            } else {
                FakeResponse::new(
                    401,
                    &[],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                )
            };
        }
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer tok-1") {
            let challenge = format!(
                r#"Bearer realm="{realm}",service="fake-registry",scope="repository:app/web:pull""#
            );
            return FakeResponse::new(
                401,
                &[("WWW-Authenticate", &challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
        FakeResponse::new(
            404,
            &[],
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such tag","detail":{"Tag":"v1"}}]}"#,
        )
    })
    .await;
    *addr.lock().unwrap() = server.host();
    let host = server.host();
    let s = stack();
    let reference = format!("{host}/app/web:v1");

    // The token service refuses wrong credentials.
    let mut req = pull_req(&reference);
    req.credentials = Some(Credentials {
        username: "alice".into(),
        secret: "nope".into(),
    });
    let err = s.pull(req).await.0.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(err.to_string().contains("bad credentials"), "{err}");

    // Right ones get a token, the manifest request gets through (to a 404 with details), and
    // the token is reused.
    for _ in 0..2 {
        let mut req = pull_req(&reference);
        req.credentials = Some(Credentials {
            username: "alice".into(),
            secret: "pw".into(),
        });
        let err = s.pull(req).await.0.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(
            err.to_string().contains(&format!(
                "{reference}: not found: MANIFEST_UNKNOWN: no such tag"
            )),
            "{err}"
        );
    }
    let token_fetches = server
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/token?"))
        .count();
    assert_eq!(token_fetches, 2, "one refused, one granted and cached");
    let with_token = server
        .requests()
        .iter()
        .filter(|r| r.headers.get("authorization").map(String::as_str) == Some("Bearer tok-1"))
        .count();
    assert!(with_token >= 2, "{:?}", server.requests());
}

// ---- A fault-injecting proxy in front of the real registry. ----

/// What the proxy does to one request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answers 500 with a registry-style error body, without asking the registry.
    Status500,
    /// Forwards the registry's answer, but resets the connection (TCP RST) after this many
    /// bytes of the body.
    ResetAfter(usize),
    /// Forwards the registry's answer, but closes the connection cleanly after this many bytes
    /// of the body: a body shorter than its Content-Length.
    CloseAfter(usize),
}

/// One request the proxy saw, and the fault it applied.
#[derive(Debug, Clone)]
struct Proxied {
    method: String,
    target: String,
    range: Option<String>,
    fault: Option<Fault>,
}

/// A one-request-per-connection HTTP/1.1 forwarder on a free 127.0.0.1 port. A fault armed for
/// a path applies to the next GET whose target ends with it, once.
struct FaultProxy {
    addr: SocketAddr,
    armed: Arc<Mutex<Vec<(String, Fault)>>>,
    log: Arc<Mutex<Vec<Proxied>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed: Arc<Mutex<Vec<(String, Fault)>>> = Arc::default();
        let log: Arc<Mutex<Vec<Proxied>>> = Arc::default();
        let (task_armed, task_log) = (Arc::clone(&armed), Arc::clone(&log));
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (armed, log) = (Arc::clone(&task_armed), Arc::clone(&task_log));
                tokio::spawn(async move {
                    let _ = proxy_one(sock, upstream, armed, log).await;
                });
            }
        });
        Self {
            addr,
            armed,
            log,
            task,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Applies `fault` to the next GET whose target ends with `path_suffix`.
    fn arm(&self, path_suffix: &str, fault: Fault) {
        self.armed
            .lock()
            .unwrap()
            .push((path_suffix.to_owned(), fault));
    }

    fn log(&self) -> Vec<Proxied> {
        self.log.lock().unwrap().clone()
    }
}

/// Reads an HTTP head (through the blank line); returns it and any bytes read past it.
async fn read_head(sock: &mut tokio::net::TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        assert!(buf.len() < 64 << 10, "HTTP head too long");
    }
}

/// The head with every `Connection`/`Keep-Alive` header replaced by `Connection: close`, so
/// that each side ends the exchange by closing: the proxy then never parses bodies.
fn close_after(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            let name = l.split(':').next().unwrap_or_default().trim();
            !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive")
        })
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

async fn proxy_one(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    armed: Arc<Mutex<Vec<(String, Fault)>>>,
    log: Arc<Mutex<Vec<Proxied>>>,
) -> std::io::Result<()> {
    let (head, early_body) = read_head(&mut client).await?;
    let mut request_line = head.split("\r\n").next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let range = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_owned());
    let fault = {
        let mut armed = armed.lock().unwrap();
        let hit = armed
            .iter()
            .position(|(suffix, _)| method == "GET" && target.ends_with(suffix.as_str()));
        hit.map(|i| armed.remove(i).1)
    };
    log.lock().unwrap().push(Proxied {
        method: method.clone(),
        target,
        range,
        fault,
    });
    if fault == Some(Fault::Status500) {
        let body = r#"{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}"#;
        let resp = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(resp.as_bytes()).await?;
        return client.shutdown().await;
    }
    // Pull requests have no bodies: what came with the head is all there is.
    let mut registry = tokio::net::TcpStream::connect(upstream).await?;
    registry.write_all(close_after(&head).as_bytes()).await?;
    registry.write_all(&early_body).await?;
    let (resp_head, mut body) = read_head(&mut registry).await?;
    client.write_all(close_after(&resp_head).as_bytes()).await?;
    let limit = match fault {
        Some(Fault::ResetAfter(n) | Fault::CloseAfter(n)) => n,
        _ => usize::MAX,
    };
    let mut sent = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        if body.is_empty() {
            let n = registry.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let n = body.len().min(limit - sent);
        client.write_all(&body[..n]).await?;
        body.drain(..n);
        sent += n;
        if sent == limit {
            break;
        }
    }
    if matches!(fault, Some(Fault::ResetAfter(_))) {
        // Unsent data is dropped with a reset: give the client time to take what was sent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A zero linger makes the close send RST, the way a crashed peer or middlebox does;
        // it never blocks (the deprecation warns about non-zero lingers).
        #[allow(deprecated)]
        client.set_linger(Some(Duration::ZERO))?;
        drop(client);
        return Ok(());
    }
    client.shutdown().await
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_faults_fail_the_pull_clearly_and_a_retry_resumes() {
    let registry = Registry::start();
    let image = TestImage::three_layer();
    image.push(&registry, "faulty/three", "v1");
    let proxy = FaultProxy::start(([127, 0, 0, 1], registry.port()).into()).await;
    let reference = format!("{}/faulty/three:v1", proxy.host());
    let config = image.config().digest.clone();
    let base = image.layers()[0].descriptor.clone();
    let middle = image.layers()[1].descriptor.clone();
    let top = image.layers()[2].descriptor.clone();
    let blob_path = |d: &Digest| format!("/v2/faulty/three/blobs/{d}");
    // One download at a time, in manifest order (config, base, middle, top): each fault hits
    // a known point and no other download is cut short with it.
    let s = stack_with(TransferOptions {
        max_concurrent_downloads: 1,
        ..Default::default()
    });
    let ingest_offset = |s: &Stack| {
        ContentStore::list_statuses(&*s.md, &s.ctx, &Filters::parse::<&str>(&[]).unwrap())
            .unwrap()
            .into_iter()
            .find(|st| st.reference == format!("layer-{}", base.digest))
            .map(|st| st.offset)
    };
    // Nothing half-pulled becomes an image, and the top snapshot (the image's) never exists.
    // What was fetched stays under the failed pulls' leases, even through a collection (which
    // berthd runs soon after any lease delete): that is what a retry resumes from.
    let assert_no_image = |s: &Stack, what: &str| {
        let err = ImageStore::get(&*s.md, &s.ctx, &reference).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{what}: {err}");
        let top_chain = image.chain_ids().last().unwrap().clone();
        assert!(!s.committed(&top_chain), "{what}: the top snapshot exists");
        let leases = s.leases();
        assert!(
            !leases.is_empty(),
            "{what}: the failed pull's lease is kept"
        );
        for lease in &leases {
            assert_eq!(lease.labels[PULL_REFERENCE_LABEL], reference, "{what}");
        }
        s.md.collect().unwrap();
    };

    // 1. The connection is reset in the middle of the base layer.
    let cut = 300_000;
    assert!(
        base.size > 2 * cut as u64,
        "the base layer is big enough to cut twice"
    );
    proxy.arm(&blob_path(&base.digest), Fault::ResetAfter(cut));
    let (result, _) = s.pull(pull_req(&reference)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let kept = ingest_offset(&s).expect("the cut layer's ingest is kept");
    assert!(kept > 0 && kept <= cut as u64, "kept {kept} of {cut} bytes");
    let msg = err.to_string();
    assert!(msg.contains(&format!("layer {}", base.digest)), "{msg}");
    assert!(
        msg.contains(&format!(
            "download interrupted at {kept} of {} bytes",
            base.size
        )),
        "{msg}"
    );
    assert!(
        s.has_blob(&config),
        "the config arrived whole and was committed"
    );
    assert!(!s.has_blob(&base.digest));
    assert_no_image(&s, "after the reset");

    // 2. The registry closes cleanly but early: a body shorter than its Content-Length. The
    // download resumes from the kept bytes (a Range request), and is cut again.
    let second_cut = 200_000;
    proxy.arm(&blob_path(&base.digest), Fault::CloseAfter(second_cut));
    let (result, events) = s.pull(pull_req(&reference)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let reached = kept + second_cut as u64;
    assert!(
        err.to_string().contains(&format!(
            "{}: layer {}: download interrupted at {reached} of {} bytes",
            reference, base.digest, base.size
        )),
        "{err}"
    );
    assert_eq!(
        states(&events, &config)[..2],
        [BlobState::Waiting, BlobState::Exists]
    );
    assert_eq!(offsets(&events, &base.digest).first(), Some(&kept));
    let asked = proxy
        .log()
        .iter()
        .rev()
        .find(|r| r.target == blob_path(&base.digest))
        .and_then(|r| r.range.clone());
    assert_eq!(asked, Some(format!("bytes={kept}-")));
    assert_eq!(ingest_offset(&s), Some(reached));
    assert_no_image(&s, "after the truncation");

    // 3. The registry answers 500 for the top layer: the base layer completes from where it
    // was, the middle one arrives, and the pull fails naming the blob, the registry and the
    // status.
    proxy.arm(&blob_path(&top.digest), Fault::Status500);
    let (result, events) = s.pull(pull_req(&reference)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "{reference}: layer {}: {} answered 500 Internal Server Error: UNKNOWN: injected \
             failure",
            top.digest,
            proxy.host()
        )),
        "{msg}"
    );
    assert_eq!(offsets(&events, &base.digest).first(), Some(&reached));
    assert!(s.has_blob(&base.digest) && s.has_blob(&middle.digest));
    assert!(!s.has_blob(&top.digest), "the refused layer is not stored");
    assert_no_image(&s, "after the 500");

    // 4. The registry is healthy again: the pull completes and downloads only the top layer.
    let before = proxy.log().len();
    let (result, events) = s.pull(pull_req(&reference)).await;
    let pulled = result.unwrap_or_else(|e| panic!("retry: {e}\n{}", registry.log()));
    assert_eq!(pulled.target.digest, image.root.digest);
    for digest in [&config, &base.digest, &middle.digest] {
        assert_eq!(
            states(&events, digest)[..2],
            [BlobState::Waiting, BlobState::Exists],
            "{digest} was not fetched again"
        );
    }
    let fetched: Vec<Proxied> = proxy.log()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains("/blobs/"))
        .cloned()
        .collect();
    assert_eq!(fetched.len(), 1, "only the top layer: {fetched:?}");
    assert_eq!(fetched[0].target, blob_path(&top.digest));
    assert_eq!(fetched[0].fault, None);
    s.check_rootfs(image.chain_ids().last().unwrap(), &image.expected_rootfs());
    assert!(
        s.leases().is_empty(),
        "the success deletes the failed attempts' leases"
    );
    assert!(
        ContentStore::list_statuses(&*s.md, &s.ctx, &Filters::parse::<&str>(&[]).unwrap())
            .unwrap()
            .is_empty(),
        "no ingest left"
    );
}

/// The status of `HEAD /v2/<repo>/blobs/<digest>`: whether the registry has the blob.
fn blob_status(registry: &Registry, repo: &str, digest: &Digest) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", registry.port())).unwrap();
    write!(
        sock,
        "HEAD /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        registry.host()
    )
    .unwrap();
    let mut head = String::new();
    sock.read_to_string(&mut head).unwrap();
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"))
}

const NON_DISTRIBUTABLE_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

#[tokio::test(flavor = "multi_thread")]
async fn foreign_layers_come_from_their_urls_and_are_never_pushed() {
    use berth_integration::testimage::{Node, base_layer};

    let plain = TestImage::from_layers(
        "berth.test/foreign:latest",
        vec![
            base_layer(),
            vec![
                ("licensed".to_owned(), Node::dir(0o755)),
                (
                    "licensed/blob".to_owned(),
                    Node::file(0o644, "not ours to share\n"),
                ),
            ],
        ],
    );
    let layer = plain.layers()[1].descriptor.clone();
    let bytes = plain.blob(&layer.digest).to_vec();
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    // The layer's own server: one URL serves it, one has nothing, one serves other bytes.
    let server = FakeServer::start(move |req| match req.target.as_str() {
        "/layers/good" => FakeResponse::new(200, &[], bytes.clone()),
        "/layers/bad" => FakeResponse::new(200, &[], corrupt.clone()),
        _ => FakeResponse::new(404, &[], "no such layer"),
    })
    .await;
    let url = |path: &str| format!("http://{}/layers/{path}", server.host());
    let foreign = |urls: &[String]| {
        plain
            .clone()
            .with_foreign_layer(1, NON_DISTRIBUTABLE_GZIP, urls)
    };
    let registry = Registry::start();
    let layer_status = |registry: &Registry, repo: &str| blob_status(registry, repo, &layer.digest);

    // The registry does not have the layer; its URLs are tried in order until one serves it.
    // (A registry refuses manifests with other than http(s) URLs; the unit tests of the
    // client cover skipping them.)
    let image = foreign(&[url("missing"), url("good")]);
    let reference = image.push(&registry, "foreign/img", "v1");
    assert_eq!(
        layer_status(&registry, "foreign/img"),
        404,
        "the push left it out"
    );
    let s = stack();
    let (result, events) = s.pull(pull_req(&reference)).await;
    let pulled = result.unwrap_or_else(|e| panic!("pull {reference}: {e}\n{}", registry.log()));
    assert_eq!(pulled.target.digest, image.root.digest);
    let asked: Vec<String> = server.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(asked, ["/layers/missing", "/layers/good"]);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.headers.contains_key("authorization")),
        "no credentials go to a layer's URL"
    );
    assert!(states(&events, &layer.digest).contains(&BlobState::Done));
    let labels = s.labels(&layer.digest);
    assert!(
        !labels.contains_key(SOURCE_LABEL),
        "the registry is not where it came from: {labels:?}"
    );
    assert_eq!(
        labels["containerd.io/uncompressed"],
        plain.layers()[1].diff_id.to_string()
    );
    s.check_rootfs(image.chain_ids().last().unwrap(), &image.expected_rootfs());

    // A push leaves the layer where its URLs point: the registry gets the manifest, the
    // config and the base layer, never the foreign layer.
    let other = Registry::start();
    let dest = other.reference("copy/img", "v1");
    let (result, events) = s
        .push(PushRequest {
            image: reference.clone(),
            reference: dest.clone(),
            ..Default::default()
        })
        .await;
    result.unwrap_or_else(|e| panic!("push {dest}: {e}\n{}", other.log()));
    assert!(states(&events, &layer.digest).is_empty(), "{events:?}");
    assert_eq!(
        layer_status(&other, "copy/img"),
        404,
        "the layer was uploaded"
    );
    let base = &image.layers()[0].descriptor.digest;
    assert_eq!(
        blob_status(&other, "copy/img", base),
        200,
        "the base layer was not uploaded"
    );
    let raw = other.inspect("copy/img:v1", true);
    assert!(raw.output.status.success(), "{}", raw.stderr());
    let raw_bytes = raw.output.stdout.clone();
    let trimmed = raw_bytes.strip_suffix(b"\n").unwrap_or(&raw_bytes);
    assert_eq!(Digest::of(trimmed), image.root.digest, "the same manifest");
    // And what was pushed pulls again, the layer coming from its URL.
    let fresh = stack();
    let (result, _) = fresh.pull(pull_req(&dest)).await;
    assert_eq!(result.unwrap().target.digest, image.root.digest);
    fresh.check_rootfs(image.chain_ids().last().unwrap(), &image.expected_rootfs());

    // A URL serving other bytes: the digest check refuses them and nothing is kept.
    let image = foreign(&[url("bad")]);
    let bad_ref = image.push(&registry, "foreign/bad", "v1");
    let s = stack();
    let (result, _) = s.pull(pull_req(&bad_ref)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("digest mismatch: expected {}", layer.digest)),
        "{err}"
    );
    assert!(!s.has_blob(&layer.digest));
    assert!(ImageStore::get(&*s.md, &s.ctx, &bad_ref).is_err());

    // Neither the registry nor any URL has it: the error says what each answered.
    let image = foreign(&[url("missing")]);
    let gone_ref = image.push(&registry, "foreign/gone", "v1");
    let (result, _) = s.pull(pull_req(&gone_ref)).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "{gone_ref}: layer {}: neither the registry nor the layer's 1 URL(s) could serve it",
            layer.digest
        )),
        "{msg}"
    );
    assert!(msg.contains("BLOB_UNKNOWN"), "the registry's answer: {msg}");
    assert!(
        msg.contains(&format!("{} answered 404 Not Found", url("missing"))),
        "the URL's answer: {msg}"
    );

    // The registry comes first: where it has the layer, the URLs are not asked.
    plain.push(&registry, "foreign/both", "plain");
    let image = foreign(&[url("good")]);
    let both_ref = image.push(&registry, "foreign/both", "v1");
    assert_eq!(layer_status(&registry, "foreign/both"), 200);
    let before = server.requests().len();
    let s = stack();
    let (result, _) = s.pull(pull_req(&both_ref)).await;
    assert_eq!(result.unwrap().target.digest, image.root.digest);
    assert_eq!(server.requests().len(), before, "a URL was asked");
    assert_eq!(
        s.labels(&layer.digest)
            .get(SOURCE_LABEL)
            .map(String::as_str),
        Some("foreign/both")
    );
}
