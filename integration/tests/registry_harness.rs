//! The image test harness itself: images built here are what a real registry serves, with the
//! digests we computed, and the expected rootfs applies whiteouts and opaque directories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use berth_core::Digest;
use berth_integration::registry::{Registry, skopeo};
use berth_integration::testimage::{
    self, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, Node,
    TestImage,
};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("parse JSON {e}: {text}"))
}

/// What `skopeo inspect` reports as the manifest digest of `repo_tag`.
fn served_digest(registry: &Registry, repo_tag: &str) -> String {
    let out = registry.inspect(repo_tag, false).ok();
    json(&out)["Digest"].as_str().unwrap().to_owned()
}

#[test]
fn images_are_deterministic() {
    let a = TestImage::three_layer();
    let b = TestImage::three_layer();
    assert_eq!(a.root, b.root);
    assert_eq!(
        a.blobs.keys().collect::<Vec<_>>(),
        b.blobs.keys().collect::<Vec<_>>()
    );
    // Every blob is addressed by its own bytes, and a rebuilt tar is the diffID.
    for (digest, (_, data)) in &a.blobs {
        assert_eq!(&Digest::of(data), digest);
    }
    for layer in a.layers() {
        assert_eq!(Digest::of(&layer.tar()), layer.diff_id);
        // Compressing again (bypassing the memo) gives the very blob.
        assert_eq!(
            testimage::gzip(&layer.tar()).as_slice(),
            a.blob(&layer.descriptor.digest)
        );
        assert_eq!(layer.tar().len() as u64, layer.uncompressed_size);
    }
    assert_eq!(a.layers().len(), 3);
    assert_eq!(a.chain_ids()[0], a.diff_ids()[0]);
    assert_ne!(a.chain_ids()[2], a.diff_ids()[2]);
}

#[test]
fn one_layer_rootfs_is_busybox() {
    let image = TestImage::one_layer();
    let rootfs = image.expected_rootfs();
    assert_eq!(rootfs["bin/sh"], Node::symlink("busybox"));
    for applet in testimage::BUSYBOX_APPLETS {
        assert_eq!(rootfs[&format!("bin/{applet}")], Node::symlink("busybox"));
    }
    let Node::File { mode, data } = &rootfs["bin/busybox"] else {
        panic!("bin/busybox is {:?}", rootfs["bin/busybox"]);
    };
    assert_eq!(*mode, 0o755);
    assert_eq!(data, &std::fs::read(testimage::BUSYBOX).unwrap());
    assert_eq!(rootfs["tmp"], Node::dir(0o1777));
    assert_eq!(rootfs["root"], Node::dir(0o700));
    assert!(
        matches!(&rootfs["etc/passwd"], Node::File { data, .. } if data.starts_with(b"root:x:0:0:"))
    );
    assert!(
        matches!(&rootfs["etc/group"], Node::File { data, .. } if data.starts_with(b"root:x:0:"))
    );

    let config = json(std::str::from_utf8(image.blob(&image.config().digest)).unwrap());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh");
    let diff_ids: Vec<String> = image.diff_ids().iter().map(|d| d.to_string()).collect();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
}

#[test]
fn three_layer_rootfs_applies_whiteouts_and_opaque_dirs() {
    let image = TestImage::three_layer();
    let manifest = image.manifest();
    let after_two = manifest.rootfs_after(2);
    assert_eq!(after_two["etc/motd"], Node::file(0o644, "v2\n"));
    assert!(after_two.contains_key("opt/x/sub/two"));

    let rootfs = image.expected_rootfs();
    assert!(!rootfs.contains_key("etc/motd"), "motd was whited out");
    assert!(!rootfs.keys().any(|p| p.contains(".wh.")));
    let in_opt_x: Vec<&str> = rootfs
        .keys()
        .filter_map(|p| p.strip_prefix("opt/x/"))
        .collect();
    assert_eq!(in_opt_x, ["only-in-l3"]);
    assert_eq!(rootfs["data/a"], Node::file(0o644, "a\n"));
    assert_eq!(rootfs["etc/passwd"], after_two["etc/passwd"]);
}

#[test]
fn tree_scan_matches_a_layout_written_to_disk() {
    // The comparison helpers see a tree on disk as the expected rootfs describes it.
    let image = TestImage::one_layer();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (path, node) in image.expected_rootfs() {
        let p = root.join(&path);
        match node {
            Node::Dir { mode } => {
                std::fs::create_dir(&p).unwrap();
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .unwrap();
            }
            Node::File { mode, data } => {
                std::fs::write(&p, data).unwrap();
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .unwrap();
            }
            Node::Symlink { target } => std::os::unix::fs::symlink(target, &p).unwrap(),
            Node::Other { .. } => unreachable!(),
        }
    }
    testimage::assert_tree(&image.expected_rootfs(), root);
    std::fs::write(root.join("etc/extra"), "x").unwrap();
    let diffs = testimage::diff_trees(&image.expected_rootfs(), &testimage::scan_tree(root));
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].starts_with("unexpected /etc/extra"), "{diffs:?}");
}

