#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OCI options berth-runc implements beyond the common set, checked from inside real
//! containers: recursive mount attributes, id-mapped mounts, time namespaces, personality,
//! scheduler and I/O priority, seccomp user notification with an agent, and Intel RDT on a host
//! without resctrl.
//!
//! These run **berth-runc only**: Debian's runc 1.1.5 on this machine predates all of them
//! (runc 1.2 added them), so there is no reference to compare with. Each test builds its own
//! bundle and runtime root and runs in parallel with the rest; a [`Runtime`] force-deletes its
//! containers and their cgroups on drop, also when a test fails.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use berth_integration::bundle::{
    Bundle, Runtime, RuntimeKind, cgroup_dirs, receive_seccomp_listener,
};
use serde_json::{Value, json};

const EROFS: i64 = libc::EROFS as i64;
const EXDEV: i64 = libc::EXDEV as i64;

fn berth() -> Runtime {
    Runtime::new(RuntimeKind::BerthRunc)
}

/// Runs a shell script of probe calls to completion; one JSON value per call.
#[track_caller]
fn run_script(rt: &Runtime, bundle: &mut Bundle, script: &str) -> Vec<Value> {
    bundle.args(&["/bin/sh", "-c", script]);
    let out = rt.run(bundle.id(), bundle);
    out.ok();
    out.json_values()
}

fn mount_options(status: &Value, point: &str) -> Vec<String> {
    let m = status["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["mount_point"] == point)
        .unwrap_or_else(|| panic!("no mount on {point}: {:#}", status["mounts"]));
    m["options"]
        .as_str()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A host directory a container in a user namespace can traverse.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-opts-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn rro_makes_submounts_of_a_recursive_bind_read_only() {
    // The host's /dev has submounts (/dev/shm, /dev/pts): bind it recursively twice, once with
    // plain `ro` (which only reaches the top mount) and once with `rro`.
    assert!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/dev/shm")),
        "this test needs /dev/shm to be a mount on the host"
    );
    let rt = berth();
    let mut b = Bundle::new("rro");
    b.bind_mount(Path::new("/dev"), "/plain", &["rbind", "ro"]);
    b.bind_mount(Path::new("/dev"), "/rec", &["rbind", "rro", "rnosuid"]);
    let name = format!("berth-rro-{}", std::process::id());
    let target = format!("/rec/shm/{name}");
    let out = run_script(
        &rt,
        &mut b,
        &format!("/probe status; /probe write {target}"),
    );
    let _ = std::fs::remove_file(Path::new("/dev/shm").join(&name));
    let status = &out[0];
    assert!(mount_options(status, "/plain").contains(&"ro".to_owned()));
    assert!(
        mount_options(status, "/plain/shm").contains(&"rw".to_owned()),
        "plain ro must not reach the submount"
    );
    let rec = mount_options(status, "/rec/shm");
    assert!(rec.contains(&"ro".to_owned()), "{rec:?}");
    assert!(rec.contains(&"nosuid".to_owned()), "{rec:?}");
    assert!(mount_options(status, "/rec/pts").contains(&"ro".to_owned()));
    assert_eq!(out[1]["errno"], EROFS, "{:#}", out[1]);
}

#[test]
fn idmap_mount_shows_files_as_the_containers_own_ids() {
    // /tmp is on this machine's root filesystem, ext4, which supports id-mapped mounts (as do
    // tmpfs and overlayfs on this kernel).
    let src = shared_dir();
    std::fs::write(src.path().join("root-owned"), "r").unwrap();
    std::fs::write(src.path().join("user-owned"), "u").unwrap();
    std::os::unix::fs::chown(src.path().join("user-owned"), Some(1000), Some(1000)).unwrap();
    let rt = berth();
    let mut b = Bundle::new("idmap");
    b.user_namespace(100_000, 65_536);
    // The container's root cannot create mount points in a rootfs owned by host root.
    for dir in ["plain", "mapped"] {
        std::fs::create_dir(b.rootfs().join(dir)).unwrap();
    }
    b.bind_mount(src.path(), "/plain", &["bind"]);
    b.bind_mount(src.path(), "/mapped", &["bind", "idmap"]);
    let out = run_script(
        &rt,
        &mut b,
        "/probe stat /plain/root-owned; /probe stat /mapped/root-owned; \
         /probe stat /mapped/user-owned",
    );
    // Without the id mapping, host root is unmapped in the container: the overflow id.
    assert_eq!(out[0]["uid"], 65534, "{:#}", out[0]);
    // Through the container's own mapping (0 → 100000), disk ids read as container ids.
    assert_eq!((&out[1]["uid"], &out[1]["gid"]), (&json!(0), &json!(0)));
    assert_eq!(
        (&out[2]["uid"], &out[2]["gid"]),
        (&json!(1000), &json!(1000))
    );
}

#[test]
fn idmap_mount_with_its_own_mappings() {
    let src = shared_dir();
    std::fs::write(src.path().join("root-owned"), "r").unwrap();
    let rt = berth();
    let mut b = Bundle::new("idmap-own");
    b.user_namespace(100_000, 65_536);
    std::fs::create_dir(b.rootfs().join("mapped")).unwrap();
    b.bind_mount(src.path(), "/mapped", &["rbind", "ridmap"]);
    // Disk id 0 → host id 101000, which is 1000 in the container.
    let maps = json!([{"containerID": 0, "hostID": 101_000, "size": 1}]);
    let mounts = b.config_mut()["mounts"].as_array_mut().unwrap();
    let m = mounts.last_mut().unwrap();
    m["uidMappings"] = maps.clone();
    m["gidMappings"] = maps;
    let out = run_script(&rt, &mut b, "/probe stat /mapped/root-owned");
    assert_eq!(
        (&out[0]["uid"], &out[0]["gid"]),
        (&json!(1000), &json!(1000)),
        "{:#}",
        out[0]
    );
}

#[test]
fn idmap_on_a_filesystem_without_support_fails_naming_the_step() {
    // sysfs has no id-mapped mount support: the parent's mount_setattr says EINVAL.
    let rt = berth();
    let mut b = Bundle::new("idmap-sysfs");
    b.user_namespace(100_000, 65_536);
    std::fs::create_dir(b.rootfs().join("kernel")).unwrap();
    b.bind_mount(Path::new("/sys/kernel"), "/kernel", &["bind", "idmap"]);
    let err = rt.run(b.id(), &b).fails().to_owned();
    assert!(
        err.contains("id-map the tree of /sys/kernel") && err.contains("EINVAL"),
        "{err}"
    );
    assert!(!rt.try_state(b.id()).success(), "no container is left");
}

fn host_clocks() -> (i64, i64) {
    let secs = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is writable for the duration of the call.
        assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
        ts.tv_sec
    };
    (secs(libc::CLOCK_MONOTONIC), secs(libc::CLOCK_BOOTTIME))
}

