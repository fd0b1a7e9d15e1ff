//! The staged start: parent → intermediate → init (or exec'd process).
//!
//! - The **parent** (the runtime's own process) forks the intermediate into the container's
//!   cgroup2 part (if any) and places it in the RDT group, writes user namespace id maps when
//!   asked, runs the runtime-namespace hooks and waits until the child reports that it is ready.
//! - The **intermediate** moves itself into the v1 hierarchies (see
//!   [`crate::cgroups::CgroupEntry`]), then joins or creates the namespaces. A new pid namespace
//!   only applies to children, so it forks once more and exits after reporting the child's pid.
//! - The **init** runs [`crate::init`]'s linear sequence and execs.
//!
//! They talk over a `SOCK_SEQPACKET` pair with typed [`SyncMsg`]s. Forking is refused in a
//! process with more than one thread: a child of a multi-threaded process may find a lock held
//! forever by a thread that does not exist in it.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use berth_core::{Error, ErrorKind, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, sendmsg, socketpair,
};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupEntry;
use crate::hooks::{self, Phase};
use crate::init::NS_FILES;
use crate::init::{self, Handshake, InitOptions};
use crate::rootfs::{self, CgroupView, MountSources, sys_err};
use crate::spec::{IdMappings, Plan, ProcessPlan, SeccompListener};
use crate::syscall::LinuxSyscall;

/// A message between the stages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum SyncMsg {
    /// Parent → intermediate: the parent's part of joining the cgroup is done, go on.
    Go,
    /// Intermediate → parent: my new user namespace needs its id maps.
    MapIds,
    /// Parent → intermediate: id maps written.
    IdsMapped,
    /// Intermediate → parent: the host pid of the process that will exec.
    Child {
        /// The pid.
        pid: i32,
    },
    /// Parent → child: runtime hooks done; the state for the hooks the child runs.
    Continue {
        /// OCI state JSON.
        state: String,
    },
    /// Child → parent: set up, about to wait for start (init) or exec (exec'd process).
    Ready,
    /// Intermediate → parent: make the id-mapped mount trees (its user namespace is ready).
    MountSources,
    /// Parent → intermediate: the trees, as SCM_RIGHTS descriptors in mount order.
    MountSourcesReady {
        /// How many descriptors travel with the message.
        count: usize,
    },
    /// Child → parent: the seccomp notify listener travels with this message (SCM_RIGHTS).
    SeccompListener,
    /// Any stage → parent: this failed.
    Error {
        /// The errdefs kind.
        kind: String,
        /// What failed.
        message: String,
    },
}

/// The most descriptors one sync message carries (id-mapped mounts of one container).
const MAX_FDS: usize = 64;

/// One end of the sync socket pair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| sys_err("socketpair for the sync channel", e))?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends one message.
    pub fn send(&self, msg: &SyncMsg) -> Result<()> {
        self.send_with_fds(msg, &[])
    }

    /// Sends one message with descriptors attached (SCM_RIGHTS).
    pub fn send_with_fds(&self, msg: &SyncMsg, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let data = serde_json::to_vec(msg)
            .map_err(|e| Error::internal(format!("encode sync message: {e}")))?;
        if fds.len() > MAX_FDS {
            return Err(Error::invalid_argument(format!(
                "{} descriptors in one sync message (at most {MAX_FDS})",
                fds.len()
            )));
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(&data)];
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(sys_err("send on the sync channel", e)),
            }
        }
    }

    /// Receives one message; None when the other side has closed.
    pub fn recv(&self) -> Result<Option<SyncMsg>> {
        Ok(self.recv_with_fds()?.map(|(m, _)| m))
    }

    /// Receives one message and the descriptors that came with it.
    pub fn recv_with_fds(&self) -> Result<Option<(SyncMsg, Vec<OwnedFd>)>> {
        // The message's size first: the buffer then touches only the pages it needs, where a
        // fixed 64 KiB one cost a dozen page faults (copies, in a freshly forked process) on
        // every receive of the create path.
        let size = loop {
            match recv(
                self.fd.as_raw_fd(),
                &mut [],
                MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(sys_err("receive on the sync channel", e)),
            }
        };
        let mut buf = vec![0u8; size.max(1)];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut fds = Vec::new();
        let n = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    for c in msg
                        .cmsgs()
                        .map_err(|e| sys_err("read the sync message's descriptors", e))?
                    {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: SCM_RIGHTS gave this process new descriptors that
                            // nothing else owns.
                            fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                        }
                    }
                    break msg.bytes;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(sys_err("receive on the sync channel", e)),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(|m| Some((m, fds)))
            .map_err(|e| Error::internal(format!("decode sync message: {e}")))
    }

    /// Closes both directions: the parent's next receive sees the end of the channel.
    pub fn close(&self) {
        let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }

    fn expect(&self, what: &str, want: impl Fn(&SyncMsg) -> bool) -> Result<SyncMsg> {
        match self.recv()? {
            Some(SyncMsg::Error { kind, message }) => {
                Err(Error::new(ErrorKind::from_name(&kind), message))
            }
            Some(m) if want(&m) => Ok(m),
            Some(m) => Err(Error::internal(format!(
                "sync channel: expected {what}, got {m:?}"
            ))),
            None => Err(Error::internal(format!(
                "the container's process exited before {what}"
            ))),
        }
    }
}

