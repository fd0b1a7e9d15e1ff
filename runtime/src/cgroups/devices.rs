//! Device access rules (`linux.resources.devices`).
//!
//! The spec's rules are a sequence of cgroup v1 writes to `devices.allow` / `devices.deny`. On
//! v1 they are written as they are (from the last "reset" rule on). On v2 there is no devices
//! controller: access is decided by a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the
//! cgroup. [`emulate`] computes what the v1 kernel would end up with (a default and a list of
//! exceptions, with the kernel's exact merge rules) and [`program`] turns that into eBPF
//! instructions, so a spec means the same thing on both versions.
//!
//! Kernel semantics followed (security/device_cgroup.c):
//! - a rule of type `a` is a reset, whatever its numbers and access: allow-all or deny-all, and
//!   every exception dropped;
//! - a rule whose verdict differs from the default adds an exception (merging access with an
//!   exception for the same type and numbers); one whose verdict equals the default removes those
//!   access bits from an exception with exactly the same type and numbers;
//! - with default deny, a request is allowed only if one exception covers all of its access;
//!   with default allow, it is denied if any exception overlaps its access.
//!
//! `p` (FIFO) rules are dropped: FIFOs are not device nodes and the kernel never asks.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_core::{Error, Result};
use nix::errno::Errno;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::files;

/// Access bits, as the kernel's `BPF_DEVCG_ACC_*` (also used for the v1 emulation).
pub(crate) const ACC_MKNOD: u8 = 1;
/// Read access.
pub(crate) const ACC_READ: u8 = 2;
/// Write access.
pub(crate) const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Block or character device (the kernel's `BPF_DEVCG_DEV_*` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevKind {
    /// Block device.
    Block = 1,
    /// Character device.
    Char = 2,
}

impl DevKind {
    fn letter(self) -> char {
        match self {
            DevKind::Block => 'b',
            DevKind::Char => 'c',
        }
    }
}

/// One validated rule; `kind: None` is the "all devices" reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    pub kind: Option<DevKind>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

/// What the rules leave behind: a default verdict and exceptions to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceState {
    pub default_allow: bool,
    pub exceptions: Vec<Exception>,
}

/// One exception to the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exception {
    pub kind: DevKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

fn number(what: &str, value: Option<i64>) -> Result<Option<u32>> {
    match value {
        None | Some(-1) => Ok(None),
        // The eBPF program compares with 32-bit immediates that the kernel sign-extends, and
        // real major/minor numbers are 12 and 20 bits wide anyway.
        Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => Ok(u32::try_from(v).ok()),
        Some(v) => Err(Error::invalid_argument(format!(
            "device rule: invalid {what} number {v}"
        ))),
    }
}

fn access_bits(access: Option<&str>) -> Result<u8> {
    let Some(access) = access.filter(|a| !a.is_empty()) else {
        return Ok(ACC_ALL);
    };
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(Error::invalid_argument(format!(
                    "device rule: invalid access {access:?} (only r, w and m)"
                )));
            }
        };
    }
    Ok(bits)
}

/// Validates the spec's rules; FIFO rules are dropped (see the module doc).
pub(crate) fn parse_rules(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>> {
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        let kind = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DevKind::Block),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DevKind::Char),
            LinuxDeviceType::P => {
                tracing::debug!(
                    "device rule for a FIFO ignored: the device cgroup never checks FIFOs"
                );
                continue;
            }
        };
        out.push(Rule {
            allow: r.allow(),
            kind,
            major: number("major", r.major())?,
            minor: number("minor", r.minor())?,
            access: access_bits(r.access().as_deref())?,
        });
    }
    Ok(out)
}

/// The state a fresh cgroup whose parent allows everything ends up in after `rules`.
pub(crate) fn emulate(rules: &[Rule]) -> DeviceState {
    let mut state = DeviceState {
        default_allow: true,
        exceptions: Vec::new(),
    };
    for rule in rules {
        let Some(kind) = rule.kind else {
            state.default_allow = rule.allow;
            state.exceptions.clear();
            continue;
        };
        let same = |e: &Exception| e.kind == kind && e.major == rule.major && e.minor == rule.minor;
        if rule.allow != state.default_allow {
            match state.exceptions.iter_mut().find(|e| same(e)) {
                Some(e) => e.access |= rule.access,
                None => state.exceptions.push(Exception {
                    kind,
                    major: rule.major,
                    minor: rule.minor,
                    access: rule.access,
                }),
            }
        } else {
            for e in state.exceptions.iter_mut().filter(|e| same(e)) {
                e.access &= !rule.access;
            }
            state.exceptions.retain(|e| e.access != 0);
        }
    }
    state
}

