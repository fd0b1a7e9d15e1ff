//! Containers run through berthd by containerd's own `ctr`: `ctr run` (foreground, detached),
//! `ctr tasks …`, and tasks surviving a SIGKILL of berthd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use berth_integration::{CmdOutput, Daemon, daemon_with_image, unique};

fn ctr(d: &Daemon, ns: &str, args: &[&str]) -> CmdOutput {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    d.ctr(&all)
}

fn task_status(d: &Daemon, ns: &str, id: &str) -> Option<String> {
    let ls = ctr(d, ns, &["tasks", "ls"]).ok();
    ls.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&id))
        .and_then(|f| f.get(2).map(|s| s.to_string()))
}

fn wait_status(d: &Daemon, ns: &str, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = task_status(d, ns, id);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: status {got:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_run_rm_prints_output_and_returns_the_exit_code() {
    let ns = unique("run");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    let out = ctr(
        &d,
        &ns,
        &[
            "run",
            "--rm",
            &image.name,
            &id,
            "sh",
            "-c",
            "echo hello from pid $$; exit 3",
        ],
    );
    assert_eq!(out.output.status.code(), Some(3), "{}", out.stderr());
    // pid 1: the container has its own pid namespace.
    assert_eq!(out.stdout(), "hello from pid 1\n");
    // --rm removed the task, the container and its snapshot.
    assert!(!ctr(&d, &ns, &["containers", "ls", "-q"]).ok().contains(&id));
    assert!(task_status(&d, &ns, &id).is_none());
    let snapshots = ctr(&d, &ns, &["snapshots", "ls"]).ok();
    assert!(!snapshots.contains(&id), "{snapshots}");
}

#[test]
fn a_detached_task_is_listed_execs_pauses_and_is_killed() {
    let ns = unique("detached");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    ctr(&d, &ns, &["run", "-d", &image.name, &id, "sleep", "1000"]).ok();
    wait_status(&d, &ns, &id, "RUNNING");

    let exec = ctr(
        &d,
        &ns,
        &[
            "tasks",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo in $(cat /proc/1/comm); exit 4",
        ],
    );
    assert_eq!(exec.output.status.code(), Some(4), "{}", exec.stderr());
    // The exec'd process sees the container's init as pid 1.
    assert_eq!(exec.stdout(), "in sleep\n");

    let ps = ctr(&d, &ns, &["tasks", "ps", &id]).ok();
    assert!(ps.lines().count() >= 2, "{ps}");

    ctr(&d, &ns, &["tasks", "pause", &id]).ok();
    wait_status(&d, &ns, &id, "PAUSED");
    ctr(&d, &ns, &["tasks", "resume", &id]).ok();
    wait_status(&d, &ns, &id, "RUNNING");

    let metrics = ctr(&d, &ns, &["tasks", "metrics", &id]).ok();
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");

    // A running task cannot be deleted.
    let err = ctr(&d, &ns, &["tasks", "rm", &id]).fails();
    assert!(err.contains("must be stopped"), "{err}");

    ctr(&d, &ns, &["tasks", "kill", "-s", "SIGKILL", &id]).ok();
    wait_status(&d, &ns, &id, "STOPPED");
    ctr(&d, &ns, &["tasks", "rm", &id]).ok();
    ctr(&d, &ns, &["containers", "rm", &id]).ok();
    assert!(task_status(&d, &ns, &id).is_none());
}

#[test]
fn exec_stdin_reaches_the_process_whole_before_it_is_closed() {
    let ns = unique("stdin");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    ctr(&d, &ns, &["run", "-d", &image.name, &id, "sleep", "1000"]).ok();
    wait_status(&d, &ns, &id, "RUNNING");
    // ctr closes its FIFO writer and calls CloseIO as soon as its stdin ends; whatever is
    // still in the FIFO then must reach the process before its stdin closes. Several rounds,
    // sizes past the FIFO's 64 KiB, because losing the tail was a race.
    for round in 0..6 {
        let data: String = berth_integration::random_bytes(100_000 + round * 7_919)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let exec_id = format!("in{round}");
        let out = d.ctr_stdin(
            &[
                "-n",
                &ns,
                "tasks",
                "exec",
                "--exec-id",
                &exec_id,
                &id,
                "cat",
            ],
            data.as_bytes(),
        );
        assert!(out.output.status.success(), "{}", out.stderr());
        assert_eq!(out.stdout().len(), data.len(), "round {round}: bytes lost");
        assert!(out.stdout() == data, "round {round}: bytes changed");
    }
    ctr(&d, &ns, &["tasks", "kill", "-s", "SIGKILL", &id]).ok();
    wait_status(&d, &ns, &id, "STOPPED");
    ctr(&d, &ns, &["tasks", "rm", &id]).ok();
    ctr(&d, &ns, &["containers", "rm", &id]).ok();
}

/// The pid of task `id`, from `ctr tasks ls`.
fn task_pid(d: &Daemon, ns: &str, id: &str) -> i32 {
    let ls = ctr(d, ns, &["tasks", "ls"]).ok();
    ls.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&id))
        .and_then(|f| f.get(1).and_then(|p| p.parse().ok()))
        .unwrap_or_else(|| panic!("{id} not in {ls}"))
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie nobody reaped yet: either way it no longer runs.
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Subscribes to `ns`'s `/tasks/exit` events.
async fn exit_events(d: &Daemon, ns: &str) -> berth_client::EventStream {
    let client = d.client(ns).await;
    client
        .events()
        .subscribe(&[format!(r#"topic=="/tasks/exit",namespace=={ns}"#)])
        .await
        .unwrap()
}

async fn next_exit(s: &mut berth_client::EventStream) -> berth_proto::containerd::events::TaskExit {
    let e = tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("a /tasks/exit event within 20s")
        .unwrap()
        .unwrap();
    <berth_proto::containerd::events::TaskExit as prost::Message>::decode(e.event.value.as_slice())
        .unwrap()
}

/// The issue's scenario: 20 containers running `sleep` and one that exits while berthd is
/// down; SIGKILL berthd, restart it: all 20 are listed RUNNING and can be killed and deleted,
/// the other reports its real exit status, and its exit is published once after the restart
/// (not again after a second restart).
#[test]
fn twenty_tasks_survive_a_sigkill_of_berthd_and_exits_while_down_are_published_once() {
    let ns = unique("restart");
    let (mut d, image, _dir) = daemon_with_image(&ns);
    let long: Vec<String> = (0..20).map(|i| format!("long-{i}")).collect();
    // Four at a time: this is a 2-core machine.
    std::thread::scope(|s| {
        for chunk in long.chunks(5) {
            let (d, ns, name) = (&d, &ns, &image.name);
            s.spawn(move || {
                for id in chunk {
                    ctr(d, ns, &["run", "-d", name, id, "sleep", "1000"]).ok();
                }
            });
        }
    });
    // It exits when the test says so, through a file in its rootfs.
    let short = unique("short");
    ctr(
        &d,
        &ns,
        &[
            "run",
            "-d",
            &image.name,
            &short,
            "sh",
            "-c",
            "while [ ! -e /go ]; do sleep 0.05; done; exit 7",
        ],
    )
    .ok();
    wait_status(&d, &ns, &short, "RUNNING");
    let short_pid = task_pid(&d, &ns, &short);
    d.kill9();
    let rootfs = d
        .state()
        .join("tasks")
        .join(&ns)
        .join(&short)
        .join("rootfs");
    std::fs::write(rootfs.join("go"), "").unwrap();
    wait_gone(short_pid);
    d.restart();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut exits = rt.block_on(exit_events(&d, &ns));
    // Listing looks at every task, which publishes the exits kept while berthd was down.
    let ls = ctr(&d, &ns, &["tasks", "ls"]).ok();
    for id in &long {
        assert_eq!(task_status(&d, &ns, id).as_deref(), Some("RUNNING"), "{ls}");
    }
    assert_eq!(task_status(&d, &ns, &short).as_deref(), Some("STOPPED"));
    let published = rt.block_on(next_exit(&mut exits));
    assert_eq!(
        (published.container_id.as_str(), published.exit_status),
        (short.as_str(), 7)
    );
    assert_eq!(published.pid as i32, short_pid);
    // Its real exit status, through Get and Wait.
    rt.block_on(async {
        use berth_proto::containerd::services::tasks::v1 as pb;
        let client = d.client(&ns).await;
        let got = client
            .rpc()
            .tasks()
            .get(pb::GetRequest {
                container_id: short.clone(),
                exec_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .process
            .unwrap();
        assert_eq!(got.exit_status, 7);
        let waited = client
            .rpc()
            .tasks()
            .wait(pb::WaitRequest {
                container_id: short.clone(),
                exec_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(waited.exit_status, 7);
        assert!(waited.exited_at.is_some());
    });

    // A second restart: the exit was taken, so the next exit published is the one of the
    // container killed now, not the short one's again.
    d.restart();
    let mut exits = rt.block_on(exit_events(&d, &ns));
    ctr(&d, &ns, &["tasks", "ls"]).ok();
    ctr(&d, &ns, &["tasks", "kill", "-s", "SIGKILL", &long[0]]).ok();
    let next = rt.block_on(next_exit(&mut exits));
    assert_eq!(
        (next.container_id.as_str(), next.exit_status),
        (long[0].as_str(), 137)
    );

    ctr(&d, &ns, &["tasks", "rm", &short]).ok();
    ctr(&d, &ns, &["containers", "rm", &short]).ok();
    // Every one is still controllable.
    for id in &long[1..] {
        ctr(&d, &ns, &["tasks", "kill", "-s", "SIGKILL", id]).ok();
    }
    for id in &long {
        wait_status(&d, &ns, id, "STOPPED");
        ctr(&d, &ns, &["tasks", "rm", id]).ok();
        ctr(&d, &ns, &["containers", "rm", id]).ok();
    }
    assert!(ctr(&d, &ns, &["tasks", "ls", "-q"]).ok().trim().is_empty());
}

/// What a daemon's tasks hold on the host: mounts under its state dir, shims, task dirs, the
/// namespace's cgroups, and berthd's open descriptors.
fn footprint(d: &Daemon, ns: &str) -> (usize, usize, usize, usize, usize) {
    let state = d.state().to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&state))
        .count();
    let shims = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("berth-shim") && c.contains(&state)
                })
                .unwrap_or(false)
        })
        .count();
    let dirs = std::fs::read_dir(d.state().join("tasks").join(ns))
        .map(|r| r.count())
        .unwrap_or(0);
    let cgroups = std::fs::read_dir(format!("/sys/fs/cgroup/memory/{ns}"))
        .map(|r| r.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    (mounts, shims, dirs, cgroups, fds)
}

#[test]
fn fifty_concurrent_runs_and_a_hundred_cycles_leave_nothing_behind() {
    let ns = unique("load");
    let (d, image, _dir) = daemon_with_image(&ns);
    let before = footprint(&d, &ns);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (d, ns, name) = (&d, &ns, &image.name);
                s.spawn(move || {
                    let id = format!("par-{i}");
                    let out = ctr(
                        d,
                        ns,
                        &["run", "--rm", name, &id, "sh", "-c", "echo $0", &id],
                    );
                    assert_eq!(out.output.status.code(), Some(0), "{}", out.stderr());
                    assert_eq!(out.stdout(), format!("{id}\n"));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    for i in 0..100 {
        let id = format!("seq-{i}");
        let out = ctr(&d, &ns, &["run", "--rm", &image.name, &id, "true"]);
        assert_eq!(out.output.status.code(), Some(0), "{}", out.stderr());
    }
    // Deleted tasks' directories are removed, and their shims told to exit, in the
    // background: wait (bounded) for both before comparing.
    let deleted = d.state().join("tasks").join(".deleted");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (left, after) = loop {
        let left = std::fs::read_dir(&deleted).map(|r| r.count()).unwrap_or(0);
        let after = footprint(&d, &ns);
        let settled = left == 0 && after.1 == before.1;
        if settled || Instant::now() > deadline {
            break (left, after);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        left,
        0,
        "deleted task directories left in {}",
        deleted.display()
    );
    let (m0, s0, d0, c0, f0) = before;
    let (m1, s1, d1, c1, f1) = after;
    assert_eq!(
        (m1, s1, d1, c1),
        (m0, s0, d0, c0),
        "mounts, shims, task dirs, cgroups"
    );
    // A few descriptors may come and go with gRPC connections; a leak per run would show 150.
    assert!(f1 <= f0 + 10, "berthd descriptors {f0} -> {f1}");
    assert!(
        ctr(&d, &ns, &["containers", "ls", "-q"])
            .ok()
            .trim()
            .is_empty()
    );
}

#[test]
fn ctr_run_with_a_terminal_goes_through_the_shims_pty() {
    let ns = unique("tty");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    // `ctr run -t` needs a terminal on its own stdin: script(1) gives it one; berthd's shim
    // then allocates the container's pty and copies it to ctr's FIFOs.
    let line = format!(
        "{ctr} --address {sock} --namespace {ns} run -t --rm {image} {id} sh -c 'tty; exit 5'",
        ctr = berth_integration::ctr_path().display(),
        sock = d.socket().display(),
        image = image.name,
    );
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-k", "5", "30", "script", "-qec", &line, "/dev/null"]);
    let out = CmdOutput::run_public(&mut cmd);
    assert_eq!(out.output.status.code(), Some(5), "{}", out.stderr());
    assert!(
        out.stdout().contains("/dev/pts/0\r"),
        "the process's stdout is the container's pty: {:?}",
        out.stdout()
    );
    assert!(!ctr(&d, &ns, &["containers", "ls", "-q"]).ok().contains(&id));
}

/// The JSON lines of a log file: (log, stream) pairs, each line checked for its time.
fn log_lines(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let time = v["time"].as_str().unwrap();
            assert!(
                time.len() > 20 && time.ends_with('Z') && time.contains('T'),
                "{time}"
            );
            (
                v["log"].as_str().unwrap().to_owned(),
                v["stream"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_json_file_labelled_container_logs_detached_output_with_rotation() {
    use std::os::unix::fs::PermissionsExt;
    let ns = unique("logs");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    // --null-io: the task gets empty stdio paths, as a detached berthctl container does; its
    // output only reaches the log. Each entry is ~80 bytes, so 2000 bytes rotate it often.
    let out = ctr(
        &d,
        &ns,
        &[
            "run",
            "--null-io",
            "--label",
            "io.berth.log=json-file",
            "--label",
            "io.berth.log.max-size=2000",
            &image.name,
            &id,
            "sh",
            "-c",
            "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo line $i; done; echo oops >&2; exit 3",
        ],
    );
    assert_eq!(out.output.status.code(), Some(3), "{}", out.stderr());
    assert_eq!(out.stdout(), "");
    let dir = d.root().join("logs").join(&ns).join(&id);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let current = dir.join("container.log");
    let rotated = dir.join("container.log.1");
    for f in [&current, &rotated] {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= 2000, "{}: {size} bytes", f.display());
    }
    let mut entries = log_lines(&rotated);
    entries.extend(log_lines(&current));
    let (err, out): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, s)| s == "stderr");
    assert_eq!(err, vec![("oops\n".to_owned(), "stderr".to_owned())]);
    // What the two files hold is the end of stdout, in order, with nothing missing.
    let first: usize = out[0].0.trim()["line ".len()..].parse().unwrap();
    assert!(first > 1, "older entries were rotated away");
    let want: Vec<String> = (first..=100).map(|i| format!("line {i}\n")).collect();
    let got: Vec<String> = out.into_iter().map(|(l, _)| l).collect();
    assert_eq!(got, want);

    // The log outlives the task (a foreground `ctr run` deletes it; the log goes with the
    // container).
    assert!(task_status(&d, &ns, &id).is_none());
    assert!(current.exists());
    ctr(&d, &ns, &["containers", "rm", &id]).ok();
}

#[test]
fn a_json_file_labelled_container_logs_while_the_client_reads_its_fifos() {
    let ns = unique("logs-attached");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    let out = ctr(
        &d,
        &ns,
        &[
            "run",
            "--label",
            "io.berth.log=json-file",
            &image.name,
            &id,
            "sh",
            "-c",
            "echo to the client; echo and its stderr >&2",
        ],
    );
    assert_eq!(out.output.status.code(), Some(0), "{}", out.stderr());
    assert_eq!(out.stdout(), "to the client\n");
    let mut entries = log_lines(
        &d.root()
            .join("logs")
            .join(&ns)
            .join(&id)
            .join("container.log"),
    );
    entries.sort();
    assert_eq!(
        entries,
        vec![
            ("and its stderr\n".to_owned(), "stderr".to_owned()),
            ("to the client\n".to_owned(), "stdout".to_owned()),
        ]
    );
    // Without the label nothing is logged.
    let plain = unique("plain");
    ctr(
        &d,
        &ns,
        &["run", "--null-io", &image.name, &plain, "echo", "x"],
    )
    .ok();
    assert!(!d.root().join("logs").join(&ns).join(&plain).exists());
    for c in [&id, &plain] {
        ctr(&d, &ns, &["containers", "rm", c]).ok();
    }
}

/// `io.berth.etc-files=true` with the relative bind mounts berthctl puts in its spec: the
/// container sees the bundle's files. The container is made by ctr, its spec then given a
/// hostname and the mounts through the Containers API (ctr cannot add relative binds).
#[test]
fn etc_files_are_written_to_the_bundle_and_bind_mounted_from_it() {
    let ns = unique("etc");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    ctr(
        &d,
        &ns,
        &[
            "containers",
            "create",
            "--label",
            "io.berth.etc-files=true",
            &image.name,
            &id,
            "sleep",
            "1000",
        ],
    )
    .ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = d.client(&ns).await;
        let mut c = client.containers().get(&id).await.unwrap();
        let spec = c.spec.as_mut().unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&spec.value).unwrap();
        json["hostname"] = "berth-etc".into();
        let mounts = json["mounts"].as_array_mut().unwrap();
        // The spec ctr made has the container's own network namespace.
        for f in ["hostname", "hosts", "resolv.conf"] {
            mounts.push(serde_json::json!({
                "destination": format!("/etc/{f}"),
                "type": "bind",
                "source": format!("etc/{f}"),
                "options": ["rbind", "rprivate"],
            }));
        }
        spec.value = serde_json::to_vec(&json).unwrap();
        client
            .containers()
            .update(&c, &["spec".to_owned()])
            .await
            .unwrap();
    });
    ctr(&d, &ns, &["tasks", "start", "-d", &id]).ok();
    wait_status(&d, &ns, &id, "RUNNING");
    let bundle = d.state().join("tasks").join(&ns).join(&id);
    let inside = |f: &str| {
        let out = ctr(
            &d,
            &ns,
            &["tasks", "exec", "--exec-id", &unique("cat"), &id, "cat", f],
        );
        assert_eq!(out.output.status.code(), Some(0), "{}", out.stderr());
        out.stdout()
    };
    assert_eq!(inside("/etc/hostname"), "berth-etc\n");
    assert_eq!(
        inside("/etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tberth-etc\n"
    );
    let resolv = inside("/etc/resolv.conf");
    assert_eq!(
        resolv,
        std::fs::read_to_string(bundle.join("etc/resolv.conf")).unwrap()
    );
    let servers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    assert!(!servers.is_empty(), "{resolv}");
    assert!(
        servers
            .iter()
            .all(|s| !s.trim().starts_with("127.") && s.trim() != "::1"),
        "{resolv}"
    );
    ctr(&d, &ns, &["tasks", "kill", "-s", "SIGKILL", &id]).ok();
    wait_status(&d, &ns, &id, "STOPPED");
    ctr(&d, &ns, &["tasks", "rm", &id]).ok();
    ctr(&d, &ns, &["containers", "rm", &id]).ok();
}

/// A shim killed with berthd down leaves its container running; a container without its own
/// pid namespace would keep every process even after its init died. On restart berthd
/// force-deletes it through the runtime: its processes and cgroup are gone, then its task dir.
#[test]
fn a_dead_shims_container_is_force_deleted_on_restart() {
    let ns = unique("deadshim");
    let (mut d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    ctr(
        &d,
        &ns,
        &[
            "containers",
            "create",
            "--",
            &image.name,
            &id,
            "sh",
            "-c",
            "sleep 1000 & sleep 1001 & wait",
        ],
    )
    .ok();
    // Without a pid namespace: the processes share the host's.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cgroups_path = rt.block_on(async {
        let client = d.client(&ns).await;
        let mut c = client.containers().get(&id).await.unwrap();
        let spec = c.spec.as_mut().unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&spec.value).unwrap();
        json["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
        let path = json["linux"]["cgroupsPath"].as_str().unwrap().to_owned();
        spec.value = serde_json::to_vec(&json).unwrap();
        client
            .containers()
            .update(&c, &["spec".to_owned()])
            .await
            .unwrap();
        path
    });
    ctr(&d, &ns, &["tasks", "start", "-d", &id]).ok();
    wait_status(&d, &ns, &id, "RUNNING");
    let cgroup =
        std::path::Path::new("/sys/fs/cgroup/memory").join(cgroups_path.trim_start_matches('/'));
    let procs = || -> Vec<i32> {
        std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while procs().len() < 3 {
        assert!(Instant::now() < deadline, "processes {:?}", procs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = procs();
    // Whatever happens, the processes do not outlive the test (the harness finds a task's
    // processes through its shim, which is killed here).
    struct Reap(Vec<i32>, std::path::PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            for pid in &self.0 {
                // Only if it is still one of ours (a pid may be reused once it is gone).
                let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sleep"));
                if ours {
                    berth_integration::signal(*pid as u32, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
                for h in hierarchies.flatten() {
                    let _ = std::fs::remove_dir(h.path().join(&self.1));
                }
            }
        }
    }
    let _reap = Reap(pids.clone(), cgroups_path.trim_start_matches('/').into());
    let dir = d.state().join("tasks").join(&ns).join(&id);
    let shim: i32 = std::fs::read_to_string(dir.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    d.kill9();
    berth_integration::signal(shim as u32, libc::SIGKILL);
    wait_gone(shim);
    // The container lives on without its shim.
    for pid in &pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    d.restart();
    for pid in &pids {
        wait_gone(*pid);
    }
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(task_status(&d, &ns, &id).is_none());
    ctr(&d, &ns, &["containers", "rm", &id]).ok();
}

/// The shim watches its container's cgroup for OOM kills and berthd publishes `/tasks/oom`.
#[test]
fn an_oom_kill_in_the_container_is_published() {
    let ns = unique("oom");
    let (d, image, _dir) = daemon_with_image(&ns);
    let id = unique("c");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ooms = rt.block_on(async {
        d.client(&ns)
            .await
            .events()
            .subscribe(&[format!(r#"topic=="/tasks/oom",namespace=={ns}"#)])
            .await
            .unwrap()
    });
    // A string that doubles until the limit kills the shell.
    let out = ctr(
        &d,
        &ns,
        &[
            "run",
            "--memory-limit",
            "16777216",
            &image.name,
            &id,
            "sh",
            "-c",
            "x=x; while true; do x=$x$x; done",
        ],
    );
    assert_eq!(out.output.status.code(), Some(137), "{}", out.stderr());
    let e = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), ooms.next()).await })
        .expect("a /tasks/oom event within 20s")
        .unwrap()
        .unwrap();
    let oom: berth_proto::containerd::events::TaskOom =
        prost::Message::decode(e.event.value.as_slice()).unwrap();
    assert_eq!(oom.container_id, id);
    ctr(&d, &ns, &["containers", "rm", &id]).ok();
}

#[test]
fn a_shim_that_cannot_start_fails_the_create_with_its_reason() {
    // berthd runs the berth-shim beside it: here, one that dies at once, saying why.
    let dir = tempfile::tempdir().unwrap();
    let berthd = dir.path().join("berthd");
    std::fs::copy(berth_integration::bin("berthd"), &berthd).unwrap();
    let shim = dir.path().join("berth-shim");
    std::fs::write(
        &shim,
        "#!/bin/sh\necho 'shim refuses: no such thing' >&2\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ns = unique("noshim");
    let (d, image, _img) =
        berth_integration::import_test_image(Daemon::start_binary(berthd, &[]), &ns);
    let id = unique("c");
    let out = ctr(&d, &ns, &["run", "--rm", &image.name, &id, "true"]);
    assert!(!out.output.status.success());
    let err = out.stderr();
    assert!(err.contains("did not start"), "{err}");
    assert!(err.contains("shim refuses: no such thing"), "{err}");
    // Nothing is left of the task; the daemon still answers.
    assert!(task_status(&d, &ns, &id).is_none());
    let ns_dir = d.state().join("tasks").join(&ns);
    assert!(ns_dir.exists(), "{} was never made", ns_dir.display());
    assert!(
        !ns_dir.join(&id).exists(),
        "the task's directory is left behind"
    );
}

/// A task's events, as `ctr run --rm` drives it: create, start, one exit (with the real status),
/// then delete, in that order. berthd publishes the exit it takes with the shim's Delete answer
/// before the delete, and never twice.
#[test]
fn a_run_publishes_create_start_exit_delete_in_order_and_the_exit_once() {
    let ns = unique("seq");
    let (d, image, _dir) = daemon_with_image(&ns);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut events = rt.block_on(async {
        d.client(&ns)
            .await
            .events()
            .subscribe(&[format!(r#"topic~="^/tasks/",namespace=={ns}"#)])
            .await
            .unwrap()
    });
    let id = unique("c");
    let out = ctr(
        &d,
        &ns,
        &["run", "--rm", &image.name, &id, "sh", "-c", "exit 5"],
    );
    assert_eq!(out.output.status.code(), Some(5), "{}", out.stderr());
    let mut topics = Vec::new();
    rt.block_on(async {
        while topics.last().map(String::as_str) != Some("/tasks/delete") {
            let e = tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .expect("the task's events within 20s")
                .unwrap()
                .unwrap();
            if e.topic == "/tasks/exit" {
                let exit = <berth_proto::containerd::events::TaskExit as prost::Message>::decode(
                    e.event.value.as_slice(),
                )
                .unwrap();
                assert_eq!(
                    (exit.container_id.as_str(), exit.exit_status),
                    (id.as_str(), 5)
                );
            }
            topics.push(e.topic);
        }
        // Nothing more for this task: in particular no second exit.
        let more = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
        assert!(more.is_err(), "after the delete: {more:?}");
    });
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
}
