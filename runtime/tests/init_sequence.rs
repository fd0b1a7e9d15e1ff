//! The container init sequence run against the recording Syscall: order and arguments of every
//! step, without touching the host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_core::{ErrorKind, Result};
use berth_runtime::init::{self, Handshake, InitOptions};
use berth_runtime::rootfs::{self, CgroupView, MountSources};
use berth_runtime::spec::Plan;
use berth_runtime::syscall::{Call, FileKind, RecordingSyscall};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::SFlag;
use serde_json::json;

/// A handshake that leaves markers in the syscall record.
struct Fake<'a> {
    sys: &'a RecordingSyscall,
}

impl Handshake for Fake<'_> {
    fn create_container_hooks(&mut self) -> Result<()> {
        self.sys.mark("createContainer hooks");
        Ok(())
    }
    fn console(&mut self) -> Result<()> {
        self.sys.mark("console");
        Ok(())
    }
    fn ready(&mut self) -> Result<()> {
        self.sys.mark("ready");
        Ok(())
    }
    fn wait_for_start(&mut self) -> Result<()> {
        self.sys.mark("wait for start");
        Ok(())
    }
    fn start_container_hooks(&mut self) -> Result<()> {
        self.sys.mark("startContainer hooks");
        Ok(())
    }
    fn seccomp_listener(&mut self, _listener: OwnedFd) -> Result<()> {
        self.sys.mark("seccomp listener to the parent");
        Ok(())
    }
}

/// runc's default spec (`runc spec`), with a few edits from `edit`.
fn bundle(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, Plan) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 10]},
            "args": ["sh", "-c", "echo hi"],
            "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
            "cwd": "/work",
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "inheritable": ["CAP_KILL"],
                "ambient": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/data", "type": "bind", "source": "/var/tmp",
             "options": ["rbind", "ro", "rprivate"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/missing"],
            "readonlyPaths": ["/proc/sys"],
            "sysctl": {"net.ipv4.ip_forward": "1"},
            "seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
        }
    });
    edit(&mut spec);
    std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
    let spec = berth_runtime::spec::load(dir.path()).unwrap();
    let plan = Plan::new(spec, dir.path()).unwrap();
    (dir, plan)
}

fn run(sys: &RecordingSyscall, plan: &Plan, cgroups: &[CgroupView]) -> berth_core::Error {
    let mut hs = Fake { sys };
    let sources = MountSources::default();
    match init::container(
        sys,
        plan,
        cgroups,
        &sources,
        InitOptions::default(),
        &mut hs,
    ) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn position(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("call not found in {calls:#?}"))
}

fn mark(calls: &[Call], label: &str) -> usize {
    position(calls, |c| *c == Call::Mark(label.into()))
}

