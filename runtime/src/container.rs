//! The container lifecycle over a state directory per container: create, start, kill, delete,
//! exec, pause, resume, as the OCI runtime spec (and runc) define them.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::{Error, ErrorKind, Result};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process};

use crate::cgroups::{CgroupEntry, CgroupFsMount, CgroupLayout, CgroupManager, CgroupMountSource};
use crate::hooks::{self, Phase};
use crate::init::InitOptions;
use crate::process::{self, ChildFds, Parent, Stage};
use crate::rdt::Resctrl;
use crate::rootfs::{CgroupView, sys_err};
use crate::seccomp::SeccompProgram;
use crate::spec::{self, Plan, ProcessPlan, RdtPlan, SeccompListener};
use crate::state::{
    EXEC_FIFO, OciState, Record, Status, now_rfc3339, process_alive, process_start,
};
use crate::syscall::LinuxSyscall;

/// Options of `create` (and `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to write the init's pid.
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Keep the caller's session keyring.
    pub no_new_keyring: bool,
    /// Descriptors 3..3+N that pass to the container's process.
    pub preserve_fds: i32,
    /// Read before the container's process is made: one byte means the rootfs is ready, end of
    /// file that it never will be. Lets a caller mount the rootfs while the spec, seccomp
    /// filter and cgroups are prepared; the mount namespace is copied only after this.
    pub rootfs_ready: Option<Arc<OwnedFd>>,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Where to write the process's pid.
    pub pid_file: Option<PathBuf>,
    /// Console socket for a terminal.
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3..3+N that pass to the process.
    pub preserve_fds: i32,
}

/// A runtime rooted at a state directory (`--root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    /// Where compiled seccomp filters are cached, if anywhere.
    seccomp_cache: Option<PathBuf>,
}

/// Container ids are used as directory names: keep them to a safe alphabet, as runc does.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "invalid container id {id:?}: use letters, digits, '_', '-', '.', '+'"
        )))
    }
}