fn error_msg(e: &Error) -> SyncMsg {
    SyncMsg::Error {
        kind: e.kind().as_str().to_owned(),
        message: e.to_string(),
    }
}

/// clone3's flag that starts the child in the cgroup2 directory `clone_args.cgroup` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (its size tells clone3 which fields exist).
#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks, straight into the cgroup2 directory `cgroup` when given; the flag says whether the
/// child started there. A kernel without clone3 or `CLONE_INTO_CGROUP`, or one that refuses
/// that cgroup, gets a plain fork (and `false`): the caller then moves the child itself, and a
/// refusal comes back from that write with the file's name. Callers must be single-threaded.
fn fork_into(cgroup: Option<BorrowedFd<'_>>) -> Result<(ForkResult, bool)> {
    if let Some(dir) = cgroup {
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: without CLONE_VM this is fork(2) with the child born in `dir`: the child gets
        // a copy of the address space and returns here with 0. The caller has one thread, so
        // no lock is held by a thread missing in the child. glibc's pthread struct in the child
        // keeps the parent's tid; glibc 2.34+ asks the kernel for the tid when a process
        // signals itself (raise, abort), and the child runs nothing that reads the cached one.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => return Ok((ForkResult::Child, true)),
            pid if pid > 0 => {
                return Ok((
                    ForkResult::Parent {
                        child: Pid::from_raw(pid as i32),
                    },
                    true,
                ));
            }
            _ => tracing::debug!(
                error = %Errno::last(),
                "clone3 into the cgroup failed; forking and moving the child instead"
            ),
        }
    }
    // SAFETY: the caller has one thread, so the child is a complete copy with no lock held by
    // a thread that does not exist in it.
    let forked = unsafe { nix::unistd::fork() }.map_err(|e| sys_err("fork the intermediate", e))?;
    Ok((forked, false))
}

/// Refuses to go on in a process with more than one thread.
pub fn ensure_single_threaded() -> Result<()> {
    let status = crate::procfs::read("/proc/self/status")
        .map_err(|e| Error::io("read /proc/self/status", e))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if threads != 1 {
        return Err(Error::failed_precondition(format!(
            "refusing to fork from a process with {threads} threads"
        )));
    }
    Ok(())
}

/// Descriptors the child keeps until exec.
#[derive(Debug, Default)]
pub struct ChildFds {
    /// `O_PATH` descriptor of the exec FIFO (the container's init only).
    pub exec_fifo: Option<OwnedFd>,
    /// Connected console socket, when the process has a terminal.
    pub console_socket: Option<OwnedFd>,
    /// `--preserve-fds`: descriptors 3..3+N pass to the process.
    pub preserve_fds: i32,
}

/// What the child becomes.
#[derive(Debug)]
pub enum Stage<'a> {
    /// The container's init.
    Init {
        /// The validated container.
        plan: &'a Plan,
        /// The container's cgroup view for `cgroup` mounts.
        cgroups: Vec<CgroupView>,
        /// Command-line options of the init.
        opts: InitOptions,
    },
    /// A process in a running container.
    Exec {
        /// The process.
        process: &'a ProcessPlan,
        /// The container init's pid, whose namespaces are joined.
        target_pid: i32,
        /// The namespace types to join.
        namespaces: CloneFlags,
        /// The container's `linux.personality`, which the process is given as the init was.
        personality: Option<u64>,
    },
}

