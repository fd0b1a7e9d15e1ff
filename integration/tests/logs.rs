//! Container logs end to end: a container created with `io.berth.log=json-file` has its output
//! logged by its shim, and `berthctl logs` reads it back through berthd's Logs service —
//! following it, tailing it, after the task is gone and after berthd was SIGKILLed; deleting
//! the container deletes the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::testimage::TestImage;
use berth_integration::{CmdOutput, Daemon, bin, daemon_with_image, unique};

fn ctr(d: &Daemon, ns: &str, args: &[&str]) -> CmdOutput {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    d.ctr(&all)
}

fn logs(d: &Daemon, ns: &str, args: &[&str]) -> CmdOutput {
    let mut all = vec!["-n", ns, "logs"];
    all.extend_from_slice(args);
    d.berthctl(&all)
}

/// Runs `script` detached in a logged container.
fn run_logged(d: &Daemon, ns: &str, image: &TestImage, id: &str, extra: &[&str], script: &str) {
    let mut args = vec!["run", "-d", "--label", "io.berth.log=json-file"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[&image.name, id, "sh", "-c", script]);
    ctr(d, ns, &args).ok();
}

fn wait_stopped(d: &Daemon, ns: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ls = ctr(d, ns, &["tasks", "ls"]).ok();
        let stopped = ls
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.contains("STOPPED"));
        if stopped {
            return;
        }
        assert!(Instant::now() < deadline, "{id} did not stop:\n{ls}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn follow_streams_until_exit_and_the_log_outlives_task_and_daemon() {
    let ns = unique("logs");
    let (mut d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    // The container waits for the follower before it writes its second batch, so the test
    // sees output that arrives while it follows.
    run_logged(
        &d,
        &ns,
        &image,
        &id,
        &[],
        "echo out1; echo err1 >&2; sleep 1; echo out2; printf 'no newline'",
    );
    let follower = Command::new(bin("berthctl"))
        .arg("--address")
        .arg(d.socket())
        .args(["-n", &ns, "logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follower.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -f returned by itself: the container exited and everything it wrote was there.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out1\nout2\nno newline"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err1\n");
    wait_stopped(&d, &ns, &id);

    let tail = logs(&d, &ns, &["--tail", "2", &id]);
    assert_eq!(tail.ok(), "out2\nno newline");
    let json = logs(&d, &ns, &["--format", "json", "-t", &id]).ok();
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 4, "{json}");
    assert_eq!(entries[1]["stream"], "stderr");
    assert_eq!(entries[1]["log"], "err1\n");
    assert!(
        entries[0]["time"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    let stamped = logs(&d, &ns, &["-t", &id]).ok();
    let first = stamped.lines().next().unwrap();
    assert!(
        first.ends_with(" out1") && first.starts_with("20"),
        "{stamped}"
    );
    // Everything was written before now: a --since in the future shows nothing.
    assert_eq!(
        logs(&d, &ns, &["--since", "2999-01-01T00:00:00Z", &id]).ok(),
        ""
    );

    // The task goes, the log stays; berthd dies and comes back, the log stays.
    ctr(&d, &ns, &["tasks", "delete", &id]).ok();
    d.kill9();
    d.restart();
    assert_eq!(logs(&d, &ns, &["--tail", "1", &id]).ok(), "no newline");

    // The container goes: so does its log.
    let dir = d.root().join("logs").join(&ns).join(&id);
    assert!(dir.join("container.log").exists());
    ctr(&d, &ns, &["containers", "rm", &id]).ok();
    assert!(!dir.exists(), "{} left behind", dir.display());
    let gone = logs(&d, &ns, &[&id]).fails();
    assert!(gone.contains("not found"), "{gone}");
}

#[test]
fn rotation_keeps_one_generation_and_reads_it_first() {
    let ns = unique("logs");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    // Each line's JSON is about 80 bytes: 200 lines need three 4 KiB files.
    run_logged(
        &d,
        &ns,
        &image,
        &id,
        &["--label", "io.berth.log.max-size=4096"],
        "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done",
    );
    wait_stopped(&d, &ns, &id);
    let dir = d.root().join("logs").join(&ns).join(&id);
    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    assert!(size("container.log") <= 4096, "{}", size("container.log"));
    assert!(size("container.log.1") > 0 && size("container.log.1") <= 4096);
    let all = logs(&d, &ns, &[&id]).ok();
    let lines: Vec<&str> = all.lines().collect();
    // Only the newest lines are kept, contiguous and in order, ending with the last one.
    assert_eq!(lines.last(), Some(&"line-199"), "{all}");
    let first: usize = lines[0].strip_prefix("line-").unwrap().parse().unwrap();
    let want: Vec<String> = (first..200).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, want.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(first > 0, "nothing was rotated away");
}

#[test]
fn containers_without_a_log_and_unknown_ones_are_refused_clearly() {
    let ns = unique("logs");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    ctr(&d, &ns, &["run", "--rm", &image.name, &id, "true"]).ok();
    ctr(&d, &ns, &["containers", "create", &image.name, &id, "true"]).ok();
    let err = logs(&d, &ns, &[&id]).fails();
    assert!(err.contains("io.berth.log=json-file"), "{err}");
    let err = logs(&d, &ns, &["no-such-container"]).fails();
    assert!(err.contains("not found"), "{err}");
    let err = logs(&d, &ns, &["../etc"]).fails();
    assert!(!err.is_empty());
}
