#![allow(clippy::unwrap_used, clippy::expect_used)]
//! containerd's own runc shim (Debian's containerd 1.6, `io.containerd.runc.v2`) driving each
//! runtime in [`RUNTIMES`] through `ctr … --runc-binary`. The shim talks to the runtime through
//! go-runc: `--root`, `--log <bundle>/log.json --log-format json`, `create --pid-file`, `state`
//! JSON, `exec --process --detach --pid-file`, `ps --format json`, `pause`, `resume`, `kill`,
//! `delete`, and the last error line of the log when a call fails. Whatever berth-runc prints or
//! accepts differently from runc shows up here as a failed `ctr` command.
//!
//! Each test has a private containerd ([`Containerd`]) with its own namespace, runtime root
//! (`--runc-root`) and FIFO directory (`--fifo-dir`); dropping it kills and removes whatever a
//! failed test left behind (tasks, shims, cgroups, mounts).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_integration::CmdOutput;
use berth_integration::bundle::{RUNTIMES, RuntimeKind, berth_runc_path, runc_path, unique_id};
use berth_integration::containerd::Containerd;
use berth_integration::testimage::TestImage;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn binary(kind: RuntimeKind) -> PathBuf {
    match kind {
        RuntimeKind::Runc => runc_path(),
        RuntimeKind::BerthRunc => berth_runc_path().unwrap_or_else(|| {
            panic!("berth-runc is not built: run `cargo build -p berth-runtime`")
        }),
    }
}

/// A private containerd with the test image imported, and the runtime under test.
struct Setup {
    d: Containerd,
    kind: RuntimeKind,
    image: String,
}

impl Setup {
    fn new(kind: RuntimeKind) -> Self {
        assert!(RUNTIMES.contains(&kind));
        let d = Containerd::start();
        let image = d.import(&TestImage::one_layer());
        Self { d, kind, image }
    }

    fn fifo_dir(&self) -> String {
        self.d.fifo_dir().display().to_string()
    }

    /// `ctr run <flags…> --runc-binary B --runc-root R --fifo-dir F IMAGE ID <args…>`.
    fn run(&self, flags: &[&str], id: &str, args: &[&str]) -> CmdOutput {
        let binary = binary(self.kind).display().to_string();
        let root = self.d.runc_root().display().to_string();
        let fifo = self.fifo_dir();
        let mut all = vec!["run"];
        all.extend(flags);
        all.extend([
            "--runc-binary",
            &binary,
            "--runc-root",
            &root,
            "--fifo-dir",
            &fifo,
            &self.image,
            id,
        ]);
        all.extend(args);
        self.d.ctr(&all)
    }

    /// `ctr tasks exec <flags…> --fifo-dir F --exec-id EXEC ID <args…>`.
    fn exec(&self, flags: &[&str], id: &str, exec_id: &str, args: &[&str]) -> CmdOutput {
        let fifo = self.fifo_dir();
        let mut all = vec!["tasks", "exec"];
        all.extend(flags);
        all.extend(["--fifo-dir", &fifo, "--exec-id", exec_id, id]);
        all.extend(args);
        self.d.ctr(&all)
    }

