//! The shim's state and its one poll loop.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use berth_core::mount::flags_and_data;
use berth_core::{Error, ErrorKind, Result};
use berth_runtime::container::{DirectStart, release_init};
use berth_shim_api as api;
use bytes::BytesMut;
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process};

/// Parses an exec's OCI Process JSON (in a runtime helper: serde's code stays out of the shim).
fn parse_process(spec: &[u8]) -> Result<Process> {
    serde_json::from_slice(spec)
        .map_err(|err| Error::invalid_argument(format!("exec process spec: {err}")))
}

use crate::io::{self as sio, LogFile, Pump, Stream};
use crate::isolate::{self, Reply};
use crate::runtime::{Builtin, ChildStdio, Created, External, OciRuntime};

/// How long output may keep flowing after a process exited before the exit is reported anyway
/// (a daemonized child can hold the pipes open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One process of the task: the init ("") or an exec.
struct Proc {
    pid: i32,
    status: api::Status,
    exit_status: u32,
    exited_at_ns: i64,
    /// Reaped, but output may still be flowing: the exit is reported once it is drained.
    reaped_at: Option<Instant>,
    stdio: api::Stdio,
    pumps: Vec<Pump>,
    /// pty master, for resizes.
    console: Option<OwnedFd>,
    /// The process spec (OCI Process JSON) of an exec, until it is started.
    spec: Option<Vec<u8>>,
    /// A daemon has taken this process's exit (TakeExits).
    exit_taken: bool,
}

impl Proc {
    fn new(stdio: api::Stdio) -> Proc {
        Proc {
            pid: 0,
            status: api::Status::Created,
            exit_status: 0,
            exited_at_ns: 0,
            reaped_at: None,
            stdio,
            pumps: Vec::new(),
            console: None,
            spec: None,
            exit_taken: false,
        }
    }

    /// The exit, to hand to a daemon that has not taken it yet.
    fn untaken_exit(&self, exec_id: &str) -> Option<api::ExitEvent> {
        (self.status == api::Status::Stopped && self.pid != 0 && !self.exit_taken).then(|| {
            api::ExitEvent {
                exec_id: exec_id.to_owned(),
                pid: self.pid as u32,
                exit_status: self.exit_status,
                exited_at_ns: self.exited_at_ns,
            }
        })
    }

    fn exit(&self) -> api::ExitResponse {
        api::ExitResponse {
            pid: self.pid as u32,
            exit_status: self.exit_status,
            exited_at_ns: self.exited_at_ns,
            exits: Vec::new(),
        }
    }
}

struct Conn {
    stream: UnixStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    closed: bool,
}

