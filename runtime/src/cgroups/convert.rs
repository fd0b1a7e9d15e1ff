//! Checks and conversions of the spec's resources that need no cgroup: done before anything is
//! written, so a bad value fails without a half-applied cgroup.

use std::fs;

use berth_core::{Error, Result};
use oci_spec::runtime::LinuxResources;

use super::devices;

/// cgroup v1 `cpu.shares` → v2 `cpu.weight`, as runc and crun map it (2..262144 → 1..10000).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The spec's blkio weight (10..1000) → v2 `io.weight` (1..10000), as runc maps it.
pub(crate) fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + ((weight - 10) * 9999) / 990
}

/// A limit for a v2 file: negative means "max".
pub(crate) fn v2_limit(value: i64) -> String {
    if value < 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// The value for v2 `memory.swap.max` from the spec's `limit` and `swap` (which, as on v1, is
/// memory+swap): swap alone is their difference. `None` leaves the file alone. Same rules as
/// runc, so a spec means the same on both runtimes.
pub(crate) fn v2_swap(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>> {
    let memory = limit.unwrap_or(0);
    let memswap = swap.unwrap_or(0);
    // -1 for memory with swap unset means "both unlimited", as on v1.
    if memory == -1 && memswap == 0 {
        return Ok(Some("max".to_string()));
    }
    match memswap {
        0 => Ok(None),
        -1 => Ok(Some("max".to_string())),
        s if s < 0 => Err(Error::invalid_argument(format!(
            "invalid memory swap limit {s}"
        ))),
        s => {
            if memory <= 0 {
                return Err(Error::invalid_argument(
                    "memory swap limit set without a memory limit (cgroup v2 needs both to compute swap alone)",
                ));
            }
            if s < memory {
                return Err(Error::invalid_argument(format!(
                    "memory+swap limit {s} is below the memory limit {memory}"
                )));
            }
            Ok(Some((s - memory).to_string()))
        }
    }
}

/// The huge page sizes this kernel supports, named as the hugetlb controller names its files
/// ("2MB", "1GB": the kernel's mem_fmt rounds to the largest unit the size reaches).
pub(crate) fn hugepage_sizes() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut sizes: Vec<(u64, String)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let bytes = kb.checked_mul(1024)?;
            let label = if bytes >= 1 << 30 {
                format!("{}GB", bytes >> 30)
            } else if bytes >= 1 << 20 {
                format!("{}MB", bytes >> 20)
            } else {
                format!("{kb}KB")
            };
            Some((bytes, label))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, label)| label).collect()
}

/// Keys of `unified` the runtime manages itself and a spec must not set.
const RESERVED_UNIFIED: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "cgroup.freeze",
    "cgroup.kill",
    "cgroup.type",
    "cgroup.events",
    "cgroup.controllers",
];

/// Checks one `unified` key names a plain file of the cgroup.
pub(crate) fn check_unified_key(key: &str) -> Result<()> {
    let plain = !key.is_empty()
        && !key.contains('/')
        && !key.contains('\0')
        && key != "."
        && key != ".."
        && key.contains('.');
    if !plain {
        return Err(Error::invalid_argument(format!(
            "unified resource {key:?} is not a cgroup file name (like \"memory.high\")"
        )));
    }
    if RESERVED_UNIFIED.contains(&key) {
        return Err(Error::invalid_argument(format!(
            "unified resource {key:?} is managed by the runtime and cannot be set"
        )));
    }
    Ok(())
}

fn check_limit(what: &str, value: Option<i64>) -> Result<()> {
    match value {
        Some(v) if v < -1 => Err(Error::invalid_argument(format!(
            "invalid {what} {v} (a byte count, or -1 for no limit)"
        ))),
        _ => Ok(()),
    }
}

fn check_weight(what: &str, weight: Option<u16>) -> Result<()> {
    match weight {
        Some(w) if w != 0 && !(10..=1000).contains(&w) => Err(Error::invalid_argument(format!(
            "invalid {what} {w} (10 to 1000)"
        ))),
        _ => Ok(()),
    }
}

fn check_device(what: &str, major: i64, minor: i64) -> Result<()> {
    if major < 0 || minor < 0 {
        return Err(Error::invalid_argument(format!(
            "invalid device {major}:{minor} in {what}"
        )));
    }
    Ok(())
}

