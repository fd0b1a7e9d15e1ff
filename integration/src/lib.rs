//! The end-to-end test harness: real `berthd` processes on temporary roots and sockets, which a
//! test can SIGKILL and restart, plus runners for `berthctl` and containerd's `ctr`.
//!
//! Everything a test starts is torn down on drop, also when the test fails. Binaries are taken
//! from the same target directory as the test (`scripts/test.sh` builds them first).

// A harness reports failure by panicking with a message: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bundle;
pub mod containerd;
pub mod mounts;
pub mod registry;
pub mod remote;
pub mod testimage;

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The path of a workspace binary built next to the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`, \
         which scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running berthd with its own temporary root, state directory and socket.
pub struct Daemon {
    dir: TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    berthd: PathBuf,
}

impl Daemon {
    /// Starts a daemon and waits until it answers on its socket.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a daemon with extra command-line arguments.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_binary(bin("berthd"), extra_args)
    }

    /// Starts the berthd at `berthd` (which runs the `berth-shim` beside it).
    pub fn start_binary(berthd: PathBuf, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-")
            .tempdir()
            .expect("temp dir");
        let mut daemon = Self {
            dir,
            child: None,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            berthd,
        };
        daemon.spawn();
        daemon
    }

    /// The daemon's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The daemon's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The entries of snapshotter `sn`'s `snapshots` directory once the background deletions
    /// of removed snapshots (renamed to `rm-*`) have finished; panics if they are still there
    /// after 30 s.
    pub fn snapshot_dirs(&self, sn: &str) -> Vec<String> {
        let dir = self
            .root()
            .join(format!("io.containerd.snapshotter.v1.{sn}"))
            .join("snapshots");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if !names.iter().any(|n| n.starts_with("rm-")) {
                names.sort();
                return names;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "removed snapshots still being deleted after 30 s: {names:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("berthd.sock")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// The arguments berthd is started with.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--root".to_owned(),
            self.root().display().to_string(),
            "--state".to_owned(),
            self.state().display().to_string(),
            "--address".to_owned(),
            self.socket().display().to_string(),
            "--log-level".to_owned(),
            "debug".to_owned(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("open log");
        let child = Command::new(&self.berthd)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("berthd exited early with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not listen within 20s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILLs the daemon and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the daemon and waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        signal(child.id(), libc::SIGTERM);
        wait_timeout(&mut child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("berthd ignored SIGTERM:\n{}", self.log()))
    }

    /// Starts the daemon again on the same root after it was killed or stopped.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A client of this daemon in `namespace`.
    pub async fn client(&self, namespace: &str) -> berth_client::Client {
        berth_client::Client::connect(&self.socket(), namespace)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.socket().display()))
    }

    /// Runs `berthctl` against this daemon.
    pub fn berthctl(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new(bin("berthctl"));
        cmd.arg("--address").arg(self.socket()).args(args);
        CmdOutput::run(cmd)
    }

    /// Runs berthctl with `stdin` as its standard input.
    pub fn berthctl_stdin(&self, args: &[&str], stdin: &[u8]) -> CmdOutput {
        let mut cmd = Command::new(bin("berthctl"));
        cmd.arg("--address").arg(self.socket()).args(args);
        CmdOutput::run_with_stdin(cmd, stdin)
    }

    /// Runs containerd's `ctr` against this daemon.
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new(ctr_path());
        cmd.arg("--address").arg(self.socket()).args(args);
        CmdOutput::run(cmd)
    }

    /// Runs `ctr` with `stdin` as its standard input.
    pub fn ctr_stdin(&self, args: &[&str], stdin: &[u8]) -> CmdOutput {
        let mut cmd = Command::new(ctr_path());
        cmd.arg("--address").arg(self.socket()).args(args);
        CmdOutput::run_with_stdin(cmd, stdin)
    }
}

/// A name unique to this test process and call, `<tag>-<pid>-<n>`: the namespaces and
/// container ids of daemon tests (the harness removes a namespace's cgroups by its name).
pub fn unique(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{tag}-{}-{n}", std::process::id())
}

/// A daemon with the one-layer busybox test image imported (and unpacked) by `ctr` in
/// namespace `ns`; the directory holds the image archive and must outlive the test.
pub fn daemon_with_image(ns: &str) -> (Daemon, testimage::TestImage, TempDir) {
    import_test_image(Daemon::start(), ns)
}

/// Imports the one-layer busybox test image into `d` in namespace `ns` (see
/// [`daemon_with_image`]).
pub fn import_test_image(d: Daemon, ns: &str) -> (Daemon, testimage::TestImage, TempDir) {
    let image = testimage::TestImage::one_layer();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let archive = dir.path().join("image.tar");
    image.write_oci_archive(&archive);
    let archive = archive.to_string_lossy().into_owned();
    d.ctr(&["-n", ns, "images", "import", &archive]).ok();
    (d, image, dir)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        reap_tasks(&self.state());
    }
}

/// Kills what a test's tasks left behind (a test that fails half-way leaves shims and their
/// containers running): each shim's children (a container init, whose pid namespace dies with
/// it), then the shim, then the rootfs mount and the container's cgroups, and last the empty
/// per-namespace parent cgroups (`/<namespace>/<id>` is the default cgroupsPath, and neither
/// containerd nor Berth removes the parent, so every test namespace would leave one behind).
pub fn reap_tasks(state: &Path) {
    let Ok(namespaces) = std::fs::read_dir(state.join("tasks")) else {
        return;
    };
    let namespaces: Vec<_> = namespaces.flatten().collect();
    reap_task_dirs(&namespaces);
    for ns in &namespaces {
        let name = ns.file_name();
        // Shared with other daemons running in parallel: one of them may be creating a
        // container under it right now.
        if name == "default" {
            continue;
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                // Fails (and is meant to) while anything is still under it.
                let _ = std::fs::remove_dir(h.path().join(&name));
            }
        }
    }
}

/// The shim of a task directory: its `shim.pid`, or, for a shim that never answered its
/// first request (it writes the file after), the berth-shim process started on that bundle.
fn shim_pid(dir: &Path) -> Option<i32> {
    if let Some(pid) = std::fs::read_to_string(dir.join("shim.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        return Some(pid);
    }
    let bundle = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0);
        let is_shim = args.next()?.ends_with(b"berth-shim");
        (is_shim && args.any(|a| a == bundle)).then_some(pid)
    })
}

fn reap_task_dirs(namespaces: &[std::fs::DirEntry]) {
    for ns in namespaces {
        let Ok(tasks) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            if let Some(pid) = shim_pid(&dir) {
                let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                    signal(child, libc::SIGKILL);
                }
                signal(pid as u32, libc::SIGKILL);
            }
            let _ = nix::mount::umount2(&dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            let cgroup = std::fs::read_to_string(dir.join("config.json"))
                .ok()
                .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
                .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_owned));
            if let Some(cg) = cgroup {
                let rel = cg.trim_start_matches('/').to_owned();
                for _ in 0..50 {
                    let mut left = false;
                    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
                        for h in hierarchies.flatten() {
                            let d = h.path().join(&rel);
                            if d.exists() && std::fs::remove_dir(&d).is_err() {
                                left = true;
                            }
                        }
                    }
                    if !left {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}

/// The `ctr` binary from Debian's containerd package; its absence is a setup error, not a skip.
pub fn ctr_path() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join("ctr");
        if p.exists() {
            return p;
        }
    }
    panic!("`ctr` is not installed: run scripts/setup.sh (it installs Debian's containerd)");
}

/// The result of a command, with helpers that fail the test with the command's output.
#[derive(Debug)]
pub struct CmdOutput {
    /// What ran.
    pub command: String,
    /// The raw output.
    pub output: Output,
}

impl CmdOutput {
    /// Runs an arbitrary command.
    pub fn run_public(cmd: &mut Command) -> Self {
        let command = format!("{cmd:?}");
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {command}: {e}"));
        Self { command, output }
    }

    fn run(mut cmd: Command) -> Self {
        Self::run_public(&mut cmd)
    }

    fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Self {
        use std::io::Write as _;
        let command = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {command}: {e}"));
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let output = child.wait_with_output().expect("wait");
        let _ = writer.join();
        Self { command, output }
    }

    /// Stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.output.status.success(),
            "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn fails(&self) -> String {
        assert!(
            !self.output.status.success(),
            "{} unexpectedly succeeded:\n{}",
            self.command,
            self.stdout()
        );
        self.stderr()
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    let sig = nix::sys::signal::Signal::try_from(sig).expect("valid signal");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore as _;
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// A file's permission bits.
pub fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Reads a whole file.
pub fn read_file(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    data
}
