//! Image archives end to end: `ctr images import/export` against berthd, `berthctl import/export`
//! of OCI layouts and docker-save tarballs (with unpacking checked on a mounted snapshot), round
//! trips across namespaces that keep every digest, platform filtering, and hostile archives and
//! digest mismatches refused with nothing left in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read as _, Write as _};
use std::path::Path;

use berth_client::{ImportOptions, UnpackOptions};
use berth_core::{Digest, ErrorKind};
use berth_integration::Daemon;
use berth_integration::mounts::mount_with_ctr;
use berth_integration::testimage::{
    LAYER_MTIME, Platform, TestImage, assert_tree, gzip, tar_oci_layout,
};
use serde_json::{Value, json};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-archive-")
        .tempdir()
        .unwrap()
}

/// The regular files of a tar, by path.
fn tar_files(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.insert(path, bytes);
    }
    out
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn file_header(path: &str, size: usize) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size as u64);
    h.set_mtime(LAYER_MTIME);
    h.set_cksum();
    h
}

/// Builds a tar from regular files.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        b.append(&file_header(path, data.len()), *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A docker-save archive of `image`'s manifest in the legacy layout docker < 25 writes:
/// `<config hex>.json`, `<n>/layer.tar` (plus `VERSION` and `json`), `manifest.json`,
/// `repositories`. The top layer is reached through docker's in-archive symlink alias.
/// `compressed` stores the gzip blobs instead of the plain tars.
fn docker_archive(image: &TestImage, repo_tags: &[&str], compressed: bool) -> Vec<u8> {
    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        b.append(&file_header(path, data.len()), data).unwrap();
    }
    let mut b = tar::Builder::new(Vec::new());
    let config = image.config();
    let config_path = format!("{}.json", config.digest.hex());
    add(&mut b, &config_path, image.blob(&config.digest));
    let mut layer_paths = Vec::new();
    for (i, layer) in image.layers().iter().enumerate() {
        let data = if compressed {
            image.blob(&layer.descriptor.digest).to_vec()
        } else {
            layer.tar()
        };
        add(&mut b, &format!("{i}/VERSION"), b"1.0");
        add(&mut b, &format!("{i}/json"), b"{}");
        add(&mut b, &format!("{i}/layer.tar"), &data);
        layer_paths.push(format!("{i}/layer.tar"));
    }
    let top = layer_paths.len() - 1;
    let mut link = tar::Header::new_ustar();
    link.set_path("alias/layer.tar").unwrap();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_link_name(format!("../{top}/layer.tar")).unwrap();
    link.set_mode(0o777);
    link.set_size(0);
    link.set_cksum();
    b.append(&link, std::io::empty()).unwrap();
    layer_paths[top] = "alias/layer.tar".to_owned();
    let manifest = json!([{
        "Config": config_path,
        "RepoTags": repo_tags,
        "Layers": layer_paths,
    }]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    add(&mut b, "repositories", b"{}");
    b.into_inner().unwrap()
}

/// Asserts that the image's top snapshot exists in `ns` and holds exactly its rootfs, and that
/// its config carries the snapshot GC reference.
fn assert_unpacked(d: &Daemon, ns: &str, image: &TestImage) {
    let top = image.chain_ids().last().unwrap().to_string();
    let snapshots = d.ctr(&["-n", ns, "snapshots", "ls"]).ok();
    for id in image.chain_ids() {
        assert!(
            snapshots.contains(id.as_str()),
            "{id} not committed in {ns}:\n{snapshots}"
        );
    }
    let key = format!("check-{ns}");
    d.ctr(&["-n", ns, "snapshots", "prepare", &key, &top]).ok();
    {
        let mounted = mount_with_ctr(d, &["-n", ns], "overlayfs", &key);
        assert_tree(&image.expected_rootfs(), mounted.path());
    }
    d.ctr(&["-n", ns, "snapshots", "rm", &key]).ok();
}

