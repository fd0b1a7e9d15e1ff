//! Resource limits (`process.rlimits`).
//!
//! The spec's names are resolved and checked in the parent ([`Rlimit::from_specs`]); the
//! container's init only calls [`apply`], one prlimit64(2) per limit.

use berth_core::{Error, Result};
use nix::errno::Errno;
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

/// One resource limit, resolved from its spec name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    /// The spec's name, e.g. `RLIMIT_NOFILE`, for errors.
    pub name: String,
    /// The resource number for setrlimit(2).
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The value that means "no limit" (`RLIM_INFINITY` for prlimit64).
pub const INFINITY: u64 = u64::MAX;

// libc types the resource numbers as c_uint on glibc and c_int on musl; the values are small and
// non-negative everywhere, and they differ between architectures (mips, sparc), hence libc's.
#[allow(clippy::unnecessary_cast)]
const RESOURCES: [(&str, u32); 16] = [
    ("RLIMIT_CPU", libc::RLIMIT_CPU as u32),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE as u32),
    ("RLIMIT_DATA", libc::RLIMIT_DATA as u32),
    ("RLIMIT_STACK", libc::RLIMIT_STACK as u32),
    ("RLIMIT_CORE", libc::RLIMIT_CORE as u32),
    ("RLIMIT_RSS", libc::RLIMIT_RSS as u32),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC as u32),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE as u32),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK as u32),
    ("RLIMIT_AS", libc::RLIMIT_AS as u32),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS as u32),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING as u32),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE as u32),
    ("RLIMIT_NICE", libc::RLIMIT_NICE as u32),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO as u32),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME as u32),
];

/// The resource number of `RLIMIT_X` (or `x`, `rlimit_x`), if it is one.
pub fn resource(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("RLIMIT_") {
        upper
    } else {
        format!("RLIMIT_{upper}")
    };
    RESOURCES
        .iter()
        .find(|(n, _)| *n == full)
        .map(|(_, number)| *number)
}

fn spec_name(typ: PosixRlimitType) -> &'static str {
    // A match rather than oci-spec's Display so that a new variant is a compile error here, not a
    // runtime "unknown rlimit".
    match typ {
        PosixRlimitType::RlimitCpu => "RLIMIT_CPU",
        PosixRlimitType::RlimitFsize => "RLIMIT_FSIZE",
        PosixRlimitType::RlimitData => "RLIMIT_DATA",
        PosixRlimitType::RlimitStack => "RLIMIT_STACK",
        PosixRlimitType::RlimitCore => "RLIMIT_CORE",
        PosixRlimitType::RlimitRss => "RLIMIT_RSS",
        PosixRlimitType::RlimitNproc => "RLIMIT_NPROC",
        PosixRlimitType::RlimitNofile => "RLIMIT_NOFILE",
        PosixRlimitType::RlimitMemlock => "RLIMIT_MEMLOCK",
        PosixRlimitType::RlimitAs => "RLIMIT_AS",
        PosixRlimitType::RlimitLocks => "RLIMIT_LOCKS",
        PosixRlimitType::RlimitSigpending => "RLIMIT_SIGPENDING",
        PosixRlimitType::RlimitMsgqueue => "RLIMIT_MSGQUEUE",
        PosixRlimitType::RlimitNice => "RLIMIT_NICE",
        PosixRlimitType::RlimitRtprio => "RLIMIT_RTPRIO",
        PosixRlimitType::RlimitRttime => "RLIMIT_RTTIME",
    }
}

impl Rlimit {
    /// A limit named `RLIMIT_X` (case-insensitive, prefix optional); soft above hard is an error.
    pub fn new(name: &str, soft: u64, hard: u64) -> Result<Rlimit> {
        let number = resource(name)
            .ok_or_else(|| Error::invalid_argument(format!("unknown rlimit type {name:?}")))?;
        let name = RESOURCES
            .iter()
            .find(|(_, n)| *n == number)
            .map_or(name, |(n, _)| *n);
        if soft > hard {
            return Err(Error::invalid_argument(format!(
                "rlimit {name}: soft limit {soft} is above hard limit {hard}"
            )));
        }
        Ok(Rlimit {
            name: name.to_owned(),
            resource: number,
            soft,
            hard,
        })
    }