fn mount_at(calls: &[Call], target: &Path) -> Vec<(Option<PathBuf>, Option<String>, MsFlags)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Mount {
                source,
                target: t,
                fstype,
                flags,
                ..
            } if t == target => Some((source.clone(), fstype.clone(), *flags)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_whole_sequence_runs_in_order() {
    let (_dir, plan) = bundle(|_| {});
    let sys = RecordingSyscall::new();
    sys.set_kind("/proc/kcore", FileKind::File);
    sys.set_missing("/proc/missing");
    let err = run(&sys, &plan, &[]);
    // The recorder's execve "fails" with ENOSYS: that is the end of the sequence.
    assert!(err.to_string().contains("exec /usr/bin/sh"), "{err}");
    let calls = sys.calls();
    let rootfs = plan.rootfs.clone();

    // The new mount namespace is made a slave of the host's before anything is mounted.
    assert_eq!(calls[0], Call::JoinSessionKeyring);
    assert_eq!(
        calls[1],
        Call::Mount {
            source: None,
            target: "/".into(),
            fstype: None,
            flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
            data: None
        }
    );
    assert_eq!(
        mount_at(&calls, &rootfs)[0],
        (
            Some(rootfs.clone()),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC
        )
    );

    // Spec mounts in spec order, each target resolved in the root first.
    let order: Vec<PathBuf> = calls
        .iter()
        .filter_map(|c| match c {
            Call::PrepareTarget(root, dest, _) if *root == rootfs => Some(dest.clone()),
            _ => None,
        })
        .collect();
    let dests: Vec<PathBuf> = ["/proc", "/dev", "/dev/pts", "/sys", "/data"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let firsts: Vec<PathBuf> =
        order
            .iter()
            .filter(|d| dests.contains(d))
            .fold(Vec::new(), |mut v, d| {
                if !v.contains(d) {
                    v.push(d.clone());
                }
                v
            });
    assert_eq!(firsts, dests);
    let devpts = mount_at(&calls, &rootfs.join("dev/pts"));
    assert_eq!(
        devpts[0],
        (
            Some("devpts".into()),
            Some("devpts".into()),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC
        )
    );
    assert!(calls.iter().any(|c| matches!(c,
        Call::Mount { target, data: Some(d), .. }
            if *target == rootfs.join("dev/pts") && d == "newinstance,ptmxmode=0666,mode=0620,gid=5")));
    // A bind mount with options: bind, then remount with them, then propagation.
    let data = mount_at(&calls, &rootfs.join("data"));
    assert_eq!(
        data,
        vec![
            (
                Some("/var/tmp".into()),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC
            ),
            (
                None,
                None,
                MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REMOUNT
            ),
            (None, None, MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        ]
    );

    // /dev is fresh: the default devices with umask 0, then the standard links.
    let nods: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Mknod(..)))
        .collect();
    assert_eq!(nods.len(), 6);
    assert!(nods.contains(&&Call::Mknod(
        rootfs.join("dev/null"),
        SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3)
    )));
    assert!(
        position(&calls, |c| *c == Call::Umask(0))
            < position(&calls, |c| matches!(c, Call::Mknod(..)))
    );
    assert!(calls.contains(&Call::Symlink("pts/ptmx".into(), rootfs.join("dev/ptmx"))));
    assert!(calls.contains(&Call::Symlink(
        "/proc/self/fd".into(),
        rootfs.join("dev/fd")
    )));

    // Hooks, then the pivot with the old root detached.
    let hooks = mark(&calls, "createContainer hooks");
    let pivot = position(&calls, |c| matches!(c, Call::PivotRoot(..)));
    assert!(hooks < pivot);
    assert!(position(&calls, |c| matches!(c, Call::Mknod(..))) < hooks);
    assert_eq!(calls[pivot - 2], Call::Chdir(rootfs.clone()));
    assert_eq!(calls[pivot - 1], Call::OpenDir("/".into()));
    assert_eq!(calls[pivot], Call::PivotRoot(".".into(), ".".into()));
    // Back to the old root (stacked on the new one) before making it a slave and detaching it.
    assert_eq!(calls[pivot + 1], Call::Fchdir);
    assert!(matches!(&calls[pivot + 2],
        Call::Mount { target, flags, .. } if target == Path::new(".") && *flags == MsFlags::MS_SLAVE | MsFlags::MS_REC));
    assert_eq!(
        calls[pivot + 3],
        Call::Umount(".".into(), MntFlags::MNT_DETACH)
    );
    assert_eq!(calls[pivot + 4], Call::Chdir("/".into()));

    // After the pivot: read-only root, read-only paths, masked paths.
    let after = &calls[pivot..];
    let ro_root = position(after, |c| {
        matches!(c,
        Call::Mount { target, flags, .. } if target == Path::new("/") && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))
    });
    let ro_sys = position(after, |c| {
        matches!(c,
        Call::Mount { target, flags, .. } if target == Path::new("/proc/sys") && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))
    });
    assert!(ro_root < ro_sys);
    assert_eq!(
        mount_at(after, Path::new("/proc/kcore")),
        vec![(Some("/dev/null".into()), None, MsFlags::MS_BIND)]
    );
    assert_eq!(
        mount_at(after, Path::new("/proc/acpi")),
        vec![(
            Some("tmpfs".into()),
            Some("tmpfs".into()),
            MsFlags::MS_RDONLY
        )]
    );
    assert!(mount_at(after, Path::new("/proc/missing")).is_empty());
    assert!(calls.contains(&Call::Sethostname("box".into())));
    assert!(calls.contains(&Call::WriteFile(
        "/proc/sys/net/ipv4/ip_forward".into(),
        b"1".to_vec()
    )));

    // Identity: limits and no_new_privs before ready; user and capabilities after; seccomp
    // (with no_new_privs) last before exec.
    let ready = mark(&calls, "ready");
    let rlimit = position(
        &calls,
        |c| matches!(c, Call::Setrlimit(l) if l.name == "RLIMIT_NOFILE" && l.soft == 512),
    );
    let nnp = position(&calls, |c| *c == Call::SetNoNewPrivs);
    assert!(rlimit < nnp && nnp < ready);
    let tail: Vec<Call> = calls[ready + 1..].to_vec();
    let kill = 1u64 << 5;
    let bind = 1u64 << 10;
    assert_eq!(tail[0], Call::DropBounding(kill | bind));
    assert_eq!(tail[1], Call::SetKeepCaps(true));
    assert_eq!(tail[2], Call::Setgroups(vec![5, 10]));
    assert_eq!(tail[3], Call::Setresgid(1000));
    assert_eq!(tail[4], Call::Setresuid(1000));
    assert_eq!(tail[5], Call::SetKeepCaps(false));
    match &tail[6] {
        Call::SetCapabilities(s) => {
            assert_eq!(s.effective, kill);
            assert_eq!(s.permitted, kill | bind);
            assert_eq!(s.inheritable, kill);
            // Not inheritable, so not raisable: left out of the ambient set, as runc does.
            assert_eq!(s.ambient, kill);
        }
        other => panic!("expected capabilities, got {other:?}"),
    }
    assert_eq!(tail[7], Call::Chdir("/work".into()));
    assert_eq!(tail[8], Call::Umask(0o022));
    assert_eq!(tail[9], Call::Mark("wait for start".into()));
    assert_eq!(tail[10], Call::Mark("startContainer hooks".into()));
    assert_eq!(tail[11], Call::CloseOnExecFrom(3));
    assert!(matches!(tail[12], Call::LoadSeccomp(n) if n > 0));
    match &tail[13] {
        Call::Execve(path, args, env) => {
            assert_eq!(path, "/usr/bin/sh");
            assert_eq!(args, &["sh", "-c", "echo hi"]);
            assert_eq!(env, &["PATH=/usr/bin:/bin", "TERM=xterm", "HOME=/"]);
        }
        other => panic!("expected execve, got {other:?}"),
    }
    assert_eq!(tail.len(), 14);
}

