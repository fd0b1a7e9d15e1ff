//! Attached stdio for `run`, `start --attach` and `exec`, the way `ctr` does it: FIFOs in a
//! private temporary directory that the shim opens at Create (Exec), with one thread per stream
//! copying between them and this process's stdio; and, with a tty, the local terminal in raw
//! mode with its size sent to the container's pty.
//!
//! The copying threads open their FIFO with a blocking open *before* the task exists, so the
//! shim finds a reader (or writer) waiting and nothing the container writes early is lost; an
//! open that never completes (the task was not created) is released by [`Attached::abandon`].
//! Threads, not tokio tasks: a read of this process's stdin can block forever, and a tokio
//! blocking task would then hold up the runtime's shutdown.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use berth_core::tasks::TaskIo;
use berth_core::{Error, Result};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg, Termios};
use tempfile::TempDir;

/// What to attach.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// Forward this process's stdin (and close the container's at EOF).
    pub stdin: bool,
    /// The container has a pty: one output stream, raw local terminal.
    pub tty: bool,
}

/// A task's attached stdio: the FIFOs and the threads copying them.
pub struct Attached {
    dir: TempDir,
    io: TaskIo,
    outputs: Vec<JoinHandle<()>>,
    /// Receives once the stdin copy has hit EOF (the container's stdin should then be closed).
    pub stdin_done: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    stdin_opened: bool,
}

fn mkfifo(path: &Path) -> Result<()> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::io(format!("create FIFO {}", path.display()), e.into()))
}

fn copy_out(path: PathBuf, mut to: impl Write + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fifo-out".into())
        .spawn(move || {
            // Blocks until the shim opens the FIFO for writing; EOF once it closes it.
            let Ok(mut fifo) = File::open(&path) else {
                return;
            };
            let mut buf = [0u8; 32 * 1024];
            loop {
                match fifo.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
        .map_err(|e| Error::io("start a thread copying container output", e))
}

fn copy_in(path: PathBuf, done: tokio::sync::mpsc::UnboundedSender<()>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fifo-in".into())
        .spawn(move || {
            // Blocks until the shim opens the FIFO for reading.
            if let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&path) {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 32 * 1024];
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if fifo.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                wait_drained(&fifo);
            }
            let _ = done.send(());
        })
        .map_err(|e| Error::io("start a thread copying stdin", e))
}

/// Waits (up to 10 s) until the shim has read everything written to the stdin FIFO. CloseIO
/// makes the shim stop reading the FIFO, so calling it while bytes still sit in the pipe would
/// lose them.
fn wait_drained(fifo: &File) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int we own; the descriptor is open for the call.
        let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut unread) };
        if rc != 0 || unread == 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Attached {
    /// Makes the FIFOs (`stdin` only with `options.stdin`, no `stderr` with a tty) and starts
    /// the threads that will copy them once the shim opens them.
    pub fn new(options: AttachOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berthctl-io-")
            .tempdir()
            .map_err(|e| Error::io("create a directory for stdio FIFOs", e))?;
        let path = |name: &str| dir.path().join(name);
        let mut io = TaskIo {
            terminal: options.tty,
            ..TaskIo::default()
        };
        let mut outputs = Vec::new();
        mkfifo(&path("stdout"))?;
        io.stdout = path("stdout").display().to_string();
        outputs.push(copy_out(path("stdout"), std::io::stdout())?);
        if !options.tty {
            mkfifo(&path("stderr"))?;
            io.stderr = path("stderr").display().to_string();
            outputs.push(copy_out(path("stderr"), std::io::stderr())?);
        }
        let mut stdin_done = None;
        if options.stdin {
            mkfifo(&path("stdin"))?;
            io.stdin = path("stdin").display().to_string();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // Detached on purpose: it may block reading stdin until the process exits.
            drop(copy_in(path("stdin"), tx)?);
            stdin_done = Some(rx);
        }
        Ok(Self {
            dir,
            io,
            outputs,
            stdin_done,
            stdin_opened: options.stdin,
        })
    }

    /// The paths to hand to Create or Exec.
    pub fn io(&self) -> &TaskIo {
        &self.io
    }

    /// Releases threads still blocked opening a FIFO the shim never opened (the task was not
    /// created, or the shim is gone): an O_RDWR open counts as both ends.
    pub fn abandon(&self) {
        let mut names = vec!["stdout", "stderr"];
        if self.stdin_opened {
            names.push("stdin");
        }
        for name in names {
            let p = self.dir.path().join(name);
            if p.exists() {
                let _ = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags_nonblock()
                    .open(&p);
            }
        }
    }

    /// Waits for the output threads to drain what the container wrote (they end when the shim
    /// closes its ends); gives up after `grace` so a shim that never closes cannot hang berthctl.
    /// Returns the FIFOs' directory, removed when dropped: a caller with more requests to make
    /// can drop it alongside them (its unlinks cost a few tenths of a millisecond).
    pub fn drain(self, grace: Duration) -> tempfile::TempDir {
        let (tx, rx) = mpsc::channel();
        let outputs = self.outputs;
        let _ = std::thread::Builder::new()
            .name("fifo-join".into())
            .spawn(move || {
                for t in outputs {
                    let _ = t.join();
                }
                let _ = tx.send(());
            });
        if rx.recv_timeout(grace).is_err() {
            tracing::warn!("container output did not end within {grace:?}; not waiting longer");
        }
        self.dir
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// The local terminal in raw mode for as long as this lives.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Puts stdin's terminal in raw mode; None when stdin is not a terminal.
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on stdin (else stdout) as (columns, rows).
pub fn terminal_size() -> Option<(u32, u32)> {
    for fd in [std::io::stdin().as_raw_fd(), std::io::stdout().as_raw_fd()] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; fd is a live descriptor.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((u32::from(ws.ws_col), u32::from(ws.ws_row)));
        }
    }
    None
}