/// Asserts that `inside` (the probe's `clocks`) is the host clock plus the offsets, given host
/// readings taken before and after.
#[track_caller]
fn assert_offset(inside: &Value, before: (i64, i64), after: (i64, i64), offsets: (i64, i64)) {
    let mono = inside["monotonic"].as_i64().unwrap();
    let boot = inside["boottime"].as_i64().unwrap();
    assert!(
        (before.0 + offsets.0..=after.0 + offsets.0).contains(&mono),
        "monotonic {mono} not host {before:?}..{after:?} + {}",
        offsets.0
    );
    assert!(
        (before.1 + offsets.1..=after.1 + offsets.1).contains(&boot),
        "boottime {boot} not host {before:?}..{after:?} + {}",
        offsets.1
    );
}

#[test]
fn time_namespace_offsets_clocks_in_the_container_and_its_execs() {
    const MONO: i64 = 10 * 86_400;
    const BOOT: i64 = 20 * 86_400;
    let rt = berth();
    let mut b = Bundle::new("timens");
    b.namespace("time", None);
    b.config_mut()["linux"]["timeOffsets"] = json!({
        "monotonic": {"secs": MONO, "nanosecs": 0},
        "boottime": {"secs": BOOT, "nanosecs": 0},
    });
    b.args(&["/bin/sh", "-c", "/probe clocks; exec /probe sleep 60"]);
    let id = b.id().to_owned();
    let start = host_clocks();
    rt.create(&id, &b).ok();
    rt.start(&id).ok();
    let exec = rt.exec(&id, &["/probe", "clocks"]).ok_json();
    let after = host_clocks();
    // An exec'd process joins the init's time namespace.
    assert_offset(&exec, start, after, (MONO, BOOT));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();

    // A second container joins the first one's time namespace by path: same offsets.
    let mut joined = Bundle::new("timens-join");
    joined.namespace("time", Some(Path::new(&format!("/proc/{pid}/ns/time"))));
    joined.probe(&["clocks"]);
    let before = host_clocks();
    let inside = rt.run(joined.id(), &joined).ok_json();
    let after = host_clocks();
    assert_offset(&inside, before, after, (MONO, BOOT));

    // The init itself printed its clocks first thing.
    rt.kill(&id, "KILL").ok();
    rt.wait_status(&id, "stopped", Duration::from_secs(10));
    let (stdout, _) = rt.container_output(&id);
    let first: Value = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .next()
        .unwrap_or_else(|| panic!("no output from the init: {stdout:?}"))
        .unwrap();
    assert_offset(&first, start, after, (MONO, BOOT));
}