#[test]
fn home_comes_from_the_containers_passwd() {
    let (_dir, plan) = bundle(|_| {});
    let sys = RecordingSyscall::new();
    sys.set_file(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    );
    run(&sys, &plan, &[]);
    let env = sys
        .calls()
        .into_iter()
        .find_map(|c| match c {
            Call::Execve(_, _, env) => Some(env),
            _ => None,
        })
        .unwrap();
    assert!(env.contains(&"HOME=/home/alice".to_owned()), "{env:?}");
}

#[test]
fn without_no_new_privs_seccomp_is_loaded_while_still_privileged() {
    let (_dir, plan) = bundle(|s| s["process"]["noNewPrivileges"] = json!(false));
    let sys = RecordingSyscall::new();
    run(&sys, &plan, &[]);
    let calls = sys.calls();
    let seccomp = position(&calls, |c| matches!(c, Call::LoadSeccomp(_)));
    let setuid = position(&calls, |c| matches!(c, Call::Setresuid(_)));
    let drop = position(&calls, |c| matches!(c, Call::DropBounding(_)));
    assert!(seccomp < drop && drop < setuid);
    assert!(!calls.contains(&Call::SetNoNewPrivs));
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::LoadSeccomp(_)))
            .count(),
        1
    );
}

#[test]
fn a_failing_mount_names_the_step_the_path_and_the_errno() {
    let (_dir, plan) = bundle(|_| {});
    let sys = RecordingSyscall::new();
    // Only the first mount (propagation of /) and the rootfs bind go through before failing
    // every mount: make the whole kind fail and look at the first message.
    sys.fail("Mount", Errno::EPERM);
    let err = run(&sys, &plan, &[]);
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let msg = err.to_string();
    assert!(msg.contains("EPERM"), "{msg}");
    assert!(msg.contains("propagation of /"), "{msg}");
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::Execve(..))));
}