struct Shim {
    id: String,
    bundle: PathBuf,
    /// Passed to the built-in runtime: where compiled seccomp filters are cached.
    seccomp_cache: Option<PathBuf>,
    runtime: Option<Box<dyn OciRuntime>>,
    procs: BTreeMap<String, Proc>,
    waiters: Vec<(usize, u64, String)>,
    /// Exits of processes deleted before a daemon took them.
    untaken: Vec<api::ExitEvent>,
    conns: Vec<Conn>,
    log: Option<Rc<RefCell<LogFile>>>,
    rootfs_mounted: bool,
    /// The init's mount namespace, held from create to delete (see [`Shim::create`]).
    init_mnt_ns: Option<OwnedFd>,
    /// Descriptors whose close tears something down (the detached rootfs, the init's mount
    /// namespace), closed once the serve loop has written its answers.
    release_after_reply: Vec<OwnedFd>,
    /// `shim.pid`, written once the first round of answers is out when berthd's first request
    /// (its Create) waits on the connection: a new file is a new inode, which on some disks
    /// costs more than the rest of the shim's start-up.
    pid_file: Option<PathBuf>,
    /// Set when the runtime lets the shim start the init itself (no helper, no record load).
    direct_start: Option<DirectStart>,
    cgroup_path: Option<String>,
    /// The cgroup file counting OOM kills (memory.oom_control on v1, memory.events on v2).
    oom_file: Option<PathBuf>,
    /// The cgroup file telling whether it is frozen (freezer.state on v1, cgroup.events on v2).
    freezer_file: Option<PathBuf>,
    oom_kills: u64,
    shutdown: bool,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What a shim is started with.
pub struct Start {
    /// The task's id.
    pub id: String,
    /// The task's directory (its OCI bundle).
    pub bundle: PathBuf,
    /// Where the built-in runtime caches compiled seccomp filters.
    pub seccomp_cache: Option<PathBuf>,
    /// stdout is berthd's first connection rather than a pipe to tell "ready" on.
    pub connected: bool,
}

/// Runs the shim until it is shut down.
pub fn run(start: Start) -> Result<()> {
    let Start {
        id,
        bundle,
        seccomp_cache,
        connected,
    } = start;
    // Own session: the shim outlives berthd and must not get its terminal's signals.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::io("prctl(PR_SET_CHILD_SUBREAPER)", e.into()))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGPIPE);
    mask.thread_block()
        .map_err(|e| Error::io("block signals", e.into()))?;
    let mut only_chld = SigSet::empty();
    only_chld.add(Signal::SIGCHLD);
    let sfd = SignalFd::with_flags(&only_chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::io("signalfd", e.into()))?;

    let sock = bundle.join("shim.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)
        .map_err(|e| Error::io(format!("listen on {}", sock.display()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("set the listener non-blocking", e))?;
    let pid_file = bundle.join("shim.pid");
    if !connected {
        write_pid_file(&pid_file)?;
    }

    // berthd's first connection arrives as stdout (its requests may already be waiting);
    // otherwise tell whoever started the shim that the socket is up. Then let go of the
    // starter's descriptors: stdio becomes /dev/null, the shim's own messages go to shim.log.
    let first = if connected {
        let fd = nix::fcntl::fcntl(
            std::io::stdout().as_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3),
        )
        .map_err(|e| Error::io("take berthd's connection", e.into()))?;
        // SAFETY: `fd` was just returned by fcntl and is owned by nobody else.
        let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("berthd's connection", e))?;
        Some(stream)
    } else {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        None
    };
    detach_stdio(&bundle.join("shim.log"));

    let mut shim = Shim {
        id,
        bundle,
        seccomp_cache,
        runtime: None,
        procs: BTreeMap::new(),
        waiters: Vec::new(),
        untaken: Vec::new(),
        conns: Vec::new(),
        log: None,
        rootfs_mounted: false,
        init_mnt_ns: None,
        release_after_reply: Vec::new(),
        pid_file: connected.then_some(pid_file),
        direct_start: None,
        cgroup_path: None,
        oom_file: None,
        freezer_file: None,
        oom_kills: 0,
        shutdown: false,
    };
    if let Some(stream) = first {
        shim.conns.push(Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            closed: false,
        });
    }
    shim.serve(&listener, &sfd);
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

fn write_pid_file(path: &Path) -> Result<()> {
    std::fs::write(path, std::process::id().to_string())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn detach_stdio(log: &Path) {
    if let Ok(null) = sio::dev_null() {
        // SAFETY: dup2 onto stdin from a descriptor held here.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
        // SAFETY: as above, stdout.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        // SAFETY: dup2 onto stderr from a file held here.
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
}

#[derive(Clone, Copy)]
enum Token {
    Listener,
    Signal,
    Conn(usize),
    PumpRead(usize, usize),
    PumpWrite(usize, usize),
}

impl Shim {
    fn serve(&mut self, listener: &UnixListener, sfd: &SignalFd) {
        loop {
            let keys: Vec<String> = self.procs.keys().cloned().collect();
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut tokens: Vec<Token> = Vec::new();
            let mut add = |fd: RawFd, events: i16, t: Token| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                tokens.push(t);
            };
            if !self.shutdown {
                add(listener.as_raw_fd(), libc::POLLIN, Token::Listener);
            }
            add(sfd.as_fd().as_raw_fd(), libc::POLLIN, Token::Signal);
            for (i, c) in self.conns.iter().enumerate() {
                if c.closed {
                    continue;
                }
                let mut ev = libc::POLLIN;
                if !c.wbuf.is_empty() {
                    ev |= libc::POLLOUT;
                }
                add(c.stream.as_raw_fd(), ev, Token::Conn(i));
            }
            for (pi, key) in keys.iter().enumerate() {
                if let Some(p) = self.procs.get(key) {
                    for (j, pump) in p.pumps.iter().enumerate() {
                        if let Some(fd) = pump.wants_read() {
                            add(fd.as_raw_fd(), libc::POLLIN, Token::PumpRead(pi, j));
                        }
                        if let Some(fd) = pump.wants_write() {
                            add(fd.as_raw_fd(), libc::POLLOUT, Token::PumpWrite(pi, j));
                        }
                    }
                }
            }
            let draining = self.procs.values().any(|p| p.reaped_at.is_some());
            let running = self
                .procs
                .values()
                .any(|p| p.status == api::Status::Running);
            let timeout = if draining {
                50
            } else if running && self.oom_file.is_some() {
                1000
            } else {
                -1
            };
            // SAFETY: `fds` is a valid array of pollfd of the given length for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if Errno::last() == Errno::EINTR {
                    continue;
                }
                break;
            }
            for (pfd, token) in fds.iter().zip(tokens) {
                if pfd.revents == 0 {
                    continue;
                }
                match token {
                    Token::Listener => self.accept(listener),
                    Token::Signal => {
                        while let Ok(Some(_)) = sfd.read_signal() {}
                        self.reap();
                    }
                    Token::Conn(i) => {
                        if pfd.revents & libc::POLLOUT != 0 {
                            self.flush(i);
                        }
                        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                            self.read_conn(i);
                        }
                    }
                    Token::PumpRead(pi, j) => {
                        if let Some(p) = keys.get(pi).and_then(|k| self.procs.get_mut(k))
                            && let Some(pump) = p.pumps.get_mut(j)
                        {
                            pump.on_readable();
                        }
                    }
                    Token::PumpWrite(pi, j) => {
                        if let Some(p) = keys.get(pi).and_then(|k| self.procs.get_mut(k))
                            && let Some(pump) = p.pumps.get_mut(j)
                        {
                            pump.on_writable();
                        }
                    }
                }
            }
            // Every answer of this round is written (or queued): what waited for it may go.
            self.release_after_reply.clear();
            if let Some(path) = self.pid_file.take()
                && let Err(e) = write_pid_file(&path)
            {
                eprintln!("berth-shim: {e}");
            }
            self.finish_exits();
            self.check_oom();
            self.conns.retain(|c| !c.closed);
            if self.shutdown && self.conns.iter().all(|c| c.wbuf.is_empty()) {
                break;
            }
        }
    }

