//! The linear sequence a container's first process (and each exec'd process) runs before exec.
//!
//! Everything here goes through [`Syscall`] or through a [`Handshake`] with the outside (the
//! parent, the exec FIFO, hooks, the console), so a unit test can run the whole sequence against
//! recorders and check its order.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_core::{Error, Result};
use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::rootfs::{self, CgroupView, MountSources, sys_err};
use crate::seccomp::SeccompProgram;
use crate::spec::{CLONE_NEWTIME, Plan, ProcessPlan};
use crate::syscall::Syscall;

/// The PATH used to find the program when the process's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The steps of the sequence that talk to the world outside the process.
pub trait Handshake {
    /// Runs the createContainer hooks (in the container's namespaces, before pivot_root).
    fn create_container_hooks(&mut self) -> Result<()>;
    /// Allocates the pty, sends its master over the console socket and makes it stdio.
    fn console(&mut self) -> Result<()>;
    /// Tells the parent that setup is done; the parent records the state and returns.
    fn ready(&mut self) -> Result<()>;
    /// Blocks until `start` (the container's init only).
    fn wait_for_start(&mut self) -> Result<()>;
    /// Runs the startContainer hooks (the container's init only).
    fn start_container_hooks(&mut self) -> Result<()>;
    /// How many descriptors after stdio reach the process (`--preserve-fds`).
    fn preserved_fds(&self) -> i32 {
        0
    }
    /// Hands the seccomp notify listener to the parent, which passes it on to the agent at
    /// `listenerPath` (runs while the sync channel is still open).
    fn seccomp_listener(&mut self, listener: OwnedFd) -> Result<()>;
}

