//! berthctl's docker-like container commands against a real berthd: `run` (attached, detached,
//! interactive, with a tty), `create`/`start`, `exec`, `ps`, `stop`, `kill`, `rm`, `inspect`,
//! `top`, `stats`, `pause`/`unpause`, `wait`, and the Docker default spec seen from inside the
//! container.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use berth_integration::testimage::TestImage;
use berth_integration::{CmdOutput, Daemon, unique};
use serde_json::Value;

/// A daemon with the busybox test image imported in namespace `ns`.
struct Env {
    d: Daemon,
    ns: String,
    image: String,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new(tag: &str) -> Self {
        let d = Daemon::start();
        let ns = unique(tag);
        let image = TestImage::one_layer();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("image.tar");
        image.write_oci_archive(&archive);
        d.berthctl(&["-n", &ns, "import", archive.to_str().unwrap()])
            .ok();
        Env {
            d,
            ns,
            image: image.name.clone(),
            _dir: dir,
        }
    }

    fn ctl(&self, args: &[&str]) -> CmdOutput {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.d.berthctl(&all)
    }

    fn ctl_stdin(&self, args: &[&str], stdin: &[u8]) -> CmdOutput {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.d.berthctl_stdin(&all, stdin)
    }

    /// `run --rm IMAGE args...` with extra flags before the image; returns the output.
    fn run(&self, flags: &[&str], args: &[&str]) -> CmdOutput {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(flags);
        all.push(&self.image);
        all.extend_from_slice(args);
        self.ctl(&all)
    }

    /// `run --rm … sh -c SCRIPT`, asserting success; returns stdout.
    fn sh(&self, flags: &[&str], script: &str) -> String {
        self.run(flags, &["sh", "-c", script]).ok()
    }

