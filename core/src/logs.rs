//! Container logs: what a container wrote on stdout and stderr, kept by its shim so it can be
//! read after the client detached and across daemon restarts (`berthctl logs`).
//!
//! containerd has no such service (its clients hold the stdio themselves); Berth keeps the log
//! for the containers that ask for it (the `io.berth.log=json-file` label) and serves it on its
//! own `berth.services.logs.v1.Logs` service. A log lives as long as its container record.

use std::time::SystemTime;

use crate::{BoxFuture, RequestContext, Result};

/// The label asking for a container's output to be logged, and the one value it takes.
pub const LOG_LABEL: &str = "io.berth.log";
/// The only log format: Docker's json-file lines.
pub const LOG_JSON_FILE: &str = "json-file";
/// The label bounding the log's size in bytes before it is rotated.
pub const LOG_MAX_SIZE_LABEL: &str = "io.berth.log.max-size";
/// The log's size limit when the container does not set one (10 MiB).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// Which stream a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl LogStream {
    /// The stream's name, as in the log file and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    /// Parses `stdout` / `stderr`.
    pub fn parse(s: &str) -> Option<LogStream> {
        match s {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// One line (or a piece of a very long line) the container wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the shim read it.
    pub time: SystemTime,
    /// Where it was written.
    pub stream: LogStream,
    /// The bytes, with their newline when the line ended.
    pub data: Vec<u8>,
}

/// Which entries a read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadLogs {
    /// Keep returning new entries until the container's task is no longer running.
    pub follow: bool,
    /// Only entries at or after this time.
    pub since: Option<SystemTime>,
    /// Only entries before this time (stops a follow once passed).
    pub until: Option<SystemTime>,
    /// Only the last N entries that pass the time filters (then, with follow, the new ones).
    pub tail: Option<u64>,
}

/// One read's entries, in the order they were written.
pub trait LogReader: Send {
    /// The next entry; `None` at the end (or, when following, once the task stopped and its
    /// output has been read).
    fn next(&mut self) -> BoxFuture<'_, Option<Result<LogEntry>>>;
}

/// Containers' logs.
pub trait ContainerLogs: Send + Sync {
    /// Reads container `id`'s log; NotFound when the container does not exist,
    /// FailedPrecondition when it was not created with logging.
    fn read<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        opts: ReadLogs,
    ) -> BoxFuture<'a, Result<Box<dyn LogReader>>>;

    /// Removes container `id`'s log (nothing to do when there is none).
    fn remove(&self, ctx: &RequestContext, id: &str) -> Result<()>;
}