#[test]
fn a_missing_program_fails_before_ready() {
    let (_dir, plan) = bundle(|s| s["process"]["args"] = json!(["nope"]));
    let sys = RecordingSyscall::new();
    for dir in ["/usr/bin/nope", "/bin/nope"] {
        sys.set_missing(dir);
    }
    let err = run(&sys, &plan, &[]);
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("executable file not found"),
        "{err}"
    );
    assert!(!sys.calls().contains(&Call::Mark("ready".into())));
}

#[test]
fn an_rlimit_the_host_refuses_says_why() {
    let (_dir, plan) = bundle(|_| {});
    let sys = RecordingSyscall::new();
    sys.fail("Setrlimit", Errno::EPERM);
    let err = run(&sys, &plan, &[]);
    let msg = err.to_string();
    assert!(
        msg.contains("RLIMIT_NOFILE") && msg.contains("CAP_SYS_RESOURCE"),
        "{msg}"
    );
}

#[test]
fn in_a_user_namespace_devices_are_bound_not_made() {
    let (_dir, plan) = bundle(|s| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let sys = RecordingSyscall::new();
    run(&sys, &plan, &[]);
    let calls = sys.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::Mknod(..))));
    assert!(mount_at(&calls, &plan.rootfs.join("dev/null")).contains(&(
        Some("/dev/null".into()),
        None,
        MsFlags::MS_BIND
    )));
}

#[test]
fn cgroup_mounts_on_v1_bind_each_hierarchy_read_only() {
    let (_dir, plan) = bundle(|s| {
        s["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
        }));
    });
    let views = vec![
        CgroupView::Hierarchy {
            name: "cpu,cpuacct".into(),
            host: "/sys/fs/cgroup/cpu,cpuacct/berth/x".into(),
        },
        CgroupView::Link {
            name: "cpu".into(),
            target: "cpu,cpuacct".into(),
        },
    ];
    let sys = RecordingSyscall::new();
    run(&sys, &plan, &views);
    let calls = sys.calls();
    let base = plan.rootfs.join("sys/fs/cgroup");
    let at_base = mount_at(&calls, &base);
    assert_eq!(at_base[0].1.as_deref(), Some("tmpfs"));
    // The tmpfs holding the binds stays writable, as with runc; the binds are read-only.
    assert_eq!(at_base.len(), 1);
    let hier = mount_at(&calls, &base.join("cpu,cpuacct"));
    assert_eq!(
        hier[0],
        (
            Some("/sys/fs/cgroup/cpu,cpuacct/berth/x".into()),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC
        )
    );
    assert!(hier[1].2.contains(MsFlags::MS_RDONLY));
    assert!(calls.contains(&Call::Symlink("cpu,cpuacct".into(), base.join("cpu"))));
}

#[test]
fn no_pivot_moves_and_chroots() {
    let (_dir, plan) = bundle(|_| {});
    let sys = RecordingSyscall::new();
    let mut hs = Fake { sys: &sys };
    let opts = InitOptions {
        no_pivot: true,
        no_new_keyring: true,
    };
    let _ = init::container(&sys, &plan, &[], &MountSources::default(), opts, &mut hs);
    let calls = sys.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::PivotRoot(..))));
    assert!(!calls.contains(&Call::JoinSessionKeyring));
    let mv = position(
        &calls,
        |c| matches!(c, Call::Mount { flags, .. } if *flags == MsFlags::MS_MOVE),
    );
    assert_eq!(calls[mv + 1], Call::Chroot(".".into()));
}