/// The `ctr content ls` rows (without the header).
fn content_rows(d: &Daemon, ns: &str) -> Vec<String> {
    d.ctr(&["-n", ns, "content", "ls"])
        .ok()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

fn content_digests(d: &Daemon, ns: &str) -> Vec<String> {
    content_rows(d, ns)
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// Checks an OCI archive holds exactly `image`'s blobs (byte for byte) and names it in
/// `index.json` with both annotations.
fn assert_oci_archive_of(files: &BTreeMap<String, Vec<u8>>, image: &TestImage, name: &str) {
    let index = json_of(&String::from_utf8_lossy(&files["index.json"]));
    let entries = index["manifests"].as_array().unwrap();
    let entry = entries
        .iter()
        .find(|e| e["annotations"]["io.containerd.image.name"] == name)
        .unwrap_or_else(|| panic!("{name} not in index.json: {index}"));
    assert_eq!(entry["digest"], image.root.digest.as_str(), "{index}");
    assert_eq!(entry["size"], image.root.size, "{index}");
    assert_eq!(entry["mediaType"], image.root.media_type.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        image.ref_name(),
        "{index}"
    );
    for (digest, (_, bytes)) in &image.blobs {
        let got = files
            .get(&blob_path(digest))
            .unwrap_or_else(|| panic!("{digest} missing from the archive"));
        assert!(got == bytes, "{digest} differs in the archive");
    }
}

#[test]
fn ctr_import_unpacks_and_ctr_export_keeps_every_digest() {
    let image = TestImage::three_layer();
    let dir = tempdir();
    let archive = dir.path().join("in.tar");
    image.write_oci_archive(&archive);
    let d = Daemon::start();

    d.ctr(&["images", "import", archive.to_str().unwrap()]).ok();
    let ls = d.ctr(&["images", "ls"]).ok();
    let line = ls
        .lines()
        .find(|l| l.starts_with(&image.name))
        .unwrap_or_else(|| panic!("{} not listed:\n{ls}", image.name));
    assert!(line.contains(image.root.digest.as_str()), "{line}");
    assert_unpacked(&d, "default", &image);

    let out = dir.path().join("out.tar");
    d.ctr(&["images", "export", out.to_str().unwrap(), &image.name])
        .ok();
    let files = tar_files(&std::fs::read(&out).unwrap());
    assert_oci_archive_of(&files, &image, &image.name);
}

#[test]
fn berthctl_import_export_round_trip_keeps_every_digest() {
    let image = TestImage::three_layer();
    let dir = tempdir();
    let archive = dir.path().join("in.tar");
    image.write_oci_archive(&archive);
    let d = Daemon::start();

    let out = d
        .berthctl(&["import", archive.to_str().unwrap(), "--format", "json"])
        .ok();
    let imported = json_of(&out);
    assert_eq!(imported[0]["name"], image.name.as_str(), "{out}");
    assert_eq!(imported[0]["digest"], image.root.digest.as_str(), "{out}");
    let listed = json_of(&d.berthctl(&["images", "--format", "json"]).ok());
    assert_eq!(listed[0]["name"], image.name.as_str());
    assert_unpacked(&d, "default", &image);
    // The client-side unpack labelled each layer with its diffID, as ctr's does.
    let rows = content_rows(&d, "default");
    for (layer, diff_id) in image.layers().iter().zip(image.diff_ids()) {
        let row = rows
            .iter()
            .find(|l| l.starts_with(layer.descriptor.digest.as_str()))
            .unwrap();
        assert!(
            row.contains(&format!("containerd.io/uncompressed={diff_id}")),
            "{row}"
        );
    }

    // Export: the original blobs, byte for byte, and deterministic output.
    let exported = dir.path().join("out.tar");
    d.berthctl(&["export", exported.to_str().unwrap(), &image.name])
        .ok();
    let bytes = std::fs::read(&exported).unwrap();
    let files = tar_files(&bytes);
    assert_oci_archive_of(&files, &image, &image.name);
    assert_eq!(
        files.keys().filter(|k| k.starts_with("blobs/")).count(),
        image.blobs.len(),
        "only the image's blobs: {:?}",
        files.keys()
    );
    assert!(files.contains_key("oci-layout"));
    let again = dir.path().join("again.tar");
    d.berthctl(&["export", again.to_str().unwrap(), &image.name])
        .ok();
    assert!(
        bytes == std::fs::read(&again).unwrap(),
        "two exports differ"
    );
    // Also through stdout.
    let piped = d.berthctl(&["export", "-", &image.name]);
    assert!(piped.output.status.success(), "{}", piped.stderr());
    assert!(piped.output.stdout == bytes, "stdout export differs");

    // containerd's own client reads what berthctl writes.
    d.ctr(&[
        "-n",
        "viactr",
        "images",
        "import",
        "--no-unpack",
        exported.to_str().unwrap(),
    ])
    .ok();
    let ls = d.ctr(&["-n", "viactr", "images", "ls"]).ok();
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&image.name) && l.contains(image.root.digest.as_str())),
        "{ls}"
    );

    // Import into a fresh namespace (from stdin): the same digests all the way down.
    let out = d
        .berthctl_stdin(&["-n", "other", "import", "-", "--format", "json"], &bytes)
        .ok();
    let imported = json_of(&out);
    assert_eq!(imported[0]["name"], image.name.as_str(), "{out}");
    assert_eq!(imported[0]["digest"], image.root.digest.as_str(), "{out}");
    let digests = content_digests(&d, "other");
    for digest in image.blobs.keys() {
        assert!(
            digests.iter().any(|d| d == digest.as_str()),
            "{digest} not in namespace other: {digests:?}"
        );
    }
    assert_unpacked(&d, "other", &image);
}

