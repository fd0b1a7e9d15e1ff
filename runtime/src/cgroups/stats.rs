//! Resource usage of a cgroup, shaped like containerd's cgroups v1 metrics
//! (`io.containerd.cgroups.v1.Metrics`) so mapping to that proto is field by field. Each version
//! fills what it has; what it lacks stays zero. "No limit" reads as `u64::MAX` except
//! [`PidsStats::limit`], which is 0 for "max" as containerd reports it.

use std::collections::BTreeMap;

/// Everything [`super::CgroupManager::stats`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time and throttling.
    pub cpu: CpuStats,
    /// Memory usage and limits.
    pub memory: MemoryStats,
    /// OOM state and kill count.
    pub memory_oom_control: MemoryOomControl,
    /// Process count and limit.
    pub pids: PidsStats,
    /// Block I/O.
    pub blkio: BlkioStats,
    /// Huge page usage, one entry per page size the kernel supports.
    pub hugetlb: Vec<HugetlbStats>,
}

/// CPU usage and throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// CPU time used.
    pub usage: CpuUsage,
    /// CFS bandwidth throttling.
    pub throttling: Throttling,
}

/// CPU time, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuUsage {
    /// Total CPU time.
    pub total: u64,
    /// Time in kernel mode.
    pub kernel: u64,
    /// Time in user mode.
    pub user: u64,
    /// Total per CPU (v1 only; empty on v2).
    pub per_cpu: Vec<u64>,
}

/// CFS bandwidth throttling counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttling {
    /// Enforcement periods that elapsed.
    pub periods: u64,
    /// Periods in which the group was throttled.
    pub throttled_periods: u64,
    /// Total time throttled, in nanoseconds.
    pub throttled_time: u64,
}

/// One counter set of the v1 memory controller (usage, limit, peak, failures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEntry {
    /// The limit (`u64::MAX` when there is none).
    pub limit: u64,
    /// Current usage in bytes.
    pub usage: u64,
    /// Peak usage in bytes.
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Memory statistics. The named fields are v1's `memory.stat` keys (on v2 the closest
/// `memory.stat` keys: cache ← file, rss ← anon, ...); `raw` has every key as the kernel
/// reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each field is the memory.stat key of the same name
pub struct MemoryStats {
    pub cache: u64,
    pub rss: u64,
    pub rss_huge: u64,
    pub mapped_file: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub pg_pg_in: u64,
    pub pg_pg_out: u64,
    pub pg_fault: u64,
    pub pg_maj_fault: u64,
    pub inactive_anon: u64,
    pub active_anon: u64,
    pub inactive_file: u64,
    pub active_file: u64,
    pub unevictable: u64,
    pub hierarchical_memory_limit: u64,
    pub hierarchical_swap_limit: u64,
    pub total_cache: u64,
    pub total_rss: u64,
    pub total_rss_huge: u64,
    pub total_mapped_file: u64,
    pub total_dirty: u64,
    pub total_writeback: u64,
    pub total_pg_pg_in: u64,
    pub total_pg_pg_out: u64,
    pub total_pg_fault: u64,
    pub total_pg_maj_fault: u64,
    pub total_inactive_anon: u64,
    pub total_active_anon: u64,
    pub total_inactive_file: u64,
    pub total_active_file: u64,
    pub total_unevictable: u64,
    /// Memory (v1 `memory.*`, v2 `memory.current`/`max`/`peak`, failcnt ← events "max").
    pub usage: MemoryEntry,
    /// v1: memory+swap (`memory.memsw.*`); v2: swap alone (`memory.swap.*`).
    pub swap: MemoryEntry,
    /// Kernel memory (v1 `memory.kmem.*`; v2 usage ← memory.stat "kernel").
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers (v1 `memory.kmem.tcp.*`; v2 usage ← memory.stat "sock").
    pub kernel_tcp: MemoryEntry,
    /// Every `memory.stat` key and value.
    pub raw: BTreeMap<String, u64>,
}

/// The OOM killer's state for the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryOomControl {
    /// 1 if the OOM killer is disabled (v1 only).
    pub oom_kill_disable: u64,
    /// 1 if the group is under OOM right now (v1 only).
    pub under_oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
    /// Times the group hit its limit and the OOM killer was invoked (v2 memory.events "oom").
    pub oom_events: u64,
}

/// Process count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    /// Processes and threads in the group.
    pub current: u64,
    /// The limit; 0 when there is none ("max").
    pub limit: u64,
}

/// Block I/O counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioStats {
    /// Bytes transferred, per device and operation.
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// I/O operations, per device and operation.
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// One block I/O counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// "Read", "Write", "Sync", "Async", "Discard" (v1 names; v2's rbytes/wbytes/dbytes map to
    /// Read/Write/Discard).
    pub op: String,
    /// The counter.
    pub value: u64,
}

/// Huge page usage for one page size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugetlbStats {
    /// Page size as the kernel names it ("2MB", "1GB").
    pub pagesize: String,
    /// Bytes in use.
    pub usage: u64,
    /// Peak bytes in use (v1 only).
    pub max: u64,
    /// Times the limit was hit (v2: events "max").
    pub failcnt: u64,
    /// The limit (`u64::MAX` when there is none).
    pub limit: u64,
}