/// The parent's part during a spawn: what to do once the child's pid is known.
pub trait Parent {
    /// Opens the container's cgroup for the intermediate to start in (before the fork).
    fn cgroup_entry(&mut self) -> Result<CgroupEntry>;
    /// Puts the intermediate in whatever it does not enter by itself, before it does anything:
    /// the RDT group, and the whole cgroup when it could not be forked into it (`entered` false).
    fn join_cgroup(&mut self, pid: i32, entered: bool) -> Result<()>;
    /// The child's pid is known: run runtime hooks, return the state JSON for the child's hooks.
    fn child_started(&mut self, pid: i32) -> Result<String>;
    /// The container's OCI state JSON as the runtime sees it (host pid), for the seccomp agent.
    fn oci_state(&self) -> Result<String>;
}

/// Forks the stages; returns the host pid of the process that will exec once it is ready.
pub fn spawn(stage: &Stage<'_>, fds: ChildFds, parent: &mut dyn Parent) -> Result<i32> {
    ensure_single_threaded()?;
    let (ours, theirs) = Channel::pair()?;
    let entry = parent.cgroup_entry()?;
    let (forked, in_cgroup2) = fork_into(entry.clone_into())?;
    // With the cgroup2 part done by the fork (or none to do), the child enters the rest itself.
    let entered = in_cgroup2 || entry.clone_into().is_none();
    match forked {
        ForkResult::Child => {
            drop(ours);
            let code = match intermediate(&theirs, stage, fds, entry) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = theirs.send(&error_msg(&e));
                    1
                }
            };
            // SAFETY: _exit ends the forked child without running the parent's atexit handlers
            // or flushing its stdio buffers a second time.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(fds);
            drop(entry);
            let mut child_pid = None;
            let res = parent_side(&ours, stage, child, entered, parent, &mut child_pid);
            if res.is_err() {
                for pid in [Some(child.as_raw()), child_pid].into_iter().flatten() {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
                let _ = waitpid(child, None);
            }
            res
        }
    }
}

fn parent_side(
    ch: &Channel,
    stage: &Stage<'_>,
    intermediate: Pid,
    entered: bool,
    parent: &mut dyn Parent,
    child_pid: &mut Option<i32>,
) -> Result<i32> {
    parent.join_cgroup(intermediate.as_raw(), entered)?;
    ch.send(&SyncMsg::Go)?;
    let pid = loop {
        match ch.recv()? {
            Some(SyncMsg::MapIds) => {
                if let Stage::Init { plan, .. } = stage
                    && let Some(maps) = &plan.id_mappings
                {
                    write_id_maps(intermediate.as_raw(), maps)?;
                }
                ch.send(&SyncMsg::IdsMapped)?;
            }
            Some(SyncMsg::MountSources) => {
                let Stage::Init { plan, .. } = stage else {
                    return Err(Error::internal(
                        "sync channel: an exec'd process asked for mount trees",
                    ));
                };
                // The intermediate is in the container's user namespace by now (new or
                // joined): that is the namespace an idmap mount without mappings uses.
                let userns = if plan.has_namespace(CloneFlags::CLONE_NEWUSER) {
                    Some(open_ns(&PathBuf::from(format!(
                        "/proc/{}/ns/user",
                        intermediate.as_raw()
                    )))?)
                } else {
                    None
                };
                let sources = rootfs::idmapped_sources(
                    &LinuxSyscall,
                    plan,
                    userns.as_ref().map(|f| f.as_fd()),
                )?;
                let fds = sources.fds();
                ch.send_with_fds(&SyncMsg::MountSourcesReady { count: fds.len() }, &fds)?;
            }
            Some(SyncMsg::Child { pid }) => break pid,
            Some(SyncMsg::Error { kind, message }) => {
                return Err(Error::new(ErrorKind::from_name(&kind), message));
            }
            Some(m) => {
                return Err(Error::internal(format!(
                    "sync channel: unexpected {m:?} from the intermediate"
                )));
            }
            None => {
                return Err(Error::internal(
                    "the intermediate process exited without reporting",
                ));
            }
        }
    };
    *child_pid = Some(pid);
    match waitpid(intermediate, None) {
        Ok(WaitStatus::Exited(_, 0)) => {}
        Ok(other) => {
            return Err(Error::internal(format!(
                "the intermediate process ended with {other:?}"
            )));
        }
        Err(e) => return Err(sys_err("wait for the intermediate process", e)),
    }
    let state = parent.child_started(pid)?;
    ch.send(&SyncMsg::Continue { state })?;
    ch.expect("it was ready", |m| *m == SyncMsg::Ready)?;
    // The child keeps the channel until it is about to block on the exec FIFO (init) or has
    // exec'd (the descriptor is close-on-exec), so a failure in between (user, capabilities,
    // cwd, execve) still comes back here instead of vanishing into the container's stderr.
    loop {
        match ch.recv_with_fds()? {
            None => return Ok(pid),
            Some((SyncMsg::Error { kind, message }, _)) => {
                return Err(Error::new(ErrorKind::from_name(&kind), message));
            }
            Some((SyncMsg::SeccompListener, fds)) => {
                let listener = match stage {
                    Stage::Init { plan, .. } => plan.process.seccomp_listener.as_ref(),
                    Stage::Exec { process, .. } => process.seccomp_listener.as_ref(),
                };
                let (Some(listener), [fd]) = (listener, fds.as_slice()) else {
                    return Err(Error::internal(format!(
                        "sync channel: a seccomp listener message with {} descriptors and no \
                         listenerPath to send it to",
                        fds.len()
                    )));
                };
                let state = parent.oci_state()?;
                send_to_seccomp_agent(listener, pid, &state, fd.as_fd())?;
                // `fds` (our copy of the listener) is closed here: only the agent keeps one.
            }
            Some((m, _)) => {
                return Err(Error::internal(format!(
                    "sync channel: unexpected {m:?} after ready"
                )));
            }
        }
    }
}

