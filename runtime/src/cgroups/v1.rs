//! The v1 backend: one directory per hierarchy (Documentation/admin-guide/cgroup-v1/*.rst).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::{Error, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::hierarchy::{self, UnifiedMount, V1Hierarchy};
use super::stats::{HugetlbStats, Stats};
use super::v2::V2Cgroup;
use super::{CgroupMountSource, convert, devices, files};

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// cpuacct.stat counts in USER_HZ ticks, which is 100 on every Linux ABI.
const NS_PER_USER_HZ_TICK: u64 = 10_000_000;

#[derive(Debug, Clone)]
struct HierarchyDir {
    /// Position in the mount table, for [`V1Cgroup::mount_sources`].
    order: usize,
    controllers: Vec<String>,
    mount: PathBuf,
    dir: PathBuf,
}

/// One cgroup in every v1 hierarchy, plus the hybrid host's unified tree if there is one.
#[derive(Debug, Clone)]
pub(crate) struct V1Cgroup {
    path: String,
    hierarchies: Vec<HierarchyDir>,
    unified: Option<V2Cgroup>,
}

impl V1Cgroup {
    pub(crate) fn new(
        hierarchies: &[V1Hierarchy],
        unified: Option<&UnifiedMount>,
        path: &str,
    ) -> Self {
        let mut hierarchies: Vec<HierarchyDir> = hierarchies
            .iter()
            .enumerate()
            .map(|(order, h)| HierarchyDir {
                order,
                controllers: h.controllers.clone(),
                mount: h.mount.clone(),
                dir: hierarchy::join(&h.mount, path),
            })
            .collect();
        // Join blkio before memory: with cgroup writeback, memcg and blkcg must agree on the
        // inode's owner, and the kernel checks the blkcg when the memcg changes.
        hierarchies.sort_by_key(|h| !h.controllers.iter().any(|c| c == "blkio"));
        Self {
            path: path.to_string(),
            hierarchies,
            unified: unified.map(|u| V2Cgroup::new(&u.mount, path)),
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    fn require(&self, controller: &str, what: &str) -> Result<&Path> {
        self.dir(controller).ok_or_else(|| {
            Error::failed_precondition(format!(
                "cannot apply {what}: the cgroup v1 {controller} controller is not mounted"
            ))
        })
    }

    pub(crate) fn create(&self) -> Result<()> {
        for h in &self.hierarchies {
            if h.controllers.iter().any(|c| c == "cpuset") {
                create_cpuset(&h.mount, &self.path)?;
            } else {
                files::create_dir_all(&h.dir)?;
            }
        }
        if let Some(u) = &self.unified {
            // Join the unified tree too (runc does): tools that look there find the container,
            // and controllers that only exist there can be used. Controllers are enabled only
            // when a limit needs one.
            u.create(false)?;
        }
        Ok(())
    }

    pub(crate) fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = r.pids()
            && p.limit() != 0
        {
            let dir = self.require("pids", "the pids limit")?;
            let value = if p.limit() < 0 {
                "max".to_string()
            } else {
                p.limit().to_string()
            };
            files::write(&dir.join("pids.max"), &value)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_blkio(b)?;
        }
        if let Some(limits) = r.hugepage_limits() {
            self.apply_hugetlb(limits)?;
        }
        if let Some(rules) = r.devices() {
            self.apply_devices(&devices::parse_rules(rules)?)?;
        }
        if let Some(n) = r.network() {
            if let Some(class_id) = n.class_id() {
                match self.dir("net_cls") {
                    Some(dir) => files::write(&dir.join("net_cls.classid"), &class_id.to_string())?,
                    None => {
                        tracing::warn!(cgroup = %self.path, "network classID ignored: net_cls is not mounted")
                    }
                }
            }
            for p in n.priorities().iter().flatten() {
                match self.dir("net_prio") {
                    Some(dir) => files::write(
                        &dir.join("net_prio.ifpriomap"),
                        &format!("{} {}", p.name(), p.priority()),
                    )?,
                    None => {
                        tracing::warn!(cgroup = %self.path, "network priorities ignored: net_prio is not mounted")
                    }
                }
            }
        }
        if let Some(rdma) = r.rdma() {
            for (device, limit) in rdma {
                let Some(dir) = self.dir("rdma") else {
                    tracing::warn!(cgroup = %self.path, "rdma limits ignored: the rdma controller is not mounted");
                    break;
                };
                let handles = limit
                    .hca_handles()
                    .map_or_else(|| "max".to_string(), |v| v.to_string());
                let objects = limit
                    .hca_objects()
                    .map_or_else(|| "max".to_string(), |v| v.to_string());
                files::write(
                    &dir.join("rdma.max"),
                    &format!("{device} hca_handle={handles} hca_object={objects}"),
                )?;
            }
        }
        // `unified` on v1 was refused by validation.
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<()> {
        let limit = m.limit().filter(|v| *v != 0);
        // -1 for memory with swap unset means "both unlimited" (runc's rule), otherwise the
        // old memsw limit would stay below an unlimited memory limit.
        let swap = match (limit, m.swap()) {
            (Some(-1), None | Some(0)) => Some(-1),
            (_, s) => s.filter(|v| *v != 0),
        };
        let reservation = m.reservation().filter(|v| *v != 0);
        let kernel_tcp = m.kernel_tcp().filter(|v| *v != 0);
        let wants = limit.is_some()
            || swap.is_some()
            || reservation.is_some()
            || kernel_tcp.is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer().is_some();
        if m.kernel().is_some_and(|v| v != 0) {
            // Linux 5.16 deprecated kmem.limit_in_bytes and 6.x ignores writes to it.
            tracing::warn!(cgroup = %self.path, "kernel memory limit ignored: the kernel no longer enforces it");
        }
        if !wants {
            return Ok(());
        }
        let dir = self.require("memory", "memory limits")?;
        let limit_file = dir.join("memory.limit_in_bytes");
        let memsw_file = dir.join("memory.memsw.limit_in_bytes");
        let swap = match swap {
            Some(s) if !memsw_file.exists() => {
                if s != -1 {
                    return Err(Error::failed_precondition(format!(
                        "invalid memory swap limit {s}: swap accounting is not enabled on this \
                         host ({} is missing; boot with swapaccount=1)",
                        memsw_file.display()
                    )));
                }
                None
            }
            s => s,
        };
        if let (Some(true), Some(l)) = (m.check_before_update(), limit) {
            let usage = files::read_u64_or_zero(&dir.join("memory.usage_in_bytes"))?;
            if l > 0 && u64::try_from(l).unwrap_or(0) < usage {
                return Err(Error::failed_precondition(format!(
                    "memory limit {l} is below the cgroup's current usage {usage}"
                )));
            }
        }
        match (limit, swap) {
            (Some(l), Some(s)) => {
                // The kernel keeps memory ≤ memory+swap at every step, so raise memsw first
                // when it grows past the current memory limit, and lower memory first otherwise.
                let current = files::parse_u64(&limit_file, &files::read(&limit_file)?)?;
                let swap_first = s == -1 || u64::try_from(s).is_ok_and(|s| current < s);
                if swap_first {
                    files::write(&memsw_file, &s.to_string())?;
                    files::write(&limit_file, &l.to_string())?;
                } else {
                    files::write(&limit_file, &l.to_string())?;
                    files::write(&memsw_file, &s.to_string())?;
                }
            }
            (Some(l), None) => files::write(&limit_file, &l.to_string())?,
            (None, Some(s)) => files::write(&memsw_file, &s.to_string())?,
            (None, None) => {}
        }
        if let Some(r) = reservation {
            files::write(&dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
        }
        if let Some(t) = kernel_tcp {
            let file = dir.join("memory.kmem.tcp.limit_in_bytes");
            if file.exists() {
                files::write(&file, &t.to_string())?;
            } else {
                tracing::warn!(cgroup = %self.path, "kernel TCP memory limit ignored: this kernel has no memory.kmem.tcp.limit_in_bytes");
            }
        }
        if let Some(s) = m.swappiness() {
            files::write(&dir.join("memory.swappiness"), &s.to_string())?;
        }
        if let Some(disable) = m.disable_oom_killer() {
            files::write(
                &dir.join("memory.oom_control"),
                if disable { "1" } else { "0" },
            )?;
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<()> {
        let shares = c.shares().filter(|s| *s != 0);
        let quota = c.quota().filter(|q| *q != 0);
        let period = c.period().filter(|p| *p != 0);
        let rt_runtime = c.realtime_runtime().filter(|v| *v != 0);
        let rt_period = c.realtime_period().filter(|v| *v != 0);
        let wants_cpu = shares.is_some()
            || quota.is_some()
            || period.is_some()
            || rt_runtime.is_some()
            || rt_period.is_some()
            || c.burst().is_some()
            || c.idle().is_some();
        if wants_cpu {
            let dir = self.require("cpu", "cpu limits")?;
            if let Some(s) = shares {
                let file = dir.join("cpu.shares");
                files::write(&file, &s.to_string())?;
                // The kernel clamps shares to 2..262144 silently: say so rather than run with
                // a different value than asked.
                let got = files::parse_u64(&file, &files::read(&file)?)?;
                if got != s {
                    return Err(Error::invalid_argument(format!(
                        "cpu shares {s} out of range: the kernel set {got} (2 to 262144)"
                    )));
                }
            }
            let period_file = dir.join("cpu.cfs_period_us");
            let mut retry_period = None;
            if let Some(p) = period {
                match files::write_raw(&period_file, &p.to_string()) {
                    Ok(()) => {}
                    // A shorter period can make the current quota exceed the parent's
                    // bandwidth (EINVAL); if a quota comes next, try again after it.
                    Err(e) if files::is_errno(&e, libc::EINVAL) && quota.is_some() => {
                        retry_period = Some(p);
                    }
                    Err(e) => {
                        return Err(files::os_error(
                            format!("write {p} to {}", period_file.display()),
                            e,
                        ));
                    }
                }
            }
            if let Some(q) = quota {
                files::write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                if let Some(p) = retry_period {
                    files::write(&period_file, &p.to_string())?;
                }
            }
            if let Some(b) = c.burst() {
                files::write(&dir.join("cpu.cfs_burst_us"), &b.to_string())?;
            }
            // Period before runtime: the runtime must fit in the period.
            if let Some(p) = rt_period {
                files::write(&dir.join("cpu.rt_period_us"), &p.to_string())?;
            }
            if let Some(r) = rt_runtime {
                files::write(&dir.join("cpu.rt_runtime_us"), &r.to_string())?;
            }
            if let Some(i) = c.idle() {
                files::write(&dir.join("cpu.idle"), &i.to_string())?;
            }
        }
        let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
        let mems = c.mems().as_deref().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            let dir = self.require("cpuset", "cpuset cpus/mems")?;
            if let Some(cpus) = cpus {
                files::write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = mems {
                files::write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &LinuxBlockIo) -> Result<()> {
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ];
        let wants = b.weight().is_some_and(|w| w != 0)
            || b.leaf_weight().is_some()
            || b.weight_device().as_ref().is_some_and(|d| !d.is_empty())
            || throttles
                .iter()
                .any(|(_, l)| l.as_ref().is_some_and(|l| !l.is_empty()));
        if !wants {
            return Ok(());
        }
        let dir = self.require("blkio", "blkio limits")?;
        // CFQ's blkio.weight is gone since Linux 5.0; BFQ offers blkio.bfq.weight with the
        // same scale. Use whichever exists.
        let weight_file = |name: &str| -> Option<PathBuf> {
            [format!("blkio.{name}"), format!("blkio.bfq.{name}")]
                .into_iter()
                .map(|f| dir.join(f))
                .find(|p| p.exists())
        };
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            let file = weight_file("weight").ok_or_else(|| {
                Error::failed_precondition(format!(
                    "cannot apply the blkio weight: neither blkio.weight nor blkio.bfq.weight \
                     exists in {} (needs the CFQ or BFQ I/O scheduler)",
                    dir.display()
                ))
            })?;
            files::write(&file, &w.to_string())?;
        }
        if let Some(w) = b.leaf_weight() {
            match weight_file("leaf_weight") {
                Some(file) => files::write(&file, &w.to_string())?,
                None => {
                    tracing::warn!(cgroup = %self.path, "blkio leafWeight ignored: this kernel has no leaf weights")
                }
            }
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight().filter(|w| *w != 0) {
                let file = weight_file("weight_device").ok_or_else(|| {
                    Error::failed_precondition(format!(
                        "cannot apply blkio device weights: no weight_device file in {}",
                        dir.display()
                    ))
                })?;
                files::write(&file, &format!("{}:{} {w}", d.major(), d.minor()))?;
            }
            if let Some(w) = d.leaf_weight() {
                match weight_file("leaf_weight_device") {
                    Some(file) => {
                        files::write(&file, &format!("{}:{} {w}", d.major(), d.minor()))?;
                    }
                    None => {
                        tracing::warn!(cgroup = %self.path, "blkio device leafWeight ignored: this kernel has no leaf weights")
                    }
                }
            }
        }
        for (file, list) in throttles {
            for d in list.iter().flatten() {
                files::write(
                    &dir.join(file),
                    &format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                )?;
            }
        }
        Ok(())
    }

    fn apply_hugetlb(&self, limits: &[oci_spec::runtime::LinuxHugepageLimit]) -> Result<()> {
        if limits.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.dir("hugetlb") {
            for l in limits {
                let value = l.limit().to_string();
                files::write(
                    &dir.join(format!("hugetlb.{}.limit_in_bytes", l.page_size())),
                    &value,
                )?;
                let rsvd = dir.join(format!("hugetlb.{}.rsvd.limit_in_bytes", l.page_size()));
                if rsvd.exists() {
                    files::write(&rsvd, &value)?;
                }
            }
            return Ok(());
        }
        // Hybrid hosts may have hugetlb on the unified tree only.
        if let Some(u) = &self.unified
            && unified_offers(u, "hugetlb")
        {
            u.ensure_controller("hugetlb")?;
            return u.apply_hugetlb(limits);
        }
        tracing::warn!(cgroup = %self.path, "hugepage limits ignored: no hugetlb controller on this host");
        Ok(())
    }

    fn apply_devices(&self, rules: &[devices::Rule]) -> Result<()> {
        if rules.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.dir("devices") {
            return files::write_sequence(dir, &devices::v1_writes(rules));
        }
        // Without a v1 devices hierarchy the kernel still runs eBPF device programs attached
        // to the task's unified cgroup.
        if let Some(u) = &self.unified {
            return u.apply_devices(rules);
        }
        Err(Error::failed_precondition(
            "cannot apply device rules: neither the cgroup v1 devices controller nor a cgroup2 mount exists",
        ))
    }

    pub(crate) fn add_process(&self, pid: i32) -> Result<()> {
        let pid = pid.to_string();
        for h in &self.hierarchies {
            files::write(&h.dir.join("cgroup.procs"), &pid)?;
        }
        if let Some(u) = &self.unified {
            files::write(&u.dir().join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    pub(crate) fn entry(&self) -> Result<super::CgroupEntry> {
        let mut tasks = Vec::with_capacity(self.hierarchies.len());
        for h in &self.hierarchies {
            let path = h.dir.join("tasks");
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| files::os_error(format!("open {}", path.display()), e))?;
            tasks.push((path, file));
        }
        Ok(super::CgroupEntry {
            clone_into: self.unified.as_ref().map(|u| u.open_dir()).transpose()?,
            tasks,
        })
    }

    pub(crate) fn pids(&self) -> Result<Vec<i32>> {
        let mut all = BTreeSet::new();
        let mut found = false;
        for h in &self.hierarchies {
            let path = h.dir.join("cgroup.procs");
            if let Some(content) = files::read_optional(&path)? {
                found = true;
                all.extend(files::parse_pids(&path, &content)?);
            }
        }
        if let Some(u) = &self.unified
            && let Some(pids) = u.pids_if_exists()?
        {
            found = true;
            all.extend(pids);
        }
        if !found {
            return Err(self.missing());
        }
        Ok(all.into_iter().collect())
    }

    fn missing(&self) -> Error {
        Error::not_found(format!("cgroup {} does not exist", self.path))
    }

    fn freezer_state(&self) -> Result<PathBuf> {
        Ok(self.require("freezer", "pause")?.join("freezer.state"))
    }

    pub(crate) fn freeze(&self) -> Result<()> {
        let state = self.freezer_state()?;
        files::write(&state, "FROZEN")?;
        // FREEZING can stall on a task the kernel cannot freeze yet; asking again now and then
        // lets the freezer retry it.
        let frozen = files::poll_until(
            FREEZE_TIMEOUT,
            || Ok(files::read(&state)?.trim() == "FROZEN"),
            || files::write(&state, "FROZEN"),
        )?;
        if !frozen {
            let _ = files::write(&state, "THAWED");
            return Err(Error::unavailable(format!(
                "freeze {}: still FREEZING after {}s (a process may be stuck in the kernel); \
                 thawed it again",
                state.display(),
                FREEZE_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }

    pub(crate) fn thaw(&self) -> Result<()> {
        let state = self.freezer_state()?;
        files::write(&state, "THAWED")?;
        let thawed = files::poll_until(
            FREEZE_TIMEOUT,
            || Ok(files::read(&state)?.trim() == "THAWED"),
            || files::write(&state, "THAWED"),
        )?;
        if !thawed {
            return Err(Error::unavailable(format!(
                "thaw {}: not THAWED after {}s",
                state.display(),
                FREEZE_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }

    pub(crate) fn is_frozen(&self) -> Result<bool> {
        let Some(dir) = self.dir("freezer") else {
            return Ok(false);
        };
        Ok(files::read(&dir.join("freezer.state"))?.trim() == "FROZEN")
    }

    pub(crate) fn oom_kill_count(&self) -> Result<u64> {
        let dir = self.require("memory", "an OOM kill count")?;
        let control = files::read(&dir.join("memory.oom_control"))?;
        Ok(files::parse_flat_keyed(&control)
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        if !self.hierarchies.iter().any(|h| h.dir.is_dir()) {
            return Err(self.missing());
        }
        let mut s = Stats::default();
        if let Some(dir) = self.dir("cpuacct") {
            s.cpu.usage.total = files::read_u64_or_zero(&dir.join("cpuacct.usage"))?;
            let user = files::read_u64_optional(&dir.join("cpuacct.usage_user"))?;
            let sys = files::read_u64_optional(&dir.join("cpuacct.usage_sys"))?;
            if let (Some(user), Some(sys)) = (user, sys) {
                s.cpu.usage.user = user;
                s.cpu.usage.kernel = sys;
            } else {
                let stat = files::read_flat_keyed(&dir.join("cpuacct.stat"))?;
                let ticks = |k: &str| stat.get(k).copied().unwrap_or(0);
                s.cpu.usage.user = ticks("user").saturating_mul(NS_PER_USER_HZ_TICK);
                s.cpu.usage.kernel = ticks("system").saturating_mul(NS_PER_USER_HZ_TICK);
            }
            if let Some(per_cpu) = files::read_optional(&dir.join("cpuacct.usage_percpu"))? {
                s.cpu.usage.per_cpu = per_cpu
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
            }
        }
        if let Some(dir) = self.dir("cpu") {
            let stat = files::read_flat_keyed(&dir.join("cpu.stat"))?;
            let get = |k: &str| stat.get(k).copied().unwrap_or(0);
            s.cpu.throttling.periods = get("nr_periods");
            s.cpu.throttling.throttled_periods = get("nr_throttled");
            s.cpu.throttling.throttled_time = get("throttled_time");
        }
        if let Some(dir) = self.dir("memory") {
            s.memory.raw = files::read_flat_keyed(&dir.join("memory.stat"))?;
            s.memory.fill_from_v1_raw();
            for (entry, prefix) in [
                (&mut s.memory.usage, "memory"),
                (&mut s.memory.swap, "memory.memsw"),
                (&mut s.memory.kernel, "memory.kmem"),
                (&mut s.memory.kernel_tcp, "memory.kmem.tcp"),
            ] {
                let f = |name: &str| dir.join(format!("{prefix}.{name}"));
                entry.usage = files::read_u64_or_zero(&f("usage_in_bytes"))?;
                entry.limit = files::read_u64_or_zero(&f("limit_in_bytes"))?;
                entry.max = files::read_u64_or_zero(&f("max_usage_in_bytes"))?;
                entry.failcnt = files::read_u64_or_zero(&f("failcnt"))?;
            }
            let oom = files::read_flat_keyed(&dir.join("memory.oom_control"))?;
            let get = |k: &str| oom.get(k).copied().unwrap_or(0);
            s.memory_oom_control.oom_kill_disable = get("oom_kill_disable");
            s.memory_oom_control.under_oom = get("under_oom");
            s.memory_oom_control.oom_kill = get("oom_kill");
        }
        if let Some(dir) = self.dir("pids") {
            s.pids.current = files::read_u64_or_zero(&dir.join("pids.current"))?;
            s.pids.limit = match files::read_u64_or_zero(&dir.join("pids.max"))? {
                u64::MAX => 0,
                n => n,
            };
        }
        if let Some(dir) = self.dir("blkio") {
            // CFQ's files (gone since 5.0), then BFQ's (only count BFQ-scheduled devices),
            // then the throttle layer's, which see every device: the first with data wins.
            for prefix in ["blkio", "blkio.bfq", "blkio.throttle"] {
                let bytes = files::read_optional(
                    &dir.join(format!("{prefix}.io_service_bytes_recursive")),
                )?;
                let Some(bytes) = bytes.map(|b| super::stats::parse_blkio_v1(&b)) else {
                    continue;
                };
                let ios =
                    files::read_optional(&dir.join(format!("{prefix}.io_serviced_recursive")))?
                        .map(|b| super::stats::parse_blkio_v1(&b))
                        .unwrap_or_default();
                let last = prefix == "blkio.throttle";
                if !bytes.is_empty() || !ios.is_empty() || last {
                    s.blkio.io_service_bytes_recursive = bytes;
                    s.blkio.io_serviced_recursive = ios;
                    break;
                }
            }
        }
        if let Some(dir) = self.dir("hugetlb") {
            for size in convert::hugepage_sizes() {
                let f = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
                s.hugetlb.push(HugetlbStats {
                    usage: files::read_u64_or_zero(&f("usage_in_bytes"))?,
                    max: files::read_u64_or_zero(&f("max_usage_in_bytes"))?,
                    failcnt: files::read_u64_or_zero(&f("failcnt"))?,
                    limit: files::read_u64_or_zero(&f("limit_in_bytes"))?,
                    pagesize: size,
                });
            }
        } else if let Some(u) = &self.unified {
            s.hugetlb = u.hugetlb_stats()?;
        }
        Ok(s)
    }

    pub(crate) fn destroy(&self) -> Result<()> {
        // Try every hierarchy even if one fails, so as little as possible is left behind.
        let mut first_error = None;
        let unified = self.unified.iter().map(|u| u.destroy());
        for result in self
            .hierarchies
            .iter()
            .map(|h| files::remove_cgroup_dir(&h.dir))
            .chain(unified)
        {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// In mount-table order, each hierarchy followed by its symlinks, the unified tree last.
    pub(crate) fn mount_sources(&self) -> Vec<CgroupMountSource> {
        let mut out = Vec::new();
        let mut hierarchies: Vec<&HierarchyDir> = self.hierarchies.iter().collect();
        hierarchies.sort_by_key(|h| h.order);
        for h in hierarchies {
            let Some(name) = h.mount.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            out.push(CgroupMountSource::Bind {
                name: name.to_string(),
                host_dir: h.dir.clone(),
            });
            if name.contains(',') {
                for part in name.split(',').filter(|p| !p.is_empty()) {
                    out.push(CgroupMountSource::Symlink {
                        name: part.to_string(),
                        target: name.to_string(),
                    });
                }
            }
        }
        if let Some(u) = &self.unified
            && let Some(name) = u.mount().file_name().and_then(|n| n.to_str())
        {
            out.push(CgroupMountSource::Bind {
                name: name.to_string(),
                host_dir: u.dir().to_path_buf(),
            });
        }
        out
    }
}

/// Whether the unified mount offers `controller` at its root.
fn unified_offers(u: &V2Cgroup, controller: &str) -> bool {
    crate::procfs::read(u.mount().join("cgroup.controllers"))
        .is_ok_and(|s| s.split_whitespace().any(|c| c == controller))
}

/// Creates a cpuset cgroup level by level, giving each new level its parent's cpus and mems:
/// a v1 cpuset starts empty, and no process can join an empty cpuset.
fn create_cpuset(mount: &Path, path: &str) -> Result<()> {
    let mut current = mount.to_path_buf();
    for name in path.split('/').filter(|c| !c.is_empty()) {
        let parent = current.clone();
        current.push(name);
        match fs::create_dir(&current) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(files::os_error(
                    format!("create cgroup {}", current.display()),
                    e,
                ));
            }
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = current.join(file);
            if files::read(&own)?.trim().is_empty() {
                let from_parent = files::read(&parent.join(file))?;
                let value = from_parent.trim();
                if !value.is_empty() {
                    files::write(&own, value)?;
                }
            }
        }
    }
    Ok(())
}