impl MemoryStats {
    /// Fills the named fields from `raw` by v1 key names.
    pub(crate) fn fill_from_v1_raw(&mut self) {
        let get = |k: &str| self.raw.get(k).copied().unwrap_or(0);
        let fields = [
            get("cache"),
            get("rss"),
            get("rss_huge"),
            get("mapped_file"),
            get("dirty"),
            get("writeback"),
            get("pgpgin"),
            get("pgpgout"),
            get("pgfault"),
            get("pgmajfault"),
            get("inactive_anon"),
            get("active_anon"),
            get("inactive_file"),
            get("active_file"),
            get("unevictable"),
            get("hierarchical_memory_limit"),
            get("hierarchical_memsw_limit"),
            get("total_cache"),
            get("total_rss"),
            get("total_rss_huge"),
            get("total_mapped_file"),
            get("total_dirty"),
            get("total_writeback"),
            get("total_pgpgin"),
            get("total_pgpgout"),
            get("total_pgfault"),
            get("total_pgmajfault"),
            get("total_inactive_anon"),
            get("total_active_anon"),
            get("total_inactive_file"),
            get("total_active_file"),
            get("total_unevictable"),
        ];
        [
            self.cache,
            self.rss,
            self.rss_huge,
            self.mapped_file,
            self.dirty,
            self.writeback,
            self.pg_pg_in,
            self.pg_pg_out,
            self.pg_fault,
            self.pg_maj_fault,
            self.inactive_anon,
            self.active_anon,
            self.inactive_file,
            self.active_file,
            self.unevictable,
            self.hierarchical_memory_limit,
            self.hierarchical_swap_limit,
            self.total_cache,
            self.total_rss,
            self.total_rss_huge,
            self.total_mapped_file,
            self.total_dirty,
            self.total_writeback,
            self.total_pg_pg_in,
            self.total_pg_pg_out,
            self.total_pg_fault,
            self.total_pg_maj_fault,
            self.total_inactive_anon,
            self.total_active_anon,
            self.total_inactive_file,
            self.total_active_file,
            self.total_unevictable,
        ] = fields;
    }

    /// Fills the named fields from `raw` by v2 key names (the closest v1 equivalents; v2 stats
    /// are already hierarchical, so the total_ fields repeat them).
    pub(crate) fn fill_from_v2_raw(&mut self) {
        let get = |k: &str| self.raw.get(k).copied().unwrap_or(0);
        self.cache = get("file");
        self.rss = get("anon");
        self.rss_huge = get("anon_thp");
        self.mapped_file = get("file_mapped");
        self.dirty = get("file_dirty");
        self.writeback = get("file_writeback");
        self.pg_fault = get("pgfault");
        self.pg_maj_fault = get("pgmajfault");
        self.inactive_anon = get("inactive_anon");
        self.active_anon = get("active_anon");
        self.inactive_file = get("inactive_file");
        self.active_file = get("active_file");
        self.unevictable = get("unevictable");
        self.total_cache = self.cache;
        self.total_rss = self.rss;
        self.total_rss_huge = self.rss_huge;
        self.total_mapped_file = self.mapped_file;
        self.total_dirty = self.dirty;
        self.total_writeback = self.writeback;
        self.total_pg_fault = self.pg_fault;
        self.total_pg_maj_fault = self.pg_maj_fault;
        self.total_inactive_anon = self.inactive_anon;
        self.total_active_anon = self.active_anon;
        self.total_inactive_file = self.inactive_file;
        self.total_active_file = self.active_file;
        self.total_unevictable = self.unevictable;
    }
}

fn device(s: &str) -> Option<(u64, u64)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Parses a v1 blkio file ("8:0 Read 4096" per line, plus a "Total N" line that is skipped).
pub(crate) fn parse_blkio_v1(content: &str) -> Vec<BlkioEntry> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = device(parts.next()?)?;
            let op = parts.next()?.to_string();
            let value = parts.next()?.parse().ok()?;
            Some(BlkioEntry {
                major,
                minor,
                op,
                value,
            })
        })
        .collect()
}

/// Parses v2's io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6") into
/// (bytes, operations) entries named like v1's.
pub(crate) fn parse_io_stat(content: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in content.lines() {
        let mut parts = line.split_whitespace();
        let Some((major, minor)) = parts.next().and_then(device) else {
            continue;
        };
        for kv in parts {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let (list, op) = match key {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "dbytes" => (&mut bytes, "Discard"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                "dios" => (&mut ios, "Discard"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_parsers() {
        let v1 = parse_blkio_v1("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(v1.len(), 2);
        assert_eq!(
            (v1[0].major, v1[0].minor, v1[0].op.as_str(), v1[0].value),
            (8, 0, "Read", 4096)
        );
        let (bytes, ios) =
            parse_io_stat("254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(bytes.len(), 3);
        assert_eq!(bytes[1].value, 20);
        assert_eq!(ios[0].op, "Read");
    }
}