#[test]
fn time_offsets_without_a_time_namespace_are_refused() {
    let rt = berth();
    let mut b = Bundle::new("timens-bad");
    b.config_mut()["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 5}});
    let err = rt.run(b.id(), &b).fails().to_owned();
    assert!(err.contains("time namespace"), "{err}");
}

#[test]
fn personality_linux32_makes_uname_report_i686() {
    assert_eq!(
        std::env::consts::ARCH,
        "x86_64",
        "the test expects an x86_64 host"
    );
    let rt = berth();
    let mut b = Bundle::new("persona");
    b.config_mut()["linux"]["personality"] = json!({"domain": "LINUX32"});
    b.args(&["/bin/sh", "-c", "uname -m; /probe syscall personality"]);
    let out = rt.run(b.id(), &b);
    let stdout = out.ok();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("i686"), "{stdout}");
    let persona: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(persona["ret"], 8, "PER_LINUX32: {persona:#}");

    // An exec'd process is given the container's persona too (berth-runc and runc exec run
    // it from the host's own).
    let mut running = Bundle::new("persona-exec");
    running.config_mut()["linux"]["personality"] = json!({"domain": "LINUX32"});
    running.args(&["/probe", "sleep", "60"]);
    let id = running.id().to_owned();
    rt.create(&id, &running).ok();
    rt.start(&id).ok();
    let exec = rt.exec(&id, &["/bin/uname", "-m"]).ok().trim().to_owned();
    rt.kill(&id, "KILL").ok();
    rt.delete_force(&id).ok();
    assert_eq!(exec, "i686");

    let mut plain = Bundle::new("persona-linux");
    plain.config_mut()["linux"]["personality"] = json!({"domain": "LINUX"});
    plain.args(&["/bin/sh", "-c", "uname -m"]);
    assert_eq!(rt.run(plain.id(), &plain).ok().trim(), "x86_64");
}

#[test]
fn scheduler_and_io_priority_apply_to_the_process() {
    let rt = berth();
    let mut b = Bundle::new("sched");
    b.config_mut()["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
    b.config_mut()["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    let out = run_script(
        &rt,
        &mut b,
        "/probe syscall sched_getscheduler; /probe syscall getpriority; \
         /probe syscall ioprio_get",
    );
    assert_eq!(out[0]["ret"], libc::SCHED_BATCH, "{:#}", out[0]);
    assert_eq!(
        out[1]["ret"],
        20 - 7,
        "raw getpriority is 20 - nice: {:#}",
        out[1]
    );
    assert_eq!(
        out[2]["ret"],
        2 << 13 | 6,
        "IOPRIO_CLASS_BE level 6: {:#}",
        out[2]
    );

    let mut idle = Bundle::new("sched-idle");
    idle.config_mut()["process"]["scheduler"] = json!({"policy": "SCHED_IDLE"});
    idle.config_mut()["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE"});
    let out = run_script(
        &rt,
        &mut idle,
        "/probe syscall sched_getscheduler; /probe syscall ioprio_get",
    );
    assert_eq!(out[0]["ret"], libc::SCHED_IDLE, "{:#}", out[0]);
    assert_eq!(out[1]["ret"], 3 << 13, "IOPRIO_CLASS_IDLE: {:#}", out[1]);
}

/// Answers notifications on `fd`: the first with EXDEV, every later one with "continue" (the
/// syscall runs for real). Stops when the container is gone (the listener reports POLLHUP) or
/// after 30 s without a notification. Returns how many it answered.
fn seccomp_agent(fd: OwnedFd) -> usize {
    let mut answered = 0;
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 30_000) };
        if n <= 0 || pfd.revents & libc::POLLIN == 0 {
            return answered;
        }
        // SAFETY: the kernel wants a zeroed struct; plain data.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl fills `req`, which is live and of the size the request encodes.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            // ENOENT: the notifying thread went away; go on waiting.
            continue;
        }
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        if answered == 0 {
            resp.error = -libc::EXDEV;
        } else {
            resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
        }
        // SAFETY: `resp` is live and of the size the request encodes.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
        answered += 1;
    }
}

