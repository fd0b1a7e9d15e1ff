//! berthctl against a real berthd: every foundation command, in table and JSON form.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_core::Digest;
use berth_integration::{Daemon, random_bytes};
use serde_json::Value;

fn json(out: String) -> Value {
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[test]
fn version_and_info() {
    let d = Daemon::start();
    let v = json(d.berthctl(&["--format", "json", "version"]).ok());
    assert_eq!(v["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["server"]["uuid"].as_str().unwrap().len(), 36);

    let info = json(d.berthctl(&["--format", "json", "info"]).ok());
    assert_eq!(info["uuid"], v["server"]["uuid"]);
    let plugins = info["plugins"].as_array().unwrap();
    let content = plugins
        .iter()
        .find(|p| p["type"] == "io.containerd.content.v1")
        .unwrap();
    assert_eq!(content["status"], "ok");
    let tasks = plugins
        .iter()
        .find(|p| p["type"] == "io.containerd.grpc.v1" && p["id"] == "tasks")
        .unwrap();
    assert_eq!(tasks["status"], "ok", "{tasks}");
    let runtime = plugins
        .iter()
        .find(|p| p["type"] == "io.containerd.runtime.v2" && p["id"] == "task")
        .unwrap();
    assert_eq!(runtime["status"], "ok", "{runtime}");

    let table = d.berthctl(&["info"]).ok();
    assert!(table.contains("io.containerd.content.v1"), "{table}");
}

#[test]
fn namespace_commands() {
    let d = Daemon::start();
    d.berthctl(&["namespace", "create", "web", "--label", "team=a"])
        .ok();
    d.berthctl(&["namespace", "label", "web", "tier=1"]).ok();
    let list = json(d.berthctl(&["--format", "json", "namespace", "ls"]).ok());
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "web")
        .unwrap();
    assert_eq!(web["labels"]["team"], "a");
    assert_eq!(web["labels"]["tier"], "1");

    d.berthctl(&["namespace", "label", "web", "team="]).ok();
    let list = json(d.berthctl(&["--format", "json", "namespace", "ls"]).ok());
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "web")
        .unwrap();
    assert!(web["labels"].get("team").is_none(), "{web}");

    let err = d.berthctl(&["namespace", "create", "web"]).fails();
    assert!(err.contains("already exists"), "{err}");
    let err = d.berthctl(&["namespace", "create", "Not/Valid"]).fails();
    assert!(err.starts_with("berthctl: "), "{err}");

    d.berthctl(&["namespace", "rm", "web"]).ok();
    let table = d.berthctl(&["namespace", "ls"]).ok();
    assert!(!table.contains("web"), "{table}");
}

#[test]
fn content_commands() {
    let d = Daemon::start();
    let data = random_bytes(3 << 20);
    let digest = Digest::of(&data);
    let out = d
        .berthctl_stdin(
            &[
                "-n", "img", "content", "ingest", "blob-ref", "--label", "k=v",
            ],
            &data,
        )
        .ok();
    assert_eq!(out.trim(), digest.as_str());

    let list = json(
        d.berthctl(&["-n", "img", "--format", "json", "content", "ls"])
            .ok(),
    );
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(entry["size"], data.len() as u64);
    assert_eq!(entry["labels"]["k"], "v");

    // Filters use containerd's syntax.
    let filtered = json(
        d.berthctl(&[
            "-n",
            "img",
            "--format",
            "json",
            "content",
            "ls",
            "labels.k==other",
        ])
        .ok(),
    );
    assert!(filtered.as_array().unwrap().is_empty());

    let got = d.berthctl(&["-n", "img", "content", "get", digest.as_str()]);
    got.ok();
    assert!(got.output.stdout == data);

    d.berthctl(&[
        "-n",
        "img",
        "content",
        "label",
        digest.as_str(),
        "k=",
        "x=y",
    ])
    .ok();
    let list = json(
        d.berthctl(&["-n", "img", "--format", "json", "content", "ls"])
            .ok(),
    );
    assert_eq!(list[0]["labels"], serde_json::json!({"x": "y"}));

    // The blob is not visible from another namespace.
    let err = d
        .berthctl(&["-n", "other", "content", "get", digest.as_str()])
        .fails();
    assert!(err.contains("not found"), "{err}");

    let wrong = Digest::of(b"nope");
    let err = d
        .berthctl_stdin(
            &[
                "content",
                "ingest",
                "bad",
                "--expected-digest",
                wrong.as_str(),
            ],
            b"data",
        )
        .fails();
    assert!(err.contains("unexpected commit digest"), "{err}");

    d.berthctl(&["-n", "img", "content", "rm", digest.as_str()])
        .ok();
    let err = d
        .berthctl(&["-n", "img", "content", "rm", digest.as_str()])
        .fails();
    assert!(err.contains("not found"), "{err}");
    let err = d.berthctl(&["content", "get", "sha256:xyz"]).fails();
    assert!(err.contains("invalid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_active_shows_an_unfinished_ingest() {
    use berth_proto::containerd::services::content::v1 as pb;
    let d = Daemon::start();
    let client = d.client("default").await;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut replies = client
        .rpc()
        .content()
        .write(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::WriteContentRequest {
        action: pb::WriteAction::Write as i32,
        r#ref: "half-done".into(),
        total: 100,
        data: vec![7; 40],
        ..Default::default()
    })
    .await
    .unwrap();
    replies.message().await.unwrap().unwrap();
    drop(tx);
    drop(replies);

    let out = tokio::task::spawn_blocking(move || {
        let out = d.berthctl(&["--format", "json", "content", "active"]).ok();
        (out, d)
    })
    .await
    .unwrap();
    let active = json(out.0);
    let entry = &active.as_array().unwrap()[0];
    assert_eq!(entry["ref"], "half-done");
    assert_eq!(entry["offset"], 40);
    assert_eq!(entry["total"], 100);
}

#[test]
fn lease_commands_and_gc() {
    let d = Daemon::start();
    let lease = json(
        d.berthctl(&[
            "--format",
            "json",
            "lease",
            "create",
            "--id",
            "hold",
            "--expires-in",
            "1h",
        ])
        .ok(),
    );
    assert_eq!(lease["id"], "hold");
    assert!(lease["labels"]["containerd.io/gc.expire"].is_string());

    let generated = d.berthctl(&["lease", "create"]).ok();
    assert!(!generated.trim().is_empty());
    let list = json(d.berthctl(&["--format", "json", "lease", "ls"]).ok());
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // Unreferenced content goes on gc; the count says so.
    d.berthctl_stdin(&["content", "ingest", "loose"], b"loose bytes")
        .ok();
    let stats = json(d.berthctl(&["--format", "json", "gc"]).ok());
    assert_eq!(stats["blobs_removed"], 1, "{stats}");
    assert_eq!(stats["bytes_removed"], 11, "{stats}");
    assert!(
        json(d.berthctl(&["--format", "json", "content", "ls"]).ok())
            .as_array()
            .unwrap()
            .is_empty()
    );

    d.berthctl(&["lease", "rm", "hold", "--sync"]).ok();
    let err = d.berthctl(&["lease", "rm", "hold"]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn connection_errors_are_clear() {
    let out = berth_integration::CmdOutput::run_public(
        std::process::Command::new(berth_integration::bin("berthctl")).args([
            "--address",
            "/nonexistent/berthd.sock",
            "version",
        ]),
    );
    let err = out.fails();
    assert!(err.contains("/nonexistent/berthd.sock"), "{err}");
    assert!(err.contains("is berthd running"), "{err}");
    assert_eq!(out.output.status.code(), Some(1));
}
