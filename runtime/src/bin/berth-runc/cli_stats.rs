//! `events` (stats and OOM notifications in runc's JSON) and `features`.

use std::io::Write;
use std::time::Duration;

use berth_core::Result;
use berth_runtime::Runtime;
use berth_runtime::state::Status;
use serde_json::{Value, json};

/// Prints stats once (`stats`) or every `interval` until the container stops, plus an `oom`
/// event whenever the cgroup's OOM-kill count goes up.
pub fn events(rt: &Runtime, id: &str, once: bool, interval: Duration) -> Result<()> {
    let cgroup = rt.cgroup(id)?;
    let mut ooms = cgroup.oom_kill_count().unwrap_or(0);
    loop {
        let stats = cgroup.stats()?;
        let event = json!({ "type": "stats", "id": id, "data": stats_json(&stats) });
        emit(&event);
        if once {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + interval;
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100).min(interval));
            let now = cgroup.oom_kill_count().unwrap_or(ooms);
            if now > ooms {
                emit(&json!({ "type": "oom", "id": id }));
                ooms = now;
            }
            if rt
                .state(id)
                .map(|s| s.status == Status::Stopped)
                .unwrap_or(true)
            {
                return Ok(());
            }
        }
    }
}

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// runc's `events` stats document (its `types.Stats` field names) for a cgroup's statistics.
pub fn stats_json(s: &berth_runtime::cgroups::Stats) -> Value {
    use berth_runtime::cgroups::{BlkioEntry, MemoryEntry};
    let entry = |e: &MemoryEntry| json!({ "limit": e.limit, "usage": e.usage, "max": e.max, "failcnt": e.failcnt });
    let blkio = |v: &[BlkioEntry]| -> Vec<Value> {
        v.iter()
            .map(|e| json!({ "major": e.major, "minor": e.minor, "op": e.op, "value": e.value }))
            .collect()
    };
    let hugetlb: serde_json::Map<String, Value> = s
        .hugetlb
        .iter()
        .map(|h| {
            (
                h.pagesize.clone(),
                json!({ "usage": h.usage, "max": h.max, "failcnt": h.failcnt }),
            )
        })
        .collect();
    json!({
        "cpu": {
            "usage": {
                "total": s.cpu.usage.total,
                "percpu": s.cpu.usage.per_cpu,
                "kernel": s.cpu.usage.kernel,
                "user": s.cpu.usage.user,
            },
            "throttling": {
                "periods": s.cpu.throttling.periods,
                "throttledPeriods": s.cpu.throttling.throttled_periods,
                "throttledTime": s.cpu.throttling.throttled_time,
            }
        },
        "memory": {
            "cache": s.memory.cache,
            "usage": entry(&s.memory.usage),
            "swap": entry(&s.memory.swap),
            "kernel": entry(&s.memory.kernel),
            "kernelTCP": entry(&s.memory.kernel_tcp),
            "raw": s.memory.raw,
        },
        "pids": { "current": s.pids.current, "limit": s.pids.limit },
        "blkio": {
            "ioServiceBytesRecursive": blkio(&s.blkio.io_service_bytes_recursive),
            "ioServicedRecursive": blkio(&s.blkio.io_serviced_recursive),
        },
        "hugetlb": hugetlb,
    })
}

/// Every capability the running kernel knows, by name.
fn known_capabilities() -> Vec<String> {
    let last = berth_runtime::capabilities::last_cap().unwrap_or(40);
    let mask = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    berth_runtime::capabilities::names(mask)
}

/// What `berth-runc features` reports.
pub fn features() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": berth_runtime::spec::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "acl", "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "idmap", "iversion", "lazytime", "loud", "mand", "noacl", "noatime", "nodev",
            "nodiratime", "noexec", "noiversion", "nolazytime", "nomand", "norelatime",
            "nostrictatime", "nosuid", "nosymfollow", "private", "ratime", "rbind", "rdev",
            "rdiratime", "relatime", "remount", "rexec", "ridmap", "rnoatime", "rnodev",
            "rnodiratime", "rnoexec", "rnorelatime", "rnostrictatime", "rnosuid",
            "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw", "rshared", "rslave",
            "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared", "silent",
            "slave", "strictatime", "suid", "symfollow", "sync", "tmpcopyup", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": known_capabilities(),
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
                    "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": [
                    "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_X32", "SCMP_ARCH_X86",
                    "SCMP_ARCH_X86_64"
                ]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": true },
            "mountExtensions": { "idmap": { "enabled": true } }
        },
        "annotations": {
            "io.github.berth.runtime.version": env!("CARGO_PKG_VERSION")
        }
    })
}