impl Runtime {
    /// A runtime keeping its state under `root` (created 0700 if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Runtime> {
        let root = root.into();
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io(format!("create state root {}", root.display()), e))?;
        Ok(Runtime {
            root,
            seccomp_cache: None,
        })
    }

    /// Caches compiled seccomp filters in `dir` (see [`SeccompProgram::compile_cached`]): it
    /// must be a directory only this user can write, shared by runtimes of the same trust.
    pub fn with_seccomp_cache(mut self, dir: impl Into<PathBuf>) -> Runtime {
        self.seccomp_cache = Some(dir.into());
        self
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn load(&self, id: &str) -> Result<Record> {
        validate_id(id)?;
        Record::load(&self.root, id)
    }

    fn status_of(&self, rec: &Record) -> Status {
        rec.status(&self.root, || {
            rec.cgroup().and_then(|c| c.is_frozen()).unwrap_or(false)
        })
    }

    /// Creates the container: its process is set up and waits for `start`; returns its pid.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<i32> {
        self.create_startable(id, opts).map(|c| c.pid)
    }

    /// [`Runtime::create`], also saying what it takes to start the container without this
    /// runtime ([`release_init`]): `None` when its start must run poststart hooks. For a caller
    /// that lives on after the create (the shim), so the start need not load the record.
    pub fn create_startable(&self, id: &str, opts: &CreateOptions) -> Result<Startable> {
        validate_id(id)?;
        let _span = tracing::info_span!("create", id).entered();
        let dir = Record::dir(&self.root, id);
        if dir.exists() {
            return Err(Error::already_exists(format!(
                "container with id {id:?} already exists"
            )));
        }
        let spec = spec::load(&opts.bundle)?;
        let plan = Plan::with_seccomp_cache(spec, &opts.bundle, self.seccomp_cache.as_deref())?;
        if plan.process.terminal && opts.console_socket.is_none() {
            return Err(Error::invalid_argument(
                "process.terminal is set: --console-socket is required",
            ));
        }
        // resctrl is looked for now, so a host without it fails before anything is made.
        let rdt = match &plan.intel_rdt {
            Some(rdt_plan) => {
                let resctrl = Resctrl::find()?;
                resctrl.check_monitoring(rdt_plan)?;
                Some(resctrl)
            }
            None => None,
        };
        let layout = CgroupLayout::detect()?;
        let cgroup = CgroupManager::new_in(&layout, plan.cgroups_path.as_deref(), id)?;
        std::fs::create_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::already_exists(format!("container with id {id:?} already exists"))
            } else {
                Error::io(format!("create {}", dir.display()), e)
            }
        })?;
        let res = self.create_in(id, opts, &plan, (&layout, &cgroup), rdt.as_ref());
        match res {
            Ok((pid, direct)) => Ok(Startable {
                pid,
                direct,
                cgroup,
            }),
            Err(e) => {
                let _ = cgroup.destroy();
                if let (Some(r), Some(p)) = (&rdt, &plan.intel_rdt) {
                    let _ = r.remove(&LinuxSyscall, p, id);
                }
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn create_in(
        &self,
        id: &str,
        opts: &CreateOptions,
        plan: &Plan,
        (layout, cgroup): (&CgroupLayout, &CgroupManager),
        rdt: Option<&Resctrl>,
    ) -> Result<(i32, Option<DirectStart>)> {
        let dir = Record::dir(&self.root, id);
        let fifo_path = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600))
            .map_err(|e| sys_err(format!("mkfifo {}", fifo_path.display()), e))?;
        // 0622: the init may have switched to an unprivileged user when it opens this.
        std::fs::set_permissions(
            &fifo_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o622),
        )
        .map_err(|e| Error::io(format!("chmod {}", fifo_path.display()), e))?;
        let fifo = nix::fcntl::open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| sys_err(format!("open {}", fifo_path.display()), e))?;
        let console_socket = connect_console(opts.console_socket.as_deref())?;

        cgroup.create()?;
        if let Some(r) = &plan.resources {
            cgroup.apply(&with_default_devices(r)?)?;
        }
        let views = cgroup_views(cgroup, layout.mounts(), plan);
        let stage = Stage::Init {
            plan,
            cgroups: views,
            opts: InitOptions {
                no_pivot: opts.no_pivot,
                no_new_keyring: opts.no_new_keyring,
            },
        };
        let mut parent = CreateParent {
            cgroup,
            layout,
            rdt,
            plan,
            id,
            created: now_rfc3339(),
            record: None,
        };
        let fds = ChildFds {
            exec_fifo: Some(fifo),
            console_socket,
            preserve_fds: opts.preserve_fds,
        };
        if let Some(gate) = &opts.rootfs_ready {
            wait_gate(gate)?;
        }
        let pid = process::spawn(&stage, fds, &mut parent)?;
        let record = parent
            .record
            .ok_or_else(|| Error::internal("no state recorded for the new container"))?;
        record.save(&self.root)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        tracing::debug!(pid, "created");
        let direct = Phase::Poststart
            .of(record.config.hooks().as_ref())
            .is_empty()
            .then_some(DirectStart {
                fifo: fifo_path,
                pid,
                pid_start: record.pid_start,
            });
        Ok((pid, direct))
    }

    /// Lets a created container's process exec its program.
    pub fn start(&self, id: &str) -> Result<()> {
        let rec = self.load(id)?;
        let _span = tracing::info_span!("start", id).entered();
        let status = self.status_of(&rec);
        if status != Status::Created {
            return Err(Error::failed_precondition(format!(
                "cannot start container {id:?}: it is {}, not created",
                status.as_str()
            )));
        }
        let init = DirectStart {
            fifo: Record::dir(&self.root, id).join(EXEC_FIFO),
            pid: rec.pid,
            pid_start: rec.pid_start,
        };
        release_init(&init, id)?;
        let list = Phase::Poststart.of(rec.config.hooks().as_ref());
        if !list.is_empty() {
            let state = state_json(&rec.oci_state(Status::Running));
            if let Err(e) = hooks::run(Phase::Poststart, &list, &state) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    /// The OCI state of a container.
    pub fn state(&self, id: &str) -> Result<OciState> {
        let rec = self.load(id)?;
        Ok(rec.oci_state(self.status_of(&rec)))
    }

    /// Every container under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<OciState>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("read {}", self.root.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_id(&name).is_err() {
                continue;
            }
            match Record::load(&self.root, &name) {
                Ok(rec) => out.push(rec.oci_state(self.status_of(&rec))),
                Err(e) => tracing::warn!("skipping {name}: {e}"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Sends `signal` to the init, or to every process of the container with `all`.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status == Status::Stopped && !all {
            return Err(Error::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        let cgroup = rec.cgroup()?;
        if all {
            for pid in cgroup.pids()? {
                match kill(Pid::from_raw(pid), signal) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => return Err(sys_err(format!("kill {pid} with {signal}"), e)),
                }
            }
        } else {
            kill(Pid::from_raw(rec.pid), signal)
                .map_err(|e| sys_err(format!("kill {} with {signal}", rec.pid), e))?;
        }
        if status == Status::Paused && signal == Signal::SIGKILL {
            // A frozen v1 task cannot act on SIGKILL until it is thawed.
            cgroup.thaw()?;
        }
        Ok(())
    }

    /// Deletes a container: stopped ones always; created ones by killing them; running or
    /// paused ones only with `force`.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let rec = match self.load(id) {
            Ok(r) => r,
            Err(e) if e.is(ErrorKind::NotFound) && force => return Ok(()),
            Err(e) => return Err(e),
        };
        let _span = tracing::info_span!("delete", id).entered();
        let status = self.status_of(&rec);
        let cgroup = rec.cgroup()?;
        match status {
            Status::Stopped => {}
            Status::Created | Status::Creating => {
                let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
                self.wait_gone(&rec, &cgroup)?;
            }
            Status::Running | Status::Paused if force => {
                for pid in cgroup.pids().unwrap_or_default() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
                if status == Status::Paused {
                    cgroup.thaw()?;
                }
                self.wait_gone(&rec, &cgroup)?;
            }
            Status::Running | Status::Paused => {
                return Err(Error::failed_precondition(format!(
                    "cannot delete container {id:?} that is not stopped: {}",
                    status.as_str()
                )));
            }
        }
        cgroup.destroy()?;
        if let Some(rdt) = rec
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.intel_rdt().as_ref())
        {
            let plan = RdtPlan::from_spec(rdt)?;
            // The groups were made only if resctrl was there at create; nothing to undo
            // otherwise.
            if (plan.clos_id.is_none() || plan.monitoring_group)
                && let Ok(resctrl) = Resctrl::find()
            {
                resctrl.remove(&LinuxSyscall, &plan, id)?;
            }
        }
        let list = Phase::Poststop.of(rec.config.hooks().as_ref());
        if !list.is_empty() {
            let state = state_json(&rec.oci_state(Status::Stopped));
            if let Err(e) = hooks::run(Phase::Poststop, &list, &state) {
                tracing::warn!("{e}");
            }
        }
        let dir = Record::dir(&self.root, id);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(format!("remove {}", dir.display()), e))
    }

    fn wait_gone(&self, rec: &Record, cgroup: &CgroupManager) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let init_gone = !process_alive(rec.pid, rec.pid_start);
            let pids = cgroup.pids().unwrap_or_default();
            let live = pids
                .iter()
                .filter(|p| process_start(**p).is_some_and(|(_, zombie)| !zombie))
                .count();
            if init_gone && live == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "container {:?}: {live} processes still alive 10s after SIGKILL",
                        rec.id
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts another process in a created or running container; returns its host pid.
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let rec = self.load(id)?;
        let _span = tracing::info_span!("exec", id).entered();
        let status = self.status_of(&rec);
        if !matches!(status, Status::Created | Status::Running) {
            return Err(Error::failed_precondition(format!(
                "cannot exec in container {id:?}: it is {}",
                status.as_str()
            )));
        }
        let seccomp = match rec
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
        {
            Some(s) => Some(SeccompProgram::compile_cached(
                s,
                self.seccomp_cache.as_deref(),
            )?),
            None => None,
        };
        let listener = match (
            rec.config
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().as_ref()),
            &seccomp,
        ) {
            (Some(spec), Some(prog)) => SeccompListener::new(spec, prog)?,
            _ => None,
        };
        let mut plan = ProcessPlan::new(process, seccomp)?;
        plan.seccomp_listener = listener;
        if plan.terminal && opts.console_socket.is_none() {
            return Err(Error::invalid_argument(
                "a terminal was asked for: --console-socket is required",
            ));
        }
        let mut namespaces = CloneFlags::empty();
        for ns in rec
            .config
            .linux()
            .iter()
            .flat_map(|l| l.namespaces().iter().flatten())
        {
            namespaces |= match ns.typ() {
                LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
                LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
                LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
                LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
                LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::Time => spec::CLONE_NEWTIME,
            };
        }
        let cgroup = rec.cgroup()?;
        let personality = match rec
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.personality().as_ref())
        {
            Some(p) => Some(spec::personality(p)?),
            None => None,
        };
        let stage = Stage::Exec {
            process: &plan,
            target_pid: rec.pid,
            namespaces,
            personality,
        };
        let fds = ChildFds {
            exec_fifo: None,
            console_socket: connect_console(opts.console_socket.as_deref())?,
            preserve_fds: opts.preserve_fds,
        };
        let mut parent = ExecParent {
            cgroup: &cgroup,
            state: state_json(&rec.oci_state(status)),
        };
        let pid = process::spawn(&stage, fds, &mut parent)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(pid)
    }

    /// Host pids of every process in the container.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let rec = self.load(id)?;
        rec.cgroup()?.pids()
    }

    /// Freezes a running container.
    pub fn pause(&self, id: &str) -> Result<()> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status != Status::Running {
            return Err(Error::failed_precondition(format!(
                "cannot pause container {id:?}: it is {}",
                status.as_str()
            )));
        }
        rec.cgroup()?.freeze()
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let rec = self.load(id)?;
        let status = self.status_of(&rec);
        if status != Status::Paused {
            return Err(Error::failed_precondition(format!(
                "cannot resume container {id:?}: it is {}",
                status.as_str()
            )));
        }
        rec.cgroup()?.thaw()
    }

    /// The container's cgroup, for stats and updates.
    pub fn cgroup(&self, id: &str) -> Result<CgroupManager> {
        let rec = self.load(id)?;
        rec.cgroup()
    }

    /// Applies new resource limits to a live container.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let rec = self.load(id)?;
        if self.status_of(&rec) == Status::Stopped {
            return Err(Error::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        rec.cgroup()?.apply(resources)
    }

    /// `run`: create and start, then (unless `detach`) wait for the init, forwarding signals,
    /// delete the container and return the exit code (128+N for a signal).
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool) -> Result<i32> {
        if !detach {
            // The init's parent (the intermediate) exits during create; as a subreaper this
            // process inherits it and can wait for it.
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| sys_err("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
        }
        let pid = self.create(id, opts)?;
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            return Err(e);
        }
        if detach {
            return Ok(0);
        }
        let code = wait_forwarding_signals(pid)?;
        self.delete(id, true)?;
        Ok(code)
    }
}

