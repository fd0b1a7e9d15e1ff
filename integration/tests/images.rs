//! Images end to end: records made through berth-client, seen and changed by containerd's `ctr`
//! and by `berthctl`, and garbage collection of an image's blobs once its last name is gone.
//!
//! The images are tiny hand-made OCI images (a config, one gzip layer, a manifest labelled the
//! way `ctr` labels pulled manifests), written to the content store under a lease as a pull
//! does. The daemons run with a ten-minute background-collection delay, so blobs disappear only
//! through the collections the tests ask for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use berth_client::{Client, LeaseOptions};
use berth_core::diff::{Descriptor, MEDIA_TYPE_LAYER_GZIP};
use berth_core::gc::REF_CONTENT_PREFIX;
use berth_core::images::{Image, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST};
use berth_core::labels::Labels;
use berth_core::{Digest, ErrorKind};
use berth_integration::Daemon;
use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::types;
use serde_json::{Value, json};
use tempfile::TempDir;

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

fn json_of(out: String) -> Value {
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// containerd's name for this host's architecture, which the config claims so that `ctr`'s
/// default platform matches.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// How `ctr` prints sizes (`progress.Bytes`): one decimal in binary units.
fn ctr_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < units.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", units[unit])
}

/// A gzip-compressed tar holding one file.
fn gzip_layer(file: &str, content: &[u8]) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, file, content).unwrap();
    let plain = tar.into_inner().unwrap();
    let diff_id = Digest::of(&plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// The blobs of one tiny image.
struct TinyImage {
    manifest: Descriptor,
    config: Digest,
    layer: Digest,
    /// Config plus layer bytes: what berthctl reports.
    content_size: u64,
}

impl TinyImage {
    fn blobs(&self) -> [&Digest; 3] {
        [&self.manifest.digest, &self.config, &self.layer]
    }

    /// Manifest, config and layer bytes: what `ctr images ls` reports.
    fn ctr_size(&self) -> u64 {
        self.manifest.size + self.content_size
    }
}

/// Writes a config, a layer and a manifest under a lease, as a pull would, labelling the
/// manifest with its children the way `ctr` does; the lease is released afterwards.
async fn write_tiny_image(client: &Client, tag: &str) -> TinyImage {
    let lease = client
        .leases()
        .create(LeaseOptions::default())
        .await
        .unwrap();
    let leased = client.with_lease(lease.id.clone());
    let content = leased.content();

    let (layer, diff_id) = gzip_layer("hello.txt", format!("hello from {tag}\n").as_bytes());
    let layer_digest = content.write_blob(&layer, Labels::new()).await.unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": goarch(),
        "os": "linux",
        "config": {"Cmd": ["/hello"], "Labels": {"tag": tag}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    }))
    .unwrap();
    let config_digest = content.write_blob(&config, Labels::new()).await.unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": MEDIA_TYPE_LAYER_GZIP,
            "digest": layer_digest.to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let labels: Labels = [
        (
            format!("{REF_CONTENT_PREFIX}.config"),
            config_digest.to_string(),
        ),
        (
            format!("{REF_CONTENT_PREFIX}.l.0"),
            layer_digest.to_string(),
        ),
    ]
    .into();
    let manifest_digest = content.write_blob(&manifest, labels).await.unwrap();
    client.leases().delete(&lease.id, false).await.unwrap();
    TinyImage {
        manifest: Descriptor::new(
            MEDIA_TYPE_OCI_MANIFEST,
            manifest_digest,
            manifest.len() as u64,
        ),
        config: config_digest,
        layer: layer_digest,
        content_size: (config.len() + layer.len()) as u64,
    }
}

async fn create_image(client: &Client, name: &str, tiny: &TinyImage) -> Image {
    client
        .images()
        .create(&Image::new(name, tiny.manifest.clone()))
        .await
        .unwrap()
}

#[track_caller]
fn assert_on_disk(d: &Daemon, digests: &[&Digest], what: &str) {
    for digest in digests {
        assert!(
            blob_path(d, digest).is_file(),
            "{what}: {digest} should be on disk"
        );
    }
}

#[track_caller]
fn assert_gone(d: &Daemon, digests: &[&Digest], what: &str) {
    for digest in digests {
        assert!(
            !blob_path(d, digest).exists(),
            "{what}: {digest} should be gone from disk"
        );
    }
}

/// The line of `ctr images ls` (or `check`) output for image `name`.
#[track_caller]
fn line_for(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{out}"))
        .to_owned()
}

