//! Linux capabilities: the spec's five sets as bit masks, and applying them.
//!
//! Names are resolved in the parent ([`CapabilitySets::from_spec`], [`parse_names`]) against
//! the running kernel's `cap_last_cap`; the container's init then only makes syscalls:
//! [`drop_bounding`] (prctl), then [`apply`] (capset and the ambient prctls).

use std::collections::BTreeSet;

use berth_core::{Error, Result};
use nix::errno::Errno;
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

/// The five capability sets as masks of capability numbers (bit N = capability N).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

/// Capability names without the `CAP_` prefix, indexed by capability number (linux/capability.h).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The number of a capability named `CAP_X` or `X`, in any case; `None` if there is no such name.
pub fn number(name: &str) -> Option<u8> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .and_then(|i| u8::try_from(i).ok())
}

/// The `CAP_X` name of capability number `cap`, if it has one.
pub fn name(cap: u8) -> Option<String> {
    NAMES.get(usize::from(cap)).map(|n| format!("CAP_{n}"))
}

/// The `CAP_X` names of the capabilities in `mask`, lowest number first (`CAP_N` for unnamed bits).
pub fn names(mask: u64) -> Vec<String> {
    (0..64u8)
        .filter(|cap| mask & (1u64 << cap) != 0)
        .map(|cap| name(cap).unwrap_or_else(|| format!("CAP_{cap}")))
        .collect()
}

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> Result<u8> {
    let path = "/proc/sys/kernel/cap_last_cap";
    let text = crate::procfs::read(path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    text.trim()
        .parse::<u8>()
        .ok()
        .filter(|n| *n < 64)
        .ok_or_else(|| Error::internal(format!("{path}: unexpected content {:?}", text.trim())))
}

/// Every capability the running kernel knows, as a mask (what a privileged container gets).
pub fn all() -> Result<u64> {
    Ok(all_up_to(last_cap()?))
}

/// Mask of capabilities 0..=`last`.
fn all_up_to(last: u8) -> u64 {
    if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// Resolves names like `CAP_NET_ADMIN` or `net_admin` (e.g. `exec --cap`) into a mask.
///
/// A name that is no capability at all is an `InvalidArgument` error; a capability the running
/// kernel does not know is left out of the mask and reported in the returned warnings, as runc
/// does.
pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<(u64, Vec<String>)> {
    let last = last_cap()?;
    let mut mask = 0u64;
    let mut unknown = BTreeSet::new();
    for raw in names {
        let raw = raw.as_ref();
        let cap = number(raw)
            .ok_or_else(|| Error::invalid_argument(format!("unknown capability {raw:?}")))?;
        if cap > last {
            unknown.insert(cap);
        } else {
            mask |= 1u64 << cap;
        }
    }
    Ok((mask, kernel_warnings(&unknown, last)))
}

fn kernel_warnings(unknown: &BTreeSet<u8>, last: u8) -> Vec<String> {
    unknown
        .iter()
        .map(|cap| {
            format!(
                "capability {} ({cap}) is not known to the running kernel (cap_last_cap {last}): \
                 ignored",
                name(*cap).unwrap_or_else(|| format!("CAP_{cap}"))
            )
        })
        .collect()
}

impl CapabilitySets {
    /// Resolves the spec's sets against the running kernel; the `Vec` holds warnings for
    /// capabilities the kernel does not know, which are left out (as runc does).
    pub fn from_spec(caps: &LinuxCapabilities) -> Result<(CapabilitySets, Vec<String>)> {
        Self::from_spec_for_kernel(caps, last_cap()?)
    }

    /// [`CapabilitySets::from_spec`] for a kernel whose highest capability is `last`.
    fn from_spec_for_kernel(
        caps: &LinuxCapabilities,
        last: u8,
    ) -> Result<(CapabilitySets, Vec<String>)> {
        let mut unknown = BTreeSet::new();
        let mut mask = |set: &Option<Capabilities>, which: &str| -> Result<u64> {
            let mut mask = 0u64;
            for cap in set.iter().flatten() {
                // oci-spec displays its variants without the prefix ("SYS_ADMIN"); going through
                // the name keeps one table of numbers for the spec and for `parse_names`.
                let shown = cap.to_string();
                let n = number(&shown).ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "{which} capability {shown:?}: no capability number known for it"
                    ))
                })?;
                if n > last {
                    unknown.insert(n);
                } else {
                    mask |= 1u64 << n;
                }
            }
            Ok(mask)
        };
        let sets = CapabilitySets {
            bounding: mask(caps.bounding(), "bounding")?,
            effective: mask(caps.effective(), "effective")?,
            permitted: mask(caps.permitted(), "permitted")?,
            inheritable: mask(caps.inheritable(), "inheritable")?,
            ambient: mask(caps.ambient(), "ambient")?,
        };
        Ok((sets, kernel_warnings(&unknown, last)))
    }
}