/// The namespace steps of the stage that forks the container's process.
///
/// Joins come first (user first, mount last, as the caller sorted them), then a new user
/// namespace with its id maps (written by the parent, `map_ids`), then the other new namespaces
/// in one unshare. A new time namespace applies to children only: its offsets are written here,
/// before the fork, since the kernel fixes them once a process is in it.
pub fn namespaces(
    sys: &dyn Syscall,
    joins: &[(CloneFlags, BorrowedFd<'_>)],
    new: CloneFlags,
    time_offsets: Option<&str>,
    map_ids: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    for (flag, fd) in joins {
        sys.setns(*fd, *flag)
            .map_err(|e| sys_err(format!("join namespace {}", ns_name(*flag)), e))?;
    }
    if new.contains(CloneFlags::CLONE_NEWUSER) {
        sys.unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| sys_err("create the user namespace", e))?;
        map_ids()?;
        // Become the namespace's root so the rest of setup has its full capability set
        // regardless of which host id the creator maps to.
        sys.setresgid(0)
            .map_err(|e| sys_err("setresgid 0 in the user namespace", e))?;
        sys.setresuid(0)
            .map_err(|e| sys_err("setresuid 0 in the user namespace", e))?;
    }
    let rest = new - CloneFlags::CLONE_NEWUSER;
    if !rest.is_empty() {
        sys.unshare(rest)
            .map_err(|e| sys_err(format!("create namespaces {rest:?}"), e))?;
    }
    if let Some(offsets) = time_offsets.filter(|_| rest.contains(CLONE_NEWTIME)) {
        sys.write_file(Path::new("/proc/self/timens_offsets"), offsets.as_bytes())
            .map_err(|e| {
                sys_err(
                    format!(
                        "write linux.timeOffsets {:?} to /proc/self/timens_offsets",
                        offsets.trim_end()
                    ),
                    e,
                )
            })?;
    }
    Ok(())
}

/// The file name of a namespace type under `/proc/PID/ns`.
pub fn ns_name(flag: CloneFlags) -> &'static str {
    NS_FILES
        .iter()
        .find(|(f, _)| *f == flag)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

/// Namespace types and their file names under `/proc/PID/ns`, in the order `exec` joins them.
pub const NS_FILES: [(CloneFlags, &str); 8] = [
    (CloneFlags::CLONE_NEWUSER, "user"),
    (CloneFlags::CLONE_NEWIPC, "ipc"),
    (CloneFlags::CLONE_NEWUTS, "uts"),
    (CloneFlags::CLONE_NEWNET, "net"),
    (CloneFlags::CLONE_NEWPID, "pid"),
    (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
    (CLONE_NEWTIME, "time"),
    (CloneFlags::CLONE_NEWNS, "mnt"),
];

/// Options of the init that come from the command line rather than the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// MS_MOVE + chroot instead of pivot_root (for roots on a ramfs).
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one.
    pub no_new_keyring: bool,
}

/// The container's init: root filesystem, identity, then exec of `plan.process`.
///
/// `sources` holds the detached trees of the plan's id-mapped mounts, made by the parent
/// ([`rootfs::idmapped_sources`]).
pub fn container(
    sys: &dyn Syscall,
    plan: &Plan,
    cgroups: &[CgroupView],
    sources: &MountSources,
    opts: InitOptions,
    hs: &mut dyn Handshake,
) -> Result<Infallible> {
    if !opts.no_new_keyring {
        match sys.join_session_keyring() {
            // Kernels without keys, or a seccomp profile around the runtime, refuse keyctl:
            // the container then shares the caller's keyring, as with --no-new-keyring.
            Ok(()) | Err(Errno::ENOSYS) | Err(Errno::EPERM) => {}
            Err(e) => return Err(sys_err("join a new session keyring", e)),
        }
    }
    rootfs::prepare(sys, plan, cgroups, sources)?;
    hs.create_container_hooks()?;
    rootfs::pivot(sys, plan, opts.no_pivot)?;
    if plan.process.terminal {
        hs.console()?;
    }
    // A missing working directory is created (as root, before the root may turn read-only and
    // before the user switch), as runc does.
    if let Err(Errno::ENOENT) = sys.file_kind(&plan.process.cwd) {
        sys.mkdir_all(&plan.process.cwd, 0o755)
            .map_err(|e| sys_err(format!("create cwd {}", plan.process.cwd.display()), e))?;
    }
    rootfs::finalize(sys, plan)?;
    if let Some(h) = &plan.hostname {
        sys.sethostname(h)
            .map_err(|e| sys_err(format!("sethostname {h:?}"), e))?;
    }
    if let Some(d) = &plan.domainname {
        sys.setdomainname(d)
            .map_err(|e| sys_err(format!("setdomainname {d:?}"), e))?;
    }
    for (key, value) in &plan.sysctl {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        sys.write_file(&path, value.as_bytes())
            .map_err(|e| sys_err(format!("sysctl {key}={value} ({})", path.display()), e))?;
    }
    if let Some(persona) = plan.personality {
        sys.personality(persona)
            .map_err(|e| sys_err(format!("personality({persona:#x})"), e))?;
    }
    let process = with_home(sys, &plan.process);
    let program = prepare(sys, &process)?;
    hs.ready()?;
    become_user(sys, &process, hs)?;
    // The init blocks on the exec FIFO with the sync channel closed, so a notify listener that
    // would be loaded just before exec could no longer reach the parent: with no_new_privs it
    // is loaded here instead, as late as the channel allows (runc does the same).
    let late_notify =
        process.no_new_privileges && process.seccomp.as_ref().is_some_and(|p| p.uses_notify());
    if late_notify && let Some(prog) = &process.seccomp {
        load_seccomp(sys, prog, hs)?;
    }
    hs.wait_for_start()?;
    hs.start_container_hooks()?;
    exec(sys, &process, &program, hs, !late_notify)
}

/// Loads the filter and hands its notify listener, if any, to the parent.
fn load_seccomp(sys: &dyn Syscall, prog: &SeccompProgram, hs: &mut dyn Handshake) -> Result<()> {
    let listener = sys
        .load_seccomp(prog)
        .map_err(|e| sys_err("load the seccomp filter", e))?;
    if let Some(fd) = listener {
        hs.seccomp_listener(fd)?;
    }
    Ok(())
}

/// An extra process in a running container (`exec`): the caller already joined its namespaces
/// and cgroup.
pub fn exec_process(
    sys: &dyn Syscall,
    process: &ProcessPlan,
    personality: Option<u64>,
    hs: &mut dyn Handshake,
) -> Result<Infallible> {
    if process.terminal {
        hs.console()?;
    }
    // The exec'd process starts from the runtime's own persona, not the init's.
    if let Some(persona) = personality {
        sys.personality(persona)
            .map_err(|e| sys_err(format!("personality({persona:#x})"), e))?;
    }
    let process = with_home(sys, process);
    let program = prepare(sys, &process)?;
    hs.ready()?;
    become_user(sys, &process, hs)?;
    exec(sys, &process, &program, hs, true)
}

/// Adds HOME, when the environment lacks it, from the user's entry in the container's
/// /etc/passwd ("/" without one), as runc does: shells and many programs expect it.
fn with_home(sys: &dyn Syscall, p: &ProcessPlan) -> ProcessPlan {
    let mut p = p.clone();
    if p.env.iter().any(|e| e.as_bytes().starts_with(b"HOME=")) {
        return p;
    }
    let home = sys
        .read_file(Path::new("/etc/passwd"))
        .ok()
        .and_then(|data| {
            String::from_utf8_lossy(&data).lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(p.uid)).then(|| f[5].to_owned())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    if let Ok(c) = CString::new(format!("HOME={home}")) {
        p.env.push(c);
    }
    p
}

/// The steps that need privilege and can still be reported to the parent: oom score, rlimits,
/// no_new_privs, and finding the program.
fn prepare(sys: &dyn Syscall, p: &ProcessPlan) -> Result<CString> {
    if let Some(adj) = p.oom_score_adj {
        sys.write_file(
            Path::new("/proc/self/oom_score_adj"),
            adj.to_string().as_bytes(),
        )
        .map_err(|e| sys_err(format!("set oom_score_adj to {adj}"), e))?;
    }
    for l in &p.rlimits {
        sys.setrlimit(l).map_err(|e| {
            let why = if e == Errno::EPERM {
                " (raising a hard limit needs CAP_SYS_RESOURCE)"
            } else {
                ""
            };
            sys_err(
                format!("setrlimit {} soft={} hard={}{why}", l.name, l.soft, l.hard),
                e,
            )
        })?;
    }
    // Scheduling and I/O priority while the process still has CAP_SYS_NICE (realtime policies
    // and the realtime I/O class need it).
    if let Some(attr) = &p.scheduler {
        sys.sched_setattr(attr).map_err(|e| {
            sys_err(
                format!(
                    "sched_setattr (policy {}, nice {}, priority {}, flags {:#x})",
                    attr.policy, attr.nice, attr.priority, attr.flags
                ),
                e,
            )
        })?;
    }
    if let Some(prio) = p.io_priority {
        sys.ioprio_set(prio).map_err(|e| {
            sys_err(
                format!("ioprio_set (class {}, level {})", prio >> 13, prio & 0x7),
                e,
            )
        })?;
    }
    if p.no_new_privileges {
        sys.set_no_new_privs()
            .map_err(|e| sys_err("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    }
    find_program(sys, p)
}

/// Switches to the process's user and capabilities; seccomp goes in here when the process has
/// no no_new_privs, because loading a filter then needs CAP_SYS_ADMIN, which is about to go.
fn become_user(sys: &dyn Syscall, p: &ProcessPlan, hs: &mut dyn Handshake) -> Result<()> {
    if let (Some(prog), false) = (&p.seccomp, p.no_new_privileges) {
        load_seccomp(sys, prog, hs)?;
    }
    if let Some(caps) = &p.capabilities {
        sys.drop_bounding(caps)
            .map_err(|e| sys_err("drop capabilities from the bounding set", e))?;
    }
    // Keep the permitted set across the uid change; the spec's sets are applied right after.
    sys.set_keep_caps(true)
        .map_err(|e| sys_err("prctl(PR_SET_KEEPCAPS)", e))?;
    sys.setgroups(&p.additional_gids)
        .map_err(|e| sys_err(format!("setgroups {:?}", p.additional_gids), e))?;
    sys.setresgid(p.gid)
        .map_err(|e| sys_err(format!("setresgid {}", p.gid), e))?;
    sys.setresuid(p.uid)
        .map_err(|e| sys_err(format!("setresuid {}", p.uid), e))?;
    sys.set_keep_caps(false)
        .map_err(|e| sys_err("prctl(PR_SET_KEEPCAPS, 0)", e))?;
    if let Some(caps) = &p.capabilities {
        sys.set_capabilities(caps)
            .map_err(|e| sys_err("set capabilities", e))?;
    }
    sys.chdir(&p.cwd)
        .map_err(|e| sys_err(format!("chdir to cwd {}", p.cwd.display()), e))?;
    sys.umask(p.umask.unwrap_or(0o022));
    Ok(())
}

fn exec(
    sys: &dyn Syscall,
    p: &ProcessPlan,
    program: &CString,
    hs: &mut dyn Handshake,
    nnp_seccomp: bool,
) -> Result<Infallible> {
    sys.close_on_exec_from(3 + hs.preserved_fds())
        .map_err(|e| sys_err("mark descriptors close-on-exec", e))?;
    if let (Some(prog), true, true) = (&p.seccomp, p.no_new_privileges, nnp_seccomp) {
        // As late as possible: the filter applies to every call after it, so only execve runs
        // under it (a profile may well deny close_range).
        load_seccomp(sys, prog, hs)?;
    }
    let err = match sys.execve(program, &p.args, &p.env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(sys_err(format!("exec {}", program.to_string_lossy()), err))
}

/// Looks `args[0]` up: as a path when it has a slash (relative to cwd), else in PATH.
fn find_program(sys: &dyn Syscall, p: &ProcessPlan) -> Result<CString> {
    let arg0 = p
        .args
        .first()
        .ok_or_else(|| Error::invalid_argument("process.args must not be empty"))?;
    let name = Path::new(std::ffi::OsStr::from_bytes(arg0.as_bytes()));
    let found = if arg0.as_bytes().contains(&b'/') {
        let path = p.cwd.join(name);
        sys.is_executable(&path).then_some(path)
    } else {
        p.path_var()
            .unwrap_or(DEFAULT_PATH)
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(name))
            .find(|c| sys.is_executable(c))
    };
    let found = found.ok_or_else(|| {
        Error::not_found(format!(
            "exec: {:?}: executable file not found in $PATH",
            name.display().to_string()
        ))
    })?;
    CString::new(found.as_os_str().as_bytes())
        .map_err(|_| Error::invalid_argument("program path contains a NUL byte"))
}
