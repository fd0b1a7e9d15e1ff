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

#[test]
fn a_pull_cut_by_sigkill_completes_after_restart_reusing_finished_blobs() {
    use berth_integration::testimage::big_image;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = big_image(dir.path(), 5, 100 << 20);
    let reference = image.push(&registry, "berth/big", "v1");
    let mut d = Daemon::start();
    let blobs = d.root().join("content/blobs/sha256");
    let blob_path = |digest: &berth_core::Digest| blobs.join(digest.hex());
    let first = blob_path(&image.layers[0].0.digest);
    let last = blob_path(&image.layers.last().unwrap().0.digest);

    let mut pull = Command::new(berth_integration::bin("berthctl"))
        .arg("--address")
        .arg(d.socket())
        .args(["pull", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the daemon as soon as the namespace holds the first layer (its record, not just the
    // file: the file lands a moment before the record), while later layers are in flight.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first_digest = image.layers[0].0.digest.clone();
    runtime.block_on(async {
        let client = d.client("default").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.content().info(&first_digest).await.is_err() {
            assert!(Instant::now() < deadline, "the first layer never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    assert!(first.exists());
    let finished_early = last.exists();
    d.kill9();
    let _ = pull.wait();
    assert!(
        !finished_early,
        "the whole image arrived before the kill; the test image is too small to cut the pull"
    );

    d.restart();
    let images = d.berthctl(&["images"]).ok();
    assert!(
        !images.contains("berth/big"),
        "a cut pull must not leave an image:\n{images}"
    );

    let again = d.berthctl(&["pull", &reference]);
    again.ok();
    let progress = again.stderr();
    let short = &image.layers[0].0.digest.hex()[..12];
    assert!(
        progress.contains(&format!("{short}: Already exists")),
        "the layer finished before the kill was fetched again:\n{progress}"
    );
    for (layer, _, _) in &image.layers {
        assert!(
            blob_path(&layer.digest).exists(),
            "{} missing",
            layer.digest
        );
    }
    let top = image.chain_ids().last().unwrap().to_string();
    let snapshots = d.ctr(&["snapshots", "ls"]).ok();
    assert!(
        snapshots.contains(&top),
        "top layer not unpacked:\n{snapshots}"
    );
}

/// Runs berthctl against `d` with `DOCKER_CONFIG` (and `HOME`) pointing at `config_dir`, so the
/// test's credentials never touch the user's, feeding `stdin` when given.
fn berthctl_in(
    d: &Daemon,
    config_dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> berth_integration::CmdOutput {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(berth_integration::bin("berthctl"));
    cmd.arg("--address")
        .arg(d.socket())
        .args(args)
        .env("DOCKER_CONFIG", config_dir)
        .env("HOME", config_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    berth_integration::CmdOutput { command, output }
}

#[test]
fn berthctl_login_lets_the_daemon_pull_and_push_and_logout_takes_it_back() {
    use berth_integration::mode_of;

    let registry = Registry::start_with_auth("berth", "s3cret");
    let image = TestImage::one_layer();
    let reference = image.push(&registry, "private/one", "v1");
    let host = registry.host();
    let copy = format!("{host}/private/copy:v1");
    let d = Daemon::start();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.json");
    let run = |args: &[&str]| berthctl_in(&d, home.path(), args, None);
    let login = |password: &str| {
        berthctl_in(
            &d,
            home.path(),
            &["login", &host, "-u", "berth", "--password-stdin"],
            Some(format!("{password}\n").as_bytes()),
        )
    };
    let unauthorized = |err: &str| {
        assert!(
            err.contains(&format!("authentication required for {host}"))
                && err.contains("permission denied"),
            "not an unauthorized error:\n{err}"
        );
    };

    // Not logged in: the registry refuses the daemon, and the client says so.
    unauthorized(&run(&["pull", &reference]).fails());
    assert!(!config.exists(), "a failed pull writes no credentials");

    // A wrong password is stored (login checks nothing), and refused at the pull.
    login("wrong").ok();
    let err = run(&["pull", &reference]).fails();
    assert!(
        err.contains(&format!("authentication failed for {host}")),
        "{err}"
    );
    assert!(
        !err.contains("wrong"),
        "the secret leaks into the error:\n{err}"
    );

    // The right one: stored 0600 in the docker-style file, replacing the wrong one.
    let out = login("s3cret").ok();
    assert!(
        out.contains(&format!("Credentials for {host} stored")),
        "{out}"
    );
    assert_eq!(mode_of(&config), 0o600);
    let stored: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let expected_auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("berth:s3cret")
    };
    assert_eq!(
        stored["auths"],
        serde_json::json!({ host.clone(): { "auth": expected_auth } })
    );

    // The daemon pulls with them, unpacks, and pushes to another repository.
    run(&["pull", &reference]).ok();
    let listed = run(&["images"]).ok();
    assert!(listed.contains(&reference), "{listed}");
    let top = image.chain_ids().last().unwrap().to_string();
    let snapshots = d.ctr(&["snapshots", "ls"]).ok();
    assert!(snapshots.contains(&top), "not unpacked:\n{snapshots}");
    run(&["push", &reference, &copy]).ok();
    let inspected: Value =
        serde_json::from_str(&registry.inspect("private/copy:v1", false).ok()).unwrap();
    assert_eq!(inspected["Digest"], image.root.digest.as_str());

    // Logout removes the entry; pull and push are refused again.
    let out = run(&["logout", &host]).ok();
    assert!(
        out.contains(&format!("Removed credentials for {host}")),
        "{out}"
    );
    let stored: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(stored["auths"], serde_json::json!({}), "{stored}");
    assert_eq!(mode_of(&config), 0o600);
    unauthorized(&run(&["pull", &reference]).fails());
    unauthorized(&run(&["push", &reference, &copy]).fails());
    let out = run(&["logout", &host]).ok();
    assert!(out.contains(&format!("Not logged in to {host}")), "{out}");
}
