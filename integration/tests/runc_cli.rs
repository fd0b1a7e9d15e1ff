#![allow(clippy::unwrap_used, clippy::expect_used)]
//! runc's command line, verb by verb and flag by flag, under every runtime in [`RUNTIMES`]:
//! what the conformance suite (the container as seen from inside) and the differential suite
//! (runc and berth-runc side by side) leave out — `spec`, `features`, `list`, `ps`, `events`,
//! `update`, the signal names `kill` takes, `exec`'s flags, `run`'s exit codes, pid files, JSON
//! logs, ids, joining another container's namespace, and the hooks that run inside the
//! container. Where runc's behaviour is the reference, the test runs against both runtimes;
//! where it is berth-runc's own (`--systemd-cgroup`), against berth-runc only.
//!
//! Each test makes its own bundles and runtime roots, so the tests run in parallel; a
//! [`Runtime`] force-deletes its containers and their cgroups when dropped, also on failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_integration::bundle::{
    Bundle, RUNTIMES, RunOutput, Runtime, RuntimeKind, cap_mask, cgroup_dirs, remove_cgroup,
    runtimes, unique_id,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const DEFAULT_CAPS: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// Runs `check` once per runtime under test, naming the runtime first so a failure says which.
fn each_runtime(check: impl Fn(&Runtime)) {
    assert!(!RUNTIMES.is_empty());
    for rt in runtimes() {
        eprintln!("== runtime {} ({})", rt.name(), rt.binary().display());
        check(&rt);
    }
}