    fn inspect(&self, id: &str) -> Value {
        let out = self.ctl(&["inspect", id]).ok();
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    fn state(&self, id: &str) -> String {
        self.inspect(id)["task"]["status"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    }

    fn wait_state(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.state(id);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{id}: {got}, want {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn run_prints_output_and_returns_the_exit_code() {
    let e = Env::new("exit");
    let out = e.run(&[], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.output.status.code(), Some(3), "{}", out.stderr());
    assert_eq!(out.stdout(), "out\n");
    assert_eq!(out.stderr(), "err\n");
    assert_eq!(e.sh(&[], "echo pid $$"), "pid 1\n");
    // The image's Cmd (/bin/sh) runs when no command is given; with stdin it reads a script.
    let out = e.ctl_stdin(
        &["run", "--rm", "-i", &e.image],
        b"echo from stdin; exit 4\n",
    );
    assert_eq!(out.output.status.code(), Some(4), "{}", out.stderr());
    assert_eq!(out.stdout(), "from stdin\n");
}

#[test]
fn flags_shape_the_process() {
    let e = Env::new("flags");
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "# a comment\nFROM_FILE=file value\nBOTH=file\n").unwrap();
    let out = e.sh(
        &[
            "-e",
            "ONE=1",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "BOTH=flag",
        ],
        "echo $ONE/$FROM_FILE/$BOTH/$PATH",
    );
    assert_eq!(
        out,
        "1/file value/flag/\
         /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    assert_eq!(e.sh(&["-w", "/tmp"], "pwd"), "/tmp\n");
    assert_eq!(e.sh(&[], "pwd"), "/\n");
    assert_eq!(e.sh(&["-u", "1000:1001"], "id -u; id -g"), "1000\n1001\n");
    // A name is looked up in the image's /etc/passwd.
    assert_eq!(e.sh(&["-u", "nobody"], "id -u; id -g"), "65534\n65534\n");
    let err = e.run(&["-u", "nosuchuser"], &["true"]).fails();
    assert!(err.contains("unable to find user nosuchuser"), "{err}");
    let out = e
        .run(&["--entrypoint", "/bin/echo"], &["via", "entrypoint"])
        .ok();
    assert_eq!(out, "via entrypoint\n");
    // --read-only: the rootfs and the etc files cannot be written; /dev/shm still can.
    let out = e.run(
        &["--read-only"],
        &[
            "sh",
            "-c",
            "echo x > /newfile || echo rootfs ro; echo x >> /etc/hosts || echo hosts ro; \
             echo x > /dev/shm/ok && echo shm rw",
        ],
    );
    let text = out.ok();
    assert!(text.contains("rootfs ro"), "{text}");
    assert!(text.contains("hosts ro"), "{text}");
    assert!(text.contains("shm rw"), "{text}");
    let text = e.sh(&[], "echo x > /newfile && echo rootfs rw");
    assert_eq!(text, "rootfs rw\n");
}

#[test]
fn hostname_and_etc_files() {
    let e = Env::new("etc");
    let name = unique("abcdefghijklmnop");
    let out = e.sh(
        &["--name", &name],
        "busybox hostname; cat /etc/hostname; echo --; cat /etc/hosts; echo --; \
         cat /etc/resolv.conf",
    );
    let short: String = name.chars().take(12).collect();
    let mut parts = out.split("--\n");
    let host = parts.next().unwrap();
    assert_eq!(host, format!("{short}\n{short}\n"));
    let hosts = parts.next().unwrap();
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
    assert!(hosts.contains(&format!("\t{short}")), "{hosts}");
    let resolv = parts.next().unwrap();
    assert!(resolv.contains("nameserver"), "{resolv}");
    assert_eq!(e.sh(&["--hostname", "box"], "busybox hostname"), "box\n");
    // --network none (the default): only loopback; host: the host's interfaces.
    let own = e.sh(&[], "ls /sys/class/net");
    assert_eq!(own, "lo\n");
    let host_net = e.sh(&["--network", "host"], "ls /sys/class/net");
    assert!(host_net.lines().count() > 1, "{host_net}");
}

/// The `CapEff` mask of Docker's default capability set.
const DOCKER_CAPS: u64 = 0xa80425fb;
const CAP_NET_RAW: u64 = 1 << 13;
const CAP_SYS_ADMIN: u64 = 1 << 21;

fn cap_eff(status: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} missing in {status}"))
        .trim()
}

#[test]
fn the_default_spec_is_dockers() {
    let e = Env::new("spec");
    let status = e.sh(&[], "cat /proc/self/status");
    assert_eq!(cap_eff(&status), DOCKER_CAPS, "{status}");
    assert_eq!(field(&status, "Seccomp:"), "2");
    let status = e.sh(
        &["--cap-drop", "NET_RAW", "--cap-add", "sys_admin"],
        "cat /proc/self/status",
    );
    assert_eq!(
        cap_eff(&status),
        (DOCKER_CAPS & !CAP_NET_RAW) | CAP_SYS_ADMIN
    );
    let status = e.sh(&["--cap-drop", "ALL"], "cat /proc/self/status");
    assert_eq!(cap_eff(&status), 0);
    // The seccomp profile denies what Docker's denies: unshare without CAP_SYS_ADMIN.
    let out = e.run(&[], &["busybox", "unshare", "-U", "true"]);
    assert!(!out.output.status.success(), "unshare was allowed");
    // Masked paths read as empty, read-only ones cannot be written.
    let out = e.sh(
        &[],
        "busybox wc -c < /proc/interrupts; ls /sys/firmware | busybox wc -l; \
         echo 1 > /proc/sysrq-trigger || echo sysrq ro; \
         busybox grep -c ' /proc/sys ro,' /proc/self/mountinfo",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "{out}");
    assert_eq!(lines[1].trim(), "0", "{out}");
    assert!(out.contains("sysrq ro"), "{out}");
    assert_eq!(lines.last().unwrap().trim(), "1", "{out}");
    // Privileged: no seccomp, no masks.
    let status = e.sh(&["--privileged"], "cat /proc/self/status");
    assert_eq!(field(&status, "Seccomp:"), "0");
    assert_ne!(cap_eff(&status) & CAP_SYS_ADMIN, 0);
}

#[test]
fn resource_limits_are_in_the_containers_cgroup() {
    let e = Env::new("limits");
    let out = e.sh(
        &["--memory", "64m", "--pids-limit", "20", "--cpus", "0.5"],
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids/pids.max; \
         cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    );
    assert_eq!(out, format!("{}\n20\n50000\n", 64 << 20));
}

impl Env {
    /// Container ids `ps` lists (with `-a`: all of them).
    fn ps(&self, all: bool) -> Vec<String> {
        let args: &[&str] = if all {
            &["ps", "-a", "-q"]
        } else {
            &["ps", "-q"]
        };
        self.ctl(args).ok().lines().map(str::to_owned).collect()
    }

    /// Whether the container's snapshot, record or task directory is still there.
    /// Waits until berthd has removed container `id` and everything it had, log included.
    fn wait_removed(&self, id: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.leftovers(id).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}",
                self.leftovers(id)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.d.root().join("logs").join(&self.ns).join(id);
        assert!(!log.exists(), "{what}: log left");
    }

    fn leftovers(&self, id: &str) -> Vec<String> {
        let mut left = Vec::new();
        if self.ps(true).contains(&id.to_owned()) {
            left.push("container".to_owned());
        }
        let snaps = self.ctl(&["snapshot", "ls"]).ok();
        if snaps
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id))
        {
            left.push(format!("snapshot:\n{snaps}"));
        }
        let dir = self.d.state().join("tasks").join(&self.ns).join(id);
        if dir.exists() {
            left.push(format!("task dir {}", dir.display()));
        }
        left
    }
}

#[test]
fn a_detached_container_through_its_whole_life() {
    let e = Env::new("life");
    let id = unique("web");
    let out = e
        .ctl(&["run", "-d", "--name", &id, &e.image, "sleep", "1000"])
        .ok();
    assert_eq!(out, format!("{id}\n"));
    e.wait_state(&id, "running");
    assert_eq!(e.ps(false), vec![id.clone()]);
    let table = e.ctl(&["ps"]).ok();
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    assert!(
        table.contains("\"sleep 1000\"") && table.contains(" Up"),
        "{table}"
    );
    let rows: Value = serde_json::from_str(&e.ctl(&["--format", "json", "ps"]).ok()).unwrap();
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["state"], "running");

