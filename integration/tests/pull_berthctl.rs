//! Daemon-side pull and push through berthctl: berthd talks to a real registry on loopback,
//! streams progress to the client, unpacks, and pushes back what it holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_integration::Daemon;
use berth_integration::mounts::mount_with_ctr;
use berth_integration::registry::Registry;
use berth_integration::testimage::{TestImage, assert_tree};
use serde_json::Value;

#[test]
fn berthctl_pull_unpacks_and_push_round_trips() {
    let registry = Registry::start();
    let image = TestImage::three_layer();
    let reference = image.push(&registry, "berth/three", "v1");
    let d = Daemon::start();

    // Not a terminal: progress comes as one line per state change on stderr.
    let out = d.berthctl(&["pull", &reference]);
    out.ok();
    let progress = out.stderr();
    for layer in image.layers() {
        let short = &layer.descriptor.digest.hex()[..12];
        assert!(
            progress.contains(&format!("{short}: Download complete"))
                || progress.contains(&format!("{short}: Pull complete")),
            "no completed download for {short}:\n{progress}"
        );
    }

    let listed: Value =
        serde_json::from_str(&d.berthctl(&["--format", "json", "images"]).ok()).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == reference.as_str())
        .unwrap_or_else(|| panic!("{reference} not listed: {listed}"));
    assert!(
        entry.to_string().contains(image.root.digest.hex()),
        "{entry}"
    );

    // The daemon unpacked it: the top chain ID is committed and holds the image's tree.
    let top = image.chain_ids().last().unwrap().to_string();
    d.ctr(&["snapshots", "prepare", "check", &top]).ok();
    {
        let mounted = mount_with_ctr(&d, &[], "overlayfs", "check");
        assert_tree(&image.expected_rootfs(), mounted.path());
    }
    d.ctr(&["snapshots", "rm", "check"]).ok();

    // Push it to another repository: the registry serves the same manifest digest.
    let target = format!("{}/berth/copy:v2", registry.host());
    d.berthctl(&["push", &reference, &target]).ok();
    let inspected: Value =
        serde_json::from_str(&registry.inspect("berth/copy:v2", false).ok()).unwrap();
    assert_eq!(
        inspected["Digest"],
        image.root.digest.as_str(),
        "{inspected}"
    );

    // A second pull of the same image finds every blob already present.
    let again = d.berthctl(&["pull", &reference]);
    again.ok();
    let progress = again.stderr();
    assert!(
        !progress.contains("Downloading"),
        "re-pull downloaded again:\n{progress}"
    );
    for layer in image.layers() {
        let short = &layer.descriptor.digest.hex()[..12];
        assert!(
            progress.contains(&format!("{short}: Already exists")),
            "{short} not reported as present:\n{progress}"
        );
    }
}

#[test]
fn berthctl_pull_reports_a_missing_image_clearly() {
    let registry = Registry::start();
    let d = Daemon::start();
    let missing = format!("{}/berth/nothing:here", registry.host());
    let err = d.berthctl(&["pull", &missing]).fails();
    assert!(err.contains("not found"), "{err}");
    let listed = d.berthctl(&["images"]).ok();
    assert!(!listed.contains("nothing"), "{listed}");
}
