//! `berth-probe`: the container-side half of the runtime tests.
//!
//! A container's rootfs in those tests holds busybox and this binary at `/probe`, and no libc,
//! so the harness (`berth_integration::bundle`) builds it statically. Every subcommand prints one
//! JSON object on stdout and exits 0, unless the subcommand is about exiting or being killed:
//!
//! - `status`: pid, ppid, ids, groups, umask, cwd, uname host and domain names, the five
//!   capability sets, NoNewPrivs, the seccomp mode, every rlimit, oom_score_adj, the mount table,
//!   namespace inode numbers, cgroups and the environment.
//! - `syscall mkdir|mkdirat|getcwd|unshare-user|keyctl|personality|sched_getscheduler|
//!   getpriority|ioprio_get [ARG]`: makes that raw system call and reports `{"errno": N}` (0 on
//!   success) and its return value.
//! - `clocks`: CLOCK_MONOTONIC and CLOCK_BOOTTIME in seconds (time namespace offsets).
//! - `read PATH` / `write PATH` / `ls PATH` / `stat PATH`: the errno, and what was read or seen.
//! - `alloc MB`: allocates and touches `MB` MiB, one MiB at a time.
//! - `fork N`: tries to create `N` processes that wait; reports how many succeeded and the errno
//!   of the first failure, then kills and reaps them.
//! - `sleep SECONDS`, `exit CODE`.
//! - `trap SECONDS`: handles SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 (a PID 1 ignores
//!   signals it has no handler for) and reports the first one that arrives.
//! - `tty`: isatty, ttyname and window size of fds 0, 1 and 2.
//!
//! Only `libc` is used (no serde): this file carries its own small JSON writer.