    // exec: output, exit code, -e, -w, -u; the init is pid 1.
    let out = e.ctl(&[
        "exec",
        "-e",
        "X=y",
        "-w",
        "/tmp",
        "-u",
        "65534",
        &id,
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u) $(cat /proc/1/cmdline | busybox tr '\\0' ' '); exit 5",
    ]);
    assert_eq!(out.output.status.code(), Some(5), "{}", out.stderr());
    assert_eq!(out.stdout(), "y /tmp 65534 sleep 1000\n");
    let out = e.ctl_stdin(&["exec", "-i", &id, "cat"], b"piped in\n");
    assert_eq!(out.ok(), "piped in\n");

    // top and stats.
    let top = e.ctl(&["top", &id]).ok();
    assert!(top.starts_with("UID"), "{top}");
    assert!(top.contains("sleep 1000"), "{top}");
    let procs: Value =
        serde_json::from_str(&e.ctl(&["--format", "json", "top", &id]).ok()).unwrap();
    assert_eq!(procs.as_array().unwrap().len(), 1, "{procs}");
    let stats: Value = serde_json::from_str(
        &e.ctl(&["--format", "json", "stats", "--no-stream", &id])
            .ok(),
    )
    .unwrap();
    assert_eq!(stats[0]["id"], id.as_str());
    assert!(stats[0]["memory_usage"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats[0]["pids"], 1);
    let table = e.ctl(&["stats", "--no-stream"]).ok();
    assert!(
        table.contains("MEM USAGE / LIMIT") && table.contains(&id),
        "{table}"
    );

    // pause / unpause.
    e.ctl(&["pause", &id]).ok();
    e.wait_state(&id, "paused");
    assert!(e.ctl(&["ps"]).ok().contains("Paused"));
    e.ctl(&["unpause", &id]).ok();
    e.wait_state(&id, "running");

    // stop: sleep as pid 1 ignores SIGTERM, so SIGKILL follows after -t.
    e.ctl(&["stop", "-t", "1", &id]).ok();
    assert_eq!(e.state(&id), "exited");
    assert_eq!(e.ctl(&["wait", &id]).ok(), "137\n");
    let info = e.inspect(&id);
    assert_eq!(info["task"]["exitCode"], 137);
    assert_eq!(info["image"], e.image.as_str());
    assert_eq!(info["labels"]["io.berth.log"], "json-file");
    assert_eq!(info["spec"]["process"]["args"][0], "sleep");
    assert!(e.ps(false).is_empty());
    assert_eq!(e.ps(true), vec![id.clone()]);

    // start again, then kill with a chosen signal.
    e.ctl(&["start", &id]).ok();
    e.wait_state(&id, "running");
    e.ctl(&["kill", "-s", "USR1", &id]).ok();
    // pid 1 has no handler for SIGUSR1, so the kernel ignores it: still running.
    assert_eq!(e.state(&id), "running");
    e.ctl(&["kill", &id]).ok();
    assert_eq!(e.ctl(&["wait", &id]).ok(), "137\n");
    e.ctl(&["rm", &id]).ok();
    assert!(e.leftovers(&id).is_empty(), "{:?}", e.leftovers(&id));
    let err = e.ctl(&["inspect", &id]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn rm_refuses_a_running_container_and_rm_f_removes_it() {
    let e = Env::new("rmf");
    let id = unique("c");
    e.ctl(&["run", "-d", "--name", &id, &e.image, "sleep", "1000"])
        .ok();
    e.wait_state(&id, "running");
    let err = e.ctl(&["rm", &id]).fails();
    assert!(err.contains("is running") && err.contains("rm -f"), "{err}");
    assert_eq!(e.state(&id), "running");
    e.ctl(&["rm", "-f", &id]).ok();
    assert!(e.leftovers(&id).is_empty(), "{:?}", e.leftovers(&id));
}

#[test]
fn run_rm_leaves_nothing_attached_or_detached() {
    let mut e = Env::new("rm");
    let id = unique("gone");
    e.run(&["--name", &id], &["true"]).ok();
    assert!(e.leftovers(&id).is_empty(), "{:?}", e.leftovers(&id));
    // Also when the command fails, and when it cannot start at all.
    let out = e.run(&["--name", &id], &["sh", "-c", "exit 1"]);
    assert_eq!(out.output.status.code(), Some(1));
    assert!(e.leftovers(&id).is_empty(), "{:?}", e.leftovers(&id));
    let out = e.run(&["--name", &id], &["/no/such/binary"]);
    assert!(!out.output.status.success());
    assert!(e.leftovers(&id).is_empty(), "{:?}", e.leftovers(&id));

    // Detached: berthd removes it when it exits (log included), nobody else is left to.
    let auto = unique("auto");
    e.ctl(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &auto,
        &e.image,
        "sh",
        "-c",
        "echo bye; sleep 0.3",
    ])
    .ok();
    e.wait_removed(&auto, "exit while berthd runs");

    // The exit happens while berthd is down: the restarted daemon still removes it.
    let later = unique("later");
    e.ctl(&[
        "run", "-d", "--rm", "--name", &later, &e.image, "sleep", "1",
    ])
    .ok();
    e.d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    e.d.restart();
    e.wait_removed(&later, "exit while berthd was down");
}

#[test]
fn a_detached_rm_container_whose_shim_died_is_removed_after_a_restart() {
    let mut e = Env::new("deadrm");
    let id = unique("c");
    e.ctl(&[
        "run", "-d", "--rm", "--name", &id, &e.image, "sleep", "1000",
    ])
    .ok();
    e.wait_state(&id, "running");
    let init = e.inspect(&id)["task"]["pid"].as_u64().unwrap() as u32;
    let task_dir = e.d.state().join("tasks").join(&e.ns).join(&id);
    let shim: u32 = std::fs::read_to_string(task_dir.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Both die; the container's process does not (a shim's death kills nothing).
    e.d.kill9();
    berth_integration::signal(shim, libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::path::Path::new(&format!("/proc/{init}")).exists());
    e.d.restart();
    // Recovery force-deletes the container and reports its exit (255, unknown); auto-remove
    // then removes the rest.
    e.wait_removed(&id, "dead shim");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{init}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{init}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            Instant::now() < deadline,
            "the container's init {init} still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn create_then_start_attached() {
    let e = Env::new("create");
    let id = unique("c");
    let out = e
        .ctl(&[
            "create",
            "--name",
            &id,
            &e.image,
            "sh",
            "-c",
            "echo hi; exit 2",
        ])
        .ok();
    assert_eq!(out, format!("{id}\n"));
    assert_eq!(e.state(&id), "none");
    assert_eq!(e.ps(true), vec![id.clone()]);
    let table = e.ctl(&["ps", "-a"]).ok();
    assert!(table.contains("Created"), "{table}");
    let out = e.ctl(&["start", "-a", &id]);
    assert_eq!(out.output.status.code(), Some(2), "{}", out.stderr());
    assert_eq!(out.stdout(), "hi\n");
    // A second start runs it again.
    let out = e.ctl(&["start", "-a", &id]);
    assert_eq!(out.output.status.code(), Some(2));
    e.ctl(&["rm", &id]).ok();
    assert!(e.leftovers(&id).is_empty());
}

#[test]
fn signals_to_an_attached_run_reach_the_container() {
    use std::io::{BufRead as _, BufReader};
    let e = Env::new("sig");
    let mut child = std::process::Command::new(berth_integration::bin("berthctl"))
        .args(["--address", e.d.socket().to_str().unwrap(), "-n", &e.ns])
        .args(["run", "--rm", &e.image, "sh", "-c"])
        .arg("trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.1; done")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    berth_integration::signal(child.id(), libc::SIGTERM);
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(9));
    assert!(e.ps(true).is_empty());
}