    /// One of the spec's `process.rlimits`.
    pub fn from_spec(r: &PosixRlimit) -> Result<Rlimit> {
        Self::new(spec_name(r.typ()), r.soft(), r.hard())
    }

    /// All of the spec's `process.rlimits`, in order; a type given twice is an error (the runtime
    /// spec requires one).
    pub fn from_specs(limits: &[PosixRlimit]) -> Result<Vec<Rlimit>> {
        let mut out: Vec<Rlimit> = Vec::with_capacity(limits.len());
        for r in limits {
            let limit = Self::from_spec(r)?;
            if out.iter().any(|l| l.resource == limit.resource) {
                return Err(Error::invalid_argument(format!(
                    "rlimit {} is given more than once",
                    limit.name
                )));
            }
            out.push(limit);
        }
        Ok(out)
    }
}

/// setrlimit(2) for one limit.
///
/// Runs in the container's init: one prlimit64(2), which takes 64-bit values on every
/// architecture, so [`INFINITY`] means unlimited. Raising the hard limit above the current one
/// needs `CAP_SYS_RESOURCE` and fails with `EPERM` without it.
pub fn apply(limit: &Rlimit) -> Result<(), Errno> {
    let new = libc::rlimit64 {
        rlim_cur: limit.soft,
        rlim_max: limit.hard,
    };
    // SAFETY: pid 0 is the calling process; `new` is a valid rlimit64 on this stack frame and the
    // null old-limit pointer tells the kernel not to write anything back.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::c_long,
            libc::c_ulong::from(limit.resource),
            &new as *const libc::rlimit64,
            std::ptr::null_mut::<libc::rlimit64>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// The calling process's current (soft, hard) limit for `resource`.
pub fn get(resource: u32) -> Result<(u64, u64), Errno> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: pid 0 is the calling process; a null new limit only reads, into `old`, which is a
    // valid rlimit64 on this stack frame.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::c_long,
            libc::c_ulong::from(resource),
            std::ptr::null::<libc::rlimit64>(),
            &mut old as *mut libc::rlimit64,
        )
    };
    Errno::result(rc)?;
    Ok((old.rlim_cur, old.rlim_max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorKind;

    fn spec(json: &str) -> Vec<PosixRlimit> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_spec_type_resolves() {
        for (name, number) in RESOURCES {
            let r = spec(&format!(r#"[{{"type": "{name}", "soft": 1, "hard": 2}}]"#));
            let limit = Rlimit::from_spec(&r[0]).unwrap();
            assert_eq!(limit.name, name);
            assert_eq!(limit.resource, number);
        }
        assert_eq!(resource("RLIMIT_NOFILE"), Some(7));
        assert_eq!(resource("nofile"), Some(7));
        assert_eq!(resource("rlimit_as"), Some(9));
        assert_eq!(resource("RLIMIT_FOO"), None);
    }

    #[test]
    fn soft_above_hard_is_invalid() {
        let r = spec(r#"[{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]"#);
        let err = Rlimit::from_spec(&r[0]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "rlimit RLIMIT_NOFILE: soft limit 2048 is above hard limit 1024"
        );
        let r = spec(r#"[{"type": "RLIMIT_CORE", "soft": 0, "hard": 18446744073709551615}]"#);
        assert_eq!(Rlimit::from_spec(&r[0]).unwrap().hard, INFINITY);
    }

    #[test]
    fn duplicates_are_invalid() {
        let r = spec(
            r#"[{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                {"type": "RLIMIT_NOFILE", "soft": 3, "hard": 4}]"#,
        );
        let err = Rlimit::from_specs(&r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("RLIMIT_NOFILE"), "{err}");
        assert_eq!(Rlimit::from_specs(&r[..2]).unwrap().len(), 2);
    }

    #[test]
    fn new_checks_names() {
        assert_eq!(Rlimit::new("nofile", 1, 2).unwrap().name, "RLIMIT_NOFILE");
        let err = Rlimit::new("RLIMIT_WINGS", 1, 2).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn get_reads_the_current_limit() {
        let (soft, hard) = get(libc::RLIMIT_NOFILE).unwrap();
        assert!(soft <= hard);
    }
}
