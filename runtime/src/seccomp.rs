//! Seccomp: the spec's filter compiled to BPF in the parent, loaded by init just before exec.
//!
//! [`SeccompProgram::compile`] runs in the parent: it resolves syscall names, architectures and
//! actions with libseccomp, exports the BPF and keeps only the instructions and the seccomp(2)
//! flags. The container's init then makes exactly one syscall, [`load`]; libseccomp never loads
//! anything itself, so its per-load work (allocation, API probing, NNP) stays out of init.
//! [`docker_default_profile`] is Docker's default profile, for containers that ask for none.

mod cache;
mod default;

pub use default::{docker_default_profile, docker_profile};

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use berth_core::{Error, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::errno::Errno;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The kernel's limit on a classic BPF program's length (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Syscall arguments a rule can compare (seccomp sees six).
const MAX_ARGS: usize = 6;

/// A compiled seccomp filter, ready for seccomp(SECCOMP_SET_MODE_FILTER).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeccompProgram {
    /// `struct sock_filter`s, one per u64 with the kernel's in-memory layout (native endian), so
    /// `load` hands the vector to the kernel as it is.
    instructions: Vec<u64>,
    /// `SECCOMP_FILTER_FLAG_*` for seccomp(2).
    flags: u32,
    /// Whether a rule uses `SCMP_ACT_NOTIFY`, so the load asks for a listener.
    notify: bool,
    /// What was skipped while compiling (syscalls unknown on this architecture).
    warnings: Vec<String>,
}

impl SeccompProgram {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.instructions.len()
    }

    /// Whether the program is empty.
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits [`load`] passes to seccomp(2).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Whether loading returns a user-notification listener (a rule uses `SCMP_ACT_NOTIFY`).
    pub fn uses_notify(&self) -> bool {
        self.notify
    }

    /// Rules left out while compiling, for the caller to log (runc logs and goes on likewise).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Compiles as [`SeccompProgram::compile`] does, reusing a program kept in the cache
    /// directory `cache` (created 0700 when missing) when it holds a trustworthy one for this
    /// profile, architecture, libseccomp and kernel. Without `cache`, it just compiles.
    pub fn compile_cached(spec: &LinuxSeccomp, cache: Option<&Path>) -> Result<SeccompProgram> {
        match cache {
            Some(dir) => cache::compile_cached(spec, dir),
            None => SeccompProgram::compile(spec),
        }
    }

    /// Compiles the spec's filter for this machine's architecture plus `spec.architectures`.
    ///
    /// Invalid actions, arguments and architectures are `InvalidArgument` errors naming the rule;
    /// a syscall name this libseccomp does not know is skipped with a warning; a flag the running
    /// kernel lacks is `NotImplemented`.
    pub fn compile(spec: &LinuxSeccomp) -> Result<SeccompProgram> {
        let default_action = action(spec.default_action(), spec.default_errno_ret())
            .map_err(|e| e.context("seccomp default action"))?;
        if default_action == ScmpAction::Notify {
            return Err(Error::invalid_argument(
                "seccomp default action: SCMP_ACT_NOTIFY cannot be the default action",
            ));
        }
        let mut ctx = ScmpFilterContext::new(default_action)
            .map_err(|e| Error::internal(format!("creating a seccomp filter: {e}")))?;
        // A binary tree over the syscall numbers instead of libseccomp's default list: the
        // kernel runs the filter for every syscall number when it builds its allow-cache at
        // load time (and the container on each filtered syscall), so the tree loads in about
        // 0.5 ms where Docker's profile as a list takes 0.9 ms. libseccomp before 2.5 has no
        // such level and keeps its default, which filters the same.
        if let Err(e) = ctx.set_ctl_optimize(2) {
            tracing::debug!("seccomp: libseccomp keeps its default layout: {e}");
        }
        for arch in spec.architectures().iter().flatten() {
            let Some(scmp) = scmp_arch(*arch) else {
                continue;
            };
            ctx.add_arch(scmp).map_err(|e| {
                Error::invalid_argument(format!(
                    "seccomp architecture {}: not supported by libseccomp: {e}",
                    arch_name(*arch)
                ))
            })?;
        }

        let mut warnings = Vec::new();
        let mut notify = false;
        for (i, rule) in spec.syscalls().iter().flatten().enumerate() {
            let label = rule_label(i, rule.names());
            let rule_action = action(rule.action(), rule.errno_ret())
                .map_err(|e| e.context(format!("seccomp rule for {label}")))?;
            if rule.names().is_empty() {
                return Err(Error::invalid_argument(format!(
                    "seccomp rule for {label}: no syscall names"
                )));
            }
            let conditions = rule
                .args()
                .iter()
                .flatten()
                .map(condition)
                .collect::<Result<Vec<_>>>()
                .map_err(|e| e.context(format!("seccomp rule for {label}")))?;
            if rule_action == ScmpAction::Notify {
                // After loading, init still has to hand the listener over to its parent
                // (sendmsg on the sync channel); a notifying call there would wait for an
                // agent that has no listener yet. write is refused as runc refuses it.
                if rule.names().iter().any(|n| n == "write" || n == "sendmsg") {
                    return Err(Error::invalid_argument(format!(
                        "seccomp rule for {label}: SCMP_ACT_NOTIFY cannot be used for write or \
                         sendmsg (the runtime needs them to hand the listener over)"
                    )));
                }
                notify = true;
            }
            if rule_action == default_action {
                // libseccomp refuses a rule that only repeats the default; it changes nothing.
                continue;
            }
            // libseccomp ANDs a rule's comparisons and cannot compare one argument twice; like
            // runc, a rule comparing an argument more than once becomes one rule per comparison,
            // which ORs them.
            let mut per_index = [0usize; MAX_ARGS];
            for arg in rule.args().iter().flatten() {
                per_index[arg.index()] += 1;
            }
            let split = per_index.iter().any(|n| *n > 1);
            for name in rule.names() {
                let Ok(syscall) = ScmpSyscall::from_name(name) else {
                    warnings.push(format!(
                        "seccomp: syscall {name:?} is unknown on {} (libseccomp {}): rule skipped",
                        std::env::consts::ARCH,
                        libseccomp_version(),
                    ));
                    continue;
                };
                let added = if split {
                    conditions.iter().try_for_each(|c| {
                        ctx.add_rule_conditional(rule_action, syscall, std::slice::from_ref(c))
                            .map(drop)
                    })
                } else {
                    ctx.add_rule_conditional(rule_action, syscall, &conditions)
                        .map(drop)
                };
                added.map_err(|e| {
                    Error::invalid_argument(format!("seccomp rule for {name:?}: {e}"))
                })?;
            }
        }

        let flags = filter_flags(spec.flags().iter().flatten(), notify)?;
        let instructions = export(&ctx)?;
        if instructions.len() > MAX_INSTRUCTIONS {
            return Err(Error::invalid_argument(format!(
                "seccomp filter compiles to {} BPF instructions, more than the kernel's \
                 {MAX_INSTRUCTIONS}",
                instructions.len()
            )));
        }
        Ok(SeccompProgram {
            instructions,
            flags,
            notify,
            warnings,
        })
    }
}

