//! Tasks: a container's running processes, as containerd's Tasks service sees them.
//!
//! A task is the container's init process plus the processes exec'd into it (each named by an
//! exec id; the init's is ""). Each task lives in its own shim, so the [`TaskManager`] is the
//! daemon's side of talking to shims: creating them, forwarding requests, turning their exits
//! into events, and finding them again after a restart.
//!
//! Task and process states form a small state machine ([`TaskStatus::check`]); an operation
//! that does not fit the current state is a FailedPrecondition, never a panic.

use std::time::SystemTime;

use crate::mount::Mount;
use crate::{AnyValue, BoxFuture, Error, RequestContext, Result};

/// A process's status, numbered as containerd's `containerd.v1.types.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Not known (the shim is gone).
    Unknown,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Stopped,
    /// Frozen.
    Paused,
    /// Being frozen.
    Pausing,
}

/// The operations whose legality depends on the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOp {
    /// Start.
    Start,
    /// Kill (a signal).
    Kill,
    /// Exec a new process.
    Exec,
    /// Pause.
    Pause,
    /// Resume.
    Resume,
    /// Delete.
    Delete,
    /// Resize a pty or close stdin.
    Io,
}

impl TaskStatus {
    /// The wire number.
    pub fn as_i32(self) -> i32 {
        match self {
            TaskStatus::Unknown => 0,
            TaskStatus::Created => 1,
            TaskStatus::Running => 2,
            TaskStatus::Stopped => 3,
            TaskStatus::Paused => 4,
            TaskStatus::Pausing => 5,
        }
    }

    /// From the wire number (unknown numbers are Unknown).
    pub fn from_i32(n: i32) -> TaskStatus {
        match n {
            1 => TaskStatus::Created,
            2 => TaskStatus::Running,
            3 => TaskStatus::Stopped,
            4 => TaskStatus::Paused,
            5 => TaskStatus::Pausing,
            _ => TaskStatus::Unknown,
        }
    }

    /// The transition table: whether `op` is allowed in this status, as a clear error if not.
    pub fn check(self, op: TaskOp, what: &str) -> Result<()> {
        use TaskOp::*;
        use TaskStatus::*;
        let ok = match op {
            Start => self == Created,
            Kill => matches!(self, Created | Running | Paused | Pausing),
            Exec => self == Running,
            Pause => self == Running,
            Resume => matches!(self, Paused | Pausing),
            // A created task may be deleted (its process is killed); a running one may not.
            Delete => matches!(self, Created | Stopped | Unknown),
            Io => !matches!(self, Stopped),
        };
        if ok {
            Ok(())
        } else {
            let status = format!("{self:?}").to_lowercase();
            Err(match (op, self) {
                (Delete, _) => Error::failed_precondition(format!(
                    "{what} must be stopped before deletion: it is {status}"
                )),
                (Kill, Stopped) => Error::not_found(format!("{what} already finished")),
                _ => Error::failed_precondition(format!(
                    "cannot {} {what}: it is {status}",
                    format!("{op:?}").to_lowercase()
                )),
            })
        }
    }
}

/// Where a process's standard streams go: client FIFO paths ("" for none), a terminal, and for
/// containers run by berthctl a log the shim keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIo {
    /// stdin FIFO.
    pub stdin: String,
    /// stdout FIFO.
    pub stdout: String,
    /// stderr FIFO.
    pub stderr: String,
    /// Allocate a pty.
    pub terminal: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Its pid.
    pub pid: u32,
    /// Exit code, 128+N for signal N.
    pub exit_status: u32,
    /// When.
    pub exited_at: Option<SystemTime>,
}

/// A process's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    /// The container's id.
    pub container_id: String,
    /// The exec id ("" for the init).
    pub exec_id: String,
    /// Host pid (0 before create).
    pub pid: u32,
    /// Status.
    pub status: TaskStatus,
    /// Its stdio.
    pub io: TaskIo,
    /// Set once stopped.
    pub exit_status: u32,
    /// Set once stopped.
    pub exited_at: Option<SystemTime>,
}

/// What creating a task needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateTask {
    /// The container.
    pub container_id: String,
    /// Mounts making up the rootfs (mounted by the shim on `<bundle>/rootfs`).
    pub rootfs: Vec<Mount>,
    /// Stdio.
    pub io: TaskIo,
    /// Task options (runtime options when absent).
    pub options: Option<AnyValue>,
}

/// A process in the container, for ListPids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host pid.
    pub pid: u32,
    /// The exec id when the process is one the task started.
    pub exec_id: String,
}

/// The daemon's side of tasks.
pub trait TaskManager: Send + Sync {
    /// Creates the container's task (its shim, bundle and init process).
    fn create<'a>(&'a self, ctx: &'a RequestContext, req: CreateTask)
    -> BoxFuture<'a, Result<u32>>;
    /// Starts the init ("") or an exec'd process; returns its pid.
    fn start<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<u32>>;
    /// Deletes the task (stopped or created); returns how the init ended.
    fn delete<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ExitInfo>>;
    /// Deletes an exec'd process that has stopped.
    fn delete_process<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<ExitInfo>>;
    /// One process's state.
    fn get<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<ProcessState>>;
    /// Every task of the namespace (their init processes).
    fn list<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<Vec<ProcessState>>>;
    /// Sends a signal.
    fn kill<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
        signal: u32,
        all: bool,
    ) -> BoxFuture<'a, Result<()>>;
    /// Adds a process (the OCI Process JSON in `spec`), to be started with `start`.
    fn exec<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
        spec: AnyValue,
        io: TaskIo,
    ) -> BoxFuture<'a, Result<()>>;
    /// Resizes a process's pty.
    fn resize_pty<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
        width: u32,
        height: u32,
    ) -> BoxFuture<'a, Result<()>>;
    /// Closes a process's stdin.
    fn close_io<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// Freezes the task.
    fn pause<'a>(&'a self, ctx: &'a RequestContext, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Thaws the task.
    fn resume<'a>(&'a self, ctx: &'a RequestContext, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// The container's processes.
    fn pids<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ProcessInfo>>>;
    /// Cgroup metrics (containerd's `io.containerd.cgroups.v1.Metrics`).
    fn metrics<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
    ) -> BoxFuture<'a, Result<AnyValue>>;
    /// New resources (OCI LinuxResources JSON).
    fn update<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        resources: AnyValue,
    ) -> BoxFuture<'a, Result<()>>;
    /// Waits until the process exits.
    fn wait<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        exec_id: &'a str,
    ) -> BoxFuture<'a, Result<ExitInfo>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn the_transition_table() {
        use TaskOp::*;
        use TaskStatus::*;
        let allowed = |s: TaskStatus, op| s.check(op, "task x").is_ok();
        assert!(allowed(Created, Start));
        assert!(!allowed(Running, Start));
        assert!(allowed(Running, Pause));
        assert!(!allowed(Paused, Pause));
        assert!(allowed(Paused, Resume));
        assert!(!allowed(Running, Resume));
        assert!(allowed(Running, Exec));
        assert!(!allowed(Stopped, Exec));
        assert!(allowed(Stopped, Delete));
        assert!(allowed(Created, Delete));
        let e = Running.check(Delete, "task x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        assert!(e.to_string().contains("must be stopped"), "{e}");
        assert_eq!(
            Stopped.check(Kill, "task x").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        for n in 0..6 {
            assert_eq!(TaskStatus::from_i32(n).as_i32(), n);
        }
    }
}