fn v1_rule_string(rule: &Rule) -> String {
    let Some(kind) = rule.kind else {
        return "a".to_string();
    };
    let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    let mut access = String::new();
    for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
        if rule.access & bit != 0 {
            access.push(c);
        }
    }
    format!(
        "{} {}:{} {access}",
        kind.letter(),
        num(rule.major),
        num(rule.minor)
    )
}

/// The v1 writes for `rules`: (file name, value), from the last reset on (what came before it
/// cannot matter).
pub(crate) fn v1_writes(rules: &[Rule]) -> Vec<(&'static str, String)> {
    let start = rules.iter().rposition(|r| r.kind.is_none()).unwrap_or(0);
    rules
        .get(start..)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            (file, v1_rule_string(r))
        })
        .collect()
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        // `dst_reg:4, src_reg:4` is a C bitfield: its nibble order follows the byte order.
        let regs = if cfg!(target_endian = "little") {
            (src << 4) | (dst & 0x0f)
        } else {
            (dst << 4) | (src & 0x0f)
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    #[cfg(test)]
    fn dst(self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    #[cfg(test)]
    fn src(self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }
}

fn imm(v: u32) -> i32 {
    // Values are validated to fit (see `number`); this never saturates in practice.
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The eBPF program deciding device access like `state`. The context is `struct
/// bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where access_type is
/// `(access << 16) | device type`; the program returns 1 to allow and 0 to deny.
pub(crate) fn program(state: &DeviceState) -> Vec<Insn> {
    let mut prog = vec![
        Insn::new(LDX_MEM_W, R2, R1, 0, 0),
        Insn::new(ALU32_AND_K, R2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, R3, R1, 0, 0),
        Insn::new(ALU32_RSH_K, R3, 0, 0, 16),
        Insn::new(LDX_MEM_W, R4, R1, 4, 0),
        Insn::new(LDX_MEM_W, R5, R1, 8, 0),
    ];
    let on_match = if state.default_allow { 0 } else { 1 };
    for ex in &state.exceptions {
        // Each test jumps past the end of this exception's block when it does not match.
        let mut block = vec![Insn::new(JMP_JNE_K, R2, 0, 0, ex.kind as i32)];
        let mut jumps = vec![0];
        if ex.access != ACC_ALL {
            block.push(Insn::new(ALU32_MOV_X, R1, R3, 0, 0));
            block.push(Insn::new(ALU32_AND_K, R1, 0, 0, i32::from(ex.access)));
            if state.default_allow {
                // A deny exception applies when it overlaps the request.
                block.push(Insn::new(JMP_JEQ_K, R1, 0, 0, 0));
            } else {
                // An allow exception applies when it covers the whole request.
                block.push(Insn::new(JMP_JNE_X, R1, R3, 0, 0));
            }
            jumps.push(block.len() - 1);
        }
        if let Some(major) = ex.major {
            block.push(Insn::new(JMP_JNE_K, R4, 0, 0, imm(major)));
            jumps.push(block.len() - 1);
        }
        if let Some(minor) = ex.minor {
            block.push(Insn::new(JMP_JNE_K, R5, 0, 0, imm(minor)));
            jumps.push(block.len() - 1);
        }
        block.push(Insn::new(ALU64_MOV_K, R0, 0, 0, on_match));
        block.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for j in jumps {
            // A block is at most 8 instructions long.
            block[j].off = i16::try_from(len - j - 1).unwrap_or(i16::MAX);
        }
        prog.extend(block);
    }
    prog.push(Insn::new(
        ALU64_MOV_K,
        R0,
        0,
        0,
        i32::from(state.default_allow),
    ));
    prog.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    prog
}

// bpf(2) commands, program and attach types (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_ATTACH: u32 = 8;
const BPF_PROG_DETACH: u32 = 9;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_PROG_QUERY: u32 = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` / `BPF_PROG_DETACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The `BPF_PROG_QUERY` part of `union bpf_attr`, up to `prog_cnt`.
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

/// The `BPF_*_GET_FD_BY_ID` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(2) with one of the attr structs above.
fn bpf<T>(cmd: u32, attr: &mut T) -> std::result::Result<i64, Errno> {
    let size = std::mem::size_of::<T>();
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr` for
    // `cmd`, and `size` is exactly its size, so the kernel reads (and, for PROG_QUERY, writes)
    // only inside it; any pointers inside it point at buffers the caller keeps alive.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, size) };
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

fn fd_from(rc: i64) -> std::result::Result<OwnedFd, Errno> {
    let fd = i32::try_from(rc).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this new file descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = b"Apache\0";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"berth_dev");
    let insn_cnt = u32::try_from(insns.len())
        .map_err(|_| Error::invalid_argument("device eBPF program too long"))?;
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(rc) => fd_from(rc).map_err(|e| files::errno_error("load device eBPF program", e)),
        Err(errno) => {
            // Load again with the verifier's log, only to explain the failure.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = u32::try_from(log.len()).unwrap_or(0);
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(rc) = bpf(BPF_PROG_LOAD, &mut attr) {
                drop(fd_from(rc));
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(log.get(..end).unwrap_or_default());
            let hint = if errno == Errno::EPERM {
                " (needs CAP_BPF or CAP_SYS_ADMIN; before Linux 5.11 also a high RLIMIT_MEMLOCK)"
            } else {
                ""
            };
            Err(files::errno_error(
                format!(
                    "load device eBPF program ({} instructions){hint}; verifier: {}",
                    insns.len(),
                    text.trim()
                ),
                errno,
            ))
        }
    }
}

fn attached_ids(cgroup: &OwnedFd, dir: &Path) -> Result<Vec<u32>> {
    let target_fd = u32::try_from(cgroup.as_raw_fd()).unwrap_or(u32::MAX);
    let mut ids = vec![0u32; 64];
    for _ in 0..4 {
        let mut attr = ProgQueryAttr {
            target_fd,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(ids.len()).unwrap_or(0),
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // The kernel put the count it needs in prog_cnt.
            Err(Errno::ENOSPC) => ids = vec![0; attr.prog_cnt as usize + 8],
            Err(e) => {
                return Err(files::errno_error(
                    format!("query device eBPF programs of {}", dir.display()),
                    e,
                ));
            }
        }
    }
    Err(Error::internal(format!(
        "query device eBPF programs of {}: their number keeps changing",
        dir.display()
    )))
}

/// Loads `insns` and makes them the cgroup's only device program: the new one is attached
/// first and the old ones detached after, so the cgroup is never left without a filter.
pub(crate) fn attach(dir: &Path, insns: &[Insn]) -> Result<()> {
    let prog = load(insns)?;
    let cpath = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::invalid_argument(format!("cgroup path {} has a NUL", dir.display())))?;
    // SAFETY: `cpath` is a valid NUL-terminated path; open(2) does not keep the pointer.
    let raw = unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(files::errno_error(
            format!("open cgroup {}", dir.display()),
            Errno::last(),
        ));
    }
    // SAFETY: open(2) just returned this descriptor and nothing else owns it.
    let cgroup = unsafe { OwnedFd::from_raw_fd(raw) };
    let old = attached_ids(&cgroup, dir)?;
    let target_fd = u32::try_from(cgroup.as_raw_fd()).unwrap_or(u32::MAX);
    let mut attr = ProgAttachAttr {
        target_fd,
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        files::errno_error(
            format!("attach device eBPF program to {}", dir.display()),
            e,
        )
    })?;
    for id in old {
        let mut by_id = GetFdByIdAttr {
            id,
            ..Default::default()
        };
        let old_prog = match bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id).and_then(fd_from) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(files::errno_error(
                    format!("open old device eBPF program {id} of {}", dir.display()),
                    e,
                ));
            }
        };
        let mut detach = ProgAttachAttr {
            target_fd,
            attach_bpf_fd: u32::try_from(old_prog.as_raw_fd()).unwrap_or(u32::MAX),
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        match bpf(BPF_PROG_DETACH, &mut detach) {
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(files::errno_error(
                    format!("detach old device eBPF program {id} from {}", dir.display()),
                    e,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    /// A tiny interpreter for the instructions `program` emits, to check the program against
    /// the emulated kernel semantics without loading it.
    fn run(prog: &[Insn], kind: DevKind, major: u32, minor: u32, access: u8) -> u64 {
        let ctx = [(u32::from(access) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (d, s) = (i.dst() as usize, i.src() as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(s, 1);
                    r[d] = u64::from(ctx[(i.off / 4) as usize]);
                }
                ALU32_AND_K => r[d] = u64::from((r[d] as u32) & (i.imm as u32)),
                ALU32_RSH_K => r[d] = u64::from((r[d] as u32) >> i.imm),
                ALU32_MOV_X => r[d] = u64::from(r[s] as u32),
                ALU64_MOV_K => r[d] = i.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[d] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_JNE_X => {
                    if r[d] != r[s] {
                        pc += i.off as usize;
                    }
                }
                JMP_JEQ_K => {
                    if r[d] == i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    /// The kernel's v1 check, over an emulated state.
    fn kernel_allows(
        state: &DeviceState,
        kind: DevKind,
        major: u32,
        minor: u32,
        access: u8,
    ) -> bool {
        let matches = |e: &&Exception| {
            e.kind == kind
                && e.major.is_none_or(|m| m == major)
                && e.minor.is_none_or(|m| m == minor)
        };
        if state.default_allow {
            !state
                .exceptions
                .iter()
                .filter(matches)
                .any(|e| e.access & access != 0)
        } else {
            state
                .exceptions
                .iter()
                .filter(matches)
                .any(|e| e.access & access == access)
        }
    }

    fn check_all(rules: &[LinuxDeviceCgroup]) -> DeviceState {
        let state = emulate(&parse_rules(rules).unwrap());
        let prog = program(&state);
        for kind in [DevKind::Block, DevKind::Char] {
            for (major, minor) in [(1, 3), (1, 5), (5, 0), (136, 2), (8, 0)] {
                for access in 1..=7u8 {
                    let want = kernel_allows(&state, kind, major, minor, access);
                    let got = run(&prog, kind, major, minor, access) == 1;
                    assert_eq!(
                        got, want,
                        "{kind:?} {major}:{minor} access {access}: {state:?}"
                    );
                }
            }
        }
        state
    }

    #[test]
    fn default_deny_with_allows() {
        let state = check_all(&[
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rw"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "m"),
            rule(true, LinuxDeviceType::C, Some(136), None, "rwm"),
            rule(false, LinuxDeviceType::C, Some(136), None, "w"),
        ]);
        assert!(!state.default_allow);
        assert_eq!(state.exceptions.len(), 2);
        assert_eq!(state.exceptions[0].access, ACC_ALL);
        assert_eq!(state.exceptions[1].access, ACC_READ | ACC_MKNOD);
    }

    #[test]
    fn default_allow_with_denies() {
        let state = check_all(&[
            rule(false, LinuxDeviceType::C, Some(1), Some(3), "w"),
            rule(false, LinuxDeviceType::B, None, None, "m"),
        ]);
        assert!(state.default_allow);
        assert_eq!(state.exceptions.len(), 2);
        // A reset in the middle drops everything before it.
        let state = check_all(&[
            rule(false, LinuxDeviceType::C, Some(1), Some(3), "w"),
            rule(true, LinuxDeviceType::A, Some(1), None, "r"),
        ]);
        assert!(state.default_allow && state.exceptions.is_empty());
    }

    #[test]
    fn v1_writes_start_at_last_reset() {
        let rules = parse_rules(&[
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "r"),
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::U, Some(1), None, "wr"),
            rule(true, LinuxDeviceType::P, None, None, "rwm"),
            rule(true, LinuxDeviceType::B, None, Some(2), ""),
        ])
        .unwrap();
        assert_eq!(
            v1_writes(&rules),
            vec![
                ("devices.deny", "a".to_string()),
                ("devices.allow", "c 1:* rw".to_string()),
                ("devices.allow", "b *:2 rwm".to_string()),
            ]
        );
    }

    #[test]
    fn rejects_bad_rules() {
        let err =
            parse_rules(&[rule(true, LinuxDeviceType::C, Some(1), Some(3), "rx")]).unwrap_err();
        assert!(err.to_string().contains("invalid access"), "{err}");
        let err = parse_rules(&[rule(true, LinuxDeviceType::C, Some(-5), None, "r")]).unwrap_err();
        assert!(err.to_string().contains("major"), "{err}");
    }
}