/// Connects to the seccomp agent at `listener.path` and sends it the container process state
/// (JSON, the runtime spec's `containerProcessState`) with the notify listener as SCM_RIGHTS.
pub fn send_to_seccomp_agent(
    listener: &SeccompListener,
    pid: i32,
    state: &str,
    fd: BorrowedFd<'_>,
) -> Result<()> {
    let path = &listener.path;
    let state: serde_json::Value = serde_json::from_str(state)
        .map_err(|e| Error::internal(format!("container state for the seccomp agent: {e}")))?;
    let msg = serde_json::json!({
        "ociVersion": crate::spec::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": listener.metadata,
        "state": state,
    })
    .to_string();
    let stream = UnixStream::connect(path).map_err(|e| {
        Error::io(
            format!(
                "connect to the seccomp agent at listenerPath {}",
                path.display()
            ),
            e,
        )
    })?;
    let raw = [fd.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&raw)];
    let iov = [IoSlice::new(msg.as_bytes())];
    loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &rights,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(n) => {
                return Err(Error::internal(format!(
                    "seccomp agent at {}: sent {n} of {} bytes of the process state",
                    path.display(),
                    msg.len()
                )));
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(sys_err(
                    format!("send the seccomp listener to {}", path.display()),
                    e,
                ));
            }
        }
    }
}

/// A user namespace with `maps`, as an open `/proc/PID/ns/user` (see
/// [`crate::syscall::Syscall::userns_with_mappings`]). Forks: the caller must be single-threaded.
pub fn userns_with_mappings(maps: &IdMappings) -> std::result::Result<OwnedFd, Errno> {
    if ensure_single_threaded().is_err() {
        return Err(Errno::EDEADLK);
    }
    // SAFETY: the process has one thread (checked above); the child only calls unshare,
    // raise and _exit, all async-signal-safe.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            // SAFETY: plain system calls, then _exit without running the parent's handlers.
            unsafe {
                let code = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                    libc::raise(libc::SIGSTOP);
                    0
                } else {
                    1
                };
                libc::_exit(code)
            }
        }
        ForkResult::Parent { child } => {
            let res = (|| {
                match waitpid(child, Some(WaitPidFlag::WUNTRACED))? {
                    WaitStatus::Stopped(..) => {}
                    _ => return Err(Errno::EPERM),
                }
                for (file, map) in [("uid_map", &maps.uid), ("gid_map", &maps.gid)] {
                    let path = format!("/proc/{child}/{file}");
                    std::fs::write(&path, IdMappings::format(map))
                        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
                }
                nix::fcntl::open(
                    format!("/proc/{child}/ns/user").as_str(),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
            })();
            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
            let _ = waitpid(child, None);
            res
        }
    }
}