#[tokio::test]
async fn berthctl_imports_docker_save_archives() {
    let image = TestImage::three_layer();
    let d = Daemon::start();
    let dir = tempdir();

    // Plain layer tars, a registry name and a bare docker name.
    let plain = dir.path().join("docker.tar");
    std::fs::write(
        &plain,
        docker_archive(&image, &["berth.test/docker-three:v1", "three:v2"], false),
    )
    .unwrap();
    let out = d
        .berthctl(&["import", plain.to_str().unwrap(), "--format", "json"])
        .ok();
    let imported = json_of(&out);
    let names: Vec<&str> = imported
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["berth.test/docker-three:v1", "docker.io/library/three:v2"],
        "{out}"
    );
    assert_eq!(imported[0]["media_type"], DOCKER_MANIFEST);
    assert_eq!(imported[0]["digest"], imported[1]["digest"]);
    // Uncompressed layers unpack to the same chain as the OCI image's gzip ones.
    assert_unpacked(&d, "default", &image);

    let client = d.client("default").await;
    let target = client
        .images()
        .get("berth.test/docker-three:v1")
        .await
        .unwrap()
        .target;
    let manifest: Value =
        serde_json::from_slice(&client.content().read_all(&target.digest).await.unwrap()).unwrap();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(manifest["config"]["digest"], image.config().digest.as_str());
    let layers = manifest["layers"].as_array().unwrap();
    for (layer, diff_id) in layers.iter().zip(image.diff_ids()) {
        assert_eq!(layer["mediaType"], DOCKER_LAYER);
        assert_eq!(layer["digest"], diff_id.as_str());
    }
    // The legacy junk (VERSION, json) is not kept once the import's lease is gone.
    d.berthctl(&["gc"]).ok();
    let digests = content_digests(&d, "default");
    assert!(
        !digests.contains(&Digest::of(b"1.0").to_string()),
        "{digests:?}"
    );

    // The whole archive gzip'ed, with gzip layers, into another namespace.
    let gzipped = dir.path().join("docker.tar.gz");
    std::fs::write(
        &gzipped,
        gzip(&docker_archive(&image, &["berth.test/docker-gz:v1"], true)),
    )
    .unwrap();
    d.berthctl(&["-n", "gz", "import", gzipped.to_str().unwrap()])
        .ok();
    assert_unpacked(&d, "gz", &image);
    let client = d.client("gz").await;
    let target = client
        .images()
        .get("berth.test/docker-gz:v1")
        .await
        .unwrap()
        .target;
    let manifest: Value =
        serde_json::from_slice(&client.content().read_all(&target.digest).await.unwrap()).unwrap();
    for (layer, info) in manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(image.layers())
    {
        assert_eq!(layer["mediaType"], DOCKER_LAYER_GZIP);
        assert_eq!(layer["digest"], info.descriptor.digest.as_str());
    }
}

