//! The unified (v2) backend (Documentation/admin-guide/cgroup-v2.rst). Also used for a hybrid
//! host's cgroup2 mount, which the v1 backend joins and uses for controllers that only exist
//! there (hugetlb on our machines).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::{Error, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::stats::{HugetlbStats, Stats};
use super::{convert, devices, files, hierarchy};

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// One cgroup in a unified tree.
#[derive(Debug, Clone)]
pub(crate) struct V2Cgroup {
    mount: PathBuf,
    path: String,
    dir: PathBuf,
}

/// The controllers enabled for a cgroup, for clear errors before writing.
struct Enabled {
    dir: PathBuf,
    controllers: Vec<String>,
}

impl Enabled {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    fn need(&self, controller: &str, what: &str) -> Result<()> {
        if self.has(controller) {
            return Ok(());
        }
        Err(Error::failed_precondition(format!(
            "cannot apply {what}: the {controller} controller is not enabled for cgroup {} \
             (enabled: {})",
            self.dir.display(),
            if self.controllers.is_empty() {
                "none".to_string()
            } else {
                self.controllers.join(" ")
            }
        )))
    }
}

impl V2Cgroup {
    pub(crate) fn new(mount: &Path, path: &str) -> Self {
        Self {
            mount: mount.to_path_buf(),
            path: path.to_string(),
            dir: hierarchy::join(mount, path),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn mount(&self) -> &Path {
        &self.mount
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The cgroup's ancestors from the mount down, then the cgroup itself.
    fn levels(&self) -> Vec<PathBuf> {
        let mut out = vec![self.mount.clone()];
        let mut current = self.mount.clone();
        for name in self.path.split('/').filter(|c| !c.is_empty()) {
            current.push(name);
            out.push(current.clone());
        }
        out
    }

    /// Creates the cgroup and its missing ancestors. With `enable_all`, each ancestor gets
    /// every controller it has enabled for its children (so the leaf has all the host offers);
    /// a controller that cannot be enabled (e.g. an ancestor with processes of its own, which
    /// the "no internal processes" rule forbids) is a warning: only limits for it will fail.
    pub(crate) fn create(&self, enable_all: bool) -> Result<()> {
        let levels = self.levels();
        for pair in levels.windows(2) {
            let [parent, child] = pair else { continue };
            if enable_all {
                for err in enable_controllers(parent, |_| true) {
                    tracing::warn!(cgroup = %self.path, "{err}");
                }
            }
            match fs::create_dir(child) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(files::os_error(
                        format!("create cgroup {}", child.display()),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Enables `controller` on the way down to this cgroup (hybrid hosts: only when a limit
    /// needs it, so a host's unified tree is left as it is otherwise).
    pub(crate) fn ensure_controller(&self, controller: &str) -> Result<()> {
        let levels = self.levels();
        for parent in levels.iter().take(levels.len().saturating_sub(1)) {
            if let Some(err) = enable_controllers(parent, |c| c == controller)
                .into_iter()
                .next()
            {
                return Err(err);
            }
        }
        self.enabled()?.need(controller, "its limits")
    }

    fn enabled(&self) -> Result<Enabled> {
        let content = files::read(&self.file("cgroup.controllers"))?;
        Ok(Enabled {
            dir: self.dir.clone(),
            controllers: content.split_whitespace().map(str::to_string).collect(),
        })
    }

    pub(crate) fn apply(&self, r: &LinuxResources) -> Result<()> {
        let enabled = self.enabled()?;
        if let Some(m) = r.memory() {
            self.apply_memory(&enabled, m)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(&enabled, c)?;
        }
        if let Some(p) = r.pids()
            && p.limit() != 0
        {
            enabled.need("pids", "the pids limit")?;
            files::write(&self.file("pids.max"), &convert::v2_limit(p.limit()))?;
        }
        if let Some(b) = r.block_io() {
            self.apply_io(&enabled, b)?;
        }
        if let Some(limits) = r.hugepage_limits()
            && !limits.is_empty()
        {
            if enabled.has("hugetlb") {
                self.apply_hugetlb(limits)?;
            } else {
                tracing::warn!(
                    cgroup = %self.path,
                    "hugepage limits ignored: the hugetlb controller is not enabled"
                );
            }
        }
        if let Some(rules) = r.devices() {
            self.apply_devices(&devices::parse_rules(rules)?)?;
        }
        if let Some(n) = r.network()
            && (n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()))
        {
            tracing::warn!(
                cgroup = %self.path,
                "network classID/priorities ignored: cgroup v2 has no net_cls/net_prio"
            );
        }
        if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty())
            && !enabled.has("rdma")
        {
            // As on v1 (and as `CgroupManager::apply` promises): a host without the rdma
            // controller skips rdma limits rather than failing the container.
            tracing::warn!(
                cgroup = %self.path,
                devices = rdma.len(),
                "rdma limits ignored: the rdma controller is not enabled"
            );
        } else if let Some(rdma) = r.rdma() {
            // Sorted, so the writes happen in a stable order.
            let rdma: BTreeMap<&String, _> = rdma.iter().collect();
            for (device, limit) in rdma {
                let handles = limit
                    .hca_handles()
                    .map_or_else(|| "max".to_string(), |v| v.to_string());
                let objects = limit
                    .hca_objects()
                    .map_or_else(|| "max".to_string(), |v| v.to_string());
                files::write(
                    &self.file("rdma.max"),
                    &format!("{device} hca_handle={handles} hca_object={objects}"),
                )?;
            }
        }
        if let Some(unified) = r.unified() {
            // Last, so that explicit unified values win over converted ones (as in runc).
            let sorted: BTreeMap<&String, &String> = unified.iter().collect();
            for (key, value) in sorted {
                convert::check_unified_key(key)?;
                let controller = key.split('.').next().unwrap_or_default();
                if controller != "cgroup" {
                    enabled.need(controller, &format!("unified resource {key:?}"))?;
                }
                files::write(&self.file(key), value)?;
            }
        }
        Ok(())
    }

    fn apply_memory(&self, enabled: &Enabled, m: &LinuxMemory) -> Result<()> {
        let limit = m.limit().filter(|v| *v != 0);
        let swap = convert::v2_swap(m.limit(), m.swap())?;
        let low = m.reservation().filter(|v| *v != 0);
        if limit.is_some() || swap.is_some() || low.is_some() {
            enabled.need("memory", "memory limits")?;
        }
        if let (Some(true), Some(l)) = (m.check_before_update(), limit) {
            let usage = files::read_u64_or_zero(&self.file("memory.current"))?;
            if l > 0 && u64::try_from(l).unwrap_or(0) < usage {
                return Err(Error::failed_precondition(format!(
                    "memory limit {l} is below the cgroup's current usage {usage}"
                )));
            }
        }
        if let Some(s) = swap {
            let path = self.file("memory.swap.max");
            match files::write_raw(&path, &s) {
                Ok(()) => {}
                // No swap accounting: fine when asking for no swap limit or no swap at all.
                Err(e) if files::is_errno(&e, libc::ENOENT) && (s == "max" || s == "0") => {}
                Err(e) => {
                    return Err(files::os_error(
                        format!("write {s} to {}", path.display()),
                        e,
                    ));
                }
            }
        }
        if let Some(l) = limit {
            files::write(&self.file("memory.max"), &convert::v2_limit(l))?;
        }
        if let Some(l) = low {
            files::write(&self.file("memory.low"), &convert::v2_limit(l))?;
        }
        if m.kernel().is_some_and(|v| v != 0) {
            tracing::warn!(cgroup = %self.path, "kernel memory limit ignored: cgroup v2 accounts kernel memory with the rest");
        }
        if m.kernel_tcp().is_some_and(|v| v != 0) {
            tracing::warn!(cgroup = %self.path, "kernel TCP memory limit ignored: cgroup v2 has no such limit");
        }
        if m.swappiness().is_some() {
            tracing::warn!(cgroup = %self.path, "memory swappiness ignored: cgroup v2 has no per-cgroup swappiness");
        }
        if m.disable_oom_killer() == Some(true) {
            tracing::warn!(cgroup = %self.path, "disableOOMKiller ignored: cgroup v2 cannot disable the OOM killer");
        }
        Ok(())
    }

    fn apply_cpu(&self, enabled: &Enabled, c: &LinuxCpu) -> Result<()> {
        if let Some(shares) = c.shares().filter(|s| *s != 0) {
            enabled.need("cpu", "cpu shares")?;
            files::write(
                &self.file("cpu.weight"),
                &convert::shares_to_weight(shares).to_string(),
            )?;
        }
        let quota = c.quota().filter(|q| *q != 0);
        let period = c.period().filter(|p| *p != 0);
        if quota.is_some() || period.is_some() {
            enabled.need("cpu", "the cpu quota")?;
            let max = self.file("cpu.max");
            let quota = match quota {
                Some(q) if q > 0 => q.to_string(),
                Some(_) => "max".to_string(),
                // Only the period changes: keep the current quota (cpu.max is "$MAX $PERIOD").
                None => files::read(&max)?
                    .split_whitespace()
                    .next()
                    .unwrap_or("max")
                    .to_string(),
            };
            let value = match period {
                Some(p) => format!("{quota} {p}"),
                None => quota,
            };
            files::write(&max, &value)?;
        }
        if let Some(burst) = c.burst() {
            enabled.need("cpu", "the cpu burst")?;
            files::write(&self.file("cpu.max.burst"), &burst.to_string())?;
        }
        if let Some(idle) = c.idle() {
            enabled.need("cpu", "cpu idle")?;
            files::write(&self.file("cpu.idle"), &idle.to_string())?;
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            enabled.need("cpuset", "cpuset cpus")?;
            files::write(&self.file("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            enabled.need("cpuset", "cpuset mems")?;
            files::write(&self.file("cpuset.mems"), mems)?;
        }
        Ok(())
    }

    fn apply_io(&self, enabled: &Enabled, b: &LinuxBlockIo) -> Result<()> {
        // BFQ keeps the v1 scale (1..1000) in io.bfq.weight; without BFQ io.weight takes the
        // converted value (iocost).
        let bfq = self.file("io.bfq.weight");
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            enabled.need("io", "the blkio weight")?;
            if bfq.exists() {
                files::write(&bfq, &w.to_string())?;
            } else {
                files::write(
                    &self.file("io.weight"),
                    &convert::blkio_weight_to_io_weight(w).to_string(),
                )?;
            }
        }
        if b.leaf_weight().is_some() {
            tracing::warn!(cgroup = %self.path, "blkio leafWeight ignored: cgroup v2 has no leaf weights");
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight().filter(|w| *w != 0) {
                enabled.need("io", "blkio device weights")?;
                let (file, value) = if bfq.exists() {
                    (bfq.clone(), u64::from(w))
                } else {
                    (
                        self.file("io.weight"),
                        convert::blkio_weight_to_io_weight(w),
                    )
                };
                files::write(&file, &format!("{}:{} {value}", d.major(), d.minor()))?;
            }
            if d.leaf_weight().is_some() {
                tracing::warn!(cgroup = %self.path, "blkio device leafWeight ignored: cgroup v2 has no leaf weights");
            }
        }
        let mut max: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
        for (key, list) in [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ] {
            for d in list.iter().flatten() {
                // 0 removes a v1 throttle; "max" is v2's way to say it.
                let rate = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                max.entry((d.major(), d.minor()))
                    .or_default()
                    .push(format!("{key}={rate}"));
            }
        }
        for ((major, minor), settings) in max {
            enabled.need("io", "blkio throttles")?;
            files::write(
                &self.file("io.max"),
                &format!("{major}:{minor} {}", settings.join(" ")),
            )?;
        }
        Ok(())
    }

    pub(crate) fn apply_hugetlb(
        &self,
        limits: &[oci_spec::runtime::LinuxHugepageLimit],
    ) -> Result<()> {
        for l in limits {
            let value = convert::v2_limit(l.limit());
            files::write(
                &self.file(&format!("hugetlb.{}.max", l.page_size())),
                &value,
            )?;
            // The spec asks for reservation limits where the kernel has them.
            let rsvd = self.file(&format!("hugetlb.{}.rsvd.max", l.page_size()));
            if rsvd.exists() {
                files::write(&rsvd, &value)?;
            }
        }
        Ok(())
    }

    /// Attaches an eBPF device filter equivalent to `rules` (nothing for no rules).
    pub(crate) fn apply_devices(&self, rules: &[devices::Rule]) -> Result<()> {
        if rules.is_empty() {
            return Ok(());
        }
        let state = devices::emulate(rules);
        devices::attach(&self.dir, &devices::program(&state))
    }

    pub(crate) fn add_process(&self, pid: i32) -> Result<()> {
        files::write(&self.file("cgroup.procs"), &pid.to_string())
    }

    /// The cgroup's directory, open for clone3's `CLONE_INTO_CGROUP` (which refuses `O_PATH`).
    pub(crate) fn open_dir(&self) -> Result<std::os::fd::OwnedFd> {
        std::fs::File::open(&self.dir)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|e| files::os_error(format!("open {}", self.dir.display()), e))
    }

    pub(crate) fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// The processes in the cgroup, `None` if the cgroup does not exist.
    pub(crate) fn pids_if_exists(&self) -> Result<Option<Vec<i32>>> {
        let path = self.file("cgroup.procs");
        match files::read_optional(&path)? {
            Some(content) => files::parse_pids(&path, &content).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn pids(&self) -> Result<Vec<i32>> {
        self.pids_if_exists()?.ok_or_else(|| {
            Error::not_found(format!("cgroup {} does not exist", self.dir.display()))
        })
    }

    fn frozen_state(&self) -> Result<bool> {
        let events = files::read(&self.file("cgroup.events"))?;
        Ok(files::parse_flat_keyed(&events).get("frozen") == Some(&1))
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let path = self.file("cgroup.freeze");
        let value = if frozen { "1" } else { "0" };
        match files::write_raw(&path, value) {
            Ok(()) => Ok(()),
            Err(e) if files::is_errno(&e, libc::ENOENT) && self.exists() => {
                Err(Error::not_implemented(format!(
                    "{} is missing: the cgroup v2 freezer needs Linux 5.2 or later",
                    path.display()
                )))
            }
            Err(e) => Err(files::os_error(
                format!("write {value} to {}", path.display()),
                e,
            )),
        }
    }

    pub(crate) fn freeze(&self) -> Result<()> {
        self.set_frozen(true)?;
        let frozen = files::poll_until(FREEZE_TIMEOUT, || self.frozen_state(), || Ok(()))?;
        if !frozen {
            let _ = self.set_frozen(false);
            return Err(Error::unavailable(format!(
                "freeze {}: not frozen after {}s; thawed it again",
                self.dir.display(),
                FREEZE_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }

    pub(crate) fn thaw(&self) -> Result<()> {
        self.set_frozen(false)?;
        let thawed = files::poll_until(FREEZE_TIMEOUT, || Ok(!self.frozen_state()?), || Ok(()))?;
        if !thawed {
            return Err(Error::unavailable(format!(
                "thaw {}: still frozen after {}s",
                self.dir.display(),
                FREEZE_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }

    pub(crate) fn is_frozen(&self) -> Result<bool> {
        self.frozen_state()
    }

    pub(crate) fn oom_kill_count(&self) -> Result<u64> {
        match files::read_optional(&self.file("memory.events"))? {
            Some(content) => Ok(files::parse_flat_keyed(&content)
                .get("oom_kill")
                .copied()
                .unwrap_or(0)),
            None if !self.exists() => Err(Error::not_found(format!(
                "cgroup {} does not exist",
                self.dir.display()
            ))),
            None => Err(Error::failed_precondition(format!(
                "cannot count OOM kills: the memory controller is not enabled for cgroup {}",
                self.dir.display()
            ))),
        }
    }

    /// Huge page statistics, if the hugetlb controller is enabled here.
    pub(crate) fn hugetlb_stats(&self) -> Result<Vec<HugetlbStats>> {
        let mut out = Vec::new();
        for size in convert::hugepage_sizes() {
            let Some(usage) =
                files::read_u64_optional(&self.file(&format!("hugetlb.{size}.current")))?
            else {
                continue;
            };
            let events = files::read_flat_keyed(&self.file(&format!("hugetlb.{size}.events")))?;
            out.push(HugetlbStats {
                usage,
                max: 0,
                failcnt: events.get("max").copied().unwrap_or(0),
                limit: files::read_u64_or_zero(&self.file(&format!("hugetlb.{size}.max")))?,
                pagesize: size,
            });
        }
        Ok(out)
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        if !self.exists() {
            return Err(Error::not_found(format!(
                "cgroup {} does not exist",
                self.dir.display()
            )));
        }
        let mut s = Stats::default();

        let cpu = files::read_flat_keyed(&self.file("cpu.stat"))?;
        let us = |k: &str| cpu.get(k).copied().unwrap_or(0).saturating_mul(1000);
        s.cpu.usage.total = us("usage_usec");
        s.cpu.usage.user = us("user_usec");
        s.cpu.usage.kernel = us("system_usec");
        s.cpu.throttling.periods = cpu.get("nr_periods").copied().unwrap_or(0);
        s.cpu.throttling.throttled_periods = cpu.get("nr_throttled").copied().unwrap_or(0);
        s.cpu.throttling.throttled_time = us("throttled_usec");

        s.memory.raw = files::read_flat_keyed(&self.file("memory.stat"))?;
        s.memory.fill_from_v2_raw();
        let events = files::read_flat_keyed(&self.file("memory.events"))?;
        s.memory.usage.usage = files::read_u64_or_zero(&self.file("memory.current"))?;
        s.memory.usage.limit = files::read_u64_or_zero(&self.file("memory.max"))?;
        s.memory.usage.max = files::read_u64_or_zero(&self.file("memory.peak"))?;
        s.memory.usage.failcnt = events.get("max").copied().unwrap_or(0);
        let swap_events = files::read_flat_keyed(&self.file("memory.swap.events"))?;
        s.memory.swap.usage = files::read_u64_or_zero(&self.file("memory.swap.current"))?;
        s.memory.swap.limit = files::read_u64_or_zero(&self.file("memory.swap.max"))?;
        s.memory.swap.max = files::read_u64_or_zero(&self.file("memory.swap.peak"))?;
        s.memory.swap.failcnt = swap_events.get("max").copied().unwrap_or(0);
        s.memory.kernel.usage = s.memory.raw.get("kernel").copied().unwrap_or(0);
        s.memory.kernel_tcp.usage = s.memory.raw.get("sock").copied().unwrap_or(0);
        s.memory_oom_control.oom_kill = events.get("oom_kill").copied().unwrap_or(0);
        s.memory_oom_control.oom_events = events.get("oom").copied().unwrap_or(0);

        s.pids.current = files::read_u64_or_zero(&self.file("pids.current"))?;
        s.pids.limit = match files::read_u64_or_zero(&self.file("pids.max"))? {
            u64::MAX => 0,
            n => n,
        };

        if let Some(io) = files::read_optional(&self.file("io.stat"))? {
            let (bytes, ios) = super::stats::parse_io_stat(&io);
            s.blkio.io_service_bytes_recursive = bytes;
            s.blkio.io_serviced_recursive = ios;
        }
        s.hugetlb = self.hugetlb_stats()?;
        Ok(s)
    }

    pub(crate) fn destroy(&self) -> Result<()> {
        files::remove_cgroup_dir(&self.dir)
    }
}

/// Enables the controllers `want` accepts, among those `dir` offers (cgroup.controllers), in
/// its cgroup.subtree_control, one at a time so one refusal does not block the others. Returns
/// the refusals.
fn enable_controllers(dir: &Path, want: impl Fn(&str) -> bool) -> Vec<Error> {
    let available = match files::read(&dir.join("cgroup.controllers")) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let enabled = match files::read(&dir.join("cgroup.subtree_control")) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let control = dir.join("cgroup.subtree_control");
    let mut errors = Vec::new();
    for c in available.split_whitespace() {
        if !want(c) || enabled.contains(&c) {
            continue;
        }
        if let Err(e) = files::write_raw(&control, &format!("+{c}")) {
            let hint = if files::is_errno(&e, libc::EBUSY) {
                " (it has processes of its own: cgroup v2 allows controllers only below cgroups without processes)"
            } else {
                ""
            };
            let err = files::os_error(
                format!("enable the {c} controller in {}{hint}", control.display()),
                e,
            );
            errors.push(err);
        }
    }
    errors
}
