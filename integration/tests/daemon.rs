//! berthd as a process: configuration, the root lock, the socket, signals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use berth_integration::{Daemon, bin, mode_of, signal};
use berth_proto::containerd::services::content::v1 as pb;

#[test]
fn config_default_is_the_embedded_toml() {
    let out = Command::new(bin("berthd"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Table = text.parse().unwrap();
    assert_eq!(parsed["root"].as_str(), Some("/var/lib/berth"));
    assert_eq!(parsed["state"].as_str(), Some("/run/berth"));
    assert_eq!(
        parsed["grpc"]["address"].as_str(),
        Some("/run/berth/berthd.sock")
    );
    assert_eq!(parsed["grpc"]["mode"].as_integer(), Some(0o660));
}

#[test]
fn config_file_and_flags_layer_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berthd.toml");
    std::fs::write(&cfg, "root = \"/srv/berth\"\n[log]\nlevel = \"debug\"\n").unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .args(["--state", "/tmp/berth-state-flag", "config", "dump"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped: toml::Table = text.parse().unwrap();
    assert_eq!(dumped["root"].as_str(), Some("/srv/berth"), "{text}");
    assert_eq!(
        dumped["state"].as_str(),
        Some("/tmp/berth-state-flag"),
        "{text}"
    );
    assert_eq!(dumped["log"]["level"].as_str(), Some("debug"), "{text}");
    // What the file does not name keeps its default.
    assert_eq!(dumped["grpc"]["mode"].as_integer(), Some(0o660), "{text}");

    std::fs::write(&cfg, "rooot = \"/typo\"\n").unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rooot"), "{err}");
}

#[test]
fn socket_has_mode_0660() {
    let d = Daemon::start();
    assert_eq!(mode_of(&d.socket()), 0o660);
}

#[test]
fn second_daemon_on_the_same_root_refuses() {
    let d = Daemon::start();
    let other_socket = d.state().join("other.sock");
    let out = Command::new(bin("berthd"))
        .arg("--root")
        .arg(d.root())
        .arg("--state")
        .arg(d.state())
        .arg("--address")
        .arg(&other_socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another berthd") && err.contains(&d.pid().to_string()),
        "{err}"
    );
    assert!(!other_socket.exists());
    // The first daemon is unaffected.
    d.ctr(&["version"]).ok();
}

#[test]
fn a_live_socket_is_not_stolen_but_a_stale_one_is_replaced() {
    let mut d = Daemon::start();
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--root")
        .arg(other.path().join("root"))
        .arg("--state")
        .arg(other.path().join("state"))
        .arg("--address")
        .arg(d.socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a running server"), "{err}");

    // After SIGKILL the socket file stays behind; a restart must replace it.
    d.kill9();
    assert!(d.socket().exists());
    d.restart();
    d.ctr(&["version"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_write_then_exits() {
    let mut d = Daemon::start();
    let client = d.client("default").await;
    let data = berth_integration::random_bytes(3 << 20);
    let digest = berth_core::Digest::of(&data);

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .rpc()
        .content()
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::WriteContentRequest {
        action: pb::WriteAction::Write as i32,
        r#ref: "drain".into(),
        total: data.len() as i64,
        expected: digest.to_string(),
        data: data[..1 << 20].to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.offset, 1 << 20);

    // The daemon is asked to stop while the write is still open.
    signal(d.pid(), libc::SIGTERM);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    tx.send(pb::WriteContentRequest {
        action: pb::WriteAction::Commit as i32,
        offset: 1 << 20,
        total: data.len() as i64,
        expected: digest.to_string(),
        data: data[1 << 20..].to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let commit = responses.message().await.unwrap().unwrap();
    assert_eq!(commit.digest, digest.to_string());
    assert_eq!(commit.offset, data.len() as i64);
    drop(tx);
    drop(responses);
    drop(client);

    let status = tokio::task::spawn_blocking(move || {
        let status = d.terminate();
        (status, d)
    })
    .await
    .unwrap();
    let (status, d) = status;
    assert!(
        status.success(),
        "berthd exited with {status}:\n{}",
        d.log()
    );
    assert!(
        !d.socket().exists(),
        "socket left behind after a clean stop"
    );

    // The committed blob is there after a restart.
    let mut d = d;
    d.restart();
    let client = d.client("default").await;
    let read = client.content().read_all(&digest).await.unwrap();
    assert!(read == data);
}
