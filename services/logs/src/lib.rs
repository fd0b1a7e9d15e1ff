//! Containers' json-file logs: reading them back, following them, removing them with the
//! container.
//!
//! Layout: `<dir>/<namespace>/<container id>/container.log`, rotated by the shim to
//! `container.log.1` (one generation). Each line is one JSON object
//! `{"log": "...", "stream": "stdout"|"stderr", "time": "<RFC 3339>"}`, written with a single
//! `write` by the shim (so a reader sees at most one unfinished line, the last).
//!
//! - [`JsonFileLogs`] implements [`ContainerLogs`]: a read runs on a blocking thread that scans
//!   the files and sends entries over a bounded channel, so a slow client slows the scan rather
//!   than filling memory; following polls the file and ends once the task has stopped.
//! - [`RemovesLogs`] wraps a [`ContainerStore`] so deleting a container deletes its log.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind as IoErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_core::containers::{Container, ContainerStore};
use berth_core::filters::Filters;
use berth_core::identifiers;
use berth_core::logs::{
    ContainerLogs, LOG_JSON_FILE, LOG_LABEL, LogEntry, LogReader, LogStream, ReadLogs,
};
use berth_core::tasks::{TaskManager, TaskStatus};
use berth_core::{BoxFuture, Error, Namespace, RequestContext, Result};
use tokio::sync::mpsc;

#[cfg(test)]
mod tests;

/// The log's file name inside the container's directory.
pub const LOG_FILE: &str = "container.log";
/// The rotated generation's file name.
pub const ROTATED_LOG_FILE: &str = "container.log.1";

/// Whether a container's task still runs, so a follow goes on.
pub trait Liveness: Send + Sync {
    /// True while the task can still write output (created, running or paused).
    fn running<'a>(&'a self, ctx: &'a RequestContext, id: &'a str) -> BoxFuture<'a, bool>;
}

/// [`Liveness`] from the daemon's tasks.
pub struct TaskLiveness(pub Arc<dyn TaskManager>);

impl Liveness for TaskLiveness {
    fn running<'a>(&'a self, ctx: &'a RequestContext, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.0.get(ctx, id, "").await {
                Ok(p) => matches!(
                    p.status,
                    TaskStatus::Created
                        | TaskStatus::Running
                        | TaskStatus::Paused
                        | TaskStatus::Pausing
                ),
                Err(_) => false,
            }
        })
    }
}

/// The json-file logs under one directory.
pub struct JsonFileLogs {
    dir: PathBuf,
    containers: Arc<dyn ContainerStore>,
    liveness: Arc<dyn Liveness>,
    poll: Duration,
}

impl JsonFileLogs {
    /// Logs under `dir` (the directory berthd's tasks hand to the shims), for the containers of
    /// `containers`, following while `liveness` says the task runs.
    pub fn new(
        dir: PathBuf,
        containers: Arc<dyn ContainerStore>,
        liveness: Arc<dyn Liveness>,
    ) -> JsonFileLogs {
        JsonFileLogs {
            dir,
            containers,
            liveness,
            poll: Duration::from_millis(100),
        }
    }

    /// Polls a followed log this often (100 ms by default).
    pub fn with_poll_interval(mut self, poll: Duration) -> JsonFileLogs {
        self.poll = poll;
        self
    }

    /// The directory holding container `id`'s log in `namespace`.
    pub fn container_dir(&self, namespace: &Namespace, id: &str) -> Result<PathBuf> {
        // The id becomes a path component: only containerd identifiers (no '/', no "..").
        identifiers::validate("container id", id)?;
        Ok(self.dir.join(namespace.as_str()).join(id))
    }
}

impl ContainerLogs for JsonFileLogs {
    fn read<'a>(
        &'a self,
        ctx: &'a RequestContext,
        id: &'a str,
        opts: ReadLogs,
    ) -> BoxFuture<'a, Result<Box<dyn LogReader>>> {
        Box::pin(async move {
            let container = self.containers.get(ctx, id)?;
            if container.labels.get(LOG_LABEL).map(String::as_str) != Some(LOG_JSON_FILE) {
                return Err(Error::failed_precondition(format!(
                    "container {id:?} keeps no log: it was not created with the label \
                     {LOG_LABEL}={LOG_JSON_FILE} (its output went only to the client that \
                     started it)"
                )));
            }
            let dir = self.container_dir(&ctx.namespace, id)?;
            let (tx, rx) = mpsc::channel(64);
            let scan = Scan {
                current: dir.join(LOG_FILE),
                rotated: dir.join(ROTATED_LOG_FILE),
                opts,
                tx,
                poll: self.poll,
            };
            let liveness = self.liveness.clone();
            let ctx = ctx.clone();
            let id = id.to_owned();
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                // A blocking-pool thread is outside the async context, so it may wait on the
                // task manager's future.
                let running = || handle.block_on(liveness.running(&ctx, &id));
                scan.run(&running);
            });
            Ok(Box::new(ChannelReader { rx }) as Box<dyn LogReader>)
        })
    }

    fn remove(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        let dir = self.container_dir(&ctx.namespace, id)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == IoErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("remove log directory {}", dir.display()),
                e,
            )),
        }
    }
}