#[tokio::test]
async fn ctr_lists_checks_and_removes_images_and_gc_follows() {
    let d = quiet_daemon();
    let client = d.client("default").await;
    let tiny = write_tiny_image(&client, "tiny").await;
    let kept = write_tiny_image(&client, "kept").await;
    create_image(&client, "docker.io/library/tiny:1.0", &tiny).await;
    create_image(&client, "docker.io/library/kept:1.0", &kept).await;
    // The lease is gone: only the image records hold the blobs now.
    let stats = client.gc().await.unwrap();
    assert_eq!(stats.blobs_removed, 0, "{stats:?}");
    assert_on_disk(&d, &tiny.blobs(), "tiny, held by its image");

    let ls = d.ctr(&["images", "ls"]).ok();
    assert!(ls.starts_with("REF"), "{ls}");
    let line = line_for(&ls, "docker.io/library/tiny:1.0");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], MEDIA_TYPE_OCI_MANIFEST, "{line}");
    assert_eq!(cols[2], tiny.manifest.digest.as_str(), "{line}");
    assert!(
        line.contains(&ctr_bytes(tiny.ctr_size())),
        "size {} expected:\n{line}",
        ctr_bytes(tiny.ctr_size())
    );
    assert!(line.contains(&format!("linux/{}", goarch())), "{line}");
    let quiet = d.ctr(&["images", "ls", "-q"]).ok();
    assert_eq!(
        quiet.lines().collect::<Vec<_>>(),
        ["docker.io/library/kept:1.0", "docker.io/library/tiny:1.0"]
    );
    let filtered = d.ctr(&["images", "ls", "-q", "name~=tiny"]).ok();
    assert_eq!(filtered.trim(), "docker.io/library/tiny:1.0");

    let check = d.ctr(&["images", "check"]).ok();
    let line = line_for(&check, "docker.io/library/tiny:1.0");
    assert!(line.contains("complete (2/2)"), "{line}");
    assert!(line.contains("false"), "not unpacked: {line}");

    // Deleting the layer blob makes the image incomplete; ctr says so.
    let broken = write_tiny_image(&client, "broken").await;
    create_image(&client, "broken:1", &broken).await;
    client.content().delete(&broken.layer).await.unwrap();
    let check = d.ctr(&["images", "check", "name==broken:1"]).ok();
    assert!(
        line_for(&check, "broken:1").contains("incomplete (1/2)"),
        "{check}"
    );

    let out = d
        .ctr(&["images", "rm", "--sync", "docker.io/library/tiny:1.0"])
        .ok();
    assert_eq!(out.trim(), "docker.io/library/tiny:1.0");
    assert_gone(&d, &tiny.blobs(), "tiny after a sync delete");
    for digest in tiny.blobs() {
        let err = client.content().info(digest).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{digest}: {err}");
    }
    assert_on_disk(&d, &kept.blobs(), "kept, still named");
    assert!(
        !d.ctr(&["images", "ls", "-q"])
            .ok()
            .contains("docker.io/library/tiny:1.0")
    );
    // A missing name is a warning for ctr, not a failure.
    d.ctr(&["images", "rm", "docker.io/library/tiny:1.0"]).ok();
}

#[tokio::test]
async fn ctr_tag_and_label() {
    let d = quiet_daemon();
    let client = d.client("default").await;
    let tiny = write_tiny_image(&client, "tagged").await;
    create_image(&client, "src:1", &tiny).await;

    assert_eq!(
        d.ctr(&["images", "tag", "src:1", "dst:1"]).ok().trim(),
        "dst:1"
    );
    let dst = client.images().get("dst:1").await.unwrap();
    assert_eq!(dst.target, tiny.manifest);
    let err = d.ctr(&["images", "tag", "src:1", "dst:1"]).fails();
    assert!(err.contains("already exists"), "{err}");
    d.ctr(&["images", "tag", "--force", "src:1", "dst:1"]).ok();
    let err = d.ctr(&["images", "tag", "nope:1", "x:1"]).fails();
    assert!(err.contains("not found"), "{err}");

    let out = d.ctr(&["images", "label", "dst:1", "team=a"]).ok();
    assert_eq!(out.trim(), "team=a");
    let labelled = client.images().get("dst:1").await.unwrap();
    assert_eq!(labelled.labels, Labels::from([("team".into(), "a".into())]));
    assert_eq!(
        labelled.target, tiny.manifest,
        "a label update keeps the target"
    );
    assert!(labelled.updated_at > labelled.created_at);
    let ls = d.ctr(&["images", "ls"]).ok();
    assert!(line_for(&ls, "dst:1").contains("team=a"), "{ls}");
    assert_eq!(
        d.ctr(&["images", "ls", "-q", "labels.team==a"]).ok().trim(),
        "dst:1"
    );
    d.ctr(&["images", "label", "dst:1", "team="]).ok();
    assert!(
        client
            .images()
            .get("dst:1")
            .await
            .unwrap()
            .labels
            .is_empty()
    );

    // Removing one name keeps the blobs the other still holds.
    d.ctr(&["images", "rm", "--sync", "src:1"]).ok();
    assert_on_disk(&d, &tiny.blobs(), "still named dst:1");
    d.ctr(&["images", "rm", "--sync", "dst:1"]).ok();
    assert_gone(&d, &tiny.blobs(), "no name left");
}