/// Waits for `pid` (a child or an orphan this subreaper inherited), forwarding the usual
/// signals to it and reaping any other orphans; returns its exit code (128+N for signal N).
pub fn wait_forwarding_signals(pid: i32) -> Result<i32> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| sys_err("block signals", e))?;
    loop {
        // Reap first: SIGCHLD may have arrived before the signals were blocked.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return Ok(code),
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                    return Ok(128 + sig as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(sys_err("waitpid", e)),
            }
        }
        let sig = set.wait().map_err(|e| sys_err("sigwait", e))?;
        if sig != Signal::SIGCHLD {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

struct CreateParent<'a> {
    cgroup: &'a CgroupManager,
    layout: &'a CgroupLayout,
    rdt: Option<&'a Resctrl>,
    plan: &'a Plan,
    id: &'a str,
    created: String,
    record: Option<Record>,
}

impl Parent for CreateParent<'_> {
    fn cgroup_entry(&mut self) -> Result<CgroupEntry> {
        self.cgroup.entry()
    }

    fn join_cgroup(&mut self, pid: i32, entered: bool) -> Result<()> {
        if !entered {
            self.cgroup.add_process(pid)?;
        }
        if let (Some(rdt), Some(plan)) = (self.rdt, &self.plan.intel_rdt) {
            rdt.join(&LinuxSyscall, plan, self.id, pid)?;
        }
        Ok(())
    }

    fn oci_state(&self) -> Result<String> {
        let record = self
            .record
            .as_ref()
            .ok_or_else(|| Error::internal("no container state before the process started"))?;
        Ok(state_json(&record.oci_state(Status::Creating)))
    }

    fn child_started(&mut self, pid: i32) -> Result<String> {
        let (pid_start, _) = process_start(pid).ok_or_else(|| {
            Error::internal(format!(
                "the container process {pid} vanished during create"
            ))
        })?;
        let record = Record {
            id: self.id.to_owned(),
            pid,
            pid_start,
            bundle: self.plan.bundle.clone(),
            rootfs: self.plan.rootfs.clone(),
            created: self.created.clone(),
            cgroup_path: self.cgroup.path().to_owned(),
            cgroup_layout: Some(self.layout.clone()),
            config: self.plan.spec.clone(),
        };
        let state = record.oci_state(Status::Creating);
        let hooks_cfg = self.plan.spec.hooks().as_ref();
        let runtime_state = state_json(&state);
        for phase in [Phase::Prestart, Phase::CreateRuntime] {
            hooks::run(phase, &phase.of(hooks_cfg), &runtime_state)?;
        }
        // The child runs the createContainer and startContainer hooks in the container's
        // namespaces, where the pid in the state is the one the container sees (the runtime
        // spec's rule, and runc's): 1 in a pid namespace of its own.
        let mut child_state = state;
        child_state.pid = pid_in_own_namespace(pid).unwrap_or(pid);
        self.record = Some(record);
        Ok(state_json(&child_state))
    }
}