#[test]
fn bad_specs_fail_validation_before_any_process() {
    for (edit, needle) in [
        (
            json!({"linux": {"namespaces": [{"type": "pid"}]}}),
            "mount namespace",
        ),
        (json!({"process": {"args": []}}), "args"),
        (json!({"process": {"cwd": "relative"}}), "cwd"),
        (
            json!({"linux": {"sysctl": {"kernel.panic": "1"}}}),
            "not namespaced",
        ),
        (json!({"ociVersion": "2.0.0"}), "ociVersion"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "mount"}]}
        });
        merge(&mut spec, &edit);
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        let spec = berth_runtime::spec::load(dir.path()).unwrap();
        let err = Plan::new(spec, dir.path()).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

#[test]
fn recursive_attributes_are_set_on_the_mount_after_it_is_made() {
    let (_dir, plan) = bundle(|s| {
        s["mounts"][4]["options"] = json!(["rbind", "rro", "rnosuid", "rnoatime", "rprivate"]);
    });
    let sys = RecordingSyscall::new();
    run(&sys, &plan, &[]);
    let calls = sys.calls();
    let data = plan.rootfs.join("data");
    let bind = position(&calls, |c| {
        matches!(c, Call::Mount { source: Some(s), target, .. }
            if *s == Path::new("/var/tmp") && *target == data)
    });
    let setattr = position(&calls, |c| matches!(c, Call::MountSetattr { .. }));
    let pivot = position(&calls, |c| matches!(c, Call::PivotRoot(..)));
    assert!(bind < setattr && setattr < pivot);
    assert_eq!(
        calls[setattr],
        Call::MountSetattr {
            target: data,
            set: 0x1 | 0x2 | 0x10,
            clear: 0x70,
            recursive: true
        }
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::MountSetattr { .. }))
            .count(),
        1
    );
}

fn with_userns(s: &mut serde_json::Value) {
    let ns = s["linux"]["namespaces"].as_array_mut().unwrap();
    ns.push(json!({"type": "user"}));
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    s["linux"]["uidMappings"] = map.clone();
    s["linux"]["gidMappings"] = map;
}

#[test]
fn idmapped_mounts_are_made_by_the_parent_and_moved_into_place_by_init() {
    let (_dir, plan) = bundle(|s| {
        with_userns(s);
        s["mounts"][4]["options"] = json!(["rbind", "idmap", "ro"]);
        let own = json!([{"containerID": 0, "hostID": 101000, "size": 1}]);
        s["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/own", "type": "bind", "source": "/srv",
            "options": ["bind", "ridmap"], "uidMappings": own, "gidMappings": own,
        }));
    });
    // The parent's part: open_tree + MOUNT_ATTR_IDMAP, with the container's user namespace for
    // /data and a namespace of the mount's own mappings for /own.
    let parent = RecordingSyscall::new();
    let userns = std::fs::File::open("/proc/self/ns/user").unwrap();
    let sources = rootfs::idmapped_sources(&parent, &plan, Some(userns.as_fd())).unwrap();
    let own_maps = plan.mounts[5].idmap.clone().unwrap().mappings.unwrap();
    assert_eq!(
        parent.calls(),
        vec![
            Call::OpenTree("/var/tmp".into(), true),
            Call::IdmapTree(false),
            Call::UsernsWithMappings(own_maps),
            Call::OpenTree("/srv".into(), false),
            Call::IdmapTree(true),
        ]
    );
    assert!(sources.get(4).is_some() && sources.get(5).is_some() && sources.get(0).is_none());

    // The init's part: move_mount instead of a bind, before the pivot.
    let sys = RecordingSyscall::new();
    let mut hs = Fake { sys: &sys };
    let _ = init::container(&sys, &plan, &[], &sources, InitOptions::default(), &mut hs);
    let calls = sys.calls();
    let data = plan.rootfs.join("data");
    let moved = position(&calls, |c| *c == Call::MoveMount(data.clone()));
    let own = position(&calls, |c| *c == Call::MoveMount(plan.rootfs.join("own")));
    let pivot = position(&calls, |c| matches!(c, Call::PivotRoot(..)));
    assert!(moved < own && own < pivot);
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Mount { source: Some(s), .. }
            if *s == Path::new("/var/tmp") || *s == Path::new("/srv"))),
        "an id-mapped mount is not bound from its source: {calls:#?}"
    );
    // The read-only remount of the bind still follows the move.
    assert!(calls[moved..pivot].iter().any(|c| matches!(c,
        Call::Mount { target, flags, .. }
            if *target == data && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))));
}