#[tokio::test]
async fn berthctl_images_tag_inspect_rmi() {
    let d = quiet_daemon();
    let client = d.client("default").await;
    let tiny = write_tiny_image(&client, "cli").await;
    create_image(&client, "docker.io/library/cli:1", &tiny).await;
    // A record whose blobs are not in the content store at all.
    let ghost = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"never written"), 321);
    client
        .images()
        .create(&Image::new("ghost:1", ghost.clone()))
        .await
        .unwrap();

    let table = d.berthctl(&["images"]).ok();
    assert!(table.starts_with("NAME"), "{table}");
    let line = line_for(&table, "docker.io/library/cli:1");
    assert!(line.contains(&tiny.manifest.digest.hex()[..12]), "{line}");
    assert!(line.contains(" ago"), "{line}");
    let ghost_line = line_for(&table, "ghost:1");
    assert_eq!(
        ghost_line.split_whitespace().nth(2),
        Some("-"),
        "{ghost_line}"
    );
    assert_eq!(d.berthctl(&["image", "ls"]).ok(), table);

    let list = json_of(d.berthctl(&["--format", "json", "images"]).ok());
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "docker.io/library/cli:1")
        .unwrap();
    assert_eq!(entry["digest"], tiny.manifest.digest.as_str());
    assert_eq!(entry["size"], tiny.content_size);
    assert!(entry["created_at"].as_str().is_some(), "{entry}");
    let list = json_of(
        d.berthctl(&["--format", "json", "images", "name==ghost:1"])
            .ok(),
    );
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["size"], Value::Null);

    assert_eq!(
        d.berthctl(&["tag", "docker.io/library/cli:1", "cli:copy", "cli:other"])
            .ok(),
        "cli:copy\ncli:other\n"
    );
    // Re-tagging an existing name re-points it.
    d.berthctl(&["tag", "ghost:1", "cli:other"]).ok();
    assert_eq!(
        client.images().get("cli:other").await.unwrap().target,
        ghost
    );

    let inspect = json_of(d.berthctl(&["image", "inspect", "cli:copy"]).ok());
    assert_eq!(inspect["name"], "cli:copy");
    assert_eq!(inspect["target"]["digest"], tiny.manifest.digest.as_str());
    assert_eq!(inspect["target"]["media_type"], MEDIA_TYPE_OCI_MANIFEST);
    assert_eq!(inspect["target"]["size"], tiny.manifest.size);
    assert_eq!(
        inspect["manifest"]["layers"][0]["digest"],
        tiny.layer.as_str()
    );
    assert_eq!(inspect["config"]["os"], "linux");
    assert_eq!(inspect["config"]["config"]["Labels"]["tag"], "cli");
    assert_eq!(inspect["size"], tiny.content_size);
    assert!(inspect["created"].as_str().is_some(), "{inspect}");
    let inspect = json_of(d.berthctl(&["image", "inspect", "ghost:1"]).ok());
    assert_eq!(inspect["manifest"], Value::Null);
    let err = d.berthctl(&["image", "inspect", "nope"]).fails();
    assert!(err.contains("not found"), "{err}");

    let out = d.berthctl(&["image", "label", "cli:copy", "a=1"]).ok();
    assert!(out.contains("cli:copy"), "{out}");
    assert_eq!(
        client.images().get("cli:copy").await.unwrap().labels,
        Labels::from([("a".into(), "1".into())])
    );

    // One name left holds the blobs; once it goes, a sync rmi has collected them.
    d.berthctl(&["rmi", "--sync", "docker.io/library/cli:1"])
        .ok();
    assert_on_disk(&d, &tiny.blobs(), "cli:copy still names them");
    let out = json_of(
        d.berthctl(&["--format", "json", "rmi", "--sync", "cli:copy", "cli:other"])
            .ok(),
    );
    assert_eq!(out["removed"], json!(["cli:copy", "cli:other"]));
    assert_gone(&d, &tiny.blobs(), "after the last rmi");
    let err = d.berthctl(&["rmi", "cli:copy"]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test]