/// The receiving end of a scan.
struct ChannelReader {
    rx: mpsc::Receiver<Result<LogEntry>>,
}

impl LogReader for ChannelReader {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<LogEntry>>> {
        Box::pin(self.rx.recv())
    }
}

/// One read's work, on a blocking thread.
struct Scan {
    current: PathBuf,
    rotated: PathBuf,
    opts: ReadLogs,
    tx: mpsc::Sender<Result<LogEntry>>,
    poll: Duration,
}

/// Whether to go on scanning.
enum Flow {
    Continue,
    Stop,
}

impl Scan {
    fn run(self, running: &dyn Fn() -> bool) {
        if let Err(e) = self.scan(running) {
            // The client may be gone already; then nobody is left to tell.
            let _ = self.tx.blocking_send(Err(e));
        }
    }

    fn scan(&self, running: &dyn Fn() -> bool) -> Result<()> {
        let (rotated, current) = self.open_both()?;
        let mut ring = self
            .opts
            .tail
            .map(|n| VecDeque::with_capacity(n.min(4096) as usize));
        let mut cursor = Cursor::default();
        // Stop while scanning history means the client is gone or `until` was passed; a tail
        // collected so far is still sent (to nobody, in the first case).
        let mut stopped = false;
        if let Some(file) = rotated {
            let mut old = Cursor::on(file, &self.rotated)?;
            stopped = matches!(
                old.scan(&self.rotated, &mut |e| self.offer(e, &mut ring))?,
                Flow::Stop
            );
        }
        if let Some(file) = current {
            cursor = Cursor::on(file, &self.current)?;
            if !stopped {
                stopped = matches!(
                    cursor.scan(&self.current, &mut |e| self.offer(e, &mut ring))?,
                    Flow::Stop
                );
            }
        }
        if let Some(ring) = ring {
            for entry in ring {
                if let Flow::Stop = self.send(entry) {
                    return Ok(());
                }
            }
        }
        if stopped {
            return Ok(());
        }
        if !self.opts.follow {
            return Ok(());
        }
        loop {
            // Asked before the scan: the shim reports an exit only after the output is in the
            // file, so a scan after a "stopped" answer has read everything.
            let alive = running();
            if let Flow::Stop = cursor.scan(&self.current, &mut |e| self.send(e))? {
                return Ok(());
            }
            if cursor.rotated_away(&self.current) {
                // The shim renamed the file we read and started a new one; what was left in the
                // old one has just been scanned.
                cursor = match open_if_exists(&self.current)? {
                    Some(file) => Cursor::on(file, &self.current)?,
                    None => Cursor::default(),
                };
                continue;
            }
            if !alive || self.tx.is_closed() {
                return Ok(());
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Opens the rotated file, then the current one, retrying if the shim rotated in between
    /// (which would make us read one generation twice).
    fn open_both(&self) -> Result<(Option<File>, Option<File>)> {
        for _ in 0..3 {
            let rotated = open_if_exists(&self.rotated)?;
            let current = open_if_exists(&self.current)?;
            let rotated_ino = rotated.as_ref().map(inode).transpose()?;
            let now_ino = match std::fs::metadata(&self.rotated) {
                Ok(m) => Some(m.ino()),
                Err(e) if e.kind() == IoErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(format!("stat {}", self.rotated.display()), e)),
            };
            if rotated_ino == now_ino {
                return Ok((rotated, current));
            }
        }
        Err(Error::unavailable(format!(
            "{} keeps rotating while being opened",
            self.current.display()
        )))
    }

    /// Keeps an entry for a tail, or sends it straight away.
    fn offer(&self, entry: LogEntry, ring: &mut Option<VecDeque<LogEntry>>) -> Flow {
        match ring {
            Some(ring) => {
                if !self.passes(&entry) {
                    return self.past_until(&entry);
                }
                let Some(cap) = self.opts.tail else {
                    return Flow::Continue;
                };
                if cap == 0 {
                    return Flow::Continue;
                }
                if ring.len() as u64 == cap {
                    ring.pop_front();
                }
                ring.push_back(entry);
                Flow::Continue
            }
            None => self.send(entry),
        }
    }

    /// Sends an entry that passes the time filters; Stop once the client is gone or `until`
    /// has been passed.
    fn send(&self, entry: LogEntry) -> Flow {
        if !self.passes(&entry) {
            return self.past_until(&entry);
        }
        match self.tx.blocking_send(Ok(entry)) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    fn passes(&self, entry: &LogEntry) -> bool {
        self.opts.since.is_none_or(|since| entry.time >= since)
            && self.opts.until.is_none_or(|until| entry.time < until)
    }

    fn past_until(&self, entry: &LogEntry) -> Flow {
        match self.opts.until {
            Some(until) if entry.time >= until => Flow::Stop,
            _ => Flow::Continue,
        }
    }
}

/// A position in one log file: the file, its inode, and an unfinished last line.
#[derive(Default)]
struct Cursor {
    file: Option<File>,
    ino: u64,
    partial: Vec<u8>,
}

impl Cursor {
    fn on(file: File, path: &Path) -> Result<Cursor> {
        let ino = inode(&file).map_err(|e| e.context(path.display()))?;
        Ok(Cursor {
            file: Some(file),
            ino,
            partial: Vec::new(),
        })
    }

    /// Reads from the current position to the end, handing each complete line's entry to `f`.
    fn scan(&mut self, path: &Path, f: &mut dyn FnMut(LogEntry) -> Flow) -> Result<Flow> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Flow::Continue);
        };
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut chunk) {
                Ok(0) => return Ok(Flow::Continue),
                Ok(n) => n,
                Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
            };
            self.partial.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(i) = self.partial[start..].iter().position(|b| *b == b'\n') {
                let line = &self.partial[start..start + i];
                start += i + 1;
                match parse_line(line) {
                    Ok(entry) => {
                        if let Flow::Stop = f(entry) {
                            return Ok(Flow::Stop);
                        }
                    }
                    // One damaged line (a crash mid-write, a full disk) must not hide the rest.
                    Err(e) => tracing::warn!(path = %path.display(), "skipping log line: {e}"),
                }
            }
            self.partial.drain(..start);
        }
    }

    /// True when `path` now names a different file than the one being read.
    fn rotated_away(&self, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(m) => self.file.is_none() || m.ino() != self.ino,
            Err(_) => false,
        }
    }
}