/// A temporary directory for files a test hands the runtime (pid files, logs, process.json).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-runc-cli-")
        .tempdir()
        .unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A bundle whose process sleeps (the probe's `sleep`, so nothing but the probe is needed).
fn sleeper(tag: &str) -> Bundle {
    let mut b = Bundle::new(tag);
    b.probe(&["sleep", "30"]);
    b
}

/// `run -d`s `b` as `b.id()` and returns the init's pid once it is running.
#[track_caller]
fn run_detached(rt: &Runtime, b: &Bundle) -> i64 {
    rt.run_with(b.id(), b, &["-d"]).ok();
    rt.wait_status(b.id(), "running", WAIT)["pid"]
        .as_i64()
        .unwrap()
}

/// Reads a pid file, waiting briefly for it to appear.
#[track_caller]
fn read_pid_file(path: &Path) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` runs now (exists and is not a zombie).
fn alive(pid: i64) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|s| !s.trim().starts_with('Z'))
}

/// Whether `pid` has exited (gone, or a zombie waiting for its reaper), waiting up to `WAIT`.
fn process_gone(pid: i64) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        match status.lines().find_map(|l| l.strip_prefix("State:")) {
            None => return true,
            Some(s) if s.trim().starts_with('Z') => return true,
            Some(_) if Instant::now() > deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The inode of namespace `kind` of process `pid`, from its `/proc/<pid>/ns/<kind>` link.
fn ns_inode(pid: &str, kind: &str) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let link = link.to_string_lossy();
    link.split_once(":[")
        .unwrap()
        .1
        .trim_end_matches(']')
        .parse()
        .unwrap()
}

/// Runs the runtime with `--root` and `args`, feeding `stdin` (what `Runtime::command` cannot:
/// it gives every call /dev/null).
fn command_with_stdin(rt: &Runtime, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(rt.binary())
        .arg("--root")
        .arg(rt.root())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Removes a cgroup when dropped: for containers made by calls the [`Runtime`] does not track
/// (plain `command`s), so a failed test leaves no cgroup behind either.
struct CgroupGuard(String);

impl CgroupGuard {
    fn of(b: &Bundle) -> Self {
        Self(b.cgroups_path_value().unwrap())
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup(&self.0);
    }
}

/// Every line of a `--log-format json` log, parsed; a line that is not a JSON object with
/// `level`, `msg` and `time` fails the test.
#[track_caller]
fn json_log(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line {line:?} is not JSON: {e}"));
            for field in ["level", "msg", "time"] {
                assert!(v[field].is_string(), "log line without {field}: {line}");
            }
            v
        })
        .collect()
}

/// Whether a runtime's error names a missing program the way runc or berth-runc does.
fn says_missing(msg: &str, program: &str) -> bool {
    msg.contains(program)
        && (msg.contains("executable file not found") || msg.contains("no such file or directory"))
}

// ---- spec and features -------------------------------------------------------------------------

#[test]
fn spec_writes_a_config_every_runtime_accepts_and_never_overwrites() {
    let rts = runtimes();
    for writer in &rts {
        let dir = scratch();
        let bundle_dir = path_str(dir.path());
        writer.command(&["spec", "--bundle", bundle_dir]).ok();
        let path = dir.path().join("config.json");
        let written = std::fs::read(&path).unwrap();
        let spec: Value = serde_json::from_slice(&written).unwrap();
        // What runc's default spec guarantees: a deny-all device rule (the defaults are added
        // back by the runtime), no inheritable capabilities (CVE-2022-29162), runc's hostname.
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}]),
            "{}: {spec:#}",
            writer.name()
        );
        let inheritable = &spec["process"]["capabilities"]["inheritable"];
        assert!(
            inheritable.is_null() || inheritable == &json!([]),
            "{}: inheritable capabilities {inheritable}",
            writer.name()
        );
        assert_eq!(spec["hostname"], "runc", "{}", writer.name());

        // A second `spec` refuses to overwrite and leaves the file alone.
        let err = writer
            .command(&["spec", "--bundle", bundle_dir])
            .fails()
            .to_owned();
        assert!(err.contains("exists"), "{}: {err}", writer.name());
        assert_eq!(std::fs::read(&path).unwrap(), written);

        // Every runtime runs it (with the probe instead of an interactive shell).
        for runner in &rts {
            eprintln!("== spec of {} run by {}", writer.name(), runner.name());
            let mut b = Bundle::new("spec");
            let cgroups_path = b.cgroups_path_value().unwrap();
            *b.config_mut() = spec.clone();
            b.terminal(false)
                .probe(&["status"])
                .cgroups_path(&cgroups_path);
            let s = runner.run(b.id(), &b).ok_json();
            assert_eq!(s["pid"], 1);
            assert_eq!(s["hostname"], "runc");
            assert_eq!(
                u64::from_str_radix(s["CapEff"].as_str().unwrap(), 16).unwrap(),
                cap_mask(DEFAULT_CAPS)
            );
        }
    }
}

#[test]
fn features_lists_versions_hooks_namespaces_and_seccomp() {
    each_runtime(|rt| {
        let f = rt.command(&["features"]).ok_json();
        assert_eq!(f["ociVersionMin"], "1.0.0", "{f:#}");
        assert!(
            f["ociVersionMax"]
                .as_str()
                .is_some_and(|v| v.starts_with("1.")),
            "{f:#}"
        );
        let list = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap_or_else(|| panic!("not a list: {v}"))
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let hooks = list(&f["hooks"]);
        for hook in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            assert!(hooks.iter().any(|h| h == hook), "{hook} in {hooks:?}");
        }
        let namespaces = list(&f["linux"]["namespaces"]);
        for ns in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
            assert!(namespaces.iter().any(|n| n == ns), "{ns} in {namespaces:?}");
        }
        assert_eq!(f["linux"]["seccomp"]["enabled"], true);
        let actions = list(&f["linux"]["seccomp"]["actions"]);
        for action in [
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_TRAP",
            "SCMP_ACT_LOG",
        ] {
            assert!(
                actions.iter().any(|a| a == action),
                "{action} in {actions:?}"
            );
        }
        assert_eq!(f["linux"]["cgroup"]["v1"], true);
        assert_eq!(f["linux"]["cgroup"]["v2"], true);
        if rt.kind() == Some(RuntimeKind::BerthRunc) {
            // berth-runc does not do systemd cgroups, and says so.
            assert_eq!(f["linux"]["cgroup"]["systemd"], false);
        }
    });
}

// ---- list, ps, events --------------------------------------------------------------------------

#[test]
fn list_shows_created_running_and_stopped_containers() {
    each_runtime(|rt| {
        let created = sleeper("list-created");
        rt.create(created.id(), &created).ok();
        let created_pid = rt.state(created.id())["pid"].clone();
        let running = sleeper("list-running");
        let running_pid = run_detached(rt, &running);

        let quiet = rt.command(&["list", "-q"]).ok().to_owned();
        let mut ids: Vec<&str> = quiet.lines().collect();
        ids.sort_unstable();
        let mut expected = vec![created.id(), running.id()];
        expected.sort_unstable();
        assert_eq!(ids, expected, "list -q");

        let listed = rt.list().ok_json();
        let entry = |id: &str| -> Value {
            listed
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("{id} not in {listed:#}"))
        };
        let c = entry(created.id());
        assert_eq!(c["status"], "created");
        assert_eq!(c["pid"], created_pid);
        assert_eq!(c["bundle"], path_str(created.path()));
        assert_eq!(c["owner"], "root", "the owner of the state directory");
        let r = entry(running.id());
        assert_eq!(r["status"], "running");
        assert_eq!(r["pid"], running_pid);
        assert!(
            r["created"].as_str().is_some_and(|t| t.contains('T')),
            "{r}"
        );

        let table = rt.command(&["list"]).ok().to_owned();
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
            "{table}"
        );
        let row = |id: &str| -> Vec<String> {
            table
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .find(|cols| cols.first().is_some_and(|c| c == id))
                .unwrap_or_else(|| panic!("{id} not in\n{table}"))
        };
        assert_eq!(row(created.id())[2], "created", "{table}");
        assert_eq!(row(running.id())[1], running_pid.to_string(), "{table}");
        assert_eq!(row(running.id())[2], "running", "{table}");
        assert_eq!(row(running.id())[5], "root", "{table}");

        rt.kill(running.id(), "KILL").ok();
        rt.wait_status(running.id(), "stopped", WAIT);
        let stopped = rt.list().ok_json();
        let s = stopped
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == running.id())
            .unwrap()
            .clone();
        assert_eq!(s["status"], "stopped");
        assert_eq!(s["pid"], 0);
    });
}

#[test]
fn ps_lists_the_init_and_exec_processes() {
    each_runtime(|rt| {
        let b = sleeper("ps");
        let init = run_detached(rt, &b);
        let dir = scratch();
        let pid_file = dir.path().join("exec.pid");
        rt.exec_with(
            b.id(),
            &["-d", "--pid-file", path_str(&pid_file)],
            &["/probe", "sleep", "30"],
        )
        .ok();
        let exec_pid = read_pid_file(&pid_file);
        assert_ne!(exec_pid, init);

        let ps = rt.ps(b.id()).ok_json();
        let mut pids: Vec<i64> = ps
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect();
        pids.sort_unstable();
        let mut expected = vec![init, exec_pid];
        expected.sort_unstable();
        assert_eq!(pids, expected, "ps --format json");

        // The table is ps(1)'s, filtered to the container's processes, header kept.
        let table = rt.command(&["ps", b.id()]).ok().to_owned();
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let col = header
            .iter()
            .position(|h| *h == "PID")
            .unwrap_or_else(|| panic!("no PID column:\n{table}"));
        assert!(header.contains(&"CMD"), "{table}");
        let mut shown: Vec<i64> = lines
            .map(|l| l.split_whitespace().nth(col).unwrap().parse().unwrap())
            .collect();
        shown.sort_unstable();
        assert_eq!(shown, expected, "{table}");
    });
}

#[test]
fn events_stats_prints_one_stats_object() {
    each_runtime(|rt| {
        let b = sleeper("events");
        run_detached(rt, &b);
        let out = rt.events_stats(b.id());
        out.ok();
        let events = out.json_values();
        assert_eq!(events.len(), 1, "{}", out.stdout);
        let e = &events[0];
        assert_eq!(e["type"], "stats", "{e:#}");
        assert_eq!(e["id"], b.id());
        assert!(
            e["data"]["memory"]["usage"]["usage"]
                .as_u64()
                .is_some_and(|u| u > 0),
            "memory usage: {e:#}"
        );
        assert!(
            e["data"]["pids"]["current"]
                .as_u64()
                .is_some_and(|n| n >= 1),
            "pids.current: {e:#}"
        );
        assert!(e["data"]["cpu"]["usage"]["total"].is_u64(), "{e:#}");
    });
}

// ---- update ------------------------------------------------------------------------------------

/// The container's `pids.max`, read on the host (v1 pids hierarchy or the v2 tree).
fn pids_max(b: &Bundle) -> String {
    let path = b.cgroups_path_value().unwrap();
    cgroup_dirs(&path)
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("pids.max")).ok())
        .unwrap_or_else(|| panic!("no pids.max for {path}"))
        .trim()
        .to_owned()
}

#[test]
fn update_changes_the_pids_limit_from_flags_and_from_stdin() {
    each_runtime(|rt| {
        let b = sleeper("update");
        run_detached(rt, &b);
        rt.command(&["update", "--pids-limit", "5", b.id()]).ok();
        assert_eq!(pids_max(&b), "5");

        // `-r -`: linux.resources as JSON on stdin. The limit leaves room for runc's exec
        // (its Go init runs several threads in the container's cgroup while it sets up).
        let out = command_with_stdin(
            rt,
            &["update", "-r", "-", b.id()],
            br#"{"pids": {"limit": 16}}"#,
        );
        assert!(out.status.success(), "update -r -: {out:?}");
        assert_eq!(pids_max(&b), "16");
        // Inside: the init and the exec'd probe count too, so 14 more processes at most
        // (fewer while an exiting helper of the runtime is still counted).
        let forked = rt.exec(b.id(), &["/probe", "fork", "30"]).ok_json();
        let n = forked["succeeded"].as_i64().unwrap();
        assert!((10..=14).contains(&n), "{forked}");
        assert_eq!(forked["errno"], libc::EAGAIN, "{forked}");
    });
}

// ---- kill --------------------------------------------------------------------------------------

#[test]
fn kill_takes_signal_names_numbers_and_all() {
    each_runtime(|rt| {
        for signal in ["KILL", "SIGKILL", "9"] {
            let b = sleeper("kill-name");
            let pid = run_detached(rt, &b);
            rt.kill(b.id(), signal).ok();
            rt.wait_status(b.id(), "stopped", WAIT);
            assert!(process_gone(pid), "{signal}: init {pid} still alive");
            rt.delete(b.id()).ok();
        }
        // An unknown signal is an error and kills nothing.
        let b = sleeper("kill-bad");
        run_detached(rt, &b);
        rt.kill(b.id(), "SIGNOPE").fails();
        assert_eq!(rt.state(b.id())["status"], "running");

        // --all reaches exec'd processes too.
        let b = sleeper("kill-all");
        let init = run_detached(rt, &b);
        let dir = scratch();
        let pid_file = dir.path().join("exec.pid");
        rt.exec_with(
            b.id(),
            &["-d", "--pid-file", path_str(&pid_file)],
            &["/probe", "sleep", "30"],
        )
        .ok();
        let exec_pid = read_pid_file(&pid_file);
        rt.kill_all(b.id(), "KILL").ok();
        rt.wait_status(b.id(), "stopped", WAIT);
        assert!(process_gone(init), "init {init} survived kill --all");
        assert!(
            process_gone(exec_pid),
            "exec {exec_pid} survived kill --all"
        );
        rt.delete(b.id()).ok();
    });
}

// ---- exec --------------------------------------------------------------------------------------

#[test]
fn exec_flags_process_json_pid_file_and_exit_codes() {
    each_runtime(|rt| {
        let b = sleeper("exec-flags");
        run_detached(rt, &b);
        let dir = scratch();

        // -d --pid-file: returns at once, the pid is the process's and it is in the container.
        let pid_file = dir.path().join("exec.pid");
        let out = rt.exec_with(
            b.id(),
            &["-d", "--pid-file", path_str(&pid_file)],
            &["/probe", "sleep", "30"],
        );
        out.ok();
        assert!(out.elapsed < WAIT, "exec -d waited for the process");
        let pid = read_pid_file(&pid_file);
        // Both runtimes return once the process has exec'd; the loop only guards against a
        // slow /proc update.
        let deadline = Instant::now() + WAIT;
        while std::fs::read(format!("/proc/{pid}/cmdline")).unwrap() != b"/probe\0sleep\x0030\0" {
            assert!(
                Instant::now() < deadline,
                "{pid} never became /probe sleep 30"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            rt.ps(b.id())
                .ok_json()
                .as_array()
                .unwrap()
                .contains(&json!(pid)),
            "ps lists the exec'd {pid}"
        );

        // Flags: -e, --cwd, -u uid:gid.
        let s = rt
            .exec_with(
                b.id(),
                &["-e", "FOO=bar", "--cwd", "/tmp", "-u", "1000:1000"],
                &["/probe", "status"],
            )
            .ok_json();
        assert!(
            s["env"].as_array().unwrap().contains(&json!("FOO=bar")),
            "{}",
            s["env"]
        );
        assert_eq!(s["cwd"], "/tmp");
        assert_eq!(
            (s["uid"].as_i64(), s["gid"].as_i64()),
            (Some(1000), Some(1000))
        );
        assert_eq!(s["pid"].as_i64().map(|p| p > 1), Some(true));

        // --process: everything from the file.
        let s = rt
            .exec_process(
                b.id(),
                &json!({
                    "args": ["/probe", "status"],
                    "cwd": "/tmp",
                    "env": ["PATH=/bin", "FROM=process.json"],
                    "user": {"uid": 1000, "gid": 1000, "additionalGids": [2000]},
                }),
            )
            .ok_json();
        assert!(
            s["env"]
                .as_array()
                .unwrap()
                .contains(&json!("FROM=process.json")),
            "{}",
            s["env"]
        );
        assert_eq!(s["cwd"], "/tmp");
        assert_eq!(s["uid"], 1000);
        assert!(
            s["groups"].as_array().unwrap().contains(&json!(2000)),
            "{}",
            s["groups"]
        );

        // A foreground exec exits with its process's code; one that cannot start, with 255.
        rt.exec(b.id(), &["/probe", "exit", "7"]).exits(7);
        rt.exec(b.id(), &["/bin/sh", "-c", "exit 0"]).exits(0);
        let failed = rt.exec(b.id(), &["/nothere"]);
        failed.exits(255);
        assert!(
            says_missing(&failed.stderr, "/nothere"),
            "{}",
            failed.stderr
        );
    });
}

/// What runc does and berth-runc does not yet: runc's init and exec'd process keep the sync
/// pipe open after "ready" until they block on the exec FIFO (init) or execve (exec), and send
/// any failure in between back to the caller. berth-runc sends Ready before switching user,
/// capabilities and cwd (`runtime/src/process.rs`, `init.rs`) and reports later failures only
/// on the process's stderr, so `create` and `exec -d` succeed for a process that can never run,
/// and `exec -d` returns before the process has exec'd. runc also creates a missing cwd.
#[test]
fn failures_after_setup_starts_are_reported_by_create_and_exec() {
    each_runtime(|rt| {
        let b = sleeper("late-failure");
        run_detached(rt, &b);
        // A missing cwd for exec: a failed start (255) with the reason, detached or not.
        for flags in [
            &["--cwd", "/nonexistent"][..],
            &["-d", "--cwd", "/nonexistent"],
        ] {
            let out = rt.exec_with(b.id(), flags, &["/probe", "status"]);
            out.exits(255);
            assert!(
                out.stderr.contains("/nonexistent"),
                "{flags:?}: {}",
                out.stderr
            );
        }
        // exec -d returns once the process runs its program.
        let dir = scratch();
        let pid_file = dir.path().join("exec.pid");
        rt.exec_with(
            b.id(),
            &["-d", "--pid-file", path_str(&pid_file)],
            &["/probe", "sleep", "30"],
        )
        .ok();
        let pid = read_pid_file(&pid_file);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(cmdline, b"/probe\0sleep\x0030\0");

        // The init's missing cwd is created (in the container's view of the rootfs).
        let mut b = Bundle::new("missing-cwd");
        b.cwd("/made/by/runtime").probe(&["status"]);
        let s = rt.run(b.id(), &b).ok_json();
        assert_eq!(s["cwd"], "/made/by/runtime");
    });
}

// ---- run and create ----------------------------------------------------------------------------

/// Polls `state` until the container exists and runs (`wait_status` fails while the state
/// cannot be read, e.g. before a foreground `run` has created the container).
#[track_caller]
fn wait_running(rt: &Runtime, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = rt.try_state(id);
        if out.success() && out.json()["status"] == "running" {
            return out.json();
        }
        assert!(Instant::now() < deadline, "{id} never ran: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_exit_codes_and_detach() {
    each_runtime(|rt| {
        // -d: returns while the container runs on.
        let b = sleeper("run-detach");
        let out = rt.run_with(b.id(), &b, &["-d"]);
        out.ok();
        assert!(out.elapsed < WAIT, "run -d waited for the container");
        let state = rt.state(b.id());
        assert_eq!(state["status"], "running");
        assert!(alive(state["pid"].as_i64().unwrap()));

        // The program's exit code, and the container is deleted afterwards.
        let mut b = Bundle::new("run-exit");
        b.probe(&["exit", "3"]);
        rt.run(b.id(), &b).exits(3);
        rt.try_state(b.id()).fails();

        // A program killed by a signal: 128 + N, as a shell reports it.
        let b = sleeper("run-signal");
        let id = b.id().to_owned();
        let out: RunOutput = std::thread::scope(|s| {
            let running = s.spawn(|| rt.run(&id, &b));
            wait_running(rt, &id);
            rt.kill(&id, "KILL").ok();
            running.join().unwrap()
        });
        out.exits(128 + libc::SIGKILL);
        rt.try_state(&id).fails();
    });
}

#[test]
fn create_writes_the_pid_file() {
    each_runtime(|rt| {
        let b = sleeper("pid-file");
        let dir = scratch();
        let pid_file = dir.path().join("init.pid");
        rt.create_with(b.id(), &b, &["--pid-file", path_str(&pid_file)])
            .ok();
        // Written by the time `create` returns: callers (containerd's shim) read it then.
        let text = std::fs::read_to_string(&pid_file).unwrap();
        let pid: i64 = text.trim().parse().unwrap();
        assert_eq!(json!(pid), rt.state(b.id())["pid"]);
        // A relative pid file is relative to the caller's working directory.
        let b = sleeper("pid-file-relative");
        let _guard = CgroupGuard::of(&b);
        b.write_config();
        let out = std::process::Command::new(rt.binary())
            .current_dir(dir.path())
            .arg("--root")
            .arg(rt.root())
            .args([
                "create",
                "--bundle",
                path_str(b.path()),
                "--pid-file",
                "rel.pid",
            ])
            .arg(b.id())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(out.success());
        let pid = read_pid_file(&dir.path().join("rel.pid"));
        assert_eq!(json!(pid), rt.state(b.id())["pid"]);
        rt.delete_force(b.id()).ok();
    });
}

// ---- errors: logs, ids, delete -----------------------------------------------------------------

#[test]
fn json_log_carries_the_real_reason_of_a_failure() {
    each_runtime(|rt| {
        let dir = scratch();
        let log = dir.path().join("log.json");
        let mut b = Bundle::new("log-run");
        b.args(&["/nothere"]);
        b.write_config();
        let _guard = CgroupGuard::of(&b);
        let out = rt.command(&[
            "--log",
            path_str(&log),
            "--log-format",
            "json",
            "run",
            "--bundle",
            path_str(b.path()),
            b.id(),
        ]);
        out.fails();
        let lines = json_log(&log);
        assert!(
            lines
                .iter()
                .any(|l| l["level"] == "error"
                    && says_missing(l["msg"].as_str().unwrap(), "/nothere")),
            "no error line with the reason in {lines:#?}"
        );
        // As runc: the error is on stderr too, for whoever does not read the log.
        assert!(says_missing(&out.stderr, "/nothere"), "{}", out.stderr);
        rt.try_state(b.id()).fails();

        // The same for exec.
        let running = sleeper("log-exec");
        run_detached(rt, &running);
        let log = dir.path().join("exec-log.json");
        let out = rt.command(&[
            "--log",
            path_str(&log),
            "--log-format",
            "json",
            "exec",
            running.id(),
            "/nothere",
        ]);
        out.exits(255);
        let lines = json_log(&log);
        assert!(
            lines
                .iter()
                .any(|l| l["level"] == "error"
                    && says_missing(l["msg"].as_str().unwrap(), "/nothere")),
            "no error line with the reason in {lines:#?}"
        );
    });
}

#[test]
fn delete_of_a_missing_container_fails_unless_forced() {
    each_runtime(|rt| {
        let id = unique_id("never-created");
        let err = rt.delete(&id).fails().to_owned();
        assert!(err.contains("not exist"), "{err}");
        rt.delete_force(&id).ok();
    });
}

#[test]
fn bad_ids_are_rejected() {
    each_runtime(|rt| {
        let b = sleeper("bad-id");
        b.write_config();
        let _guard = CgroupGuard::of(&b);
        for id in ["../x", "a/b", "..", "."] {
            for args in [
                vec!["create", "--bundle", path_str(b.path()), id],
                vec!["run", "-d", "--bundle", path_str(b.path()), id],
                vec!["state", id],
                vec!["delete", "--force", id],
            ] {
                let out = rt.command(&args);
                assert!(
                    !out.success() || args[0] == "delete",
                    "{:?} accepted {id:?}",
                    args
                );
            }
        }
        // Nothing was made beside the root, and the root holds no container.
        let parent: PathBuf = rt.root().parent().unwrap().to_owned();
        assert!(!parent.join("x").exists());
        assert_eq!(rt.command(&["list", "-q"]).ok(), "");
        assert!(cgroup_dirs(&b.cgroups_path_value().unwrap()).is_empty());
    });
}

#[test]
fn systemd_cgroup_is_a_clear_error_in_berth_runc() {
    let rt = Runtime::new(RuntimeKind::BerthRunc);
    let b = sleeper("systemd");
    b.write_config();
    let _guard = CgroupGuard::of(&b);
    let out = rt.command(&[
        "--systemd-cgroup",
        "create",
        "--bundle",
        path_str(b.path()),
        b.id(),
    ]);
    let err = out.fails();
    assert!(
        err.contains("--systemd-cgroup") && err.contains("not supported"),
        "{err}"
    );
    rt.try_state(b.id()).fails();
    assert!(cgroup_dirs(&b.cgroups_path_value().unwrap()).is_empty());
}

// ---- namespaces and hooks ----------------------------------------------------------------------

#[test]
fn joining_another_containers_network_namespace_by_path() {
    each_runtime(|rt| {
        let first = sleeper("netns-owner");
        let pid = run_detached(rt, &first).to_string();
        let net = ns_inode(&pid, "net");
        assert_ne!(
            net,
            ns_inode("self", "net"),
            "the first has a namespace of its own"
        );

        let mut second = Bundle::new("netns-joiner");
        second
            .namespace("network", Some(Path::new(&format!("/proc/{pid}/ns/net"))))
            .probe(&["status"]);
        let s = rt.run(second.id(), &second).ok_json();
        assert_eq!(
            s["namespaces"]["net"], net,
            "the network namespace is shared"
        );
        assert_ne!(
            s["namespaces"]["uts"],
            ns_inode(&pid, "uts"),
            "only the network namespace is shared"
        );
    });
}

/// A bundle with createContainer and startContainer hooks that save their stdin (the state)
/// and their network namespace in `out` (bind-mounted at `/hookout`).
fn hooked_bundle(out: &Path) -> Bundle {
    let mut b = Bundle::new("hooks-in");
    b.bind_mount(out, "/hookout", &["rbind", "rw"]);
    // createContainer: in the container's namespaces, but before pivot_root, so the path
    // (the host's sh) and the output files resolve on the host.
    let dir = out.display();
    b.hook(
        "createContainer",
        "/bin/sh",
        &[
            "sh",
            "-c",
            &format!(
                "cat > {dir}/createContainer.json; readlink /proc/self/ns/net > {dir}/createContainer.net"
            ),
        ],
    );
    // startContainer: inside the container, so busybox's sh and the bind mount.
    b.hook(
        "startContainer",
        "/bin/sh",
        &[
            "sh",
            "-c",
            "cat > /hookout/startContainer.json; readlink /proc/self/ns/net > /hookout/startContainer.net",
        ],
    );
    b.probe(&["sleep", "30"]);
    b
}

/// The state a hook of `kind` saved, and the network namespace it ran in. Waits for the hook
/// to finish: `start` returns once the init is released, while its startContainer hooks run.
#[track_caller]
fn hook_output(out: &Path, kind: &str) -> (Value, String) {
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(out.join(format!("{kind}.net")))
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "{kind} hook did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = std::fs::read_to_string(out.join(format!("{kind}.json")))
        .unwrap_or_else(|e| panic!("{kind} hook did not run ({e})"));
    let state =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{kind} state {text:?}: {e}"));
    let net = std::fs::read_to_string(out.join(format!("{kind}.net"))).unwrap();
    (state, net.trim().to_owned())
}

#[test]
fn create_container_and_start_container_hooks_run_in_the_container_with_the_state() {
    each_runtime(|rt| {
        let out = scratch();
        let b = hooked_bundle(out.path());
        rt.create(b.id(), &b).ok();
        assert!(
            out.path().join("createContainer.json").exists(),
            "createContainer ran during create"
        );
        assert!(
            !out.path().join("startContainer.json").exists(),
            "startContainer waits for start"
        );
        rt.start(b.id()).ok();
        let pid = rt.wait_status(b.id(), "running", WAIT)["pid"].to_string();
        let container_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        for kind in ["createContainer", "startContainer"] {
            let (state, net) = hook_output(out.path(), kind);
            assert_eq!(state["id"], b.id(), "{kind}: {state}");
            assert_eq!(state["bundle"], path_str(b.path()), "{kind}: {state}");
            assert!(state["ociVersion"].is_string(), "{kind}: {state}");
            // The pid as the container sees it: these hooks run in its namespaces.
            assert_eq!(state["pid"], 1, "{kind}: {state}");
            assert_eq!(
                Path::new(&net),
                container_net,
                "{kind} runs in the container's network namespace"
            );
        }
        assert_eq!(
            hook_output(out.path(), "createContainer").0["status"],
            "creating"
        );
        rt.delete_force(b.id()).ok();
    });
}

/// runc gives startContainer hooks the status `created` (the user's program has not run
/// yet); berth-runc passes them the state it made for createContainer (`creating`): the child
/// gets one state string for both (`ChildHandshake` in runtime/src/process.rs).
#[test]
fn start_container_hooks_see_the_created_status() {
    each_runtime(|rt| {
        let out = scratch();
        let b = hooked_bundle(out.path());
        rt.create(b.id(), &b).ok();
        rt.start(b.id()).ok();
        rt.wait_status(b.id(), "running", WAIT);
        assert_eq!(
            hook_output(out.path(), "startContainer").0["status"],
            "created"
        );
        rt.delete_force(b.id()).ok();
    });
}
