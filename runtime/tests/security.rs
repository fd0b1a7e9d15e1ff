//! Capabilities, rlimits and seccomp against the real kernel.
//!
//! What these tests do cannot be undone (drop capabilities, lower limits, load a filter), so each
//! does it in a child: the test spawns this test binary again, filtered to itself, with
//! `BERTH_SECURITY_CHILD` naming it. The child does the work, prints `RESULT key=value` lines and
//! exits; the parent checks them. Forking the multithreaded harness instead would leave the
//! child with locks held by threads that no longer exist. Capabilities and seccomp filters are
//! per thread, so a child that sets them on its test thread reads `/proc/thread-self`; the Docker
//! profile test loads its filter the way init does, between fork and exec (`pre_exec`), so the
//! whole child runs under it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use berth_runtime::capabilities::{self, CapabilitySets};
use berth_runtime::rlimits::{self, Rlimit};
use berth_runtime::seccomp::{self, SeccompProgram};
use nix::errno::Errno;

const CHILD: &str = "BERTH_SECURITY_CHILD";
const DIR: &str = "BERTH_SECURITY_DIR";

/// Whether this process is the child of test `name`.
fn is_child(name: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(name)
}

/// Runs test `name` again in a new process and returns its results.
fn run_child(name: &str, setup: impl FnOnce(&mut Command)) -> BTreeMap<String, String> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name);
    setup(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {name}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let results: BTreeMap<String, String> = stdout
        .lines()
        // The harness prints "test NAME ... " without a newline before the test runs.
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        results.contains_key("done"),
        "child {name} did not finish:\n{stdout}"
    );
    results
}

fn report(key: &str, value: impl std::fmt::Display) {
    println!("RESULT {key}={value}");
}

/// Ends the child before the harness runs any more code under what the child changed.
fn finish() -> ! {
    report("done", 1);
    std::io::stdout().flush().unwrap();
    std::process::exit(0);
}

/// "ok" for a syscall that succeeded, else the errno's name.
fn outcome(rc: libc::c_long) -> String {
    if rc == -1 {
        format!("{:?}", Errno::last())
    } else {
        "ok".to_owned()
    }
}

fn no_new_privs() {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    assert_eq!(rc, 0, "{}", Errno::last());
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in status"))
        .trim()
        .to_owned()
}

fn compile(json: &str) -> SeccompProgram {
    SeccompProgram::compile(&seccomp::parse_profile(json.as_bytes()).unwrap()).unwrap()
}