/// Loads the filter into the calling thread.
///
/// Runs in the container's init, as late as possible before exec: one seccomp(2), no allocation.
/// The thread needs `no_new_privs` or `CAP_SYS_ADMIN` (else `EACCES`). When the program uses
/// `SCMP_ACT_NOTIFY` the kernel returns the listener (close-on-exec), which init must hand over
/// before exec. An empty program loads nothing.
pub fn load(program: &SeccompProgram) -> Result<Option<OwnedFd>, Errno> {
    if program.instructions.is_empty() {
        return Ok(None);
    }
    let len = u16::try_from(program.instructions.len()).map_err(|_| Errno::EINVAL)?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads the program; sock_fprog's field is `*mut` for historical reasons.
        filter: program
            .instructions
            .as_ptr()
            .cast::<libc::sock_filter>()
            .cast_mut(),
    };
    // SAFETY: `fprog` points at `len` instructions of 8 bytes each, laid out as `struct
    // sock_filter` (see `export`) and aligned for it (u64 alignment exceeds its 4); the program
    // and `fprog` outlive the call, and the kernel copies the program before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
            libc::c_ulong::from(program.flags),
            &fprog as *const libc::sock_fprog,
        )
    };
    let rc = Errno::result(rc)?;
    if !program.notify {
        return Ok(None);
    }
    let fd = RawFd::try_from(rc).map_err(|_| Errno::EBADF)?;
    // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the return value is a new descriptor that
    // nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Parses a seccomp profile in the spec's `linux.seccomp` form (not Docker's file format, whose