use std::ffi::{CStr, CString, OsStr};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// A JSON value, written by [`Json::write`].
enum Json {
    Bool(bool),
    Int(i128),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn obj<const N: usize>(fields: [(&str, Json); N]) -> Self {
        Self::Obj(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn str(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    fn int(n: impl Into<i128>) -> Self {
        Self::Int(n.into())
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Int(n) => out.push_str(&n.to_string()),
            Self::Str(s) => write_str(s, out),
            Self::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn print(value: &Json) {
    let mut out = String::new();
    value.write(&mut out);
    out.push('\n');
    let mut stdout = std::io::stdout().lock();
    // Nothing sensible is left to do when stdout is gone.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn io_errno(e: &std::io::Error) -> Json {
    Json::int(e.raw_os_error().unwrap_or(-1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("berth-probe: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[&str]) -> Result<ExitCode, String> {
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or_else(|| format!("`{}` needs an argument", args.join(" ")))
    };
    let number = |i: usize| -> Result<i64, String> {
        let s = arg(i)?;
        parse_int(s).ok_or_else(|| format!("not a number: {s}"))
    };
    match args.first().copied().unwrap_or("status") {
        "status" => print(&status()),
        "syscall" => print(&syscall(arg(1)?, args.get(2).copied())?),
        "read" => print(&read(arg(1)?)),
        "write" => print(&write(arg(1)?)),
        "ls" => print(&ls(arg(1)?)),
        "stat" => print(&stat(arg(1)?)),
        "alloc" => print(&alloc(number(1)?)),
        "fork" => print(&fork(number(1)?)),
        "sleep" => {
            let s = arg(1)?;
            let secs: f64 = s.parse().map_err(|_| format!("not a duration: {s}"))?;
            std::thread::sleep(Duration::from_secs_f64(secs));
        }
        "exit" => {
            let code = number(1)?;
            std::process::exit(i32::try_from(code).map_err(|_| format!("bad code {code}"))?);
        }
        "trap" => {
            let s = arg(1)?;
            let secs: f64 = s.parse().map_err(|_| format!("not a duration: {s}"))?;
            print(&trap(Duration::from_secs_f64(secs)));
        }
        "tty" => print(&tty()),
        "clocks" => print(&clocks()),
        other => return Err(format!("unknown subcommand {other:?}")),
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_int(s: &str) -> Option<i64> {
    match s.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

// ---- status ----------------------------------------------------------------------------------

fn status() -> Json {
    let proc_status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> String {
        proc_status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let int_field = |name: &str| Json::int(field(name).parse::<i64>().unwrap_or(-1));
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("error: {e}"));
    let (hostname, domainname) = uname();
    let oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(i64::MIN);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .map(Json::str)
        .collect();
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            Json::str(kv.to_string_lossy())
        })
        .collect();
    // SAFETY: these calls take no arguments and cannot fail.
    let (pid, ppid, uid, gid, euid, egid) = unsafe {
        (
            libc::getpid(),
            libc::getppid(),
            libc::getuid(),
            libc::getgid(),
            libc::geteuid(),
            libc::getegid(),
        )
    };
    Json::obj([
        ("pid", Json::int(pid)),
        ("ppid", Json::int(ppid)),
        ("uid", Json::int(uid)),
        ("gid", Json::int(gid)),
        ("euid", Json::int(euid)),
        ("egid", Json::int(egid)),
        (
            "groups",
            Json::Arr(groups().into_iter().map(Json::int).collect()),
        ),
        ("umask", Json::str(field("Umask"))),
        ("cwd", Json::str(cwd)),
        ("hostname", Json::str(hostname)),
        ("domainname", Json::str(domainname)),
        ("CapInh", Json::str(field("CapInh"))),
        ("CapPrm", Json::str(field("CapPrm"))),
        ("CapEff", Json::str(field("CapEff"))),
        ("CapBnd", Json::str(field("CapBnd"))),
        ("CapAmb", Json::str(field("CapAmb"))),
        ("NoNewPrivs", int_field("NoNewPrivs")),
        ("Seccomp", int_field("Seccomp")),
        ("rlimits", rlimits()),
        ("oom_score_adj", Json::int(oom_score_adj)),
        ("mounts", mounts()),
        ("namespaces", namespaces()),
        ("cgroup", Json::Arr(cgroup)),
        ("env", Json::Arr(env)),
    ])
}

fn groups() -> Vec<u32> {
    // SAFETY: a zero-length query writes nothing and returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let Ok(len) = usize::try_from(n) else {
        return Vec::new();
    };
    let mut groups: Vec<libc::gid_t> = vec![0; len];
    // SAFETY: the buffer holds `n` gids.
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(got).unwrap_or(0));
    groups
}

fn uname() -> (String, String) {
    // SAFETY: utsname is plain data; all zeroes is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return (String::new(), String::new());
    }
    let text = |field: &[libc::c_char]| {
        let bytes: Vec<u8> = field
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (text(&uts.nodename), text(&uts.domainname))
}

const RLIMITS: &[(&str, libc::__rlimit_resource_t)] = &[
    ("RLIMIT_AS", libc::RLIMIT_AS),
    ("RLIMIT_CORE", libc::RLIMIT_CORE),
    ("RLIMIT_CPU", libc::RLIMIT_CPU),
    ("RLIMIT_DATA", libc::RLIMIT_DATA),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", libc::RLIMIT_NICE),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ("RLIMIT_RSS", libc::RLIMIT_RSS),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("RLIMIT_STACK", libc::RLIMIT_STACK),
];

/// Every rlimit as `{"RLIMIT_X": {"soft": n, "hard": n}}`; infinity is u64::MAX, as in a spec.
fn rlimits() -> Json {
    let entries = RLIMITS
        .iter()
        .map(|&(name, resource)| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `limit` is a valid, writable rlimit.
            let value = if unsafe { libc::getrlimit(resource, &mut limit) } == 0 {
                Json::obj([
                    ("soft", Json::int(limit.rlim_cur)),
                    ("hard", Json::int(limit.rlim_max)),
                ])
            } else {
                Json::obj([("errno", Json::int(errno()))])
            };
            (name.to_owned(), value)
        })
        .collect();
    Json::Obj(entries)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let code = oct
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(code).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/mountinfo`, one object per line, in order.
fn mounts() -> Json {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let parsed = info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 6 || right.len() < 3 {
                return None;
            }
            Some(Json::obj([
                ("mount_point", Json::str(unescape(left[4]))),
                ("root", Json::str(unescape(left[3]))),
                ("fstype", Json::str(right[0])),
                ("source", Json::str(unescape(right[1]))),
                ("options", Json::str(left[5])),
                ("super_options", Json::str(right[2])),
                (
                    "optional",
                    Json::Arr(left[6..].iter().map(|s| Json::str(*s)).collect()),
                ),
            ]))
        })
        .collect();
    Json::Arr(parsed)
}

/// `/proc/self/ns/*` as `{"pid": inode, …}`, sorted by name.
fn namespaces() -> Json {
    let mut entries: Vec<(String, Json)> = std::fs::read_dir("/proc/self/ns")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let link = std::fs::read_link(entry.path()).ok()?;
                    let link = link.to_string_lossy();
                    let inode: i128 = link
                        .split_once(":[")?
                        .1
                        .trim_end_matches(']')
                        .parse()
                        .ok()?;
                    Some((name, Json::Int(inode)))
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Json::Obj(entries)
}

// ---- system calls ----------------------------------------------------------------------------

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("NUL in {s:?}"))
}

fn syscall(name: &str, arg: Option<&str>) -> Result<Json, String> {
    let path = || cstring(arg.unwrap_or("/probe-mkdir"));
    let ret: libc::c_long = match name {
        "mkdir" => mkdir(&path()?),
        "mkdirat" => {
            let path = path()?;
            // SAFETY: a valid NUL-terminated path relative to the cwd, and a mode.
            unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), 0o755) }
        }
        "getcwd" => {
            let mut buf = [0u8; 4096];
            // SAFETY: the buffer is writable for its whole length.
            unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) }
        }
        "unshare-user" => {
            // SAFETY: unshare takes flags only.
            unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) }
        }
        "keyctl" => {
            // KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), without creating it.
            // SAFETY: integer arguments only.
            unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) }
        }
        "personality" => {
            let persona = match arg {
                Some(s) => parse_int(s).ok_or_else(|| format!("not a number: {s}"))?,
                None => 0xffff_ffff,
            };
            // SAFETY: an integer argument only (0xffffffff queries).
            unsafe { libc::syscall(libc::SYS_personality, persona) }
        }
        "sched_getscheduler" => {
            // SAFETY: pid 0 (the caller) only.
            unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) }
        }
        "getpriority" => {
            // The raw call returns 20 - nice (never negative), as the kernel does.
            // SAFETY: integer arguments only (PRIO_PROCESS, the caller).
            unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, 0) }
        }
        "ioprio_get" => {
            // IOPRIO_WHO_PROCESS (1) of the caller: class << 13 | level.
            // SAFETY: integer arguments only.
            unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) }
        }
        other => return Err(format!("unknown syscall {other:?}")),
    };
    let err = if ret == -1 { errno() } else { 0 };
    Ok(Json::obj([
        ("syscall", Json::str(name)),
        ("errno", Json::int(err)),
        ("ret", Json::int(ret)),
    ]))
}

/// CLOCK_MONOTONIC and CLOCK_BOOTTIME, in whole seconds (what a time namespace offsets).
fn clocks() -> Json {
    let secs = |clock: libc::clockid_t| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        if rc == 0 {
            Json::int(ts.tv_sec)
        } else {
            Json::int(-i128::from(errno()))
        }
    };
    Json::obj([
        ("monotonic", secs(libc::CLOCK_MONOTONIC)),
        ("boottime", secs(libc::CLOCK_BOOTTIME)),
    ])
}

/// The legacy `mkdir` system call (what a seccomp rule naming `mkdir` matches); architectures
/// that only have `mkdirat` report ENOSYS.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn mkdir(path: &CStr) -> libc::c_long {
    // SAFETY: a valid NUL-terminated path and a mode.
    unsafe { libc::syscall(libc::SYS_mkdir, path.as_ptr(), 0o755) }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
fn mkdir(_path: &CStr) -> libc::c_long {
    // SAFETY: setting errno through its thread-local location.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

// ---- files -----------------------------------------------------------------------------------

const MAX_CONTENT: usize = 64 * 1024;

fn read(path: &str) -> Json {
    match std::fs::read(path) {
        Ok(data) => Json::obj([
            ("errno", Json::int(0)),
            ("len", Json::int(data.len() as u64)),
            (
                "content",
                Json::str(String::from_utf8_lossy(
                    &data[..data.len().min(MAX_CONTENT)],
                )),
            ),
        ]),
        Err(e) => Json::obj([("errno", io_errno(&e))]),
    }
}

fn write(path: &str) -> Json {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(b"probe\n"));
    match result {
        Ok(()) => Json::obj([("errno", Json::int(0))]),
        Err(e) => Json::obj([("errno", io_errno(&e))]),
    }
}

fn ls(path: &str) -> Json {
    match std::fs::read_dir(path) {
        Ok(dir) => {
            let mut names: Vec<String> = dir
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Json::obj([
                ("errno", Json::int(0)),
                (
                    "entries",
                    Json::Arr(names.into_iter().map(Json::Str).collect()),
                ),
            ])
        }
        Err(e) => Json::obj([("errno", io_errno(&e))]),
    }
}

fn stat(path: &str) -> Json {
    match std::fs::symlink_metadata(OsStr::from_bytes(path.as_bytes())) {
        Ok(meta) => Json::obj([
            ("errno", Json::int(0)),
            ("mode", Json::str(format!("{:o}", meta.mode()))),
            ("uid", Json::int(meta.uid())),
            ("gid", Json::int(meta.gid())),
            ("size", Json::int(meta.size())),
            ("rdev", Json::int(meta.rdev())),
        ]),
        Err(e) => Json::obj([("errno", io_errno(&e))]),
    }
}

// ---- resources -------------------------------------------------------------------------------

fn alloc(mb: i64) -> Json {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mb {
        // `vec![1; n]` writes every byte, so every page is really backed.
        chunks.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
    let total: usize = std::hint::black_box(&chunks).iter().map(Vec::len).sum();
    Json::obj([("allocated_mb", Json::int((total >> 20) as u64))])
}

fn fork(n: i64) -> Json {
    let mut children: Vec<libc::pid_t> = Vec::new();
    let mut first_errno = 0;
    for _ in 0..n {
        // SAFETY: the probe is single-threaded; the child only calls pause() until killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause is async-signal-safe and takes no arguments.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            first_errno = errno();
            break;
        }
        children.push(pid);
    }
    let succeeded = children.len();
    for &pid in &children {
        // SAFETY: `pid` is our own child; kill and waitpid take plain integers and a null status.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    Json::obj([
        ("requested", Json::int(n)),
        ("succeeded", Json::int(succeeded as u64)),
        ("errno", Json::int(first_errno)),
    ])
}

// ---- signals ---------------------------------------------------------------------------------

static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    let _ = CAUGHT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

fn trap(timeout: Duration) -> Json {
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        // SAFETY: the handler only does an atomic store.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
    let deadline = Instant::now() + timeout;
    while CAUGHT.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Json::obj([("signal", Json::int(CAUGHT.load(Ordering::SeqCst)))])
}

// ---- terminal --------------------------------------------------------------------------------

fn tty() -> Json {
    let fds = (0..3)
        .map(|fd: libc::c_int| {
            // SAFETY: isatty takes any integer.
            let isatty = unsafe { libc::isatty(fd) } == 1;
            let mut name = [0 as libc::c_char; 256];
            // SAFETY: the buffer is writable for its whole length.
            let ttyname = if unsafe { libc::ttyname_r(fd, name.as_mut_ptr(), name.len()) } == 0 {
                // SAFETY: ttyname_r succeeded, so `name` holds a NUL-terminated string.
                unsafe { CStr::from_ptr(name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            };
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
            let have_ws = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
            Json::obj([
                ("fd", Json::int(fd)),
                ("isatty", Json::Bool(isatty)),
                ("ttyname", Json::str(ttyname)),
                ("has_winsize", Json::Bool(have_ws)),
                ("rows", Json::int(ws.ws_row)),
                ("cols", Json::int(ws.ws_col)),
            ])
        })
        .collect();
    Json::obj([("fds", Json::Arr(fds))])
}