#[test]
fn seccomp_notify_hands_the_listener_to_the_agent() {
    let rt = berth();
    let dir = shared_dir();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut b = Bundle::new("notify");
    b.mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev"]);
    b.seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": socket,
        "listenerMetadata": "hello agent",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }));
    let agent = std::thread::spawn(move || {
        let (fd, state) = receive_seccomp_listener(&listener).unwrap();
        (state, seccomp_agent(fd))
    });
    let id = b.id().to_owned();
    let out = run_script(
        &rt,
        &mut b,
        "/probe syscall mkdir /tmp/first; /probe syscall mkdir /tmp/second; /probe ls /tmp",
    );
    let (state, answered) = agent.join().unwrap();
    // The agent's answers, seen from inside: an errno of its choosing, then the real call.
    assert_eq!(out[0]["errno"], EXDEV, "{:#}", out[0]);
    assert_eq!(out[1]["errno"], 0, "{:#}", out[1]);
    let entries = out[2].to_string();
    assert!(
        entries.contains("second") && !entries.contains("first"),
        "{entries}"
    );
    assert_eq!(answered, 2);
    // The container process state, as the runtime spec defines it.
    assert_eq!(state["fds"], json!(["seccompFd"]), "{state:#}");
    assert_eq!(state["metadata"], "hello agent");
    assert!(state["pid"].as_i64().unwrap() > 1);
    assert_eq!(state["state"]["id"], id.as_str());
    assert_eq!(state["state"]["status"], "creating");
    assert_eq!(state["state"]["pid"], state["pid"]);
    assert!(state["ociVersion"].as_str().unwrap().starts_with("1."));
}

#[test]
fn seccomp_notify_without_a_listener_path_is_refused() {
    let rt = berth();
    let mut b = Bundle::new("notify-bad");
    b.seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }));
    let err = rt.run(b.id(), &b).fails().to_owned();
    assert!(err.contains("listenerPath"), "{err}");
}

#[test]
fn intel_rdt_without_resctrl_fails_clearly_and_leaves_nothing() {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - resctrl "));
    assert!(
        !mounted,
        "this test checks the host without resctrl; this host has it mounted"
    );
    let rt = berth();
    let mut b = Bundle::new("rdt");
    b.config_mut()["linux"]["intelRdt"] = json!({"l3CacheSchema": "L3:0=f"});
    let err = rt.run(b.id(), &b).fails().to_owned();
    assert!(
        err.contains("resctrl") && err.contains("/sys/fs/resctrl"),
        "{err}"
    );
    assert!(!rt.try_state(b.id()).success(), "no container is left");
    assert!(
        cgroup_dirs(&b.cgroups_path_value().unwrap()).is_empty(),
        "no cgroup is left"
    );
}

#[test]
fn features_report_the_new_options() {
    let rt = berth();
    let f = rt.command(&["features"]).ok_json();
    let opts: Vec<&str> = f["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for o in ["rro", "rnosuid", "rnoatime", "idmap", "ridmap"] {
        assert!(opts.contains(&o), "{o} in {opts:?}");
    }
    assert!(
        f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("time"))
    );
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    assert_eq!(f["linux"]["intelRdt"]["enabled"], true);
}

#[test]
fn seccomp_notify_listener_of_an_exec_reaches_the_agent_too() {
    let rt = berth();
    let dir = shared_dir();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut b = Bundle::new("notify-exec");
    b.seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": socket,
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }));
    b.probe(&["sleep", "60"]);
    let agent = std::thread::spawn(move || {
        // The init's listener first (kept open, it never notifies), then the exec'd process's.
        let (_init_fd, init_state) = receive_seccomp_listener(&listener).unwrap();
        let (fd, exec_state) = receive_seccomp_listener(&listener).unwrap();
        (init_state, exec_state, seccomp_agent(fd))
    });
    let id = b.id().to_owned();
    rt.create(&id, &b).ok();
    rt.start(&id).ok();
    let out = rt
        .exec(&id, &["/probe", "syscall", "mkdir", "/probe-dir"])
        .ok_json();
    let (init_state, exec_state, answered) = agent.join().unwrap();
    assert_eq!(
        out["errno"], EXDEV,
        "the agent's answer reaches the exec: {out:#}"
    );
    assert_eq!(answered, 1);
    let init_pid = init_state["pid"].as_i64().unwrap();
    assert_eq!(exec_state["state"]["id"], id.as_str());
    assert_eq!(exec_state["state"]["status"], "running");
    assert_eq!(exec_state["state"]["pid"], init_pid);
    assert_ne!(
        exec_state["pid"].as_i64().unwrap(),
        init_pid,
        "{exec_state:#}"
    );
    rt.kill(&id, "KILL").ok();
}