/// Docker's default capability set for a container (the 14 of `docker run` without `--cap-add`).
pub fn docker_default() -> Vec<&'static str> {
    vec![
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
}

/// `prctl(option, arg2, 0, 0, 0)`, the form every capability prctl here takes.
fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<i32, Errno> {
    // SAFETY: the capability prctls read only their integer arguments; no memory is passed.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    Errno::result(rc)
}

/// Drops from the calling thread's bounding set every capability not in `sets.bounding`.
///
/// Runs in the container's init: no allocation, no file reads. The kernel's last capability is
/// found by probing (`PR_CAPBSET_READ` fails with `EINVAL` past it), and capabilities already
/// absent are not dropped again, so a bounding set that only shrinks needs no `CAP_SETPCAP` for
/// the bits that are already gone. Dropping needs `CAP_SETPCAP` in the effective set.
pub fn drop_bounding(sets: &CapabilitySets) -> Result<(), Errno> {
    for cap in 0..64u8 {
        let present = match prctl(libc::PR_CAPBSET_READ, cap.into(), 0) {
            Ok(v) => v == 1,
            Err(Errno::EINVAL) => break,
            Err(e) => return Err(e),
        };
        if present && sets.bounding & (1u64 << cap) == 0 {
            prctl(libc::PR_CAPBSET_DROP, cap.into(), 0)?;
        }
    }
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one 32-bit half of each set.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets effective, permitted and inheritable with capset(2), then raises the ambient set.
///
/// Runs in the container's init: syscalls only. capset fails with `EPERM` when a set asks for more
/// than the thread may have (permitted beyond the current permitted set, effective beyond the new
/// permitted). The ambient set is cleared first and each ambient capability is raised on its own;
/// the kernel refuses (`EPERM`) one that is not in both the new permitted and inheritable sets.
pub fn apply(sets: &CapabilitySets) -> Result<(), Errno> {
    let header = CapUserHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // Version 3 splits each 64-bit set into a low and a high 32-bit word; truncation is the point.
    let half = |shift: u32| CapUserData {
        effective: (sets.effective >> shift) as u32,
        permitted: (sets.permitted >> shift) as u32,
        inheritable: (sets.inheritable >> shift) as u32,
    };
    let data = [half(0), half(32)];
    // SAFETY: `header` and `data` are the v3 layout capset(2) reads (a header and two data
    // structs); both live on this stack frame for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &header as *const CapUserHeader,
            data.as_ptr(),
        )
    };
    Errno::result(rc)?;
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )?;
    for cap in 0..64u8 {
        if sets.ambient & (1u64 << cap) != 0 {
            prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap.into(),
            )?;
        }
    }
    Ok(())
}

/// The capability sets of a process (`Some(pid)`) or of the calling thread (`None`), from
/// `/proc/<pid>/status` or `/proc/thread-self/status` (capabilities are per thread).
pub fn current(pid: Option<i32>) -> Result<CapabilitySets> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/thread-self/status".to_owned(),
    };
    let text = crate::procfs::read(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    parse_status(&text).map_err(|e| e.context(&path))
}

