//! containerd's own `ctr` (from Debian's containerd package) against berthd, unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_core::Digest;
use berth_integration::{Daemon, random_bytes};

#[test]
fn version_reports_server_and_uuid() {
    let d = Daemon::start();
    let out = d.ctr(&["version"]).ok();
    assert!(out.contains("Server:"), "{out}");
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let uuid_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("UUID:"))
        .unwrap_or_else(|| panic!("no UUID line:\n{out}"));
    let uuid = uuid_line.split_whitespace().last().unwrap();
    assert_eq!(uuid.len(), 36, "{uuid_line}");
    // The UUID is kept in the root, so it survives a restart.
    let mut d = d;
    d.restart();
    assert!(d.ctr(&["version"]).ok().contains(uuid));
}

#[test]
fn plugins_are_listed() {
    let d = Daemon::start();
    let out = d.ctr(&["plugins", "ls"]).ok();
    for needle in [
        "io.containerd.content.v1",
        "io.containerd.grpc.v1",
        "leases",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    let content_line = out
        .lines()
        .find(|l| l.starts_with("io.containerd.content.v1"))
        .unwrap();
    assert!(content_line.trim_end().ends_with("ok"), "{content_line}");
}

#[test]
fn namespaces_create_label_list_remove() {
    let d = Daemon::start();
    d.ctr(&["namespaces", "create", "team-a", "owner=alice"])
        .ok();
    let ls = d.ctr(&["namespaces", "ls"]).ok();
    let line = ls
        .lines()
        .find(|l| l.starts_with("team-a"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(line.contains("owner=alice"), "{line}");

    d.ctr(&["namespaces", "label", "team-a", "tier=gold"]).ok();
    let ls = d.ctr(&["namespaces", "ls"]).ok();
    let line = ls.lines().find(|l| l.starts_with("team-a")).unwrap();
    assert!(
        line.contains("tier=gold") && line.contains("owner=alice"),
        "{line}"
    );

    // A namespace holding content cannot be removed.
    d.ctr_stdin(&["-n", "team-a", "content", "ingest", "blob-1"], b"hello")
        .ok();
    let err = d.ctr(&["namespaces", "rm", "team-a"]).fails();
    assert!(
        err.contains("must be empty") || err.contains("failed precondition"),
        "{err}"
    );

    let digest = Digest::of(b"hello");
    d.ctr(&["-n", "team-a", "content", "rm", digest.as_str()])
        .ok();
    d.ctr(&["namespaces", "rm", "team-a"]).ok();
    assert!(!d.ctr(&["namespaces", "ls"]).ok().contains("team-a"));

    // Bad names are refused with InvalidArgument.
    let err = d.ctr(&["namespaces", "create", "bad/name"]).fails();
    assert!(
        err.contains("invalid argument") || err.contains("must match"),
        "{err}"
    );
}

#[test]
fn content_ingest_ls_get_label_rm_20mb() {
    let d = Daemon::start();
    let data = random_bytes(20 << 20);
    let digest = Digest::of(&data);
    let size = data.len().to_string();
    d.ctr_stdin(
        &[
            "content",
            "ingest",
            "--expected-size",
            &size,
            "--expected-digest",
            digest.as_str(),
            "big-blob",
        ],
        &data,
    )
    .ok();

    let ls = d.ctr(&["content", "ls"]).ok();
    let line = ls
        .lines()
        .find(|l| l.starts_with(digest.as_str()))
        .unwrap_or_else(|| panic!("{digest} not listed:\n{ls}"));
    // ctr prints decimal human sizes: 20 MiB = 20.97MB.
    assert!(
        line.contains("20.97MB") || line.contains("20.97 MB"),
        "{line}"
    );

    let got = d.ctr(&["content", "get", digest.as_str()]);
    got.ok();
    assert!(
        got.output.stdout == data,
        "ctr content get returned different bytes"
    );

    d.ctr(&["content", "label", digest.as_str(), "color=blue"])
        .ok();
    let ls = d.ctr(&["content", "ls"]).ok();
    let line = ls.lines().find(|l| l.starts_with(digest.as_str())).unwrap();
    assert!(line.contains("color=blue"), "{line}");
    // An empty value removes the label.
    d.ctr(&["content", "label", digest.as_str(), "color="]).ok();
    let ls = d.ctr(&["content", "ls"]).ok();
    assert!(!ls.contains("color=blue"), "{ls}");

    d.ctr(&["content", "rm", digest.as_str()]).ok();
    assert!(!d.ctr(&["content", "ls"]).ok().contains(digest.as_str()));
    let err = d.ctr(&["content", "get", digest.as_str()]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn content_ingest_wrong_digest_stores_nothing() {
    let d = Daemon::start();
    let wrong = Digest::of(b"something else");
    let err = d
        .ctr_stdin(
            &[
                "content",
                "ingest",
                "--expected-digest",
                wrong.as_str(),
                "bad-ref",
            ],
            b"actual bytes",
        )
        .fails();
    assert!(
        err.contains("unexpected commit digest") || err.contains("failed precondition"),
        "{err}"
    );
    let ls = d.ctr(&["content", "ls"]).ok();
    assert!(!ls.contains(Digest::of(b"actual bytes").as_str()), "{ls}");
    assert!(!ls.contains(wrong.as_str()), "{ls}");
}

#[test]
fn leases_create_list_remove() {
    let d = Daemon::start();
    let out = d
        .ctr(&["leases", "create", "--id", "my-lease", "--expires", "1h"])
        .ok();
    assert!(out.contains("my-lease"), "{out}");
    let generated = d.ctr(&["leases", "create"]).ok();
    let generated = generated.trim();
    assert!(!generated.is_empty());

    let ls = d.ctr(&["leases", "ls"]).ok();
    let line = ls
        .lines()
        .find(|l| l.starts_with("my-lease"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(line.contains("containerd.io/gc.expire"), "{line}");
    assert!(ls.contains(generated), "{ls}");

    d.ctr(&["leases", "rm", "my-lease"]).ok();
    d.ctr(&["leases", "rm", "--sync", generated]).ok();
    let ls = d.ctr(&["leases", "ls"]).ok();
    assert!(!ls.contains("my-lease") && !ls.contains(generated), "{ls}");
    let err = d.ctr(&["leases", "rm", "my-lease"]).fails();
    assert!(err.contains("not found"), "{err}");
}