/// `pid` as its innermost pid namespace numbers it: the last field of `NSpid` in its status.
fn pid_in_own_namespace(pid: i32) -> Option<i32> {
    let status = crate::procfs::read(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

struct ExecParent<'a> {
    cgroup: &'a CgroupManager,
    /// The container's state JSON, for a seccomp agent.
    state: String,
}

impl Parent for ExecParent<'_> {
    fn cgroup_entry(&mut self) -> Result<CgroupEntry> {
        self.cgroup.entry()
    }

    fn join_cgroup(&mut self, pid: i32, entered: bool) -> Result<()> {
        if entered {
            return Ok(());
        }
        self.cgroup.add_process(pid)
    }

    fn oci_state(&self) -> Result<String> {
        Ok(self.state.clone())
    }

    fn child_started(&mut self, _pid: i32) -> Result<String> {
        Ok(String::new())
    }
}

fn state_json(state: &OciState) -> String {
    serde_json::to_string(state).unwrap_or_default()
}

fn connect_console(path: Option<&Path>) -> Result<Option<OwnedFd>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let stream = UnixStream::connect(path)
        .map_err(|e| Error::io(format!("connect to console socket {}", path.display()), e))?;
    Ok(Some(OwnedFd::from(stream)))
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    // Written whole under a temporary name first: readers poll for this file.
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, pid.to_string())
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// What [`Runtime::create_startable`] made.
#[derive(Debug)]
pub struct Startable {
    /// The init's host pid.
    pub pid: i32,
    /// What starting the init without the runtime takes; `None` when the start must run
    /// poststart hooks.
    pub direct: Option<DirectStart>,
    /// The container's cgroup, for a caller that watches its files (OOM kills, freezing).
    pub cgroup: CgroupManager,
}

