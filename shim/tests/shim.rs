//! berth-shim driven over its socket, with real containers (busybox-static rootfs), for the
//! built-in runtime and for runc.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_shim_api as api;
use bytes::BytesMut;
use serde_json::json;

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A bundle with a busybox rootfs and a runc-like spec running `args`.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
    shim: Option<std::process::Child>,
}

impl Bundle {
    fn new(args: &[&str], terminal: bool) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in ["sh", "echo", "sleep", "cat", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let id = format!(
            "shim-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": terminal,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs"},
            "hostname": "shim",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}
            ],
            "linux": {
                "cgroupsPath": format!("/berth-shim-test/{id}"),
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
            }
        });
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        Bundle {
            dir,
            id,
            shim: None,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the shim and waits for its "ready".
    fn start_shim(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth-shim"))
            .args(["--id", &self.id, "--namespace", "test", "--bundle"])
            .arg(self.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        self.shim = Some(child);
    }

    fn connect(&self) -> Client {
        Client {
            stream: UnixStream::connect(self.path().join("shim.sock")).unwrap(),
            buf: BytesMut::new(),
            next: 1,
            events: Vec::new(),
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // The shim may already be gone or going: best effort, no reply awaited.
        if let Ok(mut s) = UnixStream::connect(self.path().join("shim.sock")) {
            let msg = api::ShimMessage {
                kind: Some(api::shim_message::Kind::Request(api::Request {
                    id: 1,
                    body: Some(api::request::Body::Shutdown(api::ShutdownRequest {
                        now: true,
                    })),
                })),
            };
            let _ = s.write_all(&api::encode_frame(&msg));
        }
        if let Some(mut s) = self.shim.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if s.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/memory/berth-shim-test/{}", self.id));
    }
}

struct Client {
    stream: UnixStream,
    buf: BytesMut,
    next: u64,
    events: Vec<api::Event>,
}

impl Client {
    fn read_msg(&mut self) -> api::ShimMessage {
        loop {
            if let Some(m) = api::decode_frame(&mut self.buf).unwrap() {
                return m;
            }
            let mut b = [0u8; 4096];
            let n = self.stream.read(&mut b).unwrap();
            assert!(n > 0, "shim closed the connection");
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    fn call(
        &mut self,
        body: api::request::Body,
    ) -> Result<Option<api::response::Body>, api::ShimError> {
        let id = self.next;
        self.next += 1;
        let msg = api::ShimMessage {
            kind: Some(api::shim_message::Kind::Request(api::Request {
                id,
                body: Some(body),
            })),
        };
        self.stream.write_all(&api::encode_frame(&msg)).unwrap();
        loop {
            match self.read_msg().kind {
                Some(api::shim_message::Kind::Response(r)) if r.id == id => {
                    return match r.error {
                        Some(e) => Err(e),
                        None => Ok(r.body),
                    };
                }
                Some(api::shim_message::Kind::Event(e)) => self.events.push(e),
                _ => {}
            }
        }
    }

    fn ok(&mut self, body: api::request::Body) -> Option<api::response::Body> {
        self.call(body)
            .unwrap_or_else(|e| panic!("{}: {}", e.kind, e.message))
    }

    fn wait(&mut self, exec_id: &str) -> api::ExitResponse {
        match self.ok(api::request::Body::Wait(api::ProcessRef {
            exec_id: exec_id.into(),
        })) {
            Some(api::response::Body::Exit(e)) => e,
            other => panic!("wait: {other:?}"),
        }
    }

    fn state(&mut self, exec_id: &str) -> api::StateResponse {
        match self.ok(api::request::Body::State(api::ProcessRef {
            exec_id: exec_id.into(),
        })) {
            Some(api::response::Body::State(s)) => s,
            other => panic!("state: {other:?}"),
        }
    }
}

fn create(b: &Bundle, c: &mut Client, stdio: api::Stdio, runtime: &str) -> u32 {
    match c.ok(api::request::Body::Create(api::CreateRequest {
        rootfs: vec![],
        stdio: Some(stdio),
        runtime_binary: runtime.into(),
        ..Default::default()
    })) {
        Some(api::response::Body::Pid(p)) => {
            assert!(p.pid > 0, "{}", b.id);
            p.pid
        }
        other => panic!("create: {other:?}"),
    }
}

fn start(c: &mut Client, exec_id: &str) {
    c.ok(api::request::Body::Start(api::ProcessRef {
        exec_id: exec_id.into(),
    }));
}

fn out_file(b: &Bundle, name: &str) -> String {
    b.path().join(name).to_string_lossy().into_owned()
}

const RUNTIMES: [&str; 2] = ["", "/usr/sbin/runc"];

#[test]
fn output_exit_status_and_exit_event() {
    for rt in RUNTIMES {
        let mut b = Bundle::new(&["sh", "-c", "echo hi; echo oops >&2; exit 3"], false);
        b.start_shim();
        let mut c = b.connect();
        let stdio = api::Stdio {
            stdout: out_file(&b, "out"),
            stderr: out_file(&b, "err"),
            ..Default::default()
        };
        create(&b, &mut c, stdio, rt);
        assert_eq!(c.state("").status, api::Status::Created as i32);
        start(&mut c, "");
        let exit = c.wait("");
        assert_eq!(exit.exit_status, 3, "runtime {rt:?}");
        assert!(exit.exited_at_ns > 0);
        // Output is complete when the exit is reported.
        assert_eq!(
            std::fs::read_to_string(b.path().join("out")).unwrap(),
            "hi\n"
        );
        assert_eq!(
            std::fs::read_to_string(b.path().join("err")).unwrap(),
            "oops\n"
        );
        assert!(c.events.iter().any(|e| matches!(&e.kind,
            Some(api::event::Kind::Exit(x)) if x.exec_id.is_empty() && x.exit_status == 3)));
        let st = c.state("");
        assert_eq!(st.status, api::Status::Stopped as i32);
        match c.ok(api::request::Body::Delete(api::ProcessRef::default())) {
            Some(api::response::Body::Exit(e)) => assert_eq!(e.exit_status, 3),
            other => panic!("delete: {other:?}"),
        }
        c.ok(api::request::Body::Shutdown(api::ShutdownRequest {
            now: false,
        }));
    }
}

#[test]
fn logs_exec_kill_and_signals() {
    for rt in RUNTIMES {
        let mut b = Bundle::new(&["sh", "-c", "echo started; exec sleep 100"], false);
        b.start_shim();
        let mut c = b.connect();
        let log = out_file(&b, "logs/container.log");
        let stdio = api::Stdio {
            log_path: log.clone(),
            ..Default::default()
        };
        create(&b, &mut c, stdio, rt);
        start(&mut c, "");
        let spec = json!({"user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", "echo from exec; exit 7"],
                          "env": ["PATH=/bin"], "cwd": "/"});
        c.ok(api::request::Body::Exec(api::ExecRequest {
            exec_id: "e1".into(),
            spec: spec.to_string().into_bytes(),
            stdio: Some(api::Stdio {
                stdout: out_file(&b, "exec-out"),
                ..Default::default()
            }),
        }));
        start(&mut c, "e1");
        assert_eq!(c.wait("e1").exit_status, 7, "runtime {rt:?}");
        assert_eq!(
            std::fs::read_to_string(b.path().join("exec-out")).unwrap(),
            "from exec\n"
        );
        match c.ok(api::request::Body::Pids(api::Empty {})) {
            Some(api::response::Body::Pids(p)) => assert!(!p.processes.is_empty()),
            other => panic!("pids: {other:?}"),
        }
        match c.ok(api::request::Body::Stats(api::Empty {})) {
            Some(api::response::Body::Metrics(m)) => {
                assert!(m.memory.unwrap().usage.unwrap().usage > 0);
                assert!(m.pids.unwrap().current >= 1);
            }
            other => panic!("stats: {other:?}"),
        }
        c.ok(api::request::Body::Kill(api::KillRequest {
            exec_id: String::new(),
            signal: 9,
            all: false,
        }));
        assert_eq!(c.wait("").exit_status, 137);
        let text = std::fs::read_to_string(&log).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["log"], "started\n");
        assert_eq!(first["stream"], "stdout");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        // A stopped process cannot be signalled.
        let err = c
            .call(api::request::Body::Kill(api::KillRequest {
                exec_id: String::new(),
                signal: 15,
                all: false,
            }))
            .unwrap_err();
        assert_eq!(err.kind, "not found");
        c.ok(api::request::Body::Delete(api::ProcessRef::default()));
    }
}

#[test]
fn an_exit_while_nobody_is_connected_is_found_on_reconnect() {
    let mut b = Bundle::new(&["sh", "-c", "sleep 0.3; exit 5"], false);
    b.start_shim();
    {
        let mut c = b.connect();
        create(&b, &mut c, api::Stdio::default(), "");
        start(&mut c, "");
    }
    std::thread::sleep(Duration::from_millis(800));
    let mut c = b.connect();
    let st = c.state("");
    assert_eq!(st.status, api::Status::Stopped as i32);
    assert_eq!(st.exit_status, 5);
    match c.ok(api::request::Body::Connect(api::Empty {})) {
        Some(api::response::Body::Connect(r)) => {
            assert_eq!(r.shim_pid, b.shim.as_ref().unwrap().id());
        }
        other => panic!("connect: {other:?}"),
    }
    // The exit is handed out once, to whichever connection takes it first.
    let take = |c: &mut Client| match c.ok(api::request::Body::TakeExits(api::Empty {})) {
        Some(api::response::Body::Exits(e)) => e.exits,
        other => panic!("take exits: {other:?}"),
    };
    let exits = take(&mut c);
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!((exits[0].exec_id.as_str(), exits[0].exit_status), ("", 5));
    assert!(take(&mut b.connect()).is_empty());
    c.ok(api::request::Body::Delete(api::ProcessRef::default()));
}

#[test]
fn an_exit_not_taken_before_its_process_is_deleted_is_handed_out_by_the_delete() {
    let mut b = Bundle::new(&["sh", "-c", "exec sleep 100"], false);
    b.start_shim();
    let mut c = b.connect();
    create(&b, &mut c, api::Stdio::default(), "");
    start(&mut c, "");
    let spec = json!({"user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", "exit 9"],
                      "env": ["PATH=/bin"], "cwd": "/"});
    c.ok(api::request::Body::Exec(api::ExecRequest {
        exec_id: "e1".into(),
        spec: spec.to_string().into_bytes(),
        stdio: None,
    }));
    start(&mut c, "e1");
    assert_eq!(c.wait("e1").exit_status, 9);
    // A running task is not deleted, and the refusal says why.
    let e = c
        .call(api::request::Body::Delete(api::ProcessRef::default()))
        .unwrap_err();
    assert_eq!(e.kind, "failed precondition");
    assert!(
        e.message
            .contains("must be stopped before deletion: it is running"),
        "{}",
        e.message
    );
    let exits = |body| match body {
        Some(api::response::Body::Exit(e)) => e
            .exits
            .into_iter()
            .map(|e| (e.exec_id, e.exit_status))
            .collect::<Vec<_>>(),
        other => panic!("delete: {other:?}"),
    };
    // Each delete hands over the exits nobody has taken yet, each exit once.
    let first = exits(c.ok(api::request::Body::Delete(api::ProcessRef {
        exec_id: "e1".into(),
    })));
    assert_eq!(first, vec![("e1".to_owned(), 9)]);
    c.ok(api::request::Body::Kill(api::KillRequest {
        exec_id: String::new(),
        signal: 9,
        all: false,
    }));
    assert_eq!(c.wait("").exit_status, 137);
    let second = exits(c.ok(api::request::Body::Delete(api::ProcessRef::default())));
    assert_eq!(second, vec![(String::new(), 137)]);
    match c.ok(api::request::Body::TakeExits(api::Empty {})) {
        Some(api::response::Body::Exits(e)) => assert!(e.exits.is_empty(), "{:?}", e.exits),
        other => panic!("take exits: {other:?}"),
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let mut b = Bundle::new(&["true"], false);
    b.start_shim();
    let mut c = b.connect();
    let e = c
        .call(api::request::Body::Start(api::ProcessRef::default()))
        .unwrap_err();
    assert_eq!(e.kind, "failed precondition");
    let e = c
        .call(api::request::Body::State(api::ProcessRef {
            exec_id: "nope".into(),
        }))
        .unwrap_err();
    assert_eq!(e.kind, "not found");
    // A spec the runtime rejects fails Create with the runtime's reason.
    std::fs::write(b.path().join("config.json"), "{\"ociVersion\": \"1.0.2\"}").unwrap();
    let e = c
        .call(api::request::Body::Create(api::CreateRequest::default()))
        .unwrap_err();
    assert!(e.message.contains("required"), "{}", e.message);
}

/// Whether a cgroup named `name` under the test's parent exists in any hierarchy.
fn cgroup_exists(name: &str) -> bool {
    let unified = Path::new("/sys/fs/cgroup/berth-shim-test").join(name);
    let v1 = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .any(|e| e.path().join("berth-shim-test").join(name).exists())
        })
        .unwrap_or(false);
    unified.exists() || v1
}