fn write_id_maps(pid: i32, maps: &IdMappings) -> Result<()> {
    for (file, map) in [("uid_map", &maps.uid), ("gid_map", &maps.gid)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, IdMappings::format(map))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    Ok(())
}

fn open_ns(path: &std::path::Path) -> Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| sys_err(format!("open namespace {}", path.display()), e))
}

fn intermediate(ch: &Channel, stage: &Stage<'_>, fds: ChildFds, cgroup: CgroupEntry) -> Result<()> {
    let sys = LinuxSyscall;
    ch.expect("the go-ahead", |m| *m == SyncMsg::Go)?;
    // Still one thread (a fork of a single-threaded process), and not yet in a new cgroup
    // namespace, whose root must be the container's cgroup.
    cgroup.enter_v1()?;
    // The container's init inherits what is left open here: no cgroupfs descriptors for it.
    drop(cgroup);
    // Every namespace file is opened before the first setns: after joining a user or mount
    // namespace the paths may no longer resolve or be permitted.
    let mut joins: Vec<(CloneFlags, OwnedFd)> = Vec::new();
    let mut new = CloneFlags::empty();
    match stage {
        Stage::Init { plan, .. } => {
            for ns in &plan.namespaces {
                match &ns.path {
                    Some(p) => joins.push((ns.flag, open_ns(p)?)),
                    None => new |= ns.flag,
                }
            }
        }
        Stage::Exec {
            target_pid,
            namespaces,
            ..
        } => {
            for (flag, name) in NS_FILES {
                if namespaces.contains(flag) {
                    let p = PathBuf::from(format!("/proc/{target_pid}/ns/{name}"));
                    joins.push((flag, open_ns(&p)?));
                }
            }
        }
    }
    // User first (the others are owned by it), mount last (it changes what paths mean).
    joins.sort_by_key(|(f, _)| match *f {
        CloneFlags::CLONE_NEWUSER => 0,
        CloneFlags::CLONE_NEWNS => 2,
        _ => 1,
    });
    let borrowed: Vec<(CloneFlags, BorrowedFd<'_>)> =
        joins.iter().map(|(f, fd)| (*f, fd.as_fd())).collect();
    let time_offsets = match stage {
        Stage::Init { plan, .. } => plan.time_offsets.as_deref(),
        Stage::Exec { .. } => None,
    };
    let mut map_ids = || -> Result<()> {
        ch.send(&SyncMsg::MapIds)?;
        ch.expect("the id maps", |m| *m == SyncMsg::IdsMapped)?;
        Ok(())
    };
    init::namespaces(&sys, &borrowed, new, time_offsets, &mut map_ids)?;
    let mut sources = MountSources::default();
    if let Stage::Init { plan, .. } = stage
        && !rootfs::idmapped_indices(plan).is_empty()
    {
        ch.send(&SyncMsg::MountSources)?;
        match ch.recv_with_fds()? {
            Some((SyncMsg::MountSourcesReady { count }, trees)) if trees.len() == count => {
                sources = MountSources::from_plan(plan, trees)?;
            }
            Some((SyncMsg::Error { kind, message }, _)) => {
                return Err(Error::new(ErrorKind::from_name(&kind), message));
            }
            other => {
                return Err(Error::internal(format!(
                    "sync channel: expected the id-mapped mount trees, got {:?}",
                    other.map(|(m, fds)| (m, fds.len()))
                )));
            }
        }
    }
    // SAFETY: the intermediate is a fork of a single-threaded process and has no threads.
    match unsafe { nix::unistd::fork() }.map_err(|e| sys_err("fork the container process", e))? {
        ForkResult::Child => {
            let err = child(ch, stage, fds, &sources);
            // Only reached on failure: while the channel is open the parent reports it; once
            // it is closed (the init waits for start), stderr is the only place left.
            if let Some((e, closed)) = err {
                if closed {
                    eprintln!("berth-runc: {e}");
                } else {
                    let _ = ch.send(&error_msg(&e));
                }
            }
            // SAFETY: see the intermediate's _exit.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            ch.send(&SyncMsg::Child {
                pid: child.as_raw(),
            })?;
            Ok(())
        }
    }
}

