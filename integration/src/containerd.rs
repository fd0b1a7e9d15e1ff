//! A private containerd 1.6 (Debian's `containerd`) for tests that drive a runtime through
//! containerd's own runc shim, the way a real deployment would (`ctr run --runc-binary …`).
//!
//! Every [`Containerd`] has its own root, state, gRPC and ttrpc sockets and log under one
//! temporary directory, a containerd namespace of its own ([`Containerd::namespace`]), and
//! never touches the system's `/run/containerd/containerd.sock`. What cannot be moved out of
//! `/run/containerd` (the shim's sockets in `/run/containerd/s/`) is named after this daemon's
//! socket, namespace and container id, so parallel tests never share one.
//!
//! Dropping it tears everything down, also when the test failed: tasks killed and containers
//! removed through the daemon, the daemon stopped, any shim still serving it killed, whatever
//! is left in its cgroups (`/<namespace>/…`) killed and the cgroups removed, leftover mounts
//! under its directory detached, and shim sockets it left in `/run/containerd/s/` removed.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::CmdOutput;
use crate::bundle::{cgroup_dirs, remove_cgroup, unique_id};
use crate::testimage::TestImage;

/// How long one `ctr` call may take before it is killed and the test fails.
const CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `ctr` call made while tearing down may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Where containerd 1.6's shims put their sockets, whatever state directory the daemon has.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// Debian's `containerd` binary; its absence is a setup error, not a skip.
pub fn containerd_path() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let path = Path::new(dir).join("containerd");
        if path.exists() {
            return path;
        }
    }
    panic!("`containerd` is not installed: run scripts/setup.sh (it installs Debian's containerd)");
}

/// A running private containerd. See the module documentation.
pub struct Containerd {
    dir: TempDir,
    namespace: String,
    child: Option<Child>,
    calls: AtomicU64,
}

