//! Runtime work in a short-lived child process.
//!
//! The shim lives as long as its container, and every page of code or heap it ever touches
//! stays in its resident set. The OCI runtime's code (spec parsing, namespaces, mounts,
//! seccomp, cgroups) is most of the binary but runs only for a few milliseconds per
//! operation, so the shim runs each operation in a forked child: the child's page tables take
//! those pages, and they are gone when it exits. The shim is single-threaded, so forking it is
//! safe; what the child starts (the container's init, an exec) is re-parented to the shim,
//! which is a child subreaper, when the child exits. The child sends back one [`Reply`].

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use berth_core::{Error, ErrorKind, Result};
use berth_shim_api as api;
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use prost::Message;

/// What an isolated operation sends back.
#[derive(Clone, PartialEq, Message)]
pub struct Reply {
    /// Set when the operation failed.
    #[prost(message, optional, tag = "1")]
    pub error: Option<api::ShimError>,
    /// A process made (create, exec).
    #[prost(int32, tag = "2")]
    pub pid: i32,
    /// The container's processes (pids).
    #[prost(int32, repeated, tag = "3")]
    pub pids: Vec<i32>,
    /// The container's cgroup (create).
    #[prost(string, tag = "4")]
    pub cgroup: String,
    /// The file counting the cgroup's OOM kills (create).
    #[prost(string, tag = "5")]
    pub oom_file: String,
    /// The file telling whether the cgroup is frozen (create).
    #[prost(string, tag = "6")]
    pub freezer_file: String,
    /// Cgroup statistics (stats).
    #[prost(message, optional, tag = "7")]
    pub metrics: Option<api::Metrics>,
    /// The init's exec FIFO, when the shim may start the container by itself (create).
    #[prost(string, tag = "8")]
    pub exec_fifo: String,
    /// The init's start time, with `exec_fifo`.
    #[prost(uint64, tag = "9")]
    pub init_start: u64,
}

/// Runs `f` in a forked child and returns its reply (an error it returned comes back as the
/// same kind and message).
pub fn run(f: impl FnOnce() -> Result<Reply>) -> Result<Reply> {
    fork_helper(f, || Ok(()))
}

/// Runs `f` in a forked child while the shim runs `alongside`, then waits for the child's
/// reply. `f` gets a gate: one byte arrives on it when `alongside` has succeeded, end of file
/// when it has failed (and then `alongside`'s error is the one returned).
pub fn run_gated(
    f: impl FnOnce(OwnedFd) -> Result<Reply>,
    alongside: impl FnOnce() -> Result<()>,
) -> Result<Reply> {
    let (gate_r, gate_w) = crate::io::pipe()?;
    let (gate_r, gate_w) = (Cell::new(Some(gate_r)), Cell::new(Some(gate_w)));
    fork_helper(
        || {
            // The child's copy of the write end would keep it from ever seeing end of file.
            drop(gate_w.take());
            let gate = gate_r
                .take()
                .ok_or_else(|| Error::internal("the rootfs gate is gone"))?;
            f(gate)
        },
        || {
            drop(gate_r.take());
            let res = alongside();
            if let (Ok(()), Some(w)) = (&res, gate_w.take()) {
                // A helper that already failed is not reading; its reply says why.
                let _ = std::fs::File::from(w).write_all(&[1]);
            }
            drop(gate_w.take());
            res
        },
    )
}

fn fork_helper(
    f: impl FnOnce() -> Result<Reply>,
    alongside: impl FnOnce() -> Result<()>,
) -> Result<Reply> {
    let (r, w) = crate::io::pipe()?;
    // SAFETY: the shim is single-threaded (no async runtime, no threads), so the child may
    // allocate and run anything; it leaves with _exit and never returns into the shim's loop.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(r);
            // A panic must not unwind into the copy of the shim's loop this child holds.
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(Error::internal("the runtime helper panicked")));
            let reply = res.unwrap_or_else(|e| Reply {
                error: Some(api::ShimError {
                    kind: e.kind().as_str().to_owned(),
                    message: e.to_string(),
                }),
                ..Reply::default()
            });
            let body = reply.encode_to_vec();
            let mut out = std::fs::File::from(w);
            let _ = out.write_all(&(body.len() as u32).to_be_bytes());
            let _ = out.write_all(&body);
            // SAFETY: ends the child without running the shim's destructors or atexit hooks.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let beside = alongside();
            let reply = read_reply(r);
            // The child exits right after writing; reap it here so the poll loop never sees it.
            while let Err(nix::errno::Errno::EINTR) = waitpid(child, None) {}
            beside?;
            let reply = reply?;
            match reply.error {
                Some(e) => Err(Error::new(ErrorKind::from_name(&e.kind), e.message)),
                None => Ok(reply),
            }
        }
        Err(e) => Err(Error::io("fork a runtime helper", e.into())),
    }
}

/// Reads one length-prefixed reply. Not to EOF: the container's init, forked by the child,
/// may hold the pipe's write end until it execs.
fn read_reply(r: OwnedFd) -> Result<Reply> {
    let mut input = std::fs::File::from(r);
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|e| Error::internal(format!("the runtime helper died without answering: {e}")))?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    input
        .read_exact(&mut body)
        .map_err(|e| Error::internal(format!("the runtime helper's answer: {e}")))?;
    Reply::decode(body.as_slice())
        .map_err(|e| Error::internal(format!("the runtime helper's answer: {e}")))
}