async fn service_semantics_ctr_relies_on() {
    let d = quiet_daemon();
    let client = d.client("default").await;
    let tiny = write_tiny_image(&client, "rpc").await;
    let other = write_tiny_image(&client, "rpc-2").await;
    let images = client.images();

    let created = create_image(&client, "rpc:1", &tiny).await;
    let err = images
        .create(&Image::new("rpc:1", tiny.manifest.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let err = images.get("missing").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // The pull sequence: Create, AlreadyExists, Update without a mask.
    let mut repull = Image::new("rpc:1", other.manifest.clone());
    repull.labels.insert("pulled".into(), "again".into());
    let updated = images.create_or_update(&repull).await.unwrap();
    assert_eq!(updated.target, other.manifest);
    assert_eq!(updated.labels, repull.labels);
    assert_eq!(updated.created_at, created.created_at);

    // The import sequence: Update with mask ["target"], NotFound, then Create.
    let import = Image::new("import-2024-01-01:tag", tiny.manifest.clone());
    let err = images
        .update(&import, &["target".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    images.create(&import).await.unwrap();
    let moved = images
        .update(
            &Image::new("rpc:1", tiny.manifest.clone()),
            &["target".into()],
        )
        .await
        .unwrap();
    assert_eq!(moved.target, tiny.manifest);
    assert_eq!(moved.labels, repull.labels, "only the target changed");
    let err = images
        .update(
            &Image::new("rpc:1", tiny.manifest.clone()),
            &["name".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // Go clients always send created_at/updated_at, as year 1 when unset.
    let year_one = prost_types::Timestamp {
        seconds: -62_135_596_800,
        nanos: 0,
    };
    let raw = client
        .rpc()
        .images()
        .create(pb::CreateImageRequest {
            image: Some(pb::Image {
                name: "go-client:1".into(),
                labels: Default::default(),
                target: Some(types::Descriptor {
                    media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
                    digest: other.manifest.digest.to_string(),
                    size: other.manifest.size as i64,
                    annotations: Default::default(),
                }),
                created_at: Some(year_one),
                updated_at: Some(year_one),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let image = raw.image.unwrap();
    let created_at = image.created_at.unwrap();
    assert!(created_at.seconds > 1_600_000_000, "{created_at:?}");

    let names = |list: Vec<Image>| list.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(
        names(images.list(&[]).await.unwrap()),
        ["go-client:1", "import-2024-01-01:tag", "rpc:1"]
    );
    let by_target = format!("target.digest=={}", other.manifest.digest);
    assert_eq!(
        names(
            images
                .list(&[by_target, "labels.pulled==again".into()])
                .await
                .unwrap()
        ),
        ["go-client:1", "rpc:1"]
    );
    let err = images.list(&["name==".into()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // Another namespace sees none of them, and a namespace holding images cannot go.
    let elsewhere = client.with_namespace("elsewhere");
    assert!(elsewhere.images().list(&[]).await.unwrap().is_empty());
    let err = client.namespaces().delete("default").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("images"), "{err}");

    // Records survive a restart.
    let before = images.get("rpc:1").await.unwrap();
    drop(client);
    let mut d = d;
    d.daemon.restart();
    let client = d.client("default").await;
    assert_eq!(client.images().get("rpc:1").await.unwrap(), before);
    client.images().delete("rpc:1", false).await.unwrap();
    let err = client.images().get("rpc:1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn images_service_is_reported_ok() {
    let d = Daemon::start();
    let plugins = d.ctr(&["plugins", "ls"]).ok();
    let line = plugins
        .lines()
        .find(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&"io.containerd.grpc.v1") && cols.get(1) == Some(&"images")
        })
        .unwrap_or_else(|| panic!("no images plugin:\n{plugins}"));
    assert!(line.trim_end().ends_with("ok"), "{line}");
}
