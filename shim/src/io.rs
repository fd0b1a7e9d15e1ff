//! Stdio: non-blocking pumps between the container's pipes (or pty) and the client's FIFOs, and
//! the JSON-lines log berthctl's `logs` reads.
//!
//! The shim holds every end the container does not: the client can come and go (a detached
//! `berthctl run`, a killed `ctr`) without the container getting SIGPIPE or an early EOF, and the
//! output keeps reaching the log.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use berth_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::Mode;

/// Stop reading a source while this much is waiting for a slow reader.
const HIGH_WATER: usize = 1 << 20;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (and a terminal's output).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A JSON-lines log (`{"log": "...\n", "stream": "stdout", "time": "..."}`, Docker's json-file
/// format), rotated to `<path>.1` once it passes `max` bytes.
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl LogFile {
    /// Opens (appending) or creates the log.
    pub fn open(path: &Path, max: u64) -> Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("open log {}", path.display()), e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max,
        })
    }

    /// Appends one entry.
    pub fn write(&mut self, stream: Stream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let entry = format!(
            "{{\"log\":\"{}\",\"stream\":\"{}\",\"time\":\"{}\"}}\n",
            json_escape(&text),
            stream.name(),
            berth_runtime::state::now_rfc3339()
        );
        if self.max > 0 && self.size + entry.len() as u64 > self.max && self.size > 0 {
            self.rotate();
        }
        if self.file.write_all(entry.as_bytes()).is_ok() {
            self.size += entry.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let old = self.path.with_extension("log.1");
        let _ = std::fs::rename(&self.path, &old);
        if let Ok(f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            self.file = f;
            self.size = 0;
        }
    }
}

/// `s` as the inside of a JSON string (written by hand: serde_json's code would stay resident
/// in every shim).
fn json_escape(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A one-way copy from `src` to `dst` (either may be absent) and the log.
pub struct Pump {
    /// Where bytes come from (non-blocking); None once it reached EOF.
    pub src: Option<OwnedFd>,
    /// A writer kept open on a stdin FIFO so it never reads EOF before CloseIO.
    pub keepalive: Option<OwnedFd>,
    /// Where bytes go (non-blocking); None once the reader went away.
    pub dst: Option<OwnedFd>,
    pending: Vec<u8>,
    log: Option<(Rc<RefCell<LogFile>>, Stream)>,
    partial: Vec<u8>,
    /// Close `dst` once `src` is done and everything is written (stdin after CloseIO).
    pub close_dst_at_eof: bool,
}

impl Pump {
    /// A pump from `src` to `dst`, also logging to `log`.
    pub fn new(
        src: Option<OwnedFd>,
        dst: Option<OwnedFd>,
        log: Option<(Rc<RefCell<LogFile>>, Stream)>,
    ) -> Pump {
        Pump {
            src,
            keepalive: None,
            dst,
            pending: Vec::new(),
            log,
            partial: Vec::new(),
            close_dst_at_eof: true,
        }
    }

    /// Whether the source should be polled for input.
    pub fn wants_read(&self) -> Option<BorrowedFd<'_>> {
        if self.pending.len() >= HIGH_WATER {
            return None;
        }
        self.src.as_ref().map(|f| f.as_fd())
    }

    /// Whether the destination should be polled for output.
    pub fn wants_write(&self) -> Option<BorrowedFd<'_>> {
        if self.pending.is_empty() {
            return None;
        }
        self.dst.as_ref().map(|f| f.as_fd())
    }

    /// Whether everything is copied and the source is closed.
    pub fn done(&self) -> bool {
        self.src.is_none() && (self.pending.is_empty() || self.dst.is_none())
    }

    /// Reads what is available; returns whether anything happened.
    pub fn on_readable(&mut self) {
        let mut buf = [0u8; 32 * 1024];
        while let Some(src) = &self.src {
            match nix::unistd::read(src.as_fd(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    // EOF (EIO is a pty whose last slave closed).
                    self.src = None;
                    self.keepalive = None;
                    self.flush_partial();
                    break;
                }
                Ok(n) => {
                    self.log_bytes(&buf[..n]);
                    if self.dst.is_some() {
                        self.pending.extend_from_slice(&buf[..n]);
                    }
                    if self.pending.len() >= HIGH_WATER {
                        break;
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    self.src = None;
                    self.flush_partial();
                    break;
                }
            }
        }
        self.on_writable();
    }

    /// Writes what is pending.
    pub fn on_writable(&mut self) {
        while !self.pending.is_empty() {
            let Some(dst) = &self.dst else {
                self.pending.clear();
                break;
            };
            match nix::unistd::write(dst, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // The reader went away (EPIPE): keep draining the source into the log.
                    self.dst = None;
                    self.pending.clear();
                }
            }
        }
        if self.src.is_none() && self.pending.is_empty() && self.close_dst_at_eof {
            self.dst = None;
        }
    }

    fn log_bytes(&mut self, data: &[u8]) {
        let Some((log, stream)) = &self.log else {
            return;
        };
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..=i]);
            log.borrow_mut().write(*stream, &self.partial);
            self.partial.clear();
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        // A line that never ends is logged in pieces rather than held forever.
        if self.partial.len() >= 16 * 1024 {
            log.borrow_mut().write(*stream, &self.partial);
            self.partial.clear();
        }
    }

    fn flush_partial(&mut self) {
        if let Some((log, stream)) = &self.log
            && !self.partial.is_empty()
        {
            log.borrow_mut().write(*stream, &self.partial);
        }
        self.partial.clear();
    }
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::io("fcntl", e.into()))?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::io("fcntl", e.into()))?;
    Ok(())
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe", e.into()))
}

/// Opens a client FIFO (or file) for writing without blocking. With a reader already there the
/// end is write-only, so a reader that leaves gives EPIPE (and the shim stops copying to it);
/// with none yet, O_RDWR (which never blocks on a FIFO) keeps it open for a reader to come.
pub fn open_output(path: &str) -> Result<OwnedFd> {
    let flags = OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::open(path, OFlag::O_WRONLY | flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENXIO) => nix::fcntl::open(path, OFlag::O_RDWR | flags, Mode::empty()),
        Err(Errno::ENOENT) => nix::fcntl::open(
            path,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | flags,
            Mode::from_bits_truncate(0o600),
        ),
        Err(e) => Err(e),
    }
    .map_err(|e| Error::io(format!("open {path}"), e.into()))?;
    Ok(fd)
}

/// Opens a client's stdin FIFO for reading, plus a writer that keeps it from reading EOF
/// before the client writes or the daemon asks for CloseIO.
pub fn open_input(path: &str) -> Result<(OwnedFd, Option<OwnedFd>)> {
    let r = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open {path}"), e.into()))?;
    let keep = nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok();
    Ok((r, keep))
}

/// /dev/null, for a stream nobody asked for.
pub fn dev_null() -> Result<OwnedFd> {
    nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::io("open /dev/null", e.into()))
}

/// Duplicates a descriptor (close-on-exec).
pub fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1; ownership is taken at once.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(Error::io("dup", std::io::Error::last_os_error()));
    }
    // SAFETY: `new` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_escape_round_trips_through_a_json_parser() {
        let nasty = "quote \" backslash \\ tab \t nl \n cr \r bell \u{7} nul \u{0} é 🐳";
        let doc = format!("\"{}\"", json_escape(nasty));
        let back: String = serde_json::from_str(&doc).unwrap();
        assert_eq!(back, nasty);
    }
}