#[test]
fn seccomp_errno_rules() {
    const NAME: &str = "seccomp_errno_rules";
    if is_child(NAME) {
        let program = compile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [
                    {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
        );
        no_new_privs();
        assert!(seccomp::load(&program).unwrap().is_none());
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        report("mode", status_field(&status, "Seccomp"));
        report("filters", status_field(&status, "Seccomp_filters"));

        let mut buf = [0u8; 512];
        // SAFETY: the buffer and its length describe `buf`.
        let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
        report("getcwd", outcome(rc));
        let dir = std::path::PathBuf::from(std::env::var(DIR).unwrap());
        let sub = CString::new(dir.join("made").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::mkdir(sub.as_ptr(), 0o755) };
        report("mkdir", outcome(rc.into()));
        // Other syscalls, file creation among them, are untouched.
        report(
            "create",
            match std::fs::write(dir.join("file"), b"x") {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            },
        );
        // SAFETY: getpid takes no arguments.
        report(
            "getpid",
            outcome(unsafe { libc::syscall(libc::SYS_getpid) }),
        );
        finish();
    }
    let dir = tempfile::tempdir().unwrap();
    let r = run_child(NAME, |c| {
        c.env(DIR, dir.path());
    });
    assert_eq!(r["mode"], "2", "filter mode");
    assert_eq!(r["filters"], "1");
    assert_eq!(r["getcwd"], "ENOSYS");
    assert_eq!(r["mkdir"], "EPERM");
    assert_eq!(r["create"], "ok");
    assert_eq!(r["getpid"], "ok");
    assert!(!dir.path().join("made").exists());
    assert!(dir.path().join("file").exists());
}

#[test]
fn seccomp_argument_rules() {
    const NAME: &str = "seccomp_argument_rules";
    if is_child(NAME) {
        let program = compile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_NE"}]},
                    {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
                     "args": [{"index": 0, "value": 448, "valueTwo": 448, "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
                     "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                              {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 7,
                     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                              {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["sched_get_priority_max"], "action": "SCMP_ACT_ERRNO", "errnoRet": 34,
                     "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_GE"}]},
                    {"names": ["sched_get_priority_min"], "action": "SCMP_ACT_ERRNO", "errnoRet": 34,
                     "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_LE"}]}]}"#,
        );
        no_new_privs();
        seccomp::load(&program).unwrap();
        let call = |nr: libc::c_long, a: libc::c_long, b: libc::c_long| {
            // SAFETY: each syscall below takes integer arguments only.
            outcome(unsafe { libc::syscall(nr, a, b) })
        };
        let pid = libc::c_long::from(std::process::id() as i32);
        report(
            "personality_query",
            call(libc::SYS_personality, 0xffff_ffff, 0),
        );
        report("personality_bsd", call(libc::SYS_personality, 0x0006, 0));
        report("umask_022", call(libc::SYS_umask, 0o022, 0));
        report("umask_777", call(libc::SYS_umask, 0o777, 0));
        report("umask_700", call(libc::SYS_umask, 0o700, 0));
        report("prio_self_0", call(libc::SYS_getpriority, 0, 0));
        report("prio_self_pid", call(libc::SYS_getpriority, 0, pid));
        report("prio_group_0", call(libc::SYS_getpriority, 1, 0));
        report("getpgid_1", call(libc::SYS_getpgid, 1, 0));
        report("getpgid_2", call(libc::SYS_getpgid, 2, 0));
        report("getpgid_0", call(libc::SYS_getpgid, 0, 0));
        report("max_fifo", call(libc::SYS_sched_get_priority_max, 1, 0));
        report("max_batch", call(libc::SYS_sched_get_priority_max, 3, 0));
        report("min_other", call(libc::SYS_sched_get_priority_min, 0, 0));
        report("min_fifo", call(libc::SYS_sched_get_priority_min, 1, 0));
        finish();
    }
    let r = run_child(NAME, |_| {});
    let expect = [
        ("personality_query", "ok"),
        ("personality_bsd", "EPERM"),
        ("umask_022", "ok"),
        ("umask_777", "EDOM"),
        ("umask_700", "EDOM"),
        // Comparisons of different arguments are ANDed...
        ("prio_self_0", "EXDEV"),
        ("prio_self_pid", "ok"),
        ("prio_group_0", "ok"),
        // ...and of the same argument ORed (split into rules).
        ("getpgid_1", "E2BIG"),
        ("getpgid_2", "E2BIG"),
        ("getpgid_0", "ok"),
        ("max_fifo", "ok"),
        ("max_batch", "ERANGE"),
        ("min_other", "ERANGE"),
        ("min_fifo", "ok"),
    ];
    for (key, want) in expect {
        assert_eq!(r[key], want, "{key}");
    }
}

#[test]
fn seccomp_docker_default_profile() {
    const NAME: &str = "seccomp_docker_default_profile";
    if is_child(NAME) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        report("mode", status_field(&status, "Seccomp"));
        report("nnp", status_field(&status, "NoNewPrivs"));
        let exec = Command::new("/bin/true").status().unwrap();
        report("exec_true", exec.success());
        // SAFETY: unshare takes flags only.
        report(
            "unshare_user",
            outcome(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into()),
        );
        // KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), not created (0).
        // SAFETY: integer arguments only.
        report(
            "keyctl",
            outcome(unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    0 as libc::c_long,
                    -3 as libc::c_long,
                    0 as libc::c_long,
                )
            }),
        );
        // SAFETY: a null clone_args with size 0 is refused before anything is cloned.
        report(
            "clone3",
            outcome(unsafe {
                libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0 as libc::c_long)
            }),
        );
        // SAFETY: integer argument only.
        report(
            "personality_query",
            outcome(unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff as libc::c_long) }),
        );
        // SAFETY: integer argument only.
        report(
            "personality_bsd",
            outcome(unsafe { libc::syscall(libc::SYS_personality, 6 as libc::c_long) }),
        );
        let dir = std::path::PathBuf::from(std::env::var(DIR).unwrap());
        report("mkdir", std::fs::create_dir(dir.join("made")).is_ok());
        let threads = std::thread::spawn(|| 7).join().unwrap();
        report("thread", threads);
        finish();
    }
    // Compiled here, in the parent; the child only loads, like init.
    let program = SeccompProgram::compile(&seccomp::docker_default_profile()).unwrap();
    for w in program.warnings() {
        eprintln!("docker profile: {w}");
    }
    let dir = tempfile::tempdir().unwrap();
    let r = run_child(NAME, |c| {
        c.env(DIR, dir.path());
        // What init does last: no_new_privs, then the filter.
        let hook = move || -> std::io::Result<()> {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
            let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            seccomp::load(&program)
                .map(drop)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        };
        // SAFETY: the hook runs between fork and exec and only makes two syscalls (prctl and
        // seccomp) on memory compiled before the fork; it neither allocates nor takes locks.
        unsafe {
            c.pre_exec(hook);
        }
    });
    assert_eq!(r["mode"], "2");
    assert_eq!(r["nnp"], "1");
    assert_eq!(r["exec_true"], "true");
    assert_eq!(r["unshare_user"], "EPERM");
    assert_eq!(r["keyctl"], "EPERM");
    // clone3 answers ENOSYS so that libcs fall back to clone, whose flags the filter can see.
    assert_eq!(r["clone3"], "ENOSYS");
    assert_eq!(r["personality_query"], "ok");
    assert_eq!(r["personality_bsd"], "EPERM");
    assert_eq!(r["mkdir"], "true");
    assert_eq!(r["thread"], "7");
}