fn open_if_exists(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == IoErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("open {}", path.display()), e)),
    }
}

fn inode(file: &File) -> Result<u64> {
    file.metadata()
        .map(|m| m.ino())
        .map_err(|e| Error::io("stat log file", e))
}

/// One line of the file, as the shim writes it.
#[derive(serde::Deserialize)]
struct Line {
    log: String,
    stream: String,
    time: String,
}

/// Parses one JSON line into an entry.
pub fn parse_line(line: &[u8]) -> Result<LogEntry> {
    let line: Line = serde_json::from_slice(line)
        .map_err(|e| Error::data_loss(format!("malformed log line: {e}")))?;
    let stream = LogStream::parse(&line.stream)
        .ok_or_else(|| Error::data_loss(format!("unknown log stream {:?}", line.stream)))?;
    let time = chrono::DateTime::parse_from_rfc3339(&line.time)
        .map_err(|e| Error::data_loss(format!("log time {:?}: {e}", line.time)))?;
    Ok(LogEntry {
        time: SystemTime::from(time.with_timezone(&chrono::Utc)),
        stream,
        data: line.log.into_bytes(),
    })
}

/// A [`ContainerStore`] whose deletes also delete the container's log.
pub struct RemovesLogs {
    inner: Arc<dyn ContainerStore>,
    logs: Arc<dyn ContainerLogs>,
}

impl RemovesLogs {
    /// Wraps `inner`, removing logs from `logs`.
    pub fn new(inner: Arc<dyn ContainerStore>, logs: Arc<dyn ContainerLogs>) -> RemovesLogs {
        RemovesLogs { inner, logs }
    }
}

impl ContainerStore for RemovesLogs {
    fn get(&self, ctx: &RequestContext, id: &str) -> Result<Container> {
        self.inner.get(ctx, id)
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Container>> {
        self.inner.list(ctx, filters)
    }

    fn create(&self, ctx: &RequestContext, container: Container) -> Result<Container> {
        self.inner.create(ctx, container)
    }

    fn update(
        &self,
        ctx: &RequestContext,
        container: Container,
        paths: &[String],
    ) -> Result<Container> {
        self.inner.update(ctx, container, paths)
    }

    fn delete(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        self.inner.delete(ctx, id)?;
        // The record is gone; a log that cannot be removed now is only disk space, so the
        // delete still succeeds.
        if let Err(e) = self.logs.remove(ctx, id) {
            tracing::warn!(container = id, "removing the container's log: {e}");
        }
        Ok(())
    }
}