#[test]
fn oci_layout_and_archive() {
    let image = TestImage::three_layer();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image.write_oci_layout(&layout);
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], image.root.digest.as_str());
    assert_eq!(entry["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(entry["annotations"][ANNOTATION_REF_NAME], "latest");
    assert_eq!(
        entry["annotations"][ANNOTATION_IMAGE_NAME],
        "berth.test/three-layer:latest"
    );
    for digest in image.blobs.keys() {
        let data = std::fs::read(layout.join("blobs/sha256").join(digest.hex())).unwrap();
        assert_eq!(&Digest::of(&data), digest);
    }

    let archive = dir.path().join("image.tar");
    image.write_oci_archive(&archive);
    let mut names = BTreeSet::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        names.insert(entry.path().unwrap().display().to_string());
    }
    assert!(names.contains("oci-layout") && names.contains("index.json"));
    for digest in image.blobs.keys() {
        assert!(names.contains(&format!("blobs/sha256/{}", digest.hex())));
    }
}

#[test]
fn registry_serves_pushed_images_with_our_digests() {
    let registry = Registry::start();
    assert_eq!(registry.get("/v2/").0, 200);

    let one = TestImage::one_layer();
    let three = TestImage::three_layer();
    let index = TestImage::two_platform_index();
    assert_eq!(
        one.push(&registry, "berth/one", "v1"),
        format!("{}/berth/one:v1", registry.host())
    );
    three.push(&registry, "berth/three", "latest");
    index.push(&registry, "berth/multi", "latest");

    assert_eq!(
        served_digest(&registry, "berth/one:v1"),
        one.root.digest.as_str()
    );
    assert_eq!(
        served_digest(&registry, "berth/three:latest"),
        three.root.digest.as_str()
    );
    assert_eq!(
        served_digest(&registry, "berth/multi:latest"),
        index.root.digest.as_str()
    );

    // The served manifest bytes are ours, byte for byte.
    let raw = registry.inspect("berth/three:latest", true).ok();
    assert_eq!(raw.as_bytes(), three.blob(&three.root.digest));

    let raw_index = json(&registry.inspect("berth/multi:latest", true).ok());
    assert_eq!(raw_index["mediaType"], MEDIA_TYPE_INDEX);
    let platforms: BTreeSet<String> = raw_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64".to_owned(), "linux/arm64".to_owned()])
    );
    // Both platform manifests were pushed (--all), each with its own config.
    let configs: BTreeSet<String> = index
        .manifests
        .iter()
        .map(|m| {
            let served = registry.get(&format!(
                "/v2/berth/multi/manifests/{}",
                m.descriptor.digest
            ));
            assert_eq!(
                served.0, 200,
                "{} not served: {}",
                m.descriptor.digest, served.1
            );
            let config = json(std::str::from_utf8(index.blob(&m.config.digest)).unwrap());
            assert_eq!(config["architecture"], m.platform.architecture.as_str());
            m.config.digest.to_string()
        })
        .collect();
    assert_eq!(configs.len(), 2);
    let storage = registry.storage();
    assert!(storage.exists());
    drop(registry);
    assert!(!storage.exists(), "storage is deleted on drop");
}

#[test]
fn auth_registry_needs_the_right_credentials() {
    let registry = Registry::start_with_auth("berth", "s3cret");
    assert_eq!(registry.credentials(), Some(("berth", "s3cret")));
    assert_eq!(registry.get("/v2/").0, 401);

    let image = TestImage::one_layer();
    image.push(&registry, "berth/private", "latest");
    assert_eq!(
        served_digest(&registry, "berth/private:latest"),
        image.root.digest.as_str()
    );

    let target = format!("docker://{}", registry.reference("berth/private", "latest"));
    let wrong = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "berth:wrong",
        &target,
    ]);
    let stderr = wrong.fails();
    assert!(
        stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"),
        "want a 401, got: {stderr}"
    );
    let anonymous = skopeo(&["inspect", "--tls-verify=false", "--no-creds", &target]);
    let stderr = anonymous.fails();
    assert!(
        stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"),
        "want a 401, got: {stderr}"
    );
}

#[test]
fn big_image_streams_incompressible_layers() {
    let dir = tempfile::tempdir().unwrap();
    let total = 3 * 1024 * 1024;
    let big = testimage::big_image(dir.path(), 3, total);
    assert_eq!(big.layers.len(), 3);
    // Random data does not compress: the blobs are about as large as the data.
    assert!(big.compressed_size() >= total, "{}", big.compressed_size());
    for (desc, diff_id, size) in &big.layers {
        let path = dir.path().join("blobs/sha256").join(desc.digest.hex());
        let blob = std::fs::read(&path).unwrap();
        assert_eq!(Digest::of(&blob), desc.digest);
        assert_eq!(blob.len() as u64, desc.size);
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut tar).unwrap();
        assert_eq!(&Digest::of(&tar), diff_id);
        assert_eq!(tar.len() as u64, *size);
    }
    // Fresh randomness on every call: two big images share only the busybox base.
    let again = tempfile::tempdir().unwrap();
    let other = testimage::big_image(again.path(), 3, total);
    assert_ne!(other.layers[1].0.digest, big.layers[1].0.digest);
    let registry = Registry::start();
    big.push(&registry, "berth/big", "latest");
    assert_eq!(
        served_digest(&registry, "berth/big:latest"),
        big.root.digest.as_str()
    );
}