/// Reads the `Cap*` lines of a `/proc/<pid>/status` text.
fn parse_status(text: &str) -> Result<CapabilitySets> {
    let field = |key: &str| -> Result<u64> {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .ok_or_else(|| Error::internal(format!("no {key} line")))?;
        u64::from_str_radix(value.trim(), 16).map_err(|e| {
            Error::internal(format!("{key}: bad mask {:?}", value.trim())).with_source(e)
        })
    };
    Ok(CapabilitySets {
        bounding: field("CapBnd")?,
        effective: field("CapEff")?,
        permitted: field("CapPrm")?,
        inheritable: field("CapInh")?,
        ambient: field("CapAmb")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorKind;

    #[test]
    fn numbers_and_names_round_trip() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("net_admin"), Some(12));
        assert_eq!(number("Cap_Sys_Admin"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        assert_eq!(number("CAP_"), None);
        for cap in 0..=40u8 {
            let n = name(cap).unwrap();
            assert_eq!(number(&n), Some(cap), "{n}");
        }
        assert_eq!(name(41), None);
        assert_eq!(
            names(0b101 | 1 << 63),
            ["CAP_CHOWN", "CAP_DAC_READ_SEARCH", "CAP_63"]
        );
    }

    #[test]
    fn spec_sets_become_masks() {
        let caps: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_CHECKPOINT_RESTORE"],
                "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL", "CAP_CHOWN"],
                "ambient": ["net_bind_service"]}"#,
        )
        .unwrap();
        let (sets, warnings) = CapabilitySets::from_spec_for_kernel(&caps, 40).unwrap();
        assert_eq!(
            sets,
            CapabilitySets {
                bounding: 1 | 1 << 5 | 1 << 40,
                effective: 1 << 5,
                permitted: 1 | 1 << 5,
                inheritable: 0,
                ambient: 1 << 10,
            }
        );
        assert!(warnings.is_empty());

        // On an older kernel the newer capability is left out with one warning, whatever the
        // number of sets naming it.
        let (sets, warnings) = CapabilitySets::from_spec_for_kernel(&caps, 37).unwrap();
        assert_eq!(sets.bounding, 1 | 1 << 5);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("CAP_CHECKPOINT_RESTORE (40)"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn every_oci_spec_capability_has_a_number() {
        let all: Vec<String> = (0..=40u8).map(|c| name(c).unwrap()).collect();
        let caps: LinuxCapabilities =
            serde_json::from_value(serde_json::json!({ "bounding": all })).unwrap();
        let (sets, _) = CapabilitySets::from_spec_for_kernel(&caps, 40).unwrap();
        assert_eq!(sets.bounding, all_up_to(40));
    }

    #[test]
    fn parse_names_rejects_non_capabilities() {
        let (mask, warnings) = parse_names(&["CAP_NET_ADMIN", "sys_chroot"]).unwrap();
        assert_eq!(mask, 1 << 12 | 1 << 18);
        assert!(warnings.is_empty());
        let err = parse_names(&["CAP_NET_ADMIN", "CAP_FLY"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("\"CAP_FLY\""), "{err}");
    }

    #[test]
    fn docker_default_is_fourteen_known_capabilities() {
        let list = docker_default();
        assert_eq!(list.len(), 14);
        let (mask, _) = parse_names(&list).unwrap();
        assert_eq!(mask.count_ones(), 14);
    }

    #[test]
    fn masks_up_to() {
        assert_eq!(all_up_to(0), 1);
        assert_eq!(all_up_to(40), 0x1ff_ffff_ffff);
        assert_eq!(all_up_to(63), u64::MAX);
        assert_eq!(all().unwrap(), all_up_to(last_cap().unwrap()));
    }

    #[test]
    fn status_lines_parse() {
        let text = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                    CapEff:\t000001fffeffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000400\n";
        let sets = parse_status(text).unwrap();
        assert_eq!(sets.permitted, 0x1ff_feff_ffff);
        assert_eq!(sets.bounding, 0x1ff_ffff_ffff);
        assert_eq!(sets.ambient, 1 << 10);
        assert!(parse_status("Name:\tx\n").is_err());
        // Nothing in the test process changes its capabilities, so thread and process agree.
        let pid = i32::try_from(std::process::id()).unwrap();
        assert_eq!(current(None).unwrap(), current(Some(pid)).unwrap());
    }
}