/// Runs the final stage; returns only on failure, with whether the channel was closed.
fn child(
    ch: &Channel,
    stage: &Stage<'_>,
    fds: ChildFds,
    sources: &MountSources,
) -> Option<(Error, bool)> {
    let state = match ch.expect("the go-ahead to set up", |m| {
        matches!(m, SyncMsg::Continue { .. })
    }) {
        Ok(SyncMsg::Continue { state }) => state,
        Ok(_) => String::new(),
        Err(e) => return Some((e, false)),
    };
    let sys = LinuxSyscall;
    let hooks = match stage {
        Stage::Init { plan, .. } => plan.spec.hooks().clone(),
        Stage::Exec { .. } => None,
    };
    let mut hs = ChildHandshake {
        ch,
        fds,
        hooks,
        state,
        closed: false,
    };
    let res = match stage {
        Stage::Init {
            plan,
            cgroups,
            opts,
        } => init::container(&sys, plan, cgroups, sources, *opts, &mut hs),
        Stage::Exec {
            process,
            personality,
            ..
        } => init::exec_process(&sys, process, *personality, &mut hs),
    };
    match res {
        Ok(never) => match never {},
        Err(e) => Some((e, hs.closed)),
    }
}

struct ChildHandshake<'a> {
    ch: &'a Channel,
    fds: ChildFds,
    hooks: Option<oci_spec::runtime::Hooks>,
    state: String,
    closed: bool,
}

impl Handshake for ChildHandshake<'_> {
    fn create_container_hooks(&mut self) -> Result<()> {
        let list = Phase::CreateContainer.of(self.hooks.as_ref());
        hooks::run(Phase::CreateContainer, &list, &self.state)
    }

    fn console(&mut self) -> Result<()> {
        let socket = self.fds.console_socket.take().ok_or_else(|| {
            Error::invalid_argument("process.terminal is set but there is no console socket")
        })?;
        let (master, slave, name) = crate::console::open_pty()?;
        crate::console::send_fd(socket.as_fd(), master.as_fd(), &name)?;
        drop(master);
        crate::console::make_controlling(&slave)
    }

    fn ready(&mut self) -> Result<()> {
        self.ch.send(&SyncMsg::Ready)
    }

    fn wait_for_start(&mut self) -> Result<()> {
        let Some(fifo) = self.fds.exec_fifo.take() else {
            return Ok(());
        };
        // Setup is complete: let `create` return before blocking until `start`.
        self.ch.close();
        self.closed = true;
        // Opening the FIFO for writing blocks until `start` opens it for reading.
        let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
        let w = nix::fcntl::open(
            path.as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys_err("open the exec FIFO", e))?;
        nix::unistd::write(&w, b"0").map_err(|e| sys_err("write to the exec FIFO", e))?;
        Ok(())
    }

    fn start_container_hooks(&mut self) -> Result<()> {
        let list = Phase::StartContainer.of(self.hooks.as_ref());
        if list.is_empty() {
            return Ok(());
        }
        // By now the container is created (runc passes that status to these hooks).
        let state = self
            .state
            .replacen("\"status\":\"creating\"", "\"status\":\"created\"", 1);
        hooks::run(Phase::StartContainer, &list, &state)
    }

    fn preserved_fds(&self) -> i32 {
        self.fds.preserve_fds
    }

    fn seccomp_listener(&mut self, listener: OwnedFd) -> Result<()> {
        if self.closed {
            return Err(Error::internal(
                "the seccomp listener is ready after the sync channel was closed",
            ));
        }
        self.ch
            .send_with_fds(&SyncMsg::SeccompListener, &[listener.as_fd()])
        // `listener` is closed on return: the container's process keeps no copy of it.
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_message_arrives_whole_with_its_descriptors_and_the_end_is_none() {
        let (a, b) = Channel::pair().unwrap();
        // Larger than the fixed 64 KiB buffer the receiver once had.
        let state = "x".repeat(100 << 10);
        let file = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fds(
            &SyncMsg::Continue {
                state: state.clone(),
            },
            &[file.as_fd()],
        )
        .unwrap();
        a.send(&SyncMsg::Ready).unwrap();
        match b.recv_with_fds().unwrap() {
            Some((SyncMsg::Continue { state: got }, fds)) => {
                assert_eq!(got, state);
                assert_eq!(fds.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(b.recv_with_fds().unwrap(), Some((SyncMsg::Ready, fds)) if fds.is_empty())
        );
        drop(a);
        assert!(b.recv_with_fds().unwrap().is_none());
    }
}