#[test]
fn seccomp_notify_listener() {
    const NAME: &str = "seccomp_notify_listener";
    if is_child(NAME) {
        let program = compile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        );
        // The agent thread exists before the filter, so its own syscalls are not filtered.
        let (tx, rx) = std::sync::mpsc::channel::<i32>();
        let agent = std::thread::spawn(move || {
            let fd = rx.recv().unwrap();
            let req = libseccomp::ScmpNotifReq::receive(fd).unwrap();
            let name = req.data.syscall.get_name().unwrap();
            libseccomp::ScmpNotifResp::new_val(
                req.id,
                4242,
                libseccomp::ScmpNotifRespFlags::empty(),
            )
            .respond(fd)
            .unwrap();
            name
        });
        no_new_privs();
        let listener = seccomp::load(&program).unwrap().expect("a listener");
        tx.send(listener.as_raw_fd()).unwrap();
        // SAFETY: getppid takes no arguments.
        report("getppid", unsafe { libc::syscall(libc::SYS_getppid) });
        report("seen", agent.join().unwrap());
        finish();
    }
    let r = run_child(NAME, |_| {});
    assert_eq!(r["getppid"], "4242");
    assert_eq!(r["seen"], "getppid");
}

const CHOWN: u64 = 1 << 0;
const KILL: u64 = 1 << 5;
const SETGID: u64 = 1 << 6;
const SETUID: u64 = 1 << 7;
const SETPCAP: u64 = 1 << 8;
const NET_BIND_SERVICE: u64 = 1 << 10;
const SYS_ADMIN: u64 = 1 << 21;
const SYS_RESOURCE: u64 = 1 << 24;

fn report_sets(prefix: &str, s: &CapabilitySets) {
    report(&format!("{prefix}bnd"), format!("{:x}", s.bounding));
    report(&format!("{prefix}eff"), format!("{:x}", s.effective));
    report(&format!("{prefix}prm"), format!("{:x}", s.permitted));
    report(&format!("{prefix}inh"), format!("{:x}", s.inheritable));
    report(&format!("{prefix}amb"), format!("{:x}", s.ambient));
}

