//! The OCI runtime a shim drives: Berth's own, in-process (no exec of a runtime binary on the
//! way to the container), or an external runc-compatible binary (runc, crun, berth-runc).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use berth_core::{Error, ErrorKind, Result};
use berth_runtime::container::{Startable, wait_gate};
use berth_runtime::{CreateOptions, ExecOptions, Runtime};
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process};

/// The container process's standard descriptors.
#[derive(Debug)]
pub struct ChildStdio {
    /// stdin (the read end the container gets).
    pub stdin: OwnedFd,
    /// stdout.
    pub stdout: OwnedFd,
    /// stderr.
    pub stderr: OwnedFd,
}

/// What a runtime's create made: the init's pid, and what only the built-in runtime knows.
pub enum Created {
    /// By the built-in runtime.
    Builtin(Startable),
    /// By an external runtime: the init's pid.
    External(i32),
}

/// What the shim needs from an OCI runtime.
pub trait OciRuntime {
    /// Creates the container from `bundle`; returns the init's pid and, from the built-in
    /// runtime, the container's cgroup and (without poststart hooks) what starting the init by
    /// itself takes. When `rootfs_ready` is given, the container's process is made only once
    /// a byte can be read from it (end of file fails the create).
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: ChildStdio,
        console: Option<&Path>,
        rootfs_ready: Option<OwnedFd>,
    ) -> Result<Created>;
    /// Lets the init exec.
    fn start(&self, id: &str) -> Result<()>;
    /// Signals the init (or every process).
    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()>;
    /// Removes the container's runtime state and cgroup.
    fn delete(&self, id: &str, force: bool) -> Result<()>;
    /// Runs another process in the container (detached); returns its pid.
    fn exec(
        &self,
        id: &str,
        process: &Process,
        process_file: &Path,
        stdio: ChildStdio,
        console: Option<&Path>,
    ) -> Result<i32>;
    /// Freezes the container.
    fn pause(&self, id: &str) -> Result<()>;
    /// Thaws the container.
    fn resume(&self, id: &str) -> Result<()>;
    /// Host pids of the container's processes.
    fn pids(&self, id: &str) -> Result<Vec<i32>>;
    /// Applies new resources.
    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()>;
}

/// Runs `f` with `stdio` as descriptors 0, 1 and 2 of this process, then puts the shim's own
/// back: the in-process runtime forks the container from here, and a child inherits stdio.
fn with_stdio<T>(stdio: &ChildStdio, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let saved: Vec<OwnedFd> = (0..3)
        .map(|fd| {
            // SAFETY: dup of a standard descriptor; ownership of the new descriptor is taken at
            // once.
            let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if new < 0 {
                return Err(Error::io(
                    "save the shim's stdio",
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
        })
        .collect::<Result<_>>()?;
    let set = |fds: [RawFd; 3]| {
        for (target, fd) in fds.into_iter().enumerate() {
            // SAFETY: dup2 onto a standard descriptor from a descriptor this function holds.
            unsafe { libc::dup2(fd, target as RawFd) };
        }
    };
    set([
        stdio.stdin.as_raw_fd(),
        stdio.stdout.as_raw_fd(),
        stdio.stderr.as_raw_fd(),
    ]);
    let out = f();
    set([
        saved[0].as_raw_fd(),
        saved[1].as_raw_fd(),
        saved[2].as_raw_fd(),
    ]);
    out
}

/// Berth's runtime, called in-process.
pub struct Builtin {
    runtime: Runtime,
}

impl Builtin {
    /// A runtime keeping container state under `root`, caching compiled seccomp filters in
    /// `seccomp_cache` when given.
    pub fn new(root: &Path, seccomp_cache: Option<&Path>) -> Result<Builtin> {
        let mut runtime = Runtime::new(root)?;
        if let Some(dir) = seccomp_cache {
            runtime = runtime.with_seccomp_cache(dir);
        }
        Ok(Builtin { runtime })
    }
}

impl OciRuntime for Builtin {
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: ChildStdio,
        console: Option<&Path>,
        rootfs_ready: Option<OwnedFd>,
    ) -> Result<Created> {
        let opts = CreateOptions {
            bundle: bundle.to_path_buf(),
            console_socket: console.map(Path::to_path_buf),
            rootfs_ready: rootfs_ready.map(Arc::new),
            ..CreateOptions::default()
        };
        with_stdio(&stdio, || self.runtime.create_startable(id, &opts)).map(Created::Builtin)
    }

    fn start(&self, id: &str) -> Result<()> {
        self.runtime.start(id)
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        self.runtime.kill(id, signal, all)
    }

    fn delete(&self, id: &str, force: bool) -> Result<()> {
        self.runtime.delete(id, force)
    }

    fn exec(
        &self,
        id: &str,
        process: &Process,
        _process_file: &Path,
        stdio: ChildStdio,
        console: Option<&Path>,
    ) -> Result<i32> {
        let opts = ExecOptions {
            console_socket: console.map(Path::to_path_buf),
            ..ExecOptions::default()
        };
        with_stdio(&stdio, || self.runtime.exec(id, process, &opts))
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.runtime.pause(id)
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.runtime.resume(id)
    }

    fn pids(&self, id: &str) -> Result<Vec<i32>> {
        self.runtime.pids(id)
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        self.runtime.update(id, resources)
    }
}

/// A runc-compatible binary, driven through its command line.
pub struct External {
    binary: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl External {
    /// `binary` with its state under `root`, logging (JSON, as runc) to `log`.
    pub fn new(binary: PathBuf, root: PathBuf, log: PathBuf) -> External {
        External { binary, root, log }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        c
    }

    /// Runs a command to completion; a failure carries the runtime's last logged error.
    fn run(&self, mut c: Command, what: &str) -> Result<Vec<u8>> {
        let out = c
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .output()
            .map_err(|e| Error::io(format!("run {} {what}", self.binary.display()), e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(self.failure(what, String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }

    /// A failed command's error: the runtime's last logged error, else `fallback`.
    fn failure(&self, what: &str, fallback: String) -> Error {
        Error::new(
            ErrorKind::Unknown,
            format!(
                "{} {what}: {}",
                self.binary.display(),
                self.last_error().unwrap_or(fallback)
            ),
        )
    }

    /// The last error message in the runtime's JSON log.
    fn last_error(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines().rev().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or_default().to_owned())
        })
    }

    fn spawn_with_stdio(&self, mut c: Command, stdio: ChildStdio, what: &str) -> Result<()> {
        c.stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr));
        let status = c
            .status()
            .map_err(|e| Error::io(format!("run {} {what}", self.binary.display()), e))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(what, status.to_string()))
        }
    }
}

fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    text.trim()
        .parse()
        .map_err(|_| Error::internal(format!("{} holds no pid", path.display())))
}

impl OciRuntime for External {
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: ChildStdio,
        console: Option<&Path>,
        rootfs_ready: Option<OwnedFd>,
    ) -> Result<Created> {
        if let Some(gate) = rootfs_ready {
            wait_gate(&gate)?;
        }
        let pid_file = bundle.join("init.pid");
        let mut c = self.command();
        c.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some(s) = console {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id);
        self.spawn_with_stdio(c, stdio, "create")?;
        Ok(Created::External(read_pid(&pid_file)?))
    }

    fn start(&self, id: &str) -> Result<()> {
        let mut c = self.command();
        c.arg("start").arg(id);
        self.run(c, "start").map(drop)
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let mut c = self.command();
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        c.arg(id).arg((signal as i32).to_string());
        self.run(c, "kill").map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut c = self.command();
        c.arg("delete");
        if force {
            c.arg("--force");
        }
        c.arg(id);
        self.run(c, "delete").map(drop)
    }

    fn exec(
        &self,
        id: &str,
        process: &Process,
        process_file: &Path,
        stdio: ChildStdio,
        console: Option<&Path>,
    ) -> Result<i32> {
        let data = serde_json::to_vec(process)
            .map_err(|e| Error::internal(format!("encode process: {e}")))?;
        std::fs::write(process_file, data)
            .map_err(|e| Error::io(format!("write {}", process_file.display()), e))?;
        let pid_file = process_file.with_extension("pid");
        let mut c = self.command();
        c.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process_file)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some(s) = console {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id);
        self.spawn_with_stdio(c, stdio, "exec")?;
        read_pid(&pid_file)
    }

    fn pause(&self, id: &str) -> Result<()> {
        let mut c = self.command();
        c.arg("pause").arg(id);
        self.run(c, "pause").map(drop)
    }

    fn resume(&self, id: &str) -> Result<()> {
        let mut c = self.command();
        c.arg("resume").arg(id);
        self.run(c, "resume").map(drop)
    }

    fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let mut c = self.command();
        c.arg("ps").arg("--format").arg("json").arg(id);
        let out = self.run(c, "ps")?;
        serde_json::from_slice(&out)
            .map_err(|e| Error::internal(format!("{} ps: {e}", self.binary.display())))
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let file = self.root.join(format!("{id}.resources.json"));
        let data = serde_json::to_vec(resources)
            .map_err(|e| Error::internal(format!("encode resources: {e}")))?;
        std::fs::write(&file, data)
            .map_err(|e| Error::io(format!("write {}", file.display()), e))?;
        let mut c = self.command();
        c.arg("update").arg("--resources").arg(&file).arg(id);
        let res = self.run(c, "update").map(drop);
        let _ = std::fs::remove_file(&file);
        res
    }
}