/// A created container's init, as [`release_init`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectStart {
    /// The exec FIFO the init waits on.
    pub fifo: PathBuf,
    /// The init's host pid.
    pub pid: i32,
    /// The init's start time, to tell it from a reused pid.
    pub pid_start: u64,
}

/// Lets a created container's init exec its program: takes its byte from the exec FIFO and
/// removes the FIFO (the container is running from then on). The rest of a start (the status
/// check, poststart hooks) is the caller's.
pub fn release_init(init: &DirectStart, id: &str) -> Result<()> {
    let fifo = nix::fcntl::open(
        &init.fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys_err(format!("open {}", init.fifo.display()), e))?;
    wait_readable(&fifo, init.pid, init.pid_start)?;
    let mut byte = [0u8; 1];
    let mut file = std::fs::File::from(fifo);
    let n = file
        .read(&mut byte)
        .map_err(|e| Error::io("read the exec FIFO", e))?;
    if n == 0 {
        return Err(Error::failed_precondition(format!(
            "container {id:?}: its process exited before it could start"
        )));
    }
    std::fs::remove_file(&init.fifo)
        .map_err(|e| Error::io(format!("remove {}", init.fifo.display()), e))
}

/// Waits for a rootfs gate (see [`CreateOptions::rootfs_ready`]): one byte opens it, end of
/// file fails.
pub fn wait_gate(gate: &OwnedFd) -> Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(gate.as_fd(), &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => {
                return Err(Error::failed_precondition(
                    "the rootfs was not made ready for the container",
                ));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(sys_err("wait for the rootfs", e)),
        }
    }
}