#[test]
fn a_new_time_namespace_gets_its_offsets_before_the_fork() {
    let sys = RecordingSyscall::new();
    let time = berth_runtime::spec::CLONE_NEWTIME;
    let new = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | time;
    let offsets = "boottime 20 0\nmonotonic 10 5\n";
    let mut map_ids = || {
        sys.mark("parent maps ids");
        Ok(())
    };
    init::namespaces(&sys, &[], new, Some(offsets), &mut map_ids).unwrap();
    assert_eq!(
        sys.calls(),
        vec![
            Call::Unshare(CloneFlags::CLONE_NEWUSER),
            Call::Mark("parent maps ids".into()),
            Call::Setresgid(0),
            Call::Setresuid(0),
            Call::Unshare(CloneFlags::CLONE_NEWNS | time),
            Call::WriteFile(
                "/proc/self/timens_offsets".into(),
                offsets.as_bytes().to_vec()
            ),
        ]
    );

    // Joining one by path: setns, and no offsets (they belong to whoever made it).
    let sys = RecordingSyscall::new();
    let fd = std::fs::File::open("/proc/self/ns/time").unwrap();
    init::namespaces(
        &sys,
        &[(time, fd.as_fd())],
        CloneFlags::CLONE_NEWNS,
        None,
        &mut || Ok(()),
    )
    .unwrap();
    assert_eq!(
        sys.calls(),
        vec![Call::Setns(time), Call::Unshare(CloneFlags::CLONE_NEWNS)]
    );
}

#[test]
fn time_offsets_are_validated_into_timens_text() {
    let (_dir, plan) = bundle(|s| {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        s["linux"]["timeOffsets"] = json!({
            "monotonic": {"secs": 10, "nanosecs": 5},
            "boottime": {"secs": -3}
        });
    });
    assert_eq!(
        plan.time_offsets.as_deref(),
        Some("boottime -3 0\nmonotonic 10 5\n")
    );
}