#[test]
fn berthctl_exports_the_docker_format() {
    let image = TestImage::three_layer();
    let dir = tempdir();
    let archive = dir.path().join("in.tar");
    image.write_oci_archive(&archive);
    let d = Daemon::start();
    d.berthctl(&["import", "--no-unpack", archive.to_str().unwrap()])
        .ok();
    d.berthctl(&["tag", &image.name, "docker.io/library/busy:v9"])
        .ok();

    let out = dir.path().join("docker.tar");
    d.berthctl(&[
        "export",
        out.to_str().unwrap(),
        &image.name,
        "docker.io/library/busy:v9",
        "--archive-format",
        "docker",
    ])
    .ok();
    let files = tar_files(&std::fs::read(&out).unwrap());
    let manifest = json_of(&String::from_utf8_lossy(&files["manifest.json"]));
    let entries = manifest.as_array().unwrap();
    assert_eq!(entries.len(), 1, "one image, two tags: {manifest}");
    let entry = &entries[0];
    assert_eq!(entry["Config"], blob_path(&image.config().digest));
    assert_eq!(
        entry["RepoTags"],
        json!(["berth.test/three-layer:latest", "busy:v9"])
    );
    let layers: Vec<String> = image
        .layers()
        .iter()
        .map(|l| blob_path(&l.descriptor.digest))
        .collect();
    assert_eq!(entry["Layers"], json!(layers));
    for path in layers.iter().chain([&blob_path(&image.config().digest)]) {
        assert!(files.contains_key(path), "{path} missing");
    }
    let top = image
        .layers()
        .last()
        .unwrap()
        .descriptor
        .digest
        .hex()
        .to_owned();
    let repositories = json_of(&String::from_utf8_lossy(&files["repositories"]));
    assert_eq!(
        repositories,
        json!({
            "berth.test/three-layer": {"latest": top},
            "busy": {"v9": top},
        })
    );
    // It is an OCI layout too, so importing it keeps the original digests.
    assert_oci_archive_of(&files, &image, &image.name);
    let out = d
        .berthctl(&[
            "-n",
            "again",
            "import",
            out.to_str().unwrap(),
            "--format",
            "json",
        ])
        .ok();
    let imported = json_of(&out);
    assert_eq!(imported[0]["digest"], image.root.digest.as_str(), "{out}");
    assert_eq!(imported[1]["name"], "docker.io/library/busy:v9", "{out}");
}

#[test]
fn platforms_are_filtered_on_import_and_export() {
    let image = TestImage::two_platform_index();
    let host = image.manifest().clone();
    let other = image
        .manifests
        .iter()
        .find(|m| m.platform != Platform::host())
        .unwrap()
        .clone();
    let dir = tempdir();
    let archive = dir.path().join("in.tar");
    image.write_oci_archive(&archive);
    let d = Daemon::start();

    // Default: the host's platform only; the other one's manifest and config are collected.
    d.berthctl(&["import", archive.to_str().unwrap()]).ok();
    assert_unpacked(&d, "default", &image);
    d.berthctl(&["gc"]).ok();
    let digests = content_digests(&d, "default");
    for kept in [
        &image.root.digest,
        &host.descriptor.digest,
        &host.config.digest,
    ] {
        assert!(digests.contains(&kept.to_string()), "{kept}: {digests:?}");
    }
    for gone in [&other.descriptor.digest, &other.config.digest] {
        assert!(!digests.contains(&gone.to_string()), "{gone}: {digests:?}");
    }

    // All platforms: everything stays; an export of the other platform holds only its blobs.
    d.berthctl(&[
        "-n",
        "all",
        "import",
        "--all-platforms",
        "--no-unpack",
        archive.to_str().unwrap(),
    ])
    .ok();
    d.berthctl(&["-n", "all", "gc"]).ok();
    let digests = content_digests(&d, "all");
    for digest in image.blobs.keys() {
        assert!(digests.contains(&digest.to_string()), "{digest}");
    }
    let platform = format!("{}/{}", other.platform.os, other.platform.architecture);
    let out = dir.path().join("other.tar");
    d.berthctl(&[
        "-n",
        "all",
        "export",
        out.to_str().unwrap(),
        &image.name,
        "--platform",
        &platform,
    ])
    .ok();
    let files = tar_files(&std::fs::read(&out).unwrap());
    assert!(files.contains_key(&blob_path(&other.descriptor.digest)));
    assert!(files.contains_key(&blob_path(&other.config.digest)));
    assert!(!files.contains_key(&blob_path(&host.descriptor.digest)));
    assert!(!files.contains_key(&blob_path(&host.config.digest)));
    let all = dir.path().join("all.tar");
    d.berthctl(&[
        "-n",
        "all",
        "export",
        all.to_str().unwrap(),
        &image.name,
        "--all-platforms",
    ])
    .ok();
    assert_oci_archive_of(
        &tar_files(&std::fs::read(&all).unwrap()),
        &image,
        &image.name,
    );
}