/// `includes`/`excludes` conditions it would ignore), reporting an unknown action,
/// architecture, flag or operator by name and rule.
pub fn parse_profile(json: &[u8]) -> Result<LinuxSeccomp> {
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| Error::invalid_argument("seccomp profile: not valid JSON").with_source(e))?;
    check_profile_json(&value)?;
    serde_json::from_value(value)
        .map_err(|e| Error::invalid_argument("seccomp profile").with_source(e))
}

/// Checks the names in a seccomp profile's JSON, so that a bad one is reported as e.g.
/// `seccomp rule for "mkdir": unknown action SCMP_ACT_FOO` rather than as a serde error.
pub fn check_profile_json(profile: &Value) -> Result<()> {
    check_name::<LinuxSeccompAction>(profile.get("defaultAction"), "action")
        .map_err(|e| e.context("seccomp default action"))?;
    for arch in array(profile.get("architectures")) {
        check_name::<Arch>(Some(arch), "architecture").map_err(|e| e.context("seccomp"))?;
    }
    for flag in array(profile.get("flags")) {
        check_name::<LinuxSeccompFilterFlag>(Some(flag), "flag")
            .map_err(|e| e.context("seccomp"))?;
    }
    for (i, rule) in array(profile.get("syscalls")).enumerate() {
        let names: Vec<String> = array(rule.get("names"))
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        let label = rule_label(i, &names);
        check_name::<LinuxSeccompAction>(rule.get("action"), "action")
            .map_err(|e| e.context(format!("seccomp rule for {label}")))?;
        for arg in array(rule.get("args")) {
            check_name::<LinuxSeccompOperator>(arg.get("op"), "operator")
                .map_err(|e| e.context(format!("seccomp rule for {label}")))?;
        }
    }
    Ok(())
}

fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// A string that does not deserialize as `T` is reported by name; anything else is left to the
/// full deserialization.
fn check_name<T: DeserializeOwned>(v: Option<&Value>, what: &str) -> Result<()> {
    match v {
        Some(Value::String(s))
            if serde_json::from_value::<T>(Value::String(s.clone())).is_err() =>
        {
            Err(Error::invalid_argument(format!("unknown {what} {s}")))
        }
        _ => Ok(()),
    }
}

/// `"mkdir"`, `"mkdir", "rmdir"`, or `#3` for a rule without names.
fn rule_label(index: usize, names: &[String]) -> String {
    if names.is_empty() {
        return format!("#{index}");
    }
    let mut label = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            label.push_str(", ");
        }
        let _ = write!(label, "{n:?}");
    }
    label
}

fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The libseccomp action for a spec action; `errno_ret` (default `EPERM`) is the errno of
/// `SCMP_ACT_ERRNO` and the message of `SCMP_ACT_TRACE`, and means nothing for the others.
fn action(act: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction> {
    let ret = || -> Result<u16> {
        let value = errno_ret.unwrap_or(libc::EPERM as u32);
        u16::try_from(value).map_err(|_| {
            Error::invalid_argument(format!(
                "{act}: errnoRet {value} does not fit the 16 bits seccomp returns"
            ))
        })
    };
    let scmp = match act {
        LinuxSeccompAction::ScmpActErrno => return Ok(ScmpAction::Errno(i32::from(ret()?))),
        LinuxSeccompAction::ScmpActTrace => return Ok(ScmpAction::Trace(ret()?)),
        // SCMP_ACT_KILL predates KILL_PROCESS and has always meant the thread.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    };
    if let Some(value) = errno_ret {
        return Err(Error::invalid_argument(format!(
            "{act}: errnoRet {value} only applies to SCMP_ACT_ERRNO and SCMP_ACT_TRACE"
        )));
    }
    Ok(scmp)
}

/// One argument comparison. For `SCMP_CMP_MASKED_EQ` the spec's `value` is the mask and
/// `valueTwo` the value the masked argument must equal.
fn condition(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare> {
    if arg.index() >= MAX_ARGS {
        return Err(Error::invalid_argument(format!(
            "argument index {} is out of range (0-{})",
            arg.index(),
            MAX_ARGS - 1
        )));
    }
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return Ok(ScmpArgCompare::new(
                arg.index() as u32,
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            ));
        }
    };
    Ok(ScmpArgCompare::new(arg.index() as u32, op, arg.value()))
}

/// libseccomp's architecture for a spec architecture; `None` for `SCMP_ARCH_NATIVE`, which every
/// filter has already.
fn scmp_arch(arch: Arch) -> Option<ScmpArch> {
    Some(match arch {
        Arch::ScmpArchNative => return None,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    })
}

/// The spec's name of an architecture (`SCMP_ARCH_X86_64`), for errors.
fn arch_name(arch: Arch) -> String {
    serde_json::to_value(arch)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{arch:?}"))
}

/// The seccomp(2) flags for the spec's flags, checked against the running kernel.
fn filter_flags<'a>(
    spec: impl Iterator<Item = &'a LinuxSeccompFilterFlag>,
    notify: bool,
) -> Result<u32> {
    let mut flags: libc::c_ulong = 0;
    for flag in spec {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags |= libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // It only changes how a notifying syscall waits, and the kernel refuses it without a
            // listener; dropped when no rule notifies.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if notify => {
                flags |= libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {}
            // init is single-threaded when it loads the filter: nothing to synchronise.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {}
        }
    }
    if notify {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    }
    for (bit, name) in [
        (libc::SECCOMP_FILTER_FLAG_LOG, "SECCOMP_FILTER_FLAG_LOG"),
        (
            libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ),
        (
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            "SECCOMP_FILTER_FLAG_NEW_LISTENER (SCMP_ACT_NOTIFY)",
        ),
        (
            libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        ),
    ] {
        // The kernel refuses WAIT_KILLABLE_RECV unless NEW_LISTENER comes with it.
        let probe = if bit == libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV {
            bit | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        } else {
            bit
        };
        if flags & bit != 0 && !kernel_accepts(probe) {
            return Err(Error::not_implemented(format!(
                "seccomp flag {name} is not supported by the running kernel"
            )));
        }
    }
    u32::try_from(flags).map_err(|_| Error::internal(format!("seccomp flags {flags:#x}")))
}