#[test]
fn personality_scheduler_and_io_priority_are_set_after_the_pivot_and_before_ready() {
    let (_dir, plan) = bundle(|s| {
        s["linux"]["personality"] = json!({"domain": "LINUX32"});
        s["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
        s["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    });
    let sys = RecordingSyscall::new();
    run(&sys, &plan, &[]);
    let calls = sys.calls();
    let pivot = position(&calls, |c| matches!(c, Call::PivotRoot(..)));
    let persona = position(&calls, |c| *c == Call::Personality(8));
    let sched = position(
        &calls,
        |c| matches!(c, Call::SchedSetattr(a) if a.policy == 3 && a.nice == 5),
    );
    let ioprio = position(&calls, |c| *c == Call::IoprioSet(3 << 13));
    let ready = mark(&calls, "ready");
    let seccomp = position(&calls, |c| matches!(c, Call::LoadSeccomp(_)));
    let setuid = position(&calls, |c| matches!(c, Call::Setresuid(_)));
    assert!(pivot < persona && persona < sched && sched < ioprio && ioprio < ready);
    // Still privileged (CAP_SYS_NICE) and outside the seccomp filter.
    assert!(ioprio < setuid && ioprio < seccomp);
}

fn notify_seccomp(s: &mut serde_json::Value) {
    s["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "meta",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    });
}

#[test]
fn a_notify_listener_reaches_the_parent_while_the_channel_is_open() {
    // With no_new_privs the filter usually goes in just before exec, after the channel closed;
    // a notifying filter goes in just before the wait for start instead.
    let (_dir, plan) = bundle(notify_seccomp);
    let listener = plan.process.seccomp_listener.clone().unwrap();
    assert_eq!(listener.path, Path::new("/run/agent.sock"));
    assert_eq!(listener.metadata, "meta");
    let sys = RecordingSyscall::new();
    run(&sys, &plan, &[]);
    let calls = sys.calls();
    let setuid = position(&calls, |c| matches!(c, Call::Setresuid(_)));
    let load = position(&calls, |c| matches!(c, Call::LoadSeccomp(_)));
    let handed = mark(&calls, "seccomp listener to the parent");
    let wait = mark(&calls, "wait for start");
    assert!(setuid < load && load + 1 == handed && handed < wait);
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::LoadSeccomp(_)))
            .count(),
        1
    );

    // Without no_new_privs it is loaded while privileged, and handed over right away.
    let (_dir, plan) = bundle(|s| {
        notify_seccomp(s);
        s["process"]["noNewPrivileges"] = json!(false);
    });
    let sys = RecordingSyscall::new();
    run(&sys, &plan, &[]);
    let calls = sys.calls();
    let ready = mark(&calls, "ready");
    let load = position(&calls, |c| matches!(c, Call::LoadSeccomp(_)));
    let handed = mark(&calls, "seccomp listener to the parent");
    let setuid = position(&calls, |c| matches!(c, Call::Setresuid(_)));
    assert!(ready < load && load + 1 == handed && handed < setuid);
}

#[test]
fn new_options_are_validated_before_any_process() {
    for (edit, needle) in [
        (
            json!({"linux": {"timeOffsets": {"monotonic": {"secs": 1}}}}),
            "needs a new time namespace",
        ),
        (
            json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "time"}],
                             "timeOffsets": {"realtime": {"secs": 1}}}}),
            "\"realtime\"",
        ),
        (
            json!({"linux": {"personality": {"domain": "LINUX", "flags": ["X"]}}}),
            "personality.flags",
        ),
        (
            json!({"process": {"scheduler": {"policy": "SCHED_BATCH", "priority": 5}}}),
            "priority must be 0",
        ),
        (
            json!({"process": {"scheduler": {"policy": "SCHED_FIFO"}}}),
            "must be 1..99",
        ),
        (
            json!({"process": {"scheduler": {"policy": "SCHED_OTHER", "nice": 40}}}),
            "nice 40",
        ),
        (
            json!({"process": {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 9}}}),
            "outside 0..7",
        ),
        (
            json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}}}),
            "listenerPath",
        ),
        (
            json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": "/a.sock",
                "syscalls": [{"names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY"}]}}}),
            "sendmsg",
        ),
        (
            json!({"mounts": [{"destination": "/m", "type": "bind", "source": "/srv",
                               "options": ["bind", "idmap"]}]}),
            "has none",
        ),
        (
            json!({"mounts": [{"destination": "/m", "type": "bind", "source": "/srv",
                               "options": ["bind"],
                               "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                               "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}]}),
            "need the \"idmap\"",
        ),
        (
            json!({"linux": {"intelRdt": {"l3CacheSchema": "MB:0=5"}}}),
            "l3CacheSchema",
        ),
        (json!({"linux": {"intelRdt": {"closID": "../x"}}}), "closID"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let mut spec = json!({
            "ociVersion": "1.2.0",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "mount"}]}
        });
        merge(&mut spec, &edit);
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        let spec = berth_runtime::spec::load(dir.path()).unwrap();
        let err = Plan::new(spec, dir.path()).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}