    /// The STATUS column of `ctr tasks ls` for `id`, if it is listed.
    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.d.ctr(&["tasks", "ls"]).ok();
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.last().copied().unwrap_or("").to_owned())
        })
    }

    #[track_caller]
    fn wait_task_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.task_status(id);
            if now.as_deref() == Some(status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: task {id} stayed {now:?}, not {status}:\n{}",
                self.kind,
                self.d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn containers(&self) -> Vec<String> {
        self.d
            .ctr(&["containers", "ls", "-q"])
            .ok()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `<binary> --root <runc root>/<namespace> <args…>`: the runtime's own view of what the
    /// shim made (the shim keeps one runtime root per containerd namespace).
    fn runtime(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(binary(self.kind))
            .arg("--root")
            .arg(self.d.runc_root().join(self.d.namespace()))
            .args(args)
            .output()
            .unwrap()
    }
}

/// Asserts exit code `code`, printing the command, its output and the daemon's log otherwise.
#[track_caller]
fn assert_code(s: &Setup, out: &CmdOutput, code: i32) {
    assert_eq!(
        out.output.status.code(),
        Some(code),
        "{:?}: {}\nstdout: {}\nstderr: {}\ncontainerd log:\n{}",
        s.kind,
        out.command,
        out.stdout(),
        out.stderr(),
        s.d.log()
    );
}

/// Whether a runtime's error names a missing program the way runc or berth-runc does.
fn says_missing(msg: &str, program: &str) -> bool {
    msg.contains(program)
        && (msg.contains("executable file not found") || msg.contains("no such file or directory"))
}

fn foreground_runs(kind: RuntimeKind) {
    let s = Setup::new(kind);

    // run --rm in the foreground: output relayed, exit code passed through, nothing left.
    let id = unique_id("ctr-rm");
    let out = s.run(&["--rm"], &id, &["/bin/sh", "-c", "echo hi; exit 3"]);
    assert_code(&s, &out, 3);
    assert_eq!(out.stdout(), "hi\n");
    assert!(!s.containers().contains(&id), "--rm removes the container");
    let listed = s.runtime(&["list", "-q"]);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "",
        "the runtime root is empty"
    );

    // A program that is not there: the runtime's reason (from its JSON log) reaches ctr.
    let id = unique_id("ctr-missing");
    let out = s.run(&["--rm"], &id, &["/nothere"]);
    let err = out.fails();
    assert!(says_missing(&err, "/nothere"), "{kind:?}: {err}");
    assert!(err.contains("OCI runtime create failed"), "{kind:?}: {err}");
    assert!(!s.containers().contains(&id));
    let listed = s.runtime(&["list", "-q"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "", "nothing left");
}

fn terminal_run(kind: RuntimeKind) {
    let s = Setup::new(kind);
    let id = unique_id("ctr-tty");
    // `ctr run -t` needs a terminal on its own stdin: script(1) gives it one. The shim then
    // passes `--console-socket` and receives the pty master the runtime sends.
    let binary = binary(s.kind).display().to_string();
    let line = format!(
        "{ctr} --address {sock} --namespace {ns} run -t --rm --runc-binary {binary} \
         --runc-root {root} --fifo-dir {fifo} {image} {id} /bin/sh -c 'tty; exit 5'",
        ctr = berth_integration::ctr_path().display(),
        sock = s.d.socket().display(),
        ns = s.d.namespace(),
        root = s.d.runc_root().display(),
        fifo = s.fifo_dir(),
        image = s.image,
    );
    // timeout(1): `run_public` has no time limit of its own.
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-k", "5", "30", "script", "-qec", &line, "/dev/null"]);
    let out = CmdOutput::run_public(&mut cmd);
    assert_code(&s, &out, 5);
    assert!(
        out.stdout().contains("/dev/pts/0\r"),
        "{kind:?}: the process's stdout is the container's pty: {:?}",
        out.stdout()
    );
    assert!(!s.containers().contains(&id), "--rm removes the container");
}

fn detached_task_lifecycle(kind: RuntimeKind) {
    let s = Setup::new(kind);
    let id = unique_id("ctr-detached");
    s.run(&["-d"], &id, &["/bin/sleep", "60"]).ok();
    s.wait_task_status(&id, "RUNNING");

    // The shim really used this binary: the state, in the binary's own format, is under the
    // runtime root, and the binary reads it.
    let state = s.runtime(&["state", &id]);
    assert!(state.status.success(), "{kind:?} state: {state:?}");
    let state: Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "running", "{state}");
    let init = state["pid"].as_i64().unwrap();

    // exec in the foreground: output and exit code.
    assert_eq!(s.exec(&[], &id, "x", &["/bin/echo", "yo"]).ok(), "yo\n");
    let out = s.exec(&[], &id, "y", &["/bin/sh", "-c", "exit 4"]);
    assert_code(&s, &out, 4);
    // exec of a missing program fails with the runtime's reason.
    let err = s.exec(&[], &id, "z", &["/nothere"]).fails();
    assert!(says_missing(&err, "/nothere"), "{kind:?}: {err}");
    assert!(err.contains("OCI runtime exec failed"), "{kind:?}: {err}");

    // A detached exec shows in `ctr tasks ps` (the shim's `ps --format json`) beside the init.
    s.exec(&["-d"], &id, "bg", &["/bin/sleep", "60"]).ok();
    let deadline = Instant::now() + WAIT;
    let pids = loop {
        let ps = s.d.ctr(&["tasks", "ps", &id]).ok();
        let pids: Vec<i64> = ps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        if pids.len() >= 2 || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(pids.len(), 2, "init and the detached exec: {pids:?}");
    assert!(pids.contains(&init), "{pids:?} lacks the init {init}");

    s.d.ctr(&["tasks", "pause", &id]).ok();
    s.wait_task_status(&id, "PAUSED");
    let state: Value = serde_json::from_slice(&s.runtime(&["state", &id]).stdout).unwrap();
    assert_eq!(state["status"], "paused");
    s.d.ctr(&["tasks", "resume", &id]).ok();
    s.wait_task_status(&id, "RUNNING");

    s.d.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]).ok();
    s.wait_task_status(&id, "STOPPED");
    s.d.ctr(&["tasks", "delete", &id]).ok();
    assert_eq!(s.task_status(&id), None);
    let gone = s.runtime(&["state", &id]);
    assert!(!gone.status.success(), "the runtime deleted it: {gone:?}");
    s.d.ctr(&["containers", "rm", &id]).ok();
    assert!(!s.containers().contains(&id));
}

#[test]
fn ctr_run_rm_with_runc() {
    foreground_runs(RuntimeKind::Runc);
}

#[test]
fn ctr_run_rm_with_berth_runc() {
    foreground_runs(RuntimeKind::BerthRunc);
}

#[test]
fn ctr_detached_task_with_runc() {
    detached_task_lifecycle(RuntimeKind::Runc);
}

#[test]
fn ctr_detached_task_with_berth_runc() {
    detached_task_lifecycle(RuntimeKind::BerthRunc);
}

/// runc reports an exec whose cwd does not exist as a failed exec; berth-runc sends Ready
/// before its chdir (runtime/src/process.rs), so the shim sees a started process that exits 1
/// with the reason on its stderr. See `failures_after_setup_starts_are_reported_by_create_and_exec`
/// in runc_cli.rs.
#[test]
fn ctr_exec_with_a_missing_cwd_fails_with_the_reason() {
    for &kind in RUNTIMES {
        let s = Setup::new(kind);
        let id = unique_id("ctr-cwd");
        s.run(&["-d"], &id, &["/bin/sleep", "60"]).ok();
        s.wait_task_status(&id, "RUNNING");
        let out = s.exec(&["--cwd", "/nonexistent"], &id, "cwd", &["/bin/true"]);
        let err = out.fails();
        assert!(
            err.contains("OCI runtime exec failed") && err.contains("/nonexistent"),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn ctr_run_tty_with_runc() {
    terminal_run(RuntimeKind::Runc);
}

#[test]
fn ctr_run_tty_with_berth_runc() {
    terminal_run(RuntimeKind::BerthRunc);
}