/// SIGKILLs a process when a test ends early.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid we started; a stale pid only gets ESRCH.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// A pty pair whose slave becomes the controlling terminal of a berthctl, which the test drives
/// through the master like a person at a terminal.
struct Pty {
    master: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Pty {
    /// Spawns berthctl `args` on a new pty of `rows`×`cols`.
    fn spawn(args: &[&str], rows: u16, cols: u16) -> (Self, std::process::Child) {
        use std::os::fd::FromRawFd as _;
        use std::os::unix::process::CommandExt as _;
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into our ints; the name and termios are unused.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are fresh from openpty and owned here alone.
        let (master, slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        let mut cmd = std::process::Command::new(berth_integration::bin("berthctl"));
        cmd.args(args)
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
        // controlling terminal is the pty on stdin, so window changes signal berthctl.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(slave);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buf = [0u8; 4096];
            // EIO once berthctl (the last holder of the slave) has exited.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (Self { master, output }, child)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write as _;
        self.master.write_all(line.as_bytes()).unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd as _;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize we own; the kernel then sends SIGWINCH to the
        // terminal's foreground process group (berthctl).
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0);
    }

    /// Waits until the output contains `want`, typing `nudge` (if any) now and then.
    fn expect(&mut self, want: &str, nudge: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last_nudge = Instant::now();
        while !self.text().contains(want) {
            assert!(
                Instant::now() < deadline,
                "no {want:?} on the terminal; it shows:\n{}",
                self.text()
            );
            if let Some(n) = nudge
                && last_nudge.elapsed() > Duration::from_millis(300)
            {
                self.type_line(n);
                last_nudge = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn run_with_a_tty_is_interactive_and_follows_resizes() {
    let e = Env::new("tty");
    let id = unique("t");
    let sock = e.d.socket();
    let (mut pty, mut child) = Pty::spawn(
        &[
            "--address",
            sock.to_str().unwrap(),
            "-n",
            &e.ns,
            "run",
            "-it",
            "--rm",
            "--name",
            &id,
            &e.image,
            "sh",
        ],
        40,
        120,
    );
    let _guard = KillOnDrop(child.id());
    // busybox sh's prompt for root, on the container's own pty.
    pty.expect("# ", None);
    pty.type_line("tty; echo $((6*7)) $TERM\r");
    // The line comes back twice: the pty echoes what is typed, then the shell's output.
    pty.expect("tty; echo $((6*7)) $TERM", None);
    pty.expect("42 xterm", None);
    pty.expect("/dev/pts/0", None);
    pty.type_line("busybox stty size\r");
    pty.expect("40 120", None);
    pty.resize(50, 100);
    pty.expect("50 100", Some("busybox stty size\r"));
    pty.type_line("exit 6\r");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(6), "{}", pty.text());
    assert!(e.leftovers(&id).is_empty(), "{:?}", e.leftovers(&id));
}

#[test]
fn run_pulls_missing_images_with_progress_and_obeys_pull_never() {
    let registry = berth_integration::registry::Registry::start();
    let image = TestImage::one_layer();
    let reference = image.push(&registry, "berth/run", "v1");
    let d = Daemon::start();
    let err = d
        .berthctl(&["run", "--rm", "--pull", "never", &reference, "true"])
        .fails();
    assert!(err.contains("--pull never"), "{err}");
    let out = d.berthctl(&["run", "--rm", &reference, "echo", "pulled"]);
    assert_eq!(out.ok(), "pulled\n");
    let progress = out.stderr();
    let short = &image.layers()[0].descriptor.digest.hex()[..12];
    assert!(progress.contains(&format!("{short}: ")), "{progress}");
    // Present now: no pull, no progress.
    let out = d.berthctl(&["run", "--rm", "--pull", "never", &reference, "true"]);
    out.ok();
    assert_eq!(out.stderr(), "");
}

#[test]
fn run_with_an_external_runtime_binary() {
    let e = Env::new("runc");
    let id = unique("r");
    e.ctl(&[
        "run",
        "-d",
        "--runtime",
        "/usr/sbin/runc",
        "--name",
        &id,
        &e.image,
        "sleep",
        "1000",
    ])
    .ok();
    e.wait_state(&id, "running");
    let info = e.inspect(&id);
    assert_eq!(info["runtime"]["options"], "containerd.runc.v1.Options");
    // runc itself knows the container: its state is in the task's runtime root.
    let root =
        e.d.state()
            .join("tasks")
            .join(&e.ns)
            .join(&id)
            .join("runtime");
    let list = CmdOutput::run_public(
        std::process::Command::new("/usr/sbin/runc")
            .arg("--root")
            .arg(&root)
            .arg("list"),
    )
    .ok();
    let line = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_default();
    assert!(line.contains("running"), "{list}");
    let status = e.ctl(&["exec", &id, "cat", "/proc/self/status"]).ok();
    assert_eq!(cap_eff(&status), DOCKER_CAPS);
    assert_eq!(field(&status, "Seccomp:"), "2");
    e.ctl(&["rm", "-f", &id]).ok();
    assert!(e.leftovers(&id).is_empty());
}

#[test]
fn output_of_detached_and_attached_runs_is_in_the_log() {
    let e = Env::new("logs");
    let id = unique("l");
    e.ctl(&[
        "run",
        "-d",
        "--name",
        &id,
        &e.image,
        "sh",
        "-c",
        "echo to out; echo to err >&2",
    ])
    .ok();
    assert_eq!(e.ctl(&["wait", &id]).ok(), "0\n");
    let out = e.ctl(&["logs", &id]);
    assert_eq!(out.ok(), "to out\n");
    assert_eq!(out.stderr(), "to err\n");
    // Attached, the output reaches the terminal and the log.
    e.ctl(&["start", "-a", &id]).ok();
    assert_eq!(e.ctl(&["logs", &id]).ok(), "to out\nto out\n");
    e.ctl(&["rm", &id]).ok();
}