/// Whether the kernel knows all of `flags`: with a null program it checks the flags (`EINVAL`)
/// before reading the program (`EFAULT`), so nothing is ever installed. libseccomp probes alike.
fn kernel_accepts(flags: libc::c_ulong) -> bool {
    // SAFETY: the null program pointer makes the call fail without installing a filter; no
    // memory of ours is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc == -1 && Errno::last() == Errno::EFAULT
}

/// The filter's BPF, exported by libseccomp into a memfd (a pipe could fill up and block).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u64>> {
    // SAFETY: the name is a NUL-terminated literal; the flags are a valid memfd_create flag.
    let raw = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(Error::io(
            "creating a memfd for the seccomp program",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    ctx.export_bpf(&fd)
        .map_err(|e| Error::internal(format!("exporting the seccomp program: {e}")))?;
    let mut file = File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| Error::io("reading back the seccomp program", e))?;
    if bytes.len() % 8 != 0 {
        return Err(Error::internal(format!(
            "libseccomp exported {} bytes, not a whole number of 8-byte BPF instructions",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            u64::from_ne_bytes(word)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorKind;

    fn profile(json: &str) -> LinuxSeccomp {
        parse_profile(json.as_bytes()).unwrap()
    }

    fn compile_err(json: &str) -> Error {
        SeccompProgram::compile(&profile(json)).unwrap_err()
    }

    /// The instructions as (code, jt, jf, k), the `struct sock_filter` fields.
    fn decode(p: &SeccompProgram) -> Vec<(u16, u8, u8, u32)> {
        p.instructions
            .iter()
            .map(|w| {
                let b = w.to_ne_bytes();
                (
                    u16::from_ne_bytes([b[0], b[1]]),
                    b[2],
                    b[3],
                    u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                )
            })
            .collect()
    }

    #[test]
    fn compiles_rules_and_default_action() {
        let p = SeccompProgram::compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                             {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        assert!(!p.is_empty());
        assert!(p.warnings().is_empty());
        assert!(!p.uses_notify());
        assert_eq!(p.flags(), 0);
        let insns = decode(&p);
        // BPF_RET|BPF_K instructions carry the actions: ERRNO(38), ERRNO(EPERM) and ALLOW.
        let rets: Vec<u32> = insns.iter().filter(|i| i.0 == 0x06).map(|i| i.3).collect();
        assert!(rets.contains(&(0x0005_0000 | 38)), "{rets:x?}");
        assert!(rets.contains(&(0x0005_0000 | 1)), "{rets:x?}");
        assert!(rets.contains(&0x7fff_0000), "{rets:x?}");
        // Loading starts by checking the architecture: BPF_LD|BPF_W|BPF_ABS of seccomp_data.arch.
        assert_eq!(insns[0], (0x20, 0, 0, 4));
    }

    #[test]
    fn unknown_syscalls_are_warnings() {
        let p = SeccompProgram::compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getcwd", "no_such_syscall"], "action": "SCMP_ACT_KILL"}]}"#,
        ))
        .unwrap();
        assert_eq!(p.warnings().len(), 1);
        assert!(
            p.warnings()[0].contains("\"no_such_syscall\""),
            "{:?}",
            p.warnings()
        );
    }

    #[test]
    fn bad_names_are_invalid_arguments() {
        let err = parse_profile(
            br#"{"defaultAction": "SCMP_ACT_ALLOW",
                 "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_FOO"}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "seccomp rule for \"mkdir\": unknown action SCMP_ACT_FOO"
        );
        let err = parse_profile(
            br#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string()
                .contains("unknown architecture SCMP_ARCH_VAX"),
            "{err}"
        );
        let err = parse_profile(br#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown action SCMP_ACT_NOPE"),
            "{err}"
        );
        let err = parse_profile(
            br#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
                 "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XOR"}]}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown operator SCMP_CMP_XOR"),
            "{err}"
        );
        let err = parse_profile(b"{").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn semantic_errors_are_invalid_arguments() {
        for (json, needle) in [
            (
                r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#,
                "cannot be the default action",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
                    "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
                "seccomp rule for \"kill\": argument index 6",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
                    "action": "SCMP_ACT_KILL_PROCESS", "errnoRet": 1}]}"#,
                "errnoRet 1 only applies",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}"#,
                "does not fit",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["write"],
                    "action": "SCMP_ACT_NOTIFY"}]}"#,
                "cannot be used for write",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [],
                    "action": "SCMP_ACT_ERRNO"}]}"#,
                "rule for #0: no syscall names",
            ),
        ] {
            let err = compile_err(json);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(
                err.to_string().contains(needle),
                "{err} (wanted {needle:?})"
            );
        }
    }

    #[test]
    fn architectures_and_flags() {
        let p = SeccompProgram::compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_NATIVE", "SCMP_ARCH_X86_64", "SCMP_ARCH_X86",
                                  "SCMP_ARCH_AARCH64"],
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                          "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        // TSYNC is not needed and WAIT_KILLABLE_RECV means nothing without a listener.
        assert_eq!(
            libc::c_ulong::from(p.flags()),
            libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
        // Each architecture is checked: three AUDIT_ARCH_* constants are compared.
        let arches: Vec<u32> = decode(&p)
            .iter()
            .filter(|i| i.0 == 0x15)
            .map(|i| i.3)
            .collect();
        for audit in [0xc000_003e_u32, 0x4000_0003, 0xc000_00b7] {
            assert!(arches.contains(&audit), "{audit:x} not in {arches:x?}");
        }
    }

    #[test]
    fn notify_asks_for_a_listener() {
        let p = SeccompProgram::compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap();
        assert!(p.uses_notify());
        assert_eq!(
            libc::c_ulong::from(p.flags()),
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        );
    }

    #[test]
    fn rules_equal_to_the_default_are_dropped() {
        let bare =
            SeccompProgram::compile(&profile(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#)).unwrap();
        let same = SeccompProgram::compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        assert_eq!(bare.len(), same.len());
    }

    #[test]
    fn repeated_argument_indexes_split_into_rules() {
        // Two comparisons of arg 0 cannot be ANDed by libseccomp; split, they compile.
        let p = SeccompProgram::compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                                       {"index": 0, "value": 131072, "op": "SCMP_CMP_EQ"}]}]}"#,
        ))
        .unwrap();
        let ks: Vec<u32> = decode(&p)
            .iter()
            .filter(|i| i.0 == 0x15)
            .map(|i| i.3)
            .collect();
        assert!(ks.contains(&8) && ks.contains(&131072), "{ks:?}");
    }

    #[test]
    fn empty_program_loads_nothing() {
        assert!(load(&SeccompProgram::default()).unwrap().is_none());
    }

    #[test]
    fn docker_profile_compiles() {
        let p = SeccompProgram::compile(&docker_default_profile()).unwrap();
        assert!(p.len() > 100, "{}", p.len());
        // Only syscalls newer than this libseccomp may be skipped, never the common ones.
        for w in p.warnings() {
            for common in ["\"read\"", "\"execve\"", "\"clone\"", "\"openat\""] {
                assert!(!w.contains(common), "{w}");
            }
        }
    }
}