/// A tar entry whose name the tar crate would refuse to write (`..`, absolute).
fn raw_entry(name: &[u8], kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// `prefix` (a tar without its end marker) followed by `rest`.
fn concat_tars(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    // A finished tar ends with two zero blocks; drop them to append more entries.
    let mut out = prefix[..prefix.len() - 1024].to_vec();
    out.extend_from_slice(rest);
    out
}

fn link_entry(name: &str, kind: tar::EntryType, target: &str) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_link_name(target).unwrap();
    h.set_mode(0o777);
    h.set_size(0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, std::io::empty()).unwrap();
    b.into_inner().unwrap()
}

#[tokio::test]
async fn hostile_archives_are_refused_and_leave_nothing() {
    let d = Daemon::start();
    let client = d.client("default").await;
    let image = TestImage::one_layer();
    let dir = tempdir();

    // Valid content first, so "nothing kept" is a real check.
    let config = image.config().clone();
    let good = tar_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        (&blob_path(&config.digest), image.blob(&config.digest)),
    ]);
    let big_manifest = {
        let mut m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.digest.as_str(), "size": config.size},
            "layers": [],
        }))
        .unwrap();
        m.extend(std::iter::repeat_n(b' ', 5 << 20));
        m
    };
    let big_digest = Digest::of(&big_manifest);
    let big_index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": big_digest.as_str(), "size": big_manifest.len(),
                       "annotations": {"io.containerd.image.name": "berth.test/big:1"}}],
    }))
    .unwrap();
    let mut huge_index = b"{\"schemaVersion\":2,\"manifests\":[]}".to_vec();
    huge_index.extend(std::iter::repeat_n(b' ', 5 << 20));
    let fifo = {
        let mut h = tar::Header::new_ustar();
        h.set_path("dev/fifo").unwrap();
        h.set_entry_type(tar::EntryType::Fifo);
        h.set_size(0);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, std::io::empty()).unwrap();
        b.into_inner().unwrap()
    };

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a `..` name",
            concat_tars(&good, &raw_entry(b"../evil", tar::EntryType::Regular, b"x")),
        ),
        (
            "an absolute name",
            concat_tars(
                &good,
                &raw_entry(b"/tmp/berth-evil", tar::EntryType::Regular, b"x"),
            ),
        ),
        (
            "a symlinked blob",
            concat_tars(
                &good,
                &link_entry(
                    &blob_path(&Digest::of(b"x")),
                    tar::EntryType::Symlink,
                    "/etc/passwd",
                ),
            ),
        ),
        (
            "a symlink out of the archive",
            concat_tars(
                &good,
                &link_entry("0/layer.tar", tar::EntryType::Symlink, "../../etc/passwd"),
            ),
        ),
        (
            "a hard link",
            concat_tars(
                &good,
                &link_entry("0/layer.tar", tar::EntryType::Link, "oci-layout"),
            ),
        ),
        ("a fifo", concat_tars(&good, &fifo)),
        (
            "a blob named by no digest",
            concat_tars(&good, &tar_of(&[("blobs/sha256/not-a-digest", b"x")])),
        ),
        (
            "a 5 MiB index.json",
            concat_tars(&good, &tar_of(&[("index.json", &huge_index)])),
        ),
        (
            "a 5 MiB manifest",
            concat_tars(
                &good,
                &tar_of(&[
                    (&blob_path(&big_digest), &big_manifest),
                    ("index.json", &big_index),
                ]),
            ),
        ),
        ("no layout at all", good.clone()),
    ];
    for (what, archive) in cases {
        let err = client
            .archive()
            .import(Cursor::new(archive.clone()), &ImportOptions::default())
            .await
            .expect_err(what);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what}: {err}");
        assert!(
            client.content().list(&[]).await.unwrap().is_empty(),
            "{what}: blobs kept"
        );
        assert!(
            client.images().list(&[]).await.unwrap().is_empty(),
            "{what}"
        );
        assert!(
            client.content().statuses(&[]).await.unwrap().is_empty(),
            "{what}: ingests kept"
        );
        assert!(
            client.leases().list(&[]).await.unwrap().is_empty(),
            "{what}"
        );
        // And through berthctl, with the class in the message.
        let path = dir.path().join("hostile.tar");
        std::fs::write(&path, &archive).unwrap();
        let stderr = d.berthctl(&["import", path.to_str().unwrap()]).fails();
        assert!(stderr.contains("invalid argument"), "{what}: {stderr}");
    }
    assert!(!dir.path().join("evil").exists());
    assert!(!Path::new("/tmp/berth-evil").exists());
    assert_eq!(content_rows(&d, "default"), Vec::<String>::new());
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_name_is_refused_with_nothing_stored() {
    let image = TestImage::three_layer();
    let dir = tempdir();
    let layout = dir.path().join("layout");
    image.write_oci_layout(&layout);
    // Corrupt the middle layer in place: same name, same size, other bytes.
    let victim = &image.layers()[1].descriptor.digest;
    let path = layout.join("blobs/sha256").join(victim.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let archive = dir.path().join("bad.tar");
    tar_oci_layout(&layout, &archive);
    let d = Daemon::start();

    let stderr = d.berthctl(&["import", archive.to_str().unwrap()]).fails();
    assert!(stderr.contains("invalid argument"), "{stderr}");
    assert!(stderr.contains(victim.as_str()), "{stderr}");
    // Refused as it streams in, by its name, not later for a missing blob.
    assert!(stderr.contains("are not the blob"), "{stderr}");
    assert_eq!(content_rows(&d, "default"), Vec::<String>::new());
    let active = d.ctr(&["content", "active"]).ok();
    assert_eq!(active.lines().skip(1).count(), 0, "{active}");
    let images = d.ctr(&["images", "ls", "-q"]).ok();
    assert!(images.trim().is_empty(), "{images}");
    let snapshots = d.ctr(&["snapshots", "ls"]).ok();
    assert_eq!(snapshots.lines().skip(1).count(), 0, "{snapshots}");
}

#[tokio::test]
async fn berthctl_image_unpack_unpacks_an_imported_image_once() {
    let image = TestImage::three_layer();
    let dir = tempdir();
    let archive = dir.path().join("in.tar");
    image.write_oci_archive(&archive);
    let d = Daemon::start();
    d.berthctl(&["import", "--no-unpack", archive.to_str().unwrap()])
        .ok();
    let snapshots = d.ctr(&["snapshots", "ls"]).ok();
    assert_eq!(snapshots.lines().skip(1).count(), 0, "{snapshots}");

    let out = d
        .berthctl(&["image", "unpack", &image.name, "--format", "json"])
        .ok();
    let view = json_of(&out);
    let top = image.chain_ids().last().unwrap().to_string();
    assert_eq!(view["chain_id"], top.as_str(), "{out}");
    assert_eq!(view["snapshotter"], "overlayfs");
    assert!(
        view["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["applied"] == true),
        "{out}"
    );
    assert_unpacked(&d, "default", &image);
    // The config's GC reference keeps the snapshots alive without any lease.
    d.berthctl(&["gc"]).ok();
    assert_unpacked(&d, "default", &image);
    let rows = content_rows(&d, "default");
    let config_row = rows
        .iter()
        .find(|r| r.starts_with(image.config().digest.as_str()))
        .unwrap();
    assert!(
        config_row.contains(&format!("containerd.io/gc.ref.snapshot.overlayfs={top}")),
        "{config_row}"
    );

    // A second unpack finds every layer there.
    let client = d.client("default").await;
    let target = client.images().get(&image.name).await.unwrap().target;
    let again = client
        .unpack(&target, &UnpackOptions::default())
        .await
        .unwrap();
    assert!(again.layers.iter().all(|l| !l.applied), "{again:?}");
    assert_eq!(again.chain_id.to_string(), top);
}

#[test]
fn concurrent_imports_of_one_archive_both_succeed() {
    let image = TestImage::three_layer();
    let dir = tempdir();
    let archive = dir.path().join("in.tar");
    image.write_oci_archive(&archive);
    let d = Daemon::start();
    let path = archive.to_str().unwrap();
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| d.berthctl(&["import", path, "--format", "json"])))
            .collect();
        for run in runs {
            let out = run.join().unwrap().ok();
            assert_eq!(
                json_of(&out)[0]["digest"],
                image.root.digest.as_str(),
                "{out}"
            );
        }
    });
    assert_unpacked(&d, "default", &image);
    let active = d.ctr(&["content", "active"]).ok();
    assert_eq!(active.lines().skip(1).count(), 0, "{active}");
}