    fn accept(&mut self, listener: &UnixListener) {
        while let Ok((stream, _)) = listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.conns.push(Conn {
                    stream,
                    rbuf: BytesMut::new(),
                    wbuf: Vec::new(),
                    closed: false,
                });
            }
        }
    }

    fn read_conn(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(c) = self.conns.get_mut(i) else {
                return;
            };
            match std::io::Read::read(&mut c.stream, &mut buf) {
                Ok(0) => {
                    c.closed = true;
                    break;
                }
                Ok(n) => c.rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.closed = true;
                    break;
                }
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(i) else {
                return;
            };
            let msg = match api::decode_frame(&mut c.rbuf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("berth-shim: dropping a connection: {e}");
                    c.closed = true;
                    break;
                }
            };
            if let Some(api::shim_message::Kind::Request(req)) = msg.kind {
                let id = req.id;
                if let Some(resp) = self.handle(i, req) {
                    self.send(i, response(id, resp));
                }
            }
        }
        // The waiters of a closed connection will never be answered.
        if self.conns.get(i).is_some_and(|c| c.closed) {
            self.waiters.retain(|(c, _, _)| *c != i);
        }
    }

    fn send(&mut self, i: usize, msg: api::ShimMessage) {
        if let Some(c) = self.conns.get_mut(i) {
            c.wbuf.extend_from_slice(&api::encode_frame(&msg));
        }
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        while !c.wbuf.is_empty() {
            match c.stream.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.closed = true;
                    c.wbuf.clear();
                }
            }
        }
    }

    fn broadcast(&mut self, event: api::Event) {
        let msg = api::ShimMessage {
            kind: Some(api::shim_message::Kind::Event(event)),
        };
        for i in 0..self.conns.len() {
            self.send(i, msg.clone());
        }
    }

    /// Reaps every exited child; a process of the task becomes "reaped", its exit reported
    /// once its output is drained.
    fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) => (p.as_raw(), c as u32),
                Ok(WaitStatus::Signaled(p, s, _)) => (p.as_raw(), 128 + s as u32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if let Some(p) = self
                .procs
                .values_mut()
                .find(|p| p.pid == pid && p.status != api::Status::Stopped)
            {
                p.exit_status = code;
                p.exited_at_ns = now_ns();
                p.reaped_at = Some(Instant::now());
                // Nothing more will be written to the container's stdin.
                if let Some(stdin) = p.pumps.first_mut() {
                    stdin.src = None;
                    stdin.keepalive = None;
                    stdin.dst = None;
                }
            }
        }
    }

    fn finish_exits(&mut self) {
        let mut done = Vec::new();
        for (key, p) in &mut self.procs {
            let Some(at) = p.reaped_at else {
                continue;
            };
            let drained = p.pumps.iter().skip(1).all(Pump::done);
            if drained || at.elapsed() >= DRAIN_TIMEOUT {
                p.reaped_at = None;
                p.status = api::Status::Stopped;
                // Closing the client's ends tells it the output is complete.
                p.pumps.clear();
                p.console = None;
                done.push(key.clone());
            }
        }
        for key in done {
            let Some(p) = self.procs.get(&key) else {
                continue;
            };
            let exit = p.exit();
            self.broadcast(api::Event {
                kind: Some(api::event::Kind::Exit(api::ExitEvent {
                    exec_id: key.clone(),
                    pid: exit.pid,
                    exit_status: exit.exit_status,
                    exited_at_ns: exit.exited_at_ns,
                })),
            });
            let waiting: Vec<(usize, u64)> = self
                .waiters
                .iter()
                .filter(|(_, _, e)| *e == key)
                .map(|(c, r, _)| (*c, *r))
                .collect();
            self.waiters.retain(|(_, _, e)| *e != key);
            for (c, r) in waiting {
                self.send(c, response(r, Ok(api::response::Body::Exit(exit.clone()))));
            }
        }
    }

    fn check_oom(&mut self) {
        let Some(path) = &self.oom_file else {
            return;
        };
        // Read here rather than through the runtime's cgroup code, which would stay resident.
        let now = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(self.oom_kills);
        if now > self.oom_kills {
            self.oom_kills = now;
            self.broadcast(api::Event {
                kind: Some(api::event::Kind::Oom(api::Empty {})),
            });
        }
    }

    /// Handles a request; None when the answer comes later (Wait).
    fn handle(&mut self, conn: usize, req: api::Request) -> Option<Result<api::response::Body>> {
        use api::request::Body as B;
        use api::response::Body as R;
        let Some(body) = req.body else {
            return Some(Err(Error::invalid_argument("empty request")));
        };
        Some(match body {
            B::Create(c) => self.create(c).map(|pid| R::Pid(api::PidResponse { pid })),
            B::Start(p) => self
                .start(&p.exec_id)
                .map(|pid| R::Pid(api::PidResponse { pid })),
            B::Kill(k) => self.kill(&k).map(|()| R::Pid(api::PidResponse { pid: 0 })),
            B::Exec(e) => self.exec(e).map(|()| R::Pid(api::PidResponse { pid: 0 })),
            B::ResizePty(r) => self
                .resize(&r)
                .map(|()| R::Pid(api::PidResponse { pid: 0 })),
            B::CloseIo(p) => self
                .close_io(&p.exec_id)
                .map(|()| R::Pid(api::PidResponse { pid: 0 })),
            B::Pause(_) => self
                .with_runtime(|rt, id| rt.pause(id))
                .map(|_| R::Pid(api::PidResponse { pid: 0 })),
            B::Resume(_) => self
                .with_runtime(|rt, id| rt.resume(id))
                .map(|_| R::Pid(api::PidResponse { pid: 0 })),
            B::Pids(_) => self.pids().map(R::Pids),
            B::State(p) => self.state(&p.exec_id).map(R::State),
            B::Wait(p) => match self.procs.get(&p.exec_id) {
                None => Err(not_found(&p.exec_id)),
                Some(pr) if pr.status == api::Status::Stopped => Ok(R::Exit(pr.exit())),
                Some(_) => {
                    self.waiters.push((conn, req.id, p.exec_id));
                    return None;
                }
            },
            B::Delete(p) => self.delete(&p.exec_id).map(|mut exit| {
                // Taken here, after the delete recorded its exits, so the daemon needs no
                // TakeExits round trip (which would wait behind the unmounts after this reply).
                exit.exits = self.take_exits().exits;
                R::Exit(exit)
            }),
            B::Stats(_) => self.stats().map(R::Metrics),
            B::Update(u) => self
                .update(&u.resources)
                .map(|()| R::Pid(api::PidResponse { pid: 0 })),
            B::Shutdown(s) => self
                .shutdown(s.now)
                .map(|()| R::Pid(api::PidResponse { pid: 0 })),
            B::TakeExits(_) => Ok(R::Exits(self.take_exits())),
            B::Connect(_) => Ok(R::Connect(api::ConnectResponse {
                shim_pid: std::process::id(),
                task_pid: self.procs.get("").map(|p| p.pid as u32).unwrap_or(0),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })),
        })
    }

    /// Every exit no daemon has taken yet, now taken.
    fn take_exits(&mut self) -> api::ExitsResponse {
        let mut exits = std::mem::take(&mut self.untaken);
        for (key, p) in &mut self.procs {
            if let Some(e) = p.untaken_exit(key) {
                p.exit_taken = true;
                exits.push(e);
            }
        }
        api::ExitsResponse { exits }
    }

    /// Runs a runtime operation in a helper child (see [`isolate`]); `f` returns nothing to
    /// send back.
    fn with_runtime(&self, f: impl FnOnce(&dyn OciRuntime, &str) -> Result<()>) -> Result<()> {
        self.isolated(|rt, id| f(rt, id).map(|()| Reply::default()))
            .map(drop)
    }

    /// Runs a runtime operation in a helper child (see [`isolate`]).
    fn isolated(&self, f: impl FnOnce(&dyn OciRuntime, &str) -> Result<Reply>) -> Result<Reply> {
        let rt = self
            .runtime
            .as_deref()
            .ok_or_else(|| Error::failed_precondition("the task is not created"))?;
        let id = self.id.as_str();
        isolate::run(|| f(rt, id))
    }

    fn create(&mut self, req: api::CreateRequest) -> Result<u32> {
        if self.procs.contains_key("") {
            return Err(Error::already_exists(format!(
                "task {:?} already exists",
                self.id
            )));
        }
        let rootfs = self.bundle.join("rootfs");
        if !req.rootfs.is_empty() {
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| Error::io(format!("create {}", rootfs.display()), e))?;
        }
        let state_root = self.bundle.join("runtime");
        let runtime: Box<dyn OciRuntime> = if req.runtime_binary.is_empty() {
            Box::new(Builtin::new(&state_root, self.seccomp_cache.as_deref())?)
        } else {
            Box::new(External::new(
                PathBuf::from(&req.runtime_binary),
                state_root.clone(),
                self.bundle.join("runtime.log"),
            ))
        };
        let stdio = req.stdio.unwrap_or_default();
        if !stdio.log_path.is_empty() {
            self.log = Some(Rc::new(RefCell::new(LogFile::open(
                Path::new(&stdio.log_path),
                stdio.log_max_size,
            )?)));
        }
        let mut proc = Proc::new(stdio.clone());
        let (id, bundle) = (&self.id, &self.bundle);
        // The rootfs is mounted here while the helper reads the spec and makes the cgroups;
        // the helper makes the container (and so copies the mount table) only after it.
        let mut mounted = false;
        let mount_all = || {
            for m in &req.rootfs {
                mount_rootfs(m, &rootfs)?;
                mounted = true;
            }
            if mounted {
                berth_runtime::rootfs::make_mount_points(&rootfs, &req.mount_points);
            }
            Ok(())
        };
        let created = |rt: &dyn OciRuntime, child, console: Option<&Path>, ready| match rt.create(
            id,
            bundle,
            child,
            console,
            Some(ready),
        )? {
            Created::Builtin(c) => {
                let mut reply = cgroup_reply(&c.cgroup);
                reply.pid = c.pid;
                if let Some(d) = c.direct {
                    reply.exec_fifo = d.fifo.to_string_lossy().into_owned();
                    reply.init_start = d.pid_start;
                }
                Ok(reply)
            }
            Created::External(pid) => {
                let mut reply = external_cgroup_files(bundle);
                reply.pid = pid;
                Ok(reply)
            }
        };
        let res = self.launch(&mut proc, runtime.as_ref(), true, created, mount_all);
        self.rootfs_mounted = mounted;
        let reply = match res {
            Ok(r) => r,
            Err(e) => {
                self.unmount_rootfs();
                return Err(e);
            }
        };
        let pid = reply.pid;
        proc.pid = pid;
        // When the init, the last process of its mount namespace, exits, the kernel tears the
        // namespace down (every mount of the container, an RCU grace period) before it
        // signals the exit: about a millisecond between the container's end and its exit
        // status. Holding the namespace moves that work to the delete, after its answer.
        self.init_mnt_ns = nix::fcntl::open(
            format!("/proc/{pid}/ns/mnt").as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok();
        let some = |s: String| (!s.is_empty()).then_some(s);
        self.cgroup_path = some(reply.cgroup);
        self.oom_file = some(reply.oom_file).map(PathBuf::from);
        self.direct_start = some(reply.exec_fifo).map(|fifo| DirectStart {
            fifo: PathBuf::from(fifo),
            pid,
            pid_start: reply.init_start,
        });
        self.freezer_file = some(reply.freezer_file).map(PathBuf::from);
        self.runtime = Some(runtime);
        self.procs.insert(String::new(), proc);
        Ok(pid as u32)
    }

    /// Sets up a process's stdio (pipes or a pty through a console socket), runs `f` to make
    /// the process in a helper child (see [`isolate`]) while the shim runs `alongside` (`f`'s
    /// last argument is the gate that opens when `alongside` has succeeded), and wires the
    /// pumps: to the client's paths (any may be empty: that stream is then only logged, or
    /// read and dropped) and, when `logged`, to the task's log (the init's output is logged,
    /// an exec's is not, as with Docker).
    fn launch(
        &self,
        proc: &mut Proc,
        rt: &dyn OciRuntime,
        logged: bool,
        f: impl FnOnce(&dyn OciRuntime, ChildStdio, Option<&Path>, OwnedFd) -> Result<Reply>,
        alongside: impl FnOnce() -> Result<()>,
    ) -> Result<Reply> {
        let stdio = proc.stdio.clone();
        let log = |s: Stream| {
            if logged {
                self.log.clone().map(|l| (l, s))
            } else {
                None
            }
        };
        let input = if stdio.stdin.is_empty() {
            None
        } else {
            Some(sio::open_input(&stdio.stdin)?)
        };
        let out = if stdio.stdout.is_empty() {
            None
        } else {
            Some(sio::open_output(&stdio.stdout)?)
        };
        if stdio.terminal {
            let sock_path = self
                .bundle
                .join(format!("console-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&sock_path);
            let listener = UnixListener::bind(&sock_path)
                .map_err(|e| Error::io("listen on the console socket", e))?;
            let null = ChildStdio {
                stdin: sio::dev_null()?,
                stdout: sio::dev_null()?,
                stderr: sio::dev_null()?,
            };
            let reply = isolate::run_gated(|gate| f(rt, null, Some(&sock_path), gate), alongside);
            let _ = std::fs::remove_file(&sock_path);
            let reply = reply?;
            let master = receive_master(&listener)?;
            sio::set_nonblocking(master.as_fd(), true)?;
            let reader = sio::dup(master.as_fd())?;
            let writer = sio::dup(master.as_fd())?;
            let mut stdin = Pump::new(None, Some(writer), None);
            if let Some((r, keep)) = input {
                stdin.src = Some(r);
                stdin.keepalive = keep;
            }
            // The pty stays open while the process lives; its stdin is closed by CloseIO.
            stdin.close_dst_at_eof = false;
            proc.pumps = vec![stdin, Pump::new(Some(reader), out, log(Stream::Stdout))];
            proc.console = Some(master);
            return Ok(reply);
        }
        let (in_r, in_w) = sio::pipe()?;
        let (out_r, out_w) = sio::pipe()?;
        let (err_r, err_w) = sio::pipe()?;
        let err = if stdio.stderr.is_empty() {
            None
        } else {
            Some(sio::open_output(&stdio.stderr)?)
        };
        let child = ChildStdio {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        };
        let reply = isolate::run_gated(|gate| f(rt, child, None, gate), alongside)?;
        for fd in [&in_w, &out_r, &err_r] {
            sio::set_nonblocking(fd.as_fd(), true)?;
        }
        let mut stdin = Pump::new(None, Some(in_w), None);
        match input {
            Some((r, keep)) => {
                stdin.src = Some(r);
                stdin.keepalive = keep;
            }
            // No stdin: the process reads EOF at once.
            None => stdin.dst = None,
        }
        proc.pumps = vec![
            stdin,
            Pump::new(Some(out_r), out, log(Stream::Stdout)),
            Pump::new(Some(err_r), err, log(Stream::Stderr)),
        ];
        Ok(reply)
    }

    fn start(&mut self, exec_id: &str) -> Result<u32> {
        let rt = self
            .runtime
            .as_deref()
            .ok_or_else(|| Error::failed_precondition("the task is not created"))?;
        let mut proc = self
            .procs
            .remove(exec_id)
            .ok_or_else(|| not_found(exec_id))?;
        if proc.status != api::Status::Created {
            let status = proc.status;
            self.procs.insert(exec_id.to_owned(), proc);
            return Err(Error::failed_precondition(format!(
                "process {exec_id:?} cannot be started: it is {status:?}"
            )));
        }
        let res = if exec_id.is_empty() {
            let id = self.id.as_str();
            match self.direct_start.take() {
                // The FIFO's open, one byte and an unlink: not worth a helper.
                Some(init) => release_init(&init, id).map(|()| proc.pid),
                None => isolate::run(|| rt.start(id).map(|()| Reply::default())).map(|_| proc.pid),
            }
        } else {
            let spec = proc.spec.take().unwrap_or_default();
            let file = self.bundle.join(format!("exec-{exec_id}.json"));
            let id = self.id.clone();
            let made = |rt: &dyn OciRuntime, child, console: Option<&Path>, _ready| {
                let spec = parse_process(&spec)?;
                let pid = rt.exec(&id, &spec, &file, child, console)?;
                Ok(Reply {
                    pid,
                    ..Reply::default()
                })
            };
            self.launch(&mut proc, rt, false, made, || Ok(()))
                .map(|r| r.pid)
        };
        match res {
            Ok(pid) => {
                proc.pid = pid;
                proc.status = api::Status::Running;
                self.procs.insert(exec_id.to_owned(), proc);
                // An exec may already have exited while it was being set up.
                self.reap();
                Ok(pid as u32)
            }
            Err(e) => {
                self.procs.insert(exec_id.to_owned(), proc);
                Err(e)
            }
        }
    }

    fn kill(&mut self, k: &api::KillRequest) -> Result<()> {
        let sig = Signal::try_from(k.signal as i32)
            .map_err(|_| Error::invalid_argument(format!("unknown signal {}", k.signal)))?;
        let p = self
            .procs
            .get(&k.exec_id)
            .ok_or_else(|| not_found(&k.exec_id))?;
        if p.status == api::Status::Stopped && !k.all {
            return Err(Error::not_found(format!(
                "process {:?} already finished",
                k.exec_id
            )));
        }
        if k.exec_id.is_empty() {
            self.with_runtime(|rt, id| rt.kill(id, sig, k.all))
        } else {
            nix::sys::signal::kill(Pid::from_raw(p.pid), sig)
                .map_err(|e| Error::io(format!("kill {}", p.pid), e.into()))
        }
    }

    fn exec(&mut self, e: api::ExecRequest) -> Result<()> {
        if e.exec_id.is_empty() {
            return Err(Error::invalid_argument("an exec needs an id"));
        }
        if self.procs.contains_key(&e.exec_id) {
            return Err(Error::already_exists(format!(
                "exec {:?} already exists",
                e.exec_id
            )));
        }
        match self.procs.get("") {
            Some(p) if p.status == api::Status::Running => {}
            _ => return Err(Error::failed_precondition("the task is not running")),
        }
        // Checked now, so a bad spec fails Exec rather than Start.
        isolate::run(|| parse_process(&e.spec).map(|_| Reply::default()))?;
        let mut proc = Proc::new(e.stdio.unwrap_or_default());
        proc.spec = Some(e.spec);
        self.procs.insert(e.exec_id, proc);
        Ok(())
    }

    fn resize(&mut self, r: &api::ResizePtyRequest) -> Result<()> {
        let p = self
            .procs
            .get(&r.exec_id)
            .ok_or_else(|| not_found(&r.exec_id))?;
        let console = p
            .console
            .as_ref()
            .ok_or_else(|| Error::failed_precondition("the process has no terminal"))?;
        berth_runtime::console::set_size(console.as_fd(), r.height as u16, r.width as u16)
    }

    fn close_io(&mut self, exec_id: &str) -> Result<()> {
        let p = self
            .procs
            .get_mut(exec_id)
            .ok_or_else(|| not_found(exec_id))?;
        if let Some(stdin) = p.pumps.first_mut() {
            // Only the shim's own writer goes: the FIFO then reads EOF once the client's
            // writer is closed too and what it wrote has been read, and the pump closes the
            // container's stdin after delivering it. Dropping the reader here lost whatever
            // the client wrote just before CloseIO.
            stdin.keepalive = None;
            stdin.close_dst_at_eof = true;
            stdin.on_writable();
        }
        Ok(())
    }

    fn pids(&self) -> Result<api::PidsResponse> {
        let pids = self
            .isolated(|rt, id| {
                rt.pids(id).map(|pids| Reply {
                    pids,
                    ..Reply::default()
                })
            })?
            .pids;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| api::ProcessInfo {
                    pid: pid as u32,
                    exec_id: self
                        .procs
                        .iter()
                        .find(|(k, p)| p.pid == pid && !k.is_empty())
                        .map(|(k, _)| k.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// Whether the container's cgroup is frozen: v1's freezer.state says FROZEN, v2's
    /// cgroup.events has "frozen 1".
    fn frozen(&self) -> bool {
        self.freezer_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .is_some_and(|t| t.trim() == "FROZEN" || t.lines().any(|l| l == "frozen 1"))
    }

    fn state(&self, exec_id: &str) -> Result<api::StateResponse> {
        let p = self.procs.get(exec_id).ok_or_else(|| not_found(exec_id))?;
        let mut status = p.status;
        if status == api::Status::Running && exec_id.is_empty() && self.frozen() {
            status = api::Status::Paused;
        }
        Ok(api::StateResponse {
            exec_id: exec_id.to_owned(),
            pid: p.pid as u32,
            status: status as i32,
            exit_status: p.exit_status,
            exited_at_ns: p.exited_at_ns,
            stdio: Some(p.stdio.clone()),
        })
    }

    fn delete(&mut self, exec_id: &str) -> Result<api::ExitResponse> {
        let p = self.procs.get(exec_id).ok_or_else(|| not_found(exec_id))?;
        if !exec_id.is_empty() {
            if p.status == api::Status::Running {
                return Err(Error::failed_precondition(format!(
                    "exec {exec_id:?} is still running"
                )));
            }
            let exit = p.exit();
            self.untaken.extend(p.untaken_exit(exec_id));
            self.procs.remove(exec_id);
            return Ok(exit);
        }
        if p.status == api::Status::Running || p.reaped_at.is_some() {
            // The daemon asks no State first: this is where its status rule is kept.
            let status = if self.frozen() { "paused" } else { "running" };
            return Err(Error::failed_precondition(format!(
                "task {:?} must be stopped before deletion: it is {status}",
                self.id
            )));
        }
        let exit = p.exit();
        self.with_runtime(|rt, id| rt.delete(id, true))?;
        self.unmount_rootfs();
        self.release_after_reply.extend(self.init_mnt_ns.take());
        let untaken: Vec<api::ExitEvent> = self
            .procs
            .iter()
            .filter_map(|(k, p)| p.untaken_exit(k))
            .collect();
        self.untaken.extend(untaken);
        self.procs.clear();
        Ok(exit)
    }

    fn stats(&self) -> Result<api::Metrics> {
        let path = self
            .cgroup_path
            .as_deref()
            .ok_or_else(|| Error::failed_precondition("the task has no cgroup"))?;
        let reply = isolate::run(|| {
            let s = berth_runtime::cgroups::CgroupManager::load(path)?.stats()?;
            Ok(Reply {
                metrics: Some(metrics(&s)),
                ..Reply::default()
            })
        })?;
        reply
            .metrics
            .ok_or_else(|| Error::internal("the runtime helper sent no metrics"))
    }

    fn update(&self, resources: &[u8]) -> Result<()> {
        self.with_runtime(|rt, id| {
            let r: LinuxResources = serde_json::from_slice(resources)
                .map_err(|e| Error::invalid_argument(format!("resources: {e}")))?;
            rt.update(id, &r)
        })
    }

    fn shutdown(&mut self, now: bool) -> Result<()> {
        let live = self
            .procs
            .values()
            .any(|p| p.status != api::Status::Stopped && p.pid != 0);
        if live && !now {
            return Err(Error::failed_precondition(
                "the task still has running processes",
            ));
        }
        if live {
            let _ = self.with_runtime(|rt, id| rt.delete(id, true));
        }
        self.unmount_rootfs();
        self.release_after_reply.extend(self.init_mnt_ns.take());
        self.shutdown = true;
        Ok(())
    }

    /// Detaches the rootfs at once; its teardown waits until the current answer is sent.
    ///
    /// Tearing down an overlay mount waits for an RCU grace period (it releases its private
    /// layer mounts), 2–3 ms that the kernel spends in whichever task drops the mount's last
    /// reference, on its way back from the syscall. An O_PATH descriptor of the mount's root,
    /// opened before the detach, holds that last reference until the serve loop closes it
    /// after replying: the mount is gone from the namespace before the answer, as before, and
    /// nothing can reach it through a path while its superblock is released.
    fn unmount_rootfs(&mut self) {
        if self.rootfs_mounted {
            let rootfs = self.bundle.join("rootfs");
            if let Ok(fd) = nix::fcntl::open(
                &rootfs,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            ) {
                self.release_after_reply.push(fd);
            }
            if let Err(e) = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("berth-shim: unmount {}: {e}", rootfs.display());
            }
            self.rootfs_mounted = false;
        }
    }
}

fn not_found(exec_id: &str) -> Error {
    if exec_id.is_empty() {
        Error::not_found("task not found")
    } else {
        Error::not_found(format!("exec {exec_id:?} not found"))
    }
}

fn response(id: u64, res: Result<api::response::Body>) -> api::ShimMessage {
    let (error, body) = match res {
        Ok(b) => (None, Some(b)),
        Err(e) => (
            Some(api::ShimError {
                kind: e.kind().as_str().to_owned(),
                message: e.to_string(),
            }),
            None,
        ),
    };
    api::ShimMessage {
        kind: Some(api::shim_message::Kind::Response(api::Response {
            id,
            error,
            body,
        })),
    }
}

/// Mounts one rootfs mount (overlay, bind…) on `target`, splitting flags from data.
fn mount_rootfs(m: &api::Mount, target: &Path) -> Result<()> {
    // Propagation is left out: the runtime sets the rootfs's (`rootfsPropagation`) itself.
    let (flags, data) = flags_and_data(m.options.iter().map(String::as_str));
    let mut flags = MsFlags::from_bits_retain(flags);
    let fstype = if m.r#type == "bind" {
        flags |= MsFlags::MS_BIND;
        None
    } else {
        Some(m.r#type.as_str())
    };
    let data = data.join(",");
    if data.len() >= 4096 {
        return Err(Error::invalid_argument(
            "rootfs mount options are longer than a page",
        ));
    }
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        fstype,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!(
                "mount {} ({}) on {}: {e}",
                m.source,
                m.r#type,
                target.display()
            ),
        )
    })
}

