//! berth-runtime: Berth's own OCI runtime for Linux.
//!
//! The crate is synchronous on purpose: it forks, and a process that forks must not have other
//! threads. Its layout follows a container's life:
//!
//! - [`spec`] loads `config.json` and validates all of it into a [`spec::Plan`] before any process
//!   is cloned, so a bad spec fails in the caller with a clear error, never half-way into init.
//! - [`syscall`] is the edge with the kernel: every call the init sequence makes goes through the
//!   [`syscall::Syscall`] trait, with [`syscall::LinuxSyscall`] for real and
//!   [`syscall::RecordingSyscall`] for unit tests.
//! - [`rootfs`] prepares the container's root: mounts, devices, pivot_root, masked and read-only
//!   paths.
//! - [`cgroups`] places the container in cgroups (v1 and v2) and applies, reads and freezes them.
//! - [`seccomp`], [`capabilities`] and [`rlimits`] turn the spec's process security settings into
//!   what the kernel takes.
//! - [`process`] is the staged start: parent → intermediate → init, with typed messages over sync
//!   sockets; [`init`] is the linear sequence the container's first process runs before exec.
//! - [`container`] is the lifecycle (create, start, kill, delete, exec, pause) over a state
//!   directory per container, and [`state`] its on-disk record.
//! - [`hooks`] runs OCI hooks with the state on stdin.
//! - [`rdt`] places a container in a resctrl group (`linux.intelRdt`).

pub mod capabilities;
pub mod cgroups;
pub mod console;
pub mod container;
pub mod hooks;
pub mod init;
pub mod process;
pub mod procfs;
pub mod rdt;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod syscall;

pub use container::{CreateOptions, ExecOptions, Runtime};
