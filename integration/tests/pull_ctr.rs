//! containerd's client-side pull against berthd: `ctr images pull --plain-http` from a real
//! registry on loopback drives Leases, Content (Write/Info/Read/Update), Images, Namespaces,
//! Snapshots and Diff.Apply exactly as it drives containerd. The unpacked tree must equal the
//! image's, and removing the image must free its blobs and snapshots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_integration::Daemon;
use berth_integration::mounts::mount_with_ctr;
use berth_integration::registry::Registry;
use berth_integration::testimage::{TestImage, assert_tree};

fn blob_on_disk(d: &Daemon, digest: &berth_core::Digest) -> bool {
    d.root()
        .join("content/blobs/sha256")
        .join(digest.hex())
        .exists()
}

fn pull_unpack_check_remove(image: TestImage, repo: &str) {
    let registry = Registry::start();
    let reference = image.push(&registry, repo, "v1");
    let d = Daemon::start();

    d.ctr(&["images", "pull", "--plain-http", &reference]).ok();

    let ls = d.ctr(&["images", "ls"]).ok();
    let line = ls
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{reference} not listed:\n{ls}"));
    assert!(line.contains(image.root.digest.as_str()), "{line}");

    let check = d.ctr(&["images", "check"]).ok();
    assert!(check.contains("complete"), "{check}");

    // Every layer was unpacked and committed under its chain ID, and labelled with its diffID.
    let chain = image.chain_ids();
    let snapshots = d.ctr(&["snapshots", "ls"]).ok();
    for id in &chain {
        assert!(
            snapshots.contains(id.as_str()),
            "{id} not committed:\n{snapshots}"
        );
    }
    let content = d.ctr(&["content", "ls"]).ok();
    for (layer, diff_id) in image.layers().iter().zip(image.diff_ids()) {
        let row = content
            .lines()
            .find(|l| l.starts_with(layer.descriptor.digest.as_str()))
            .unwrap_or_else(|| panic!("layer {} missing:\n{content}", layer.descriptor.digest));
        assert!(
            row.contains(&format!("containerd.io/uncompressed={diff_id}")),
            "{row}"
        );
    }

    // The unpacked rootfs is exactly the image's. (`ctr snapshots prepare` labels its snapshot
    // a GC root; a bare view would be collected by the GC the pull's lease delete schedules.)
    let top = chain.last().unwrap().to_string();
    d.ctr(&["snapshots", "prepare", "check-view", &top]).ok();
    {
        let mounted = mount_with_ctr(&d, &[], "overlayfs", "check-view");
        assert_tree(&image.expected_rootfs(), mounted.path());
    }
    d.ctr(&["snapshots", "rm", "check-view"]).ok();

    // Removing the image (with a synchronous collection) frees its blobs and its snapshots.
    d.ctr(&["images", "rm", "--sync", &reference]).ok();
    for digest in image.blobs.keys() {
        assert!(!blob_on_disk(&d, digest), "{digest} still on disk");
    }
    let snapshots = d.ctr(&["snapshots", "ls"]).ok();
    for id in &chain {
        assert!(!snapshots.contains(id.as_str()), "{id} kept:\n{snapshots}");
    }
}

#[test]
fn ctr_pull_one_layer_image() {
    pull_unpack_check_remove(TestImage::one_layer(), "berth/one");
}

#[test]
fn ctr_pull_three_layers_with_whiteouts() {
    pull_unpack_check_remove(TestImage::three_layer(), "berth/three");
}

#[test]
fn ctr_pull_picks_the_host_platform_from_an_index() {
    pull_unpack_check_remove(TestImage::two_platform_index(), "berth/multi");
}