#[test]
fn a_rootfs_that_fails_to_mount_fails_create_and_leaves_nothing() {
    for rt in RUNTIMES {
        let mut b = Bundle::new(&["sh", "-c", "echo made"], false);
        b.start_shim();
        let mut c = b.connect();
        // The mount runs while the helper prepares the container: its failure must reach the
        // client and undo the helper's work (state, cgroup), not leave it waiting.
        let missing = b.path().join("no-such-dir");
        let e = c
            .call(api::request::Body::Create(api::CreateRequest {
                rootfs: vec![api::Mount {
                    r#type: "bind".into(),
                    source: missing.to_string_lossy().into_owned(),
                    options: vec!["rbind".into()],
                }],
                stdio: Some(api::Stdio::default()),
                runtime_binary: rt.into(),
                ..Default::default()
            }))
            .unwrap_err();
        assert!(e.message.contains("no-such-dir"), "{rt:?}: {}", e.message);
        assert!(
            !b.path().join("runtime").join(&b.id).exists(),
            "{rt:?}: runtime state left behind"
        );
        assert!(!cgroup_exists(&b.id), "{rt:?}: cgroup left behind");
        // The task can still be made, and runs.
        let out = out_file(&b, "out");
        let stdio = api::Stdio {
            stdout: out.clone(),
            ..api::Stdio::default()
        };
        create(&b, &mut c, stdio, rt);
        start(&mut c, "");
        assert_eq!(c.wait("").exit_status, 0, "{rt:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "made\n", "{rt:?}");
    }
}

#[test]
fn start_runs_poststart_hooks_and_leaves_no_exec_fifo() {
    for rt in RUNTIMES {
        for hooked in [false, true] {
            let mut b = Bundle::new(&["sh", "-c", "echo started"], false);
            let marker = b.path().join("poststart-ran");
            if hooked {
                // A poststart hook runs on the host after the start, with the state on stdin.
                let path = b.path().join("config.json");
                let mut spec: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                spec["hooks"] = json!({"poststart": [{
                    "path": "/bin/sh",
                    "args": ["sh", "-c", format!("cat > {}", marker.display())]
                }]});
                std::fs::write(&path, spec.to_string()).unwrap();
            }
            b.start_shim();
            let mut c = b.connect();
            let out = out_file(&b, "out");
            let stdio = api::Stdio {
                stdout: out.clone(),
                ..Default::default()
            };
            create(&b, &mut c, stdio, rt);
            start(&mut c, "");
            assert_eq!(c.wait("").exit_status, 0, "{rt:?} hooked={hooked}");
            assert_eq!(std::fs::read_to_string(&out).unwrap(), "started\n");
            // The start took the init's byte from the exec FIFO and removed it.
            let fifo = b.path().join("runtime").join(&b.id).join("exec.fifo");
            assert!(!fifo.exists(), "{rt:?} hooked={hooked}: exec FIFO left");
            if hooked {
                let state = std::fs::read_to_string(&marker)
                    .unwrap_or_else(|e| panic!("{rt:?}: the poststart hook did not run: {e}"));
                assert!(state.contains(&b.id), "{state}");
            } else {
                assert!(!marker.exists());
            }
            // A second start is refused.
            let e = c
                .call(api::request::Body::Start(api::ProcessRef::default()))
                .unwrap_err();
            assert_eq!(e.kind, "failed precondition", "{rt:?}");
        }
    }
}

/// Detaches a mount when the test ends, however it ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn an_overlay_rootfs_gets_the_mount_points_the_image_lacks_in_its_upper_layer() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for rt in RUNTIMES {
        let mut b = Bundle::new(
            &["sh", "-c", "cat /proc/self/stat > /dev/null && echo ok"],
            false,
        );
        // The busybox tree becomes the image's one layer; the shim mounts an overlay of it.
        let (lower, upper, work) = (
            b.path().join("lower"),
            b.path().join("upper"),
            b.path().join("work"),
        );
        std::fs::rename(b.path().join("rootfs"), &lower).unwrap();
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(&work).unwrap();
        let _unmount = Unmount(b.path().join("rootfs"));
        b.start_shim();
        let mut c = b.connect();
        let out = out_file(&b, "out");
        let created = c.ok(api::request::Body::Create(api::CreateRequest {
            rootfs: vec![api::Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "index=off".into(),
                    format!("workdir={}", work.display()),
                    format!("upperdir={}", upper.display()),
                    format!("lowerdir={}", lower.display()),
                ],
            }],
            stdio: Some(api::Stdio {
                stdout: out.clone(),
                ..Default::default()
            }),
            runtime_binary: rt.into(),
            // berthd names the spec's top-level mount targets; "early" (no mount of the
            // spec's) shows that the shim made what it was given, and only that.
            mount_points: vec![
                "proc".into(),
                "dev".into(),
                "early".into(),
                "../escape".into(),
            ],
        }));
        assert!(
            matches!(created, Some(api::response::Body::Pid(_))),
            "{rt:?}: {created:?}"
        );
        // Made in the upper layer as the init makes mount points: directories, 0755, owned by
        // root; /dev/pts lives in the /dev tmpfs, not on disk.
        for name in ["proc", "dev", "early"] {
            let m = std::fs::symlink_metadata(upper.join(name))
                .unwrap_or_else(|e| panic!("{rt:?}: {name} not in the upper layer: {e}"));
            assert!(m.is_dir(), "{rt:?}: {name}");
            assert_eq!(m.permissions().mode() & 0o7777, 0o755, "{rt:?}: {name}");
            assert_eq!((m.uid(), m.gid()), (0, 0), "{rt:?}: {name}");
        }
        assert!(!upper.join("dev/pts").exists(), "{rt:?}");
        assert!(
            !lower.join("proc").exists(),
            "{rt:?}: the image layer was written to"
        );
        start(&mut c, "");
        assert_eq!(c.wait("").exit_status, 0, "{rt:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ok\n", "{rt:?}");
        c.ok(api::request::Body::Delete(api::ProcessRef::default()));
    }
}