fn wait_readable(fd: &OwnedFd, pid: i32, start: u64) -> Result<()> {
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(sys_err("poll the exec FIFO", e)),
        }
        if !process_alive(pid, start) {
            return Err(Error::failed_precondition(
                "the container's process exited before it could start",
            ));
        }
    }
}

/// The spec's device rules followed by the devices every container may use (its default
/// devices, ptys, mknod of anything), as runc adds them: a spec that denies all devices still
/// gets a working /dev/null and terminal.
fn with_default_devices(r: &LinuxResources) -> Result<LinuxResources> {
    let Some(rules) = r.devices() else {
        return Ok(r.clone());
    };
    let mut rules = rules.clone();
    let allow = |typ: &str, major: Option<i64>, minor: Option<i64>, access: &str| {
        serde_json::json!({
            "allow": true, "type": typ, "major": major, "minor": minor, "access": access
        })
    };
    let defaults = [
        allow("c", None, None, "m"),
        allow("b", None, None, "m"),
        allow("c", Some(1), Some(3), "rwm"),
        allow("c", Some(1), Some(5), "rwm"),
        allow("c", Some(1), Some(7), "rwm"),
        allow("c", Some(1), Some(8), "rwm"),
        allow("c", Some(1), Some(9), "rwm"),
        allow("c", Some(5), Some(0), "rwm"),
        allow("c", Some(5), Some(1), "rwm"),
        allow("c", Some(5), Some(2), "rwm"),
        allow("c", Some(136), None, "rwm"),
    ];
    for d in defaults {
        rules.push(
            serde_json::from_value(d)
                .map_err(|e| Error::internal(format!("default device rule: {e}")))?,
        );
    }
    let mut r = r.clone();
    r.set_devices(Some(rules));
    Ok(r)
}

/// Orders the hierarchies as the host's mount table lists them (runc's order), each followed
/// by its symlinks.
fn in_mount_order(
    mounts: &[CgroupFsMount],
    sources: Vec<CgroupMountSource>,
) -> Vec<CgroupMountSource> {
    let rank = |dir: &Path| {
        mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| dir.starts_with(&m.mount_point))
            .max_by_key(|(_, m)| m.mount_point.as_os_str().len())
            .map(|(i, _)| i)
            .unwrap_or(usize::MAX)
    };
    let mut groups: Vec<(usize, Vec<CgroupMountSource>)> = Vec::new();
    for s in sources {
        match &s {
            CgroupMountSource::Bind { host_dir, .. } => groups.push((rank(host_dir), vec![s])),
            CgroupMountSource::Symlink { .. } => match groups.last_mut() {
                Some((_, g)) => g.push(s),
                None => groups.push((usize::MAX, vec![s])),
            },
        }
    }
    groups.sort_by_key(|(r, _)| *r);
    groups.into_iter().flat_map(|(_, g)| g).collect()
}

/// What a `cgroup` mount shows. With a cgroup namespace, new cgroup filesystems (which the
/// namespace roots at the container's cgroup); without one, binds of the container's own
/// directories (as runc).
fn cgroup_views(cgroup: &CgroupManager, mounts: &[CgroupFsMount], plan: &Plan) -> Vec<CgroupView> {
    let cgroupns = plan.has_namespace(CloneFlags::CLONE_NEWCGROUP);
    if cgroup.is_v2() && cgroupns {
        return vec![CgroupView::Unified];
    }
    in_mount_order(mounts, cgroup.mount_sources())
        .into_iter()
        // On a hybrid host the v2 tree beside the v1 ones is systemd's business, not the
        // container's (runc does not show it either).
        .filter(|s| !matches!(s, CgroupMountSource::Bind { name, .. } if name == "unified"))
        .map(|s| match s {
            CgroupMountSource::Bind { name, host_dir } => {
                match subsystems(mounts, &host_dir).filter(|_| cgroupns && !name.is_empty()) {
                    Some(options) => CgroupView::Fresh { name, options },
                    None => CgroupView::Hierarchy {
                        name,
                        host: host_dir,
                    },
                }
            }
            CgroupMountSource::Symlink { name, target } => CgroupView::Link { name, target },
        })
        .collect()
}

/// The subsystems (super options minus rw/ro) of the v1 cgroup mount holding `dir`.
fn subsystems(mounts: &[CgroupFsMount], dir: &Path) -> Option<String> {
    mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup" && dir.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .map(|m| m.options.clone())
        .filter(|o| !o.is_empty())
}