/// Checks everything in `r` that can be checked without touching the cgroup.
pub(crate) fn validate(r: &LinuxResources, v2: bool) -> Result<()> {
    if let Some(m) = r.memory() {
        check_limit("memory limit", m.limit())?;
        check_limit("memory reservation", m.reservation())?;
        check_limit("memory swap limit", m.swap())?;
        check_limit("kernel memory limit", m.kernel())?;
        check_limit("kernel TCP memory limit", m.kernel_tcp())?;
        if let Some(s) = m.swappiness()
            && s > 100
        {
            return Err(Error::invalid_argument(format!(
                "invalid memory swappiness {s} (0 to 100)"
            )));
        }
        if v2 {
            v2_swap(m.limit(), m.swap())?;
        } else if let (Some(limit), Some(swap)) = (m.limit(), m.swap())
            && limit > 0
            && swap > 0
            && swap < limit
        {
            return Err(Error::invalid_argument(format!(
                "memory+swap limit {swap} is below the memory limit {limit}"
            )));
        }
    }
    if let Some(c) = r.cpu() {
        if v2 {
            let rt = c.realtime_runtime().is_some_and(|v| v != 0)
                || c.realtime_period().is_some_and(|v| v != 0);
            if rt {
                return Err(Error::not_implemented(
                    "realtime CPU limits (cpu.realtimeRuntime/realtimePeriod) do not exist in cgroup v2",
                ));
            }
        }
        if let Some(q) = c.quota()
            && q < -1
        {
            return Err(Error::invalid_argument(format!(
                "invalid CPU quota {q} (microseconds, or -1 for no limit)"
            )));
        }
    }
    if let Some(b) = r.block_io() {
        check_weight("blkio weight", b.weight())?;
        check_weight("blkio leaf weight", b.leaf_weight())?;
        for d in b.weight_device().iter().flatten() {
            check_device("blkio weightDevice", d.major(), d.minor())?;
            check_weight("blkio device weight", d.weight())?;
            check_weight("blkio device leaf weight", d.leaf_weight())?;
        }
        for list in [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ] {
            for d in list.iter().flatten() {
                check_device("blkio throttle", d.major(), d.minor())?;
            }
        }
    }
    if let Some(limits) = r.hugepage_limits() {
        let sizes = hugepage_sizes();
        for l in limits {
            if !sizes.iter().any(|s| s == l.page_size()) {
                return Err(Error::invalid_argument(format!(
                    "hugepage size {:?} is not supported by this kernel (supported: {})",
                    l.page_size(),
                    if sizes.is_empty() {
                        "none".to_string()
                    } else {
                        sizes.join(", ")
                    }
                )));
            }
            check_limit("hugepage limit", Some(l.limit()))?;
        }
    }
    if let Some(rules) = r.devices() {
        devices::parse_rules(rules)?;
    }
    if let Some(unified) = r.unified() {
        if !unified.is_empty() && !v2 {
            return Err(Error::invalid_argument(
                "unified (cgroup v2) resources were given but this host uses cgroup v1",
            ));
        }
        for key in unified.keys() {
            check_unified_key(key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    }

    #[test]
    fn swap_conversion() {
        assert_eq!(v2_swap(Some(-1), None).unwrap().as_deref(), Some("max"));
        assert_eq!(v2_swap(Some(100), None).unwrap(), None);
        assert_eq!(
            v2_swap(Some(100), Some(-1)).unwrap().as_deref(),
            Some("max")
        );
        assert_eq!(v2_swap(Some(100), Some(100)).unwrap().as_deref(), Some("0"));
        assert_eq!(
            v2_swap(Some(100), Some(300)).unwrap().as_deref(),
            Some("200")
        );
        assert!(v2_swap(Some(100), Some(50)).is_err());
        assert!(v2_swap(None, Some(50)).is_err());
    }

    #[test]
    fn unified_keys() {
        assert!(check_unified_key("memory.high").is_ok());
        for bad in ["", "../x.y", "a/b.c", "nodot", "cgroup.procs", ".."] {
            assert!(check_unified_key(bad).is_err(), "{bad}");
        }
    }
}
