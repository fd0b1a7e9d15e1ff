//! berth-shim: one process per container.
//!
//! berthd starts it in the task's directory (the bundle); it listens on `<bundle>/shim.sock`,
//! prints `ready` on stdout once it does, and from then on:
//! - creates and starts the container with the built-in runtime (in-process: this process is
//!   single-threaded, so forking the container from it is safe) or an external runc-compatible
//!   binary;
//! - is a child subreaper, reaps every process and records exit statuses;
//! - holds the container's stdio and copies it to the client's FIFOs and the log;
//! - answers berthd's requests and pushes exit events to every connection, so a restarted
//!   berthd reconnects and finds exits that happened while it was down.
//!
//! It exits after a Shutdown request once its processes are gone. Everything runs in one poll
//! loop: no threads, no async runtime, to keep it small (its memory is counted per container).

mod io;
mod isolate;
mod runtime;
mod shim;

use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line arguments (kept to std: clap would cost memory in every shim).
struct Args {
    id: String,
    /// The task's namespace: required so `ps` shows it; the shim itself needs only the id.
    _namespace: String,
    bundle: PathBuf,
    /// Where the built-in runtime caches compiled seccomp filters (berthd's state dir).
    seccomp_cache: Option<PathBuf>,
    /// stdout is a connection from berthd, not a pipe awaiting "ready".
    connected: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut id = None;
    let mut namespace = None;
    let mut bundle = None;
    let mut seccomp_cache = None;
    let mut connected = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--id" => id = Some(value()?),
            "--namespace" => namespace = Some(value()?),
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--seccomp-cache" => seccomp_cache = Some(PathBuf::from(value()?)),
            "--connected" => connected = true,
            "--version" => {
                println!("berth-shim {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        id: id.ok_or("--id is required")?,
        _namespace: namespace.ok_or("--namespace is required")?,
        bundle: bundle.ok_or("--bundle is required")?,
        seccomp_cache,
        connected,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            return ExitCode::from(2);
        }
    };
    let start = shim::Start {
        id: args.id,
        bundle: args.bundle,
        seccomp_cache: args.seccomp_cache,
        connected: args.connected,
    };
    match shim::run(start) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            ExitCode::from(1)
        }
    }
}