impl Containerd {
    /// Writes a config, starts the daemon and waits (up to 20 s) until `ctr version` answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("containerd temp dir: {e}"));
        for sub in ["io", "fifo", "runc-root"] {
            let path = dir.path().join(sub);
            fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        }
        let mut daemon = Self {
            namespace: unique_id("ctrd"),
            dir,
            child: None,
            calls: AtomicU64::new(0),
        };
        daemon.write_config();
        let log = File::create(daemon.log_path())
            .unwrap_or_else(|e| panic!("create {}: {e}", daemon.log_path().display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup the log: {e}"));
        let child = Command::new(containerd_path())
            .arg("--config")
            .arg(daemon.dir.path().join("config.toml"))
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("start containerd: {e}"));
        daemon.child = Some(child);
        daemon.wait_ready();
        daemon
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let path = |name: &str| d.join(name).display().to_string();
        // Only what running containers needs: no CRI, no snapshotters that probe for tools, no
        // debug or metrics listeners that could clash with a system containerd.
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{grpc}"
[ttrpc]
  address = "{ttrpc}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = path("root"),
            state = path("state"),
            grpc = path("containerd.sock"),
            ttrpc = path("containerd.sock.ttrpc"),
            opt = path("opt"),
        );
        let file = d.join("config.toml");
        fs::write(&file, config).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self
                .ctr_timeout(&["version"], Duration::from_secs(5))
                .output
                .status
                .success()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited early with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 20s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's directory (root, state, sockets, log, runc root, FIFOs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gRPC socket (`ctr --address`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The containerd namespace every `ctr` call of this runner uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A directory for `ctr run --runc-root`: the runtime's state stays under this daemon's
    /// directory instead of `/run/containerd/runc`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc-root")
    }

    /// A directory for `ctr … --fifo-dir`, instead of `/run/containerd/fifo`.
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// The daemon's log so far (debug level; the shims log into it too).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `ctr --address <socket> --namespace <namespace> <args…>`, killed after 30 s.
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    /// [`Containerd::ctr`] with another time limit. A call that runs out of time is killed and
    /// reported as failed (signal 9), with what it printed so far.
    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut cmd = Command::new(crate::ctr_path());
        cmd.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        self.run_timeout(cmd, timeout)
    }

    /// Runs `cmd` with stdin from /dev/null and stdout and stderr to files (a task's processes
    /// may keep inherited pipes open long after `ctr` exits), killing it after `timeout`.
    fn run_timeout(&self, mut cmd: Command, timeout: Duration) -> CmdOutput {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let io = self.dir.path().join("io");
        let out_path = io.join(format!("{n}.out"));
        let err_path = io.join(format!("{n}.err"));
        let create =
            |p: &Path| File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        cmd.stdin(Stdio::null())
            .stdout(create(&out_path))
            .stderr(create(&err_path));
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {command}: {e}"));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    break child
                        .wait()
                        .unwrap_or_else(|e| panic!("wait for {command}: {e}"));
                }
                Err(e) => panic!("wait for {command}: {e}"),
            }
        };
        CmdOutput {
            command,
            output: Output {
                status,
                stdout: fs::read(&out_path).unwrap_or_default(),
                stderr: fs::read(&err_path).unwrap_or_default(),
            },
        }
    }

    /// Imports `image` (written as an OCI archive) with `ctr images import`; returns the name
    /// it is known by.
    pub fn import(&self, image: &TestImage) -> String {
        let archive = self.dir.path().join(format!(
            "image-{}.tar",
            self.calls.fetch_add(1, Ordering::Relaxed)
        ));
        image.write_oci_archive(&archive);
        let path = archive
            .to_str()
            .unwrap_or_else(|| panic!("non-UTF-8 path {}", archive.display()));
        let out = self.ctr(&["images", "import", path]);
        out.ok();
        let _ = fs::remove_file(&archive);
        let listed = self.ctr(&["images", "ls", "-q"]).ok();
        assert!(
            listed.lines().any(|l| l == image.name),
            "{} was not imported ({}):\n{listed}",
            image.name,
            out.stdout()
        );
        image.name.clone()
    }

    /// The containers of this namespace (`ctr containers ls -q`), or none if the daemon does
    /// not answer.
    fn container_ids(&self) -> Vec<String> {
        let out = self.ctr_timeout(&["containers", "ls", "-q"], CLEANUP_TIMEOUT);
        if !out.output.status.success() {
            return Vec::new();
        }
        out.stdout()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // First through the daemon, so the shims exit and clean up after themselves.
        let ids = if child.try_wait().ok().flatten().is_none() {
            self.container_ids()
        } else {
            Vec::new()
        };
        for id in &ids {
            let _ = self.ctr_timeout(
                &["tasks", "kill", "-a", "-s", "SIGKILL", id],
                CLEANUP_TIMEOUT,
            );
            let _ = self.ctr_timeout(&["tasks", "delete", "-f", id], CLEANUP_TIMEOUT);
            let _ = self.ctr_timeout(&["containers", "rm", id], CLEANUP_TIMEOUT);
        }
        crate::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
        // Then by force, for whatever the daemon could not clean up.
        self.kill_shims();
        self.remove_cgroups();
        self.unmount_leftovers();
        self.remove_shim_sockets(&ids);
    }

    /// SIGKILLs every shim started for this daemon: its command line names our socket.
    fn kill_shims(&self) {
        let socket = self.socket().display().to_string();
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
            if is_shim && args.contains(&socket) {
                crate::signal(pid, libc::SIGKILL);
            }
        }
    }

    /// Kills what is left in this namespace's cgroups (`/<namespace>/<id>`, where containerd's
    /// default spec puts a container) and removes them.
    fn remove_cgroups(&self) {
        let top = format!("/{}", self.namespace);
        let mut children: Vec<String> = cgroup_dirs(&top)
            .iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|entries| entries.filter_map(Result::ok))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|name| format!("{top}/{name}"))
            .collect();
        children.sort();
        children.dedup();
        for child in &children {
            remove_cgroup(child);
        }
        remove_cgroup(&top);
    }

    /// Detaches every mount left under this daemon's directory (a rootfs of a task whose shim
    /// was killed), deepest first, so removing the directory cannot reach into an image.
    fn unmount_leftovers(&self) {
        let dir = self.dir.path().display().to_string();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&format!("{dir}/")))
            .map(str::to_owned)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let Ok(c) = std::ffi::CString::new(point.clone()) else {
                continue;
            };
            // SAFETY: a valid NUL-terminated path and a flag; no memory is shared.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "containerd cleanup: umount {point}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }

    /// Removes the sockets shims of `ids` left in `/run/containerd/s/` (a killed shim cannot).
    /// containerd 1.6 names them `sha256("<grpc address>/<namespace>/<id>")`.
    fn remove_shim_sockets(&self, ids: &[String]) {
        for id in ids {
            let key = format!("{}/{}/{id}", self.socket().display(), self.namespace);
            let name = berth_core::Digest::of(key.as_bytes()).hex().to_owned();
            let _ = fs::remove_file(Path::new(SHIM_SOCKET_DIR).join(name));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}