/// Accepts the runtime's connection on the console socket and takes the pty master from it.
fn receive_master(listener: &UnixListener) -> Result<OwnedFd> {
    listener
        .set_nonblocking(false)
        .map_err(|e| Error::io("console socket", e))?;
    let (stream, _) = listener
        .accept()
        .map_err(|e| Error::io("accept on the console socket", e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| Error::io("console socket", e))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::io("receive the pty master", e.into()))?;
    for c in msg
        .cmsgs()
        .map_err(|e| Error::io("console message", e.into()))?
    {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor in our table for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(Error::internal("the console socket carried no descriptor"))
}

/// The container's cgroup and the files the shim reads itself (OOM kills, frozen), found with
/// the runtime's cgroup code in the create helper.
fn cgroup_reply(cg: &berth_runtime::cgroups::CgroupManager) -> Reply {
    use berth_runtime::cgroups::CgroupMountSource;
    let mut reply = Reply::default();
    for source in cg.mount_sources() {
        let CgroupMountSource::Bind { name, host_dir } = source else {
            continue;
        };
        let file = |f: &str| host_dir.join(f).to_string_lossy().into_owned();
        if name.is_empty() {
            reply.oom_file = file("memory.events");
            reply.freezer_file = file("cgroup.events");
        } else if name.split(',').any(|c| c == "memory") {
            reply.oom_file = file("memory.oom_control");
        } else if name.split(',').any(|c| c == "freezer") {
            reply.freezer_file = file("freezer.state");
        }
    }
    reply.cgroup = cg.path().to_owned();
    reply
}

/// [`cgroup_reply`] for a container an external runtime made: its cgroup is the spec's
/// `cgroupsPath`, on the host's layout (the built-in runtime hands over the one it made).
fn external_cgroup_files(bundle: &Path) -> Reply {
    let path = berth_runtime::spec::load(bundle).ok().and_then(|spec| {
        spec.linux()
            .as_ref()?
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
    });
    let Some(path) = path else {
        return Reply::default();
    };
    match berth_runtime::cgroups::CgroupManager::load(&path) {
        Ok(cg) => cgroup_reply(&cg),
        Err(_) => Reply {
            cgroup: path,
            ..Reply::default()
        },
    }
}

fn metrics(s: &berth_runtime::cgroups::Stats) -> api::Metrics {
    let entry = |e: &berth_runtime::cgroups::MemoryEntry| api::MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max,
        failcnt: e.failcnt,
    };
    let blkio = |v: &[berth_runtime::cgroups::BlkioEntry]| {
        v.iter()
            .map(|b| api::BlkIoEntry {
                op: b.op.clone(),
                device: String::new(),
                major: b.major,
                minor: b.minor,
                value: b.value,
            })
            .collect()
    };
    let m = &s.memory;
    api::Metrics {
        hugetlb: s
            .hugetlb
            .iter()
            .map(|h| api::HugetlbStat {
                usage: h.usage,
                max: h.max,
                failcnt: h.failcnt,
                pagesize: h.pagesize.clone(),
            })
            .collect(),
        pids: Some(api::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
        }),
        cpu: Some(api::CpuStat {
            usage: Some(api::CpuUsage {
                total: s.cpu.usage.total,
                kernel: s.cpu.usage.kernel,
                user: s.cpu.usage.user,
                per_cpu: s.cpu.usage.per_cpu.clone(),
            }),
            throttling: Some(api::Throttle {
                periods: s.cpu.throttling.periods,
                throttled_periods: s.cpu.throttling.throttled_periods,
                throttled_time: s.cpu.throttling.throttled_time,
            }),
        }),
        memory: Some(api::MemoryStat {
            cache: m.cache,
            rss: m.rss,
            rss_huge: m.rss_huge,
            mapped_file: m.mapped_file,
            dirty: m.dirty,
            writeback: m.writeback,
            pg_pg_in: m.pg_pg_in,
            pg_pg_out: m.pg_pg_out,
            pg_fault: m.pg_fault,
            pg_maj_fault: m.pg_maj_fault,
            inactive_anon: m.inactive_anon,
            active_anon: m.active_anon,
            inactive_file: m.inactive_file,
            active_file: m.active_file,
            unevictable: m.unevictable,
            hierarchical_memory_limit: m.hierarchical_memory_limit,
            hierarchical_swap_limit: m.hierarchical_swap_limit,
            total_cache: m.total_cache,
            total_rss: m.total_rss,
            total_rss_huge: m.total_rss_huge,
            total_mapped_file: m.total_mapped_file,
            total_dirty: m.total_dirty,
            total_writeback: m.total_writeback,
            total_pg_pg_in: m.total_pg_pg_in,
            total_pg_pg_out: m.total_pg_pg_out,
            total_pg_fault: m.total_pg_fault,
            total_pg_maj_fault: m.total_pg_maj_fault,
            total_inactive_anon: m.total_inactive_anon,
            total_active_anon: m.total_active_anon,
            total_inactive_file: m.total_inactive_file,
            total_active_file: m.total_active_file,
            total_unevictable: m.total_unevictable,
            usage: Some(entry(&m.usage)),
            swap: Some(entry(&m.swap)),
            kernel: Some(entry(&m.kernel)),
            kernel_tcp: Some(entry(&m.kernel_tcp)),
        }),
        blkio: Some(api::BlkIoStat {
            io_service_bytes_recursive: blkio(&s.blkio.io_service_bytes_recursive),
            io_serviced_recursive: blkio(&s.blkio.io_serviced_recursive),
        }),
        memory_oom_control: Some(api::MemoryOomControl {
            oom_kill_disable: s.memory_oom_control.oom_kill_disable,
            under_oom: s.memory_oom_control.under_oom,
            oom_kill: s.memory_oom_control.oom_kill,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mount flags of `target` as /proc/self/mountinfo lists them.
    fn mount_options(target: &Path) -> Option<String> {
        let info = berth_runtime::procfs::read("/proc/self/mountinfo").ok()?;
        let target = target.to_str()?;
        info.lines()
            .rev()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .and_then(|l| l.split(' ').nth(5).map(str::to_owned))
    }

    #[test]
    fn rootfs_flag_options_become_flags_not_data()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let target = tmp.path().join("rootfs");
        std::fs::create_dir(&target)?;
        let m = api::Mount {
            r#type: "tmpfs".into(),
            source: "tmpfs".into(),
            // tmpfs refuses data it does not know, so a flag passed as data fails the mount.
            options: [
                "rw", "noatime", "nosuid", "nodev", "size=1m", "rprivate", "defaults",
            ]
            .map(String::from)
            .to_vec(),
        };
        mount_rootfs(&m, &target)?;
        let opts = mount_options(&target);
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)?;
        let opts = opts.ok_or("the mount is not in mountinfo")?;
        for want in ["rw", "noatime", "nosuid", "nodev"] {
            assert!(
                opts.split(',').any(|o| o == want),
                "{want} missing in {opts}"
            );
        }
        Ok(())
    }
}