fn errno_result(r: Result<(), Errno>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn capabilities_set_exactly() {
    const NAME: &str = "capabilities_set_exactly";
    if is_child(NAME) {
        let sets = CapabilitySets {
            bounding: CHOWN | KILL | SETPCAP | NET_BIND_SERVICE | SETUID | SETGID,
            permitted: CHOWN | KILL | SETPCAP | NET_BIND_SERVICE,
            effective: CHOWN | SETPCAP | NET_BIND_SERVICE,
            inheritable: NET_BIND_SERVICE,
            ambient: NET_BIND_SERVICE,
        };
        capabilities::drop_bounding(&sets).unwrap();
        capabilities::apply(&sets).unwrap();
        report_sets("", &capabilities::current(None).unwrap());

        // Ambient needs the capability in permitted and inheritable.
        let bad = CapabilitySets {
            ambient: KILL,
            ..sets.clone()
        };
        report(
            "ambient_not_inheritable",
            errno_result(capabilities::apply(&bad)),
        );
        // capset cannot raise permitted past what the thread has.
        let more = CapabilitySets {
            permitted: sets.permitted | SYS_ADMIN,
            ..sets.clone()
        };
        report("permitted_beyond", errno_result(capabilities::apply(&more)));
        // Nor effective past the new permitted.
        let eff = CapabilitySets {
            effective: SETUID,
            ..sets.clone()
        };
        report("effective_beyond", errno_result(capabilities::apply(&eff)));
        finish();
    }
    let r = run_child(NAME, |_| {});
    let hex = |m: u64| format!("{m:x}");
    assert_eq!(
        r["bnd"],
        hex(CHOWN | KILL | SETPCAP | NET_BIND_SERVICE | SETUID | SETGID)
    );
    assert_eq!(r["prm"], hex(CHOWN | KILL | SETPCAP | NET_BIND_SERVICE));
    assert_eq!(r["eff"], hex(CHOWN | SETPCAP | NET_BIND_SERVICE));
    assert_eq!(r["inh"], hex(NET_BIND_SERVICE));
    assert_eq!(r["amb"], hex(NET_BIND_SERVICE));
    assert_eq!(r["ambient_not_inheritable"], "EPERM");
    assert_eq!(r["permitted_beyond"], "EPERM");
    assert_eq!(r["effective_beyond"], "EPERM");
}

#[test]
fn capabilities_ambient_survive_exec_as_non_root() {
    const NAME: &str = "capabilities_ambient_survive_exec_as_non_root";
    if is_child(NAME) {
        // init's order: bounding (needs CAP_SETPCAP, so while still root), keep caps across the
        // switch of user, switch, then capset + ambient.
        let sets = CapabilitySets {
            bounding: NET_BIND_SERVICE | KILL,
            permitted: NET_BIND_SERVICE,
            effective: NET_BIND_SERVICE,
            inheritable: NET_BIND_SERVICE,
            ambient: NET_BIND_SERVICE,
        };
        capabilities::drop_bounding(&sets).unwrap();
        nix::sys::prctl::set_keepcaps(true).unwrap();
        let nobody_g = nix::unistd::Gid::from_raw(65534);
        let nobody_u = nix::unistd::Uid::from_raw(65534);
        nix::unistd::setgroups(&[]).unwrap();
        nix::unistd::setresgid(nobody_g, nobody_g, nobody_g).unwrap();
        nix::unistd::setresuid(nobody_u, nobody_u, nobody_u).unwrap();
        report_sets("before_", &capabilities::current(None).unwrap());
        capabilities::apply(&sets).unwrap();
        let out = Command::new("/bin/cat")
            .arg("/proc/self/status")
            .output()
            .unwrap();
        assert!(out.status.success());
        let status = String::from_utf8(out.stdout).unwrap();
        for key in ["Uid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            report(key, status_field(&status, key).replace('\t', " "));
        }
        finish();
    }
    let r = run_child(NAME, |_| {});
    // Switching away from root kept the permitted set (keepcaps) but emptied the effective one.
    assert_eq!(r["before_eff"], "0");
    assert_ne!(r["before_prm"], "0");
    assert_eq!(r["Uid"], "65534 65534 65534 65534");
    let word = |m: u64| format!("{m:016x}");
    assert_eq!(r["CapAmb"], word(NET_BIND_SERVICE));
    assert_eq!(r["CapPrm"], word(NET_BIND_SERVICE));
    assert_eq!(r["CapEff"], word(NET_BIND_SERVICE));
    assert_eq!(r["CapInh"], word(NET_BIND_SERVICE));
    assert_eq!(r["CapBnd"], word(NET_BIND_SERVICE | KILL));
}

#[test]
fn rlimits_lower_and_refuse_raise() {
    const NAME: &str = "rlimits_lower_and_refuse_raise";
    if is_child(NAME) {
        // Raising a hard limit needs CAP_SYS_RESOURCE; without it in the effective set this
        // thread behaves like root on the project's machines, whatever the host grants.
        let mut sets = capabilities::current(None).unwrap();
        sets.effective &= !SYS_RESOURCE;
        capabilities::apply(&sets).unwrap();

        let nofile = |soft, hard| Rlimit::new("RLIMIT_NOFILE", soft, hard).unwrap();
        report("lower", errno_result(rlimits::apply(&nofile(64, 128))));
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        report(
            "limits",
            line.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        );
        report("raise_hard", errno_result(rlimits::apply(&nofile(64, 256))));
        report(
            "raise_soft",
            errno_result(rlimits::apply(&nofile(128, 128))),
        );
        let (soft, hard) = rlimits::get(libc::RLIMIT_NOFILE).unwrap();
        report("now", format!("{soft} {hard}"));

        // u64::MAX is unlimited: keeping an unlimited hard limit is not a raise.
        let (_, core_hard) = rlimits::get(libc::RLIMIT_CORE).unwrap();
        let core = Rlimit::new("RLIMIT_CORE", 0, core_hard).unwrap();
        report("core", errno_result(rlimits::apply(&core)));
        report("core_unlimited", core_hard == rlimits::INFINITY);
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        report(
            "core_line",
            line.split_whitespace()
                .skip(4)
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        );
        finish();
    }
    let r = run_child(NAME, |_| {});
    assert_eq!(r["lower"], "ok");
    assert_eq!(r["limits"], "64 128");
    assert_eq!(r["raise_hard"], "EPERM");
    assert_eq!(r["raise_soft"], "ok");
    assert_eq!(r["now"], "128 128");
    assert_eq!(r["core"], "ok");
    if r["core_unlimited"] == "true" {
        assert_eq!(r["core_line"], "0 unlimited");
    }
}
