//! The cgroups module against this machine's real cgroups (run as root). The host is hybrid:
//! v1 hierarchies under /sys/fs/cgroup plus a cgroup2 mount at /sys/fs/cgroup/unified, which the
//! v2 backend is pointed at explicitly. Every test uses its own cgroup under /berth-test (v1) or
//! /berth-test-v2 (unified) and removes it, with its processes, even when it fails.
//!
//! The v2 controllers this host lacks (memory, cpu, cpuset, io, pids) are checked against a
//! stand-in tree in a temporary directory instead: what is written where, not what the kernel
//! enforces (see the `v2_apply_writes_every_resource` section).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_core::ErrorKind;
use berth_runtime::cgroups::{CgroupLayout, CgroupManager, CgroupMountSource};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};

const V1_ROOT: &str = "/sys/fs/cgroup";
const UNIFIED: &str = "/sys/fs/cgroup/unified";
const MIB: i64 = 1024 * 1024;

/// Tests that change the unified tree's cgroup.subtree_control take turns, so each can put it
/// back as it found it.
static UNIFIED_LOCK: Mutex<()> = Mutex::new(());

fn unified_lock() -> MutexGuard<'static, ()> {
    UNIFIED_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn unique(parent: &str, name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("/{parent}/{name}-{}-{n}-{nanos:x}", std::process::id())
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A test's cgroup and the processes it started; dropping it kills them all and removes it.
struct TestCgroup {
    mgr: CgroupManager,
    children: Vec<Child>,
}

impl TestCgroup {
    fn v1(name: &str) -> Self {
        let layout = CgroupLayout::detect().unwrap();
        assert!(!layout.is_v2(), "these tests expect the hybrid v1 host");
        Self::create(&layout, &unique("berth-test", name))
    }

    fn v2(name: &str) -> Self {
        Self::create(
            &CgroupLayout::v2_at(UNIFIED),
            &unique("berth-test-v2", name),
        )
    }

    fn create(layout: &CgroupLayout, path: &str) -> Self {
        let mgr = CgroupManager::new_in(layout, Some(path), "test").unwrap();
        let cg = Self {
            mgr,
            children: Vec::new(),
        };
        cg.mgr.create().unwrap();
        cg
    }

    /// v1 directory of this cgroup in `hierarchy`.
    fn v1_dir(&self, hierarchy: &str) -> PathBuf {
        Path::new(V1_ROOT)
            .join(hierarchy)
            .join(self.mgr.path().trim_start_matches('/'))
    }

    fn unified_dir(&self) -> PathBuf {
        Path::new(UNIFIED).join(self.mgr.path().trim_start_matches('/'))
    }

    /// Starts `sh -c script` inside the cgroup; the script runs once [`TestCgroup::release`]d,
    /// so everything it forks is born in the cgroup.
    fn spawn(&mut self, script: &str) -> usize {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.mgr.add_process(child.id() as i32).unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn release(&mut self, i: usize) {
        let mut stdin = self.children[i].stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    fn pid(&self, i: usize) -> i32 {
        self.children[i].id() as i32
    }

    /// Waits for child `i`: (exit status, stderr).
    fn wait(&mut self, i: usize) -> (std::process::ExitStatus, String) {
        let child = &mut self.children[i];
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut stderr).unwrap();
        }
        (status, stderr)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.mgr.thaw();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let pids = self.mgr.pids().unwrap_or_default();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = self.mgr.destroy() {
            eprintln!("cleanup of {}: {e}", self.mgr.path());
        }
    }
}

fn resources(f: impl FnOnce(LinuxResourcesBuilder) -> LinuxResourcesBuilder) -> LinuxResources {
    f(LinuxResourcesBuilder::default()).build().unwrap()
}

fn vda() -> (i64, i64) {
    let dev = read("/sys/block/vda/dev");
    let (major, minor) = dev.split_once(':').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
fn paths_are_resolved_and_bad_ones_refused() {
    let layout = CgroupLayout::detect().unwrap();
    let mgr = CgroupManager::new_in(&layout, None, "web").unwrap();
    assert_eq!(mgr.path(), "/berth/web");
    let mgr = CgroupManager::new_in(&layout, Some("/k8s//pod/./c"), "web").unwrap();
    assert_eq!(mgr.path(), "/k8s/pod/c");
    assert!(!mgr.is_v2());
    // Relative: under our own memory cgroup (the hierarchy an outer manager budgets us with).
    let own = read("/proc/self/cgroup")
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap();
    let mgr = CgroupManager::new_in(&layout, Some("sub/c"), "web").unwrap();
    assert_eq!(mgr.path(), format!("{}/sub/c", own.trim_end_matches('/')));

    for (path, needle) in [
        ("../../etc", "\"..\""),
        ("a:b:c", "systemd"),
        ("system.slice:berth:web", "systemd"),
        ("/", "root cgroup"),
    ] {
        let err = CgroupManager::new_in(&layout, Some(path), "web").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}");
        assert!(err.to_string().contains(needle), "{path}: {err}");
    }
    assert_eq!(
        CgroupManager::load_in(&layout, "relative/x")
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        CgroupManager::load_in(&layout, "/a/../../x")
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    let loaded = CgroupManager::load_in(&layout, "/berth//x/").unwrap();
    assert_eq!(loaded.path(), "/berth/x");
}

#[test]
fn v1_create_makes_every_hierarchy_and_cpuset_is_usable() {
    let cg = TestCgroup::v1("create");
    for h in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
    ] {
        assert!(cg.v1_dir(h).is_dir(), "{h}");
    }
    assert!(
        cg.unified_dir().is_dir(),
        "hybrid: the unified tree is joined too"
    );
    // A fresh v1 cpuset is empty; create copies the parent's so processes can join.
    assert_eq!(
        read(cg.v1_dir("cpuset").join("cpuset.cpus")),
        read("/sys/fs/cgroup/cpuset/cpuset.cpus")
    );
    assert!(!read(cg.v1_dir("cpuset").join("cpuset.mems")).is_empty());

    let sources = cg.mgr.mount_sources();
    assert!(sources.contains(&CgroupMountSource::Bind {
        name: "memory".into(),
        host_dir: cg.v1_dir("memory"),
    }));
    assert!(sources.contains(&CgroupMountSource::Bind {
        name: "unified".into(),
        host_dir: cg.unified_dir(),
    }));
    assert!(
        !sources
            .iter()
            .any(|s| matches!(s, CgroupMountSource::Symlink { .. })),
        "no co-mounted hierarchies on this host"
    );
}

#[test]
fn v1_apply_writes_every_resource() {
    let cg = TestCgroup::v1("apply");
    let (major, minor) = vda();
    let r = resources(|b| {
        b.memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .reservation(32 * MIB)
                .swap(128 * MIB)
                .swappiness(10u64)
                .kernel(MIB) // ignored with a warning
                .kernel_tcp(16 * MIB)
                .disable_oom_killer(true)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .burst(1000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .throttle_read_bps_device(vec![
                    LinuxThrottleDeviceBuilder::default()
                        .major(major)
                        .minor(minor)
                        .rate(1_048_576u64)
                        .build()
                        .unwrap(),
                ])
                .throttle_write_iops_device(vec![
                    LinuxThrottleDeviceBuilder::default()
                        .major(major)
                        .minor(minor)
                        .rate(100u64)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        )
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(5)
                .access("r")
                .build()
                .unwrap(),
        ])
    });
    cg.mgr.apply(&r).unwrap();

    let mem = cg.v1_dir("memory");
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(
        read(mem.join("memory.soft_limit_in_bytes")),
        (32 * MIB).to_string()
    );
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    assert_eq!(read(mem.join("memory.swappiness")), "10");
    assert_eq!(
        read(mem.join("memory.kmem.tcp.limit_in_bytes")),
        (16 * MIB).to_string()
    );
    assert!(read(mem.join("memory.oom_control")).contains("oom_kill_disable 1"));
    let cpu = cg.v1_dir("cpu");
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(cpu.join("cpu.cfs_burst_us")), "1000");
    assert_eq!(read(cg.v1_dir("cpuset").join("cpuset.cpus")), "0");
    assert_eq!(read(cg.v1_dir("cpuset").join("cpuset.mems")), "0");
    assert_eq!(read(cg.v1_dir("pids").join("pids.max")), "10");
    let blkio = cg.v1_dir("blkio");
    assert_eq!(read(blkio.join("blkio.bfq.weight")), "500");
    assert_eq!(
        read(blkio.join("blkio.throttle.read_bps_device")),
        format!("{major}:{minor} 1048576")
    );
    assert_eq!(
        read(blkio.join("blkio.throttle.write_iops_device")),
        format!("{major}:{minor} 100")
    );
    assert_eq!(
        read(cg.v1_dir("devices").join("devices.list")),
        "c 1:3 rwm\nc 1:5 r"
    );

    // Lowering memory below the current memsw needs memory first, then memsw; raising it
    // past memsw needs memsw first. Both orders must work.
    for (limit, swap) in [(16 * MIB, 24 * MIB), (256 * MIB, 512 * MIB), (-1, -1)] {
        let r = resources(|b| {
            b.memory(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    .swap(swap)
                    .build()
                    .unwrap(),
            )
        });
        cg.mgr.apply(&r).unwrap();
        if limit > 0 {
            assert_eq!(read(mem.join("memory.limit_in_bytes")), limit.to_string());
            assert_eq!(
                read(mem.join("memory.memsw.limit_in_bytes")),
                swap.to_string()
            );
        }
    }
    // -1 without swap means both unlimited.
    let r = resources(|b| b.memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap()));
    cg.mgr.apply(&r).unwrap();
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        read(mem.join("memory.limit_in_bytes"))
    );
}

#[test]
fn v1_errors_name_the_file_and_value() {
    let cg = TestCgroup::v1("errors");
    // Realtime CPU time needs a budget in every ancestor; /berth-test has none.
    let r = resources(|b| {
        b.cpu(
            LinuxCpuBuilder::default()
                .realtime_runtime(10_000i64)
                .build()
                .unwrap(),
        )
    });
    let err = cg.mgr.apply(&r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let file = cg.v1_dir("cpu").join("cpu.rt_runtime_us");
    assert_eq!(
        err.to_string(),
        format!(
            "write 10000 to {}: EINVAL: Invalid argument",
            file.display()
        )
    );

    // The kernel clamps shares silently; apply says so.
    let r = resources(|b| b.cpu(LinuxCpuBuilder::default().shares(1u64).build().unwrap()));
    let err = cg.mgr.apply(&r).unwrap_err();
    assert!(
        err.to_string().contains("cpu shares 1 out of range"),
        "{err}"
    );

    // Checked before anything is written.
    for (r, needle) in [
        (
            resources(|b| {
                b.memory(
                    LinuxMemoryBuilder::default()
                        .limit(100 * MIB)
                        .swap(MIB)
                        .build()
                        .unwrap(),
                )
            }),
            "below the memory limit",
        ),
        (
            resources(|b| {
                b.memory(
                    LinuxMemoryBuilder::default()
                        .swappiness(101u64)
                        .build()
                        .unwrap(),
                )
            }),
            "swappiness",
        ),
        (
            resources(|b| {
                b.unified(
                    [("memory.high".to_string(), "1M".to_string())]
                        .into_iter()
                        .collect::<HashMap<_, _>>(),
                )
            }),
            "cgroup v1",
        ),
        (
            resources(|b| {
                b.hugepage_limits(vec![
                    LinuxHugepageLimitBuilder::default()
                        .page_size("3MB")
                        .limit(1)
                        .build()
                        .unwrap(),
                ])
            }),
            "hugepage size",
        ),
        (
            resources(|b| {
                b.devices(vec![
                    LinuxDeviceCgroupBuilder::default()
                        .allow(true)
                        .access("rwx")
                        .build()
                        .unwrap(),
                ])
            }),
            "invalid access",
        ),
    ] {
        let err = cg.mgr.apply(&r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    // Nothing of the refused requests was written.
    assert_ne!(
        read(cg.v1_dir("memory").join("memory.limit_in_bytes")),
        (100 * MIB).to_string()
    );
}

#[test]
fn v1_processes_are_listed_and_pids_limit_enforced() {
    let mut cg = TestCgroup::v1("pids");
    let sleeper = cg.spawn("exec sleep 30");
    let pid = cg.pid(sleeper);
    assert_eq!(cg.mgr.pids().unwrap(), vec![pid]);
    // Every hierarchy has it, the unified tree too.
    assert_eq!(
        read(cg.v1_dir("memory").join("cgroup.procs")),
        pid.to_string()
    );
    assert_eq!(read(cg.unified_dir().join("cgroup.procs")), pid.to_string());
    // Reopened by its path, as later commands do.
    let again = CgroupManager::load(cg.mgr.path()).unwrap();
    assert_eq!(again.pids().unwrap(), vec![pid]);

    let r = resources(|b| b.pids(LinuxPidsBuilder::default().limit(3).build().unwrap()));
    cg.mgr.apply(&r).unwrap();
    // The sleeper and the shell make 2 of 3: the first background sleep fits, the second not.
    let shell = cg.spawn("sleep 30 >/dev/null 2>&1 & sleep 30 >/dev/null 2>&1 & echo forked-both");
    cg.release(shell);
    let (_, stderr) = cg.wait(shell);
    assert!(
        stderr.to_lowercase().contains("fork"),
        "fork past pids.max must fail: {stderr}"
    );
    assert!(read(cg.v1_dir("pids").join("pids.events")).contains("max 1"));
    let stats = cg.mgr.stats().unwrap();
    assert_eq!(stats.pids.limit, 3);
    assert!(stats.pids.current >= 1);
}

/// A process that enters through [`CgroupManager::entry`] (its one thread moving itself into
/// each v1 hierarchy, as the runtime's forked child does) ends up in every hierarchy; the
/// unified part is the fork's (clone3), which the runtime's conformance tests cover.
#[test]
fn v1_entry_lets_a_forked_child_move_itself_in() {
    use std::os::unix::process::CommandExt;
    let cg = TestCgroup::v1("entry");
    let entry = cg.mgr.entry().unwrap();
    assert!(
        entry.clone_into().is_some(),
        "the hybrid host's unified mount is the fork's target"
    );
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    // SAFETY: runs in the forked child before exec; enter_v1 only writes to open descriptors
    // (it allocates only to report an error).
    unsafe {
        cmd.pre_exec(move || {
            entry
                .enter_v1()
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1_lines: Vec<&str> = own.lines().filter(|l| !l.starts_with("0::")).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!v1_lines.is_empty(), "{own}");
    for line in &v1_lines {
        assert!(line.ends_with(&format!(":{}", cg.mgr.path())), "{own}");
    }
}

#[test]
fn v1_memory_limit_oom_kills_and_is_counted() {
    let mut cg = TestCgroup::v1("oom");
    assert_eq!(cg.mgr.oom_kill_count().unwrap(), 0);
    let r = resources(|b| {
        b.memory(
            LinuxMemoryBuilder::default()
                .limit(32 * MIB)
                .swap(32 * MIB)
                .build()
                .unwrap(),
        )
    });
    cg.mgr.apply(&r).unwrap();
    // dd fills a 128 MiB buffer from /dev/zero: far past the limit.
    let hog = cg.spawn("exec dd if=/dev/zero of=/dev/null bs=128M count=1");
    cg.release(hog);
    let (status, stderr) = cg.wait(hog);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "dd should be OOM-killed: {status:?} {stderr}"
    );
    assert!(cg.mgr.oom_kill_count().unwrap() >= 1);
    let stats = cg.mgr.stats().unwrap();
    assert!(stats.memory_oom_control.oom_kill >= 1);
    // (With memsw equal to the limit the kernel counts no failcnt, so none is checked.)
    assert_eq!(stats.memory.usage.limit, (32 * MIB) as u64);
    assert_eq!(
        stats.memory.usage.max,
        (32 * MIB) as u64,
        "peak reached the limit"
    );
}

#[test]
fn v1_freeze_and_thaw() {
    let mut cg = TestCgroup::v1("freeze");
    assert!(!cg.mgr.is_frozen().unwrap());
    let sleeper = cg.spawn("exec sleep 30");
    let _ = cg.pid(sleeper);
    cg.mgr.freeze().unwrap();
    assert!(cg.mgr.is_frozen().unwrap());
    assert_eq!(read(cg.v1_dir("freezer").join("freezer.state")), "FROZEN");
    cg.mgr.thaw().unwrap();
    assert!(!cg.mgr.is_frozen().unwrap());
    assert_eq!(read(cg.v1_dir("freezer").join("freezer.state")), "THAWED");
}

#[test]
fn v1_stats_after_a_busy_process() {
    let mut cg = TestCgroup::v1("stats");
    let busy = cg.spawn("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done");
    cg.release(busy);
    let (status, _) = cg.wait(busy);
    assert!(status.success());
    let s = cg.mgr.stats().unwrap();
    assert!(s.cpu.usage.total > 10_000_000, "{:?}", s.cpu);
    assert!(s.cpu.usage.user > 0, "{:?}", s.cpu);
    assert_eq!(
        s.cpu.usage.per_cpu.len(),
        std::thread::available_parallelism().unwrap().get()
    );
    assert!(s.cpu.usage.per_cpu.iter().sum::<u64>() > 0);
    assert!(s.memory.raw.contains_key("total_rss"), "{:?}", s.memory.raw);
    assert!(s.memory.usage.max > 0);
    assert_eq!(s.pids.limit, 0, "no pids limit reads as 0");
}

#[test]
fn v1_device_rules_are_enforced() {
    let mut cg = TestCgroup::v1("devices");
    let r = resources(|b| {
        b.devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("w")
                .build()
                .unwrap(),
        ])
    });
    cg.mgr.apply(&r).unwrap();
    let p = cg.spawn("echo x > /dev/null");
    cg.release(p);
    let (status, stderr) = cg.wait(p);
    assert!(!status.success(), "writing /dev/null must be denied");
    assert!(stderr.contains("not permitted"), "{stderr}");
}

#[test]
fn destroy_is_idempotent_and_later_reads_say_not_found() {
    let cg = TestCgroup::v1("destroy");
    cg.mgr.destroy().unwrap();
    assert!(!cg.v1_dir("memory").exists());
    assert!(!cg.unified_dir().exists());
    cg.mgr.destroy().unwrap();
    assert_eq!(cg.mgr.pids().unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(cg.mgr.stats().unwrap_err().kind(), ErrorKind::NotFound);
    let err = cg.mgr.add_process(std::process::id() as i32).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn destroy_removes_nested_cgroups() {
    let cg = TestCgroup::v1("nested");
    std::fs::create_dir_all(cg.v1_dir("pids").join("inner/deeper")).unwrap();
    std::fs::create_dir_all(cg.unified_dir().join("inner")).unwrap();
    cg.mgr.destroy().unwrap();
    assert!(!cg.v1_dir("pids").exists());
    assert!(!cg.unified_dir().exists());
}

/// Puts the unified root's subtree_control back (tests may enable hugetlb there).
struct RestoreUnified {
    had_hugetlb: bool,
    parent: PathBuf,
}

impl RestoreUnified {
    fn new(parent: &str) -> Self {
        let had = read(Path::new(UNIFIED).join("cgroup.subtree_control"))
            .split_whitespace()
            .any(|c| c == "hugetlb");
        Self {
            had_hugetlb: had,
            parent: Path::new(UNIFIED).join(parent),
        }
    }
}

impl Drop for RestoreUnified {
    fn drop(&mut self) {
        if !self.had_hugetlb {
            let _ = std::fs::write(self.parent.join("cgroup.subtree_control"), "-hugetlb");
            let _ = std::fs::write(
                Path::new(UNIFIED).join("cgroup.subtree_control"),
                "-hugetlb",
            );
        }
    }
}

#[test]
fn hybrid_hugetlb_limit_goes_to_the_unified_tree() {
    let _lock = unified_lock();
    let _restore = RestoreUnified::new("berth-test");
    let cg = TestCgroup::v1("hugetlb");
    let r = resources(|b| {
        b.hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(4 * MIB)
                .build()
                .unwrap(),
        ])
    });
    cg.mgr.apply(&r).unwrap();
    assert_eq!(
        read(cg.unified_dir().join("hugetlb.2MB.max")),
        (4 * MIB).to_string()
    );
    let stats = cg.mgr.stats().unwrap();
    let two = stats.hugetlb.iter().find(|h| h.pagesize == "2MB").unwrap();
    assert_eq!(two.limit, (4 * MIB) as u64);
    drop(cg);
}

#[test]
fn v2_lifecycle_on_the_unified_mount() {
    let _lock = unified_lock();
    let _restore = RestoreUnified::new("berth-test-v2");
    let mut cg = TestCgroup::v2("life");
    assert!(cg.mgr.is_v2());
    assert!(cg.unified_dir().is_dir());
    assert_eq!(
        cg.mgr.mount_sources(),
        vec![CgroupMountSource::Bind {
            name: String::new(),
            host_dir: cg.unified_dir()
        }]
    );
    // create enabled every controller the tree offers (here only hugetlb) on the way down.
    assert_eq!(read(cg.unified_dir().join("cgroup.controllers")), "hugetlb");

    let sleeper = cg.spawn("exec sleep 30");
    let pid = cg.pid(sleeper);
    assert_eq!(cg.mgr.pids().unwrap(), vec![pid]);
    let again = CgroupManager::load_in(&CgroupLayout::v2_at(UNIFIED), cg.mgr.path()).unwrap();
    assert_eq!(again.pids().unwrap(), vec![pid]);

    assert!(!cg.mgr.is_frozen().unwrap());
    cg.mgr.freeze().unwrap();
    assert!(cg.mgr.is_frozen().unwrap());
    let state = read(format!("/proc/{pid}/stat"));
    assert!(state.contains(") S ") || state.contains(") D "), "{state}");
    cg.mgr.thaw().unwrap();
    assert!(!cg.mgr.is_frozen().unwrap());

    // Only hugetlb is available here: other limits say which controller is missing.
    let r = resources(|b| b.pids(LinuxPidsBuilder::default().limit(5).build().unwrap()));
    let err = cg.mgr.apply(&r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string().contains("pids controller is not enabled"),
        "{err}"
    );
    let r = resources(|b| {
        b.hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(2 * MIB)
                .build()
                .unwrap(),
        ])
        .unified(
            [("hugetlb.1GB.max".to_string(), "0".to_string())]
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
    });
    cg.mgr.apply(&r).unwrap();
    assert_eq!(
        read(cg.unified_dir().join("hugetlb.2MB.max")),
        (2 * MIB).to_string()
    );
    assert_eq!(read(cg.unified_dir().join("hugetlb.1GB.max")), "0");
    let r = resources(|b| {
        b.unified(
            [("memory.high".to_string(), "1M".to_string())]
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
    });
    let err = cg.mgr.apply(&r).unwrap_err();
    assert!(
        err.to_string().contains("memory controller is not enabled"),
        "{err}"
    );

    // cpu.stat is core in v2: usage is there without the cpu controller.
    let s = cg.mgr.stats().unwrap();
    assert!(s.cpu.usage.total > 0, "{:?}", s.cpu);
    let err = cg.mgr.oom_kill_count().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");

    let path = cg.unified_dir();
    drop(cg);
    assert!(!path.exists());
    let gone =
        CgroupManager::load_in(&CgroupLayout::v2_at(UNIFIED), "/berth-test-v2/gone").unwrap();
    gone.destroy().unwrap();
    assert_eq!(gone.pids().unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn v2_device_filter_is_an_ebpf_program() {
    let _lock = unified_lock();
    let _restore = RestoreUnified::new("berth-test-v2");
    let mut cg = TestCgroup::v2("devices");
    let rule = |allow: bool, typ: LinuxDeviceType, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = minor {
            b = b.major(1).minor(m);
        }
        b.build().unwrap()
    };
    // Default deny, with /dev/null read-write and /dev/zero not at all.
    let r = resources(|b| {
        b.devices(vec![
            rule(false, LinuxDeviceType::A, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(3), "rw"),
        ])
    });
    cg.mgr.apply(&r).unwrap();
    let p = cg.spawn("echo x > /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null");
    cg.release(p);
    let (status, stderr) = cg.wait(p);
    let mut stdout = String::new();
    cg.children[p]
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("null-ok"), "{stdout} {stderr}");
    assert!(!status.success(), "/dev/zero must be denied");
    assert!(stderr.contains("not permitted"), "{stderr}");

    // Applying again replaces the program: now everything but writing /dev/null.
    let r = resources(|b| b.devices(vec![rule(false, LinuxDeviceType::C, Some(3), "w")]));
    cg.mgr.apply(&r).unwrap();
    let p = cg.spawn("head -c1 /dev/zero | wc -c && echo zero-ok; echo x > /dev/null");
    cg.release(p);
    let (status, stderr) = cg.wait(p);
    let mut stdout = String::new();
    cg.children[p]
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("zero-ok"), "{stdout} {stderr}");
    assert!(!status.success());
    assert!(stderr.contains("not permitted"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// The v2 backend against a stand-in tree.
//
// This host's cgroup2 mount has no controllers but hugetlb, so the v2 memory, cpu, cpuset, io
// and pids paths cannot run against the kernel here. These tests point the v2 backend at a
// temporary directory laid out like a cgroup2 mount instead. What they check is the conversion
// and the file protocol: which file each spec field goes to, the exact value written (cgroup
// writes are opened O_APPEND, so a plain file keeps every write in order), which controllers are
// enabled where, which settings are refused and how the kernel's stat files are read back. They
// do not check the kernel's enforcement or its acceptance of the values; that needs a v2 host
// (`v2_lifecycle_on_the_unified_mount` covers the controller-less part for real).
// ---------------------------------------------------------------------------------------------

/// What a cgroup2 root offers on a typical v2 host, in the kernel's order.
const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids";

/// The files the kernel creates in a non-root cgroup whose parent enabled all of
/// [`V2_CONTROLLERS`], with what a fresh cgroup reads (Documentation/admin-guide/cgroup-v2.rst).
/// A plain directory has none of them, so the stand-in makes them.
const V2_LEAF_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cgroup.events", "populated 0\nfrozen 0\n"),
    ("cgroup.freeze", "0\n"),
    ("cgroup.subtree_control", ""),
    ("cgroup.type", "domain\n"),
    ("cpu.weight", "100\n"),
    ("cpu.max", "max 100000\n"),
    ("cpu.max.burst", "0\n"),
    ("cpu.idle", "0\n"),
    (
        "cpu.stat",
        "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
    ),
    ("cpuset.cpus", "\n"),
    ("cpuset.mems", "\n"),
    ("io.weight", "default 100\n"),
    ("io.max", ""),
    ("io.stat", ""),
    ("memory.current", "0\n"),
    ("memory.peak", "0\n"),
    ("memory.min", "0\n"),
    ("memory.low", "0\n"),
    ("memory.high", "max\n"),
    ("memory.max", "max\n"),
    (
        "memory.events",
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    ),
    ("memory.stat", "anon 0\nfile 0\nkernel 0\nsock 0\n"),
    ("memory.swap.current", "0\n"),
    ("memory.swap.max", "max\n"),
    ("memory.swap.events", "high 0\nmax 0\nfail 0\n"),
    ("pids.current", "0\n"),
    ("pids.max", "max\n"),
    ("hugetlb.2MB.current", "0\n"),
    ("hugetlb.2MB.max", "max\n"),
    ("hugetlb.2MB.rsvd.max", "max\n"),
    ("hugetlb.2MB.events", "max 0\n"),
    ("hugetlb.1GB.current", "0\n"),
    ("hugetlb.1GB.max", "max\n"),
    ("hugetlb.1GB.rsvd.max", "max\n"),
    ("hugetlb.1GB.events", "max 0\n"),
    ("rdma.max", ""),
];

/// A temporary directory laid out like a cgroup2 mount; removed on drop.
struct StandIn {
    root: tempfile::TempDir,
    /// What each file held when the stand-in made it, to tell the runtime's writes apart.
    initial: HashMap<PathBuf, String>,
}

impl StandIn {
    /// A root offering `controllers`, with an intermediate cgroup "berth" that has none
    /// enabled yet.
    fn new(controllers: &str) -> Self {
        let mut s = Self {
            root: tempfile::tempdir().unwrap(),
            initial: HashMap::new(),
        };
        let root = s.root.path().to_path_buf();
        s.file(&root, "cgroup.controllers", &format!("{controllers}\n"));
        s.file(&root, "cgroup.subtree_control", "");
        s.file(&root, "cgroup.procs", "1\n");
        let berth = root.join("berth");
        std::fs::create_dir(&berth).unwrap();
        s.file(&berth, "cgroup.controllers", &format!("{controllers}\n"));
        s.file(&berth, "cgroup.subtree_control", "");
        s.file(&berth, "cgroup.procs", "");
        s
    }

    fn layout(&self) -> CgroupLayout {
        CgroupLayout::v2_at(self.root.path())
    }

    fn file(&mut self, dir: &Path, name: &str, content: &str) {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        self.initial.insert(path, content.to_string());
    }

    /// Lays out the container cgroup /berth/`name` as the kernel would when the parent enabled
    /// `controllers`: its cgroup.controllers and the interface files of those controllers
    /// (core files always), `overrides` replacing the fresh values.
    fn leaf(&mut self, name: &str, controllers: &str, overrides: &[(&str, &str)]) -> PathBuf {
        let dir = self.root.path().join("berth").join(name);
        std::fs::create_dir(&dir).unwrap();
        self.file(&dir, "cgroup.controllers", &format!("{controllers}\n"));
        let enabled: Vec<&str> = controllers.split_whitespace().collect();
        for (file, fresh) in V2_LEAF_FILES {
            let prefix = file.split('.').next().unwrap();
            // cpu.stat is a core file: it exists without the cpu controller.
            let core = prefix == "cgroup" || *file == "cpu.stat";
            if !core && !enabled.contains(&prefix) {
                continue;
            }
            let content = overrides
                .iter()
                .find(|(f, _)| f == file)
                .map_or(*fresh, |(_, c)| *c);
            self.file(&dir, file, content);
        }
        dir
    }

    /// Everything written to `dir/name` since the stand-in made it, each write after the other.
    /// Fails if the file's original content was changed rather than appended to.
    fn written(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        let now = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let before = self
            .initial
            .get(&path)
            .unwrap_or_else(|| panic!("{} is not a stand-in file", path.display()));
        now.strip_prefix(before.as_str())
            .unwrap_or_else(|| panic!("{} was overwritten: {now:?}", path.display()))
            .to_string()
    }

    /// The names of the files in `dir` (to check nothing was created).
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

fn throttle(major: i64, minor: i64, rate: u64) -> oci_spec::runtime::LinuxThrottleDevice {
    LinuxThrottleDeviceBuilder::default()
        .major(major)
        .minor(minor)
        .rate(rate)
        .build()
        .unwrap()
}

/// Checks what is written where, not what the kernel enforces (see the section comment).
#[test]
fn v2_apply_writes_every_resource() {
    let mut s = StandIn::new(V2_CONTROLLERS);
    let leaf = s.leaf("c1", V2_CONTROLLERS, &[]);
    let mgr = CgroupManager::new_in(&s.layout(), Some("/berth/c1"), "c1").unwrap();
    assert!(mgr.is_v2());
    mgr.create().unwrap();
    // Every ancestor enables every controller the root offers, one write each, in the order
    // cgroup.controllers lists them; the container's own cgroup enables none (it will have
    // processes, and v2 allows controllers only below cgroups without processes).
    let all = "+cpuset+cpu+io+memory+hugetlb+pids";
    assert_eq!(s.written(s.root.path(), "cgroup.subtree_control"), all);
    assert_eq!(
        s.written(&s.root.path().join("berth"), "cgroup.subtree_control"),
        all
    );
    assert_eq!(s.written(&leaf, "cgroup.subtree_control"), "");
    let files_before = StandIn::names(&leaf);

    let r = resources(|b| {
        b.memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .reservation(32 * MIB)
                .swap(96 * MIB)
                .kernel(MIB) // v2 has no separate kernel limit: ignored with a warning
                .kernel_tcp(MIB)
                .swappiness(10u64)
                .disable_oom_killer(true)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50_000i64)
                .period(100_000u64)
                .burst(1000u64)
                .idle(1i64)
                .cpus("0-1")
                .mems("0")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .weight_device(vec![
                    oci_spec::runtime::LinuxWeightDeviceBuilder::default()
                        .major(8)
                        .minor(0)
                        .weight(100u16)
                        .build()
                        .unwrap(),
                ])
                .throttle_read_bps_device(vec![throttle(8, 0, 1_048_576)])
                .throttle_write_iops_device(vec![throttle(8, 0, 100)])
                .throttle_write_bps_device(vec![throttle(8, 16, 2_097_152)])
                // 0 removes a throttle on v1; v2 says that with "max".
                .throttle_read_iops_device(vec![throttle(8, 16, 0)])
                .build()
                .unwrap(),
        )
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(4 * MIB)
                .build()
                .unwrap(),
        ])
        .unified(
            [
                ("memory.high", "50331648"),
                // Explicit unified values are written after the converted ones, so they win.
                ("cpu.weight", "200"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        )
    });
    mgr.apply(&r).unwrap();

    // memory: swap.max is swap alone (runc: memory+swap minus memory), written before the
    // limit; reservation is memory.low.
    assert_eq!(s.written(&leaf, "memory.swap.max"), (32 * MIB).to_string());
    assert_eq!(s.written(&leaf, "memory.max"), (64 * MIB).to_string());
    assert_eq!(s.written(&leaf, "memory.low"), (32 * MIB).to_string());
    assert_eq!(s.written(&leaf, "memory.high"), "50331648");
    // cpu: runc's shares → weight, 1 + (1024 - 2) * 9999 / 262142 = 39, then unified's 200.
    assert_eq!(s.written(&leaf, "cpu.weight"), ["39", "200"].concat());
    assert_eq!(s.written(&leaf, "cpu.max"), "50000 100000");
    assert_eq!(s.written(&leaf, "cpu.max.burst"), "1000");
    assert_eq!(s.written(&leaf, "cpu.idle"), "1");
    assert_eq!(s.written(&leaf, "cpuset.cpus"), "0-1");
    assert_eq!(s.written(&leaf, "cpuset.mems"), "0");
    assert_eq!(s.written(&leaf, "pids.max"), "10");
    // io, without BFQ (no io.bfq.weight): weights converted by runc's
    // 1 + (w - 10) * 9999 / 990 (500 → 4950, 100 → 910); one io.max line per device.
    assert_eq!(s.written(&leaf, "io.weight"), ["4950", "8:0 910"].concat());
    assert_eq!(
        s.written(&leaf, "io.max"),
        ["8:0 rbps=1048576 wiops=100", "8:16 wbps=2097152 riops=max"].concat()
    );
    // hugetlb: the limit and, where the kernel has it, the reservation limit.
    assert_eq!(s.written(&leaf, "hugetlb.2MB.max"), (4 * MIB).to_string());
    assert_eq!(
        s.written(&leaf, "hugetlb.2MB.rsvd.max"),
        (4 * MIB).to_string()
    );
    assert_eq!(s.written(&leaf, "hugetlb.1GB.max"), "");
    // The dropped v1 settings wrote nothing, and no write created a file.
    assert_eq!(s.written(&leaf, "memory.min"), "");
    assert_eq!(StandIn::names(&leaf), files_before);

    // Unlimited: memory -1 without swap means both unlimited (as on v1), quota -1 is "max".
    let mut s = StandIn::new(V2_CONTROLLERS);
    let leaf = s.leaf("c2", V2_CONTROLLERS, &[("cpu.max", "20000 100000\n")]);
    let mgr = CgroupManager::new_in(&s.layout(), Some("/berth/c2"), "c2").unwrap();
    mgr.create().unwrap();
    let r = resources(|b| {
        b.memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
    });
    mgr.apply(&r).unwrap();
    assert_eq!(s.written(&leaf, "memory.swap.max"), "max");
    assert_eq!(s.written(&leaf, "memory.max"), "max");
    assert_eq!(s.written(&leaf, "pids.max"), "max");
    // Only the period: the current quota (20000) is kept.
    let r = resources(|b| {
        b.cpu(
            LinuxCpuBuilder::default()
                .period(50_000u64)
                .build()
                .unwrap(),
        )
    });
    mgr.apply(&r).unwrap();
    assert_eq!(s.written(&leaf, "cpu.max"), "20000 50000");
    let r = resources(|b| {
        b.cpu(
            LinuxCpuBuilder::default()
                .quota(-1i64)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
    });
    mgr.apply(&r).unwrap();
    assert_eq!(
        s.written(&leaf, "cpu.max"),
        ["20000 50000", "max 100000"].concat()
    );
    // memory+swap equal to memory: no swap at all.
    let r = resources(|b| {
        b.memory(
            LinuxMemoryBuilder::default()
                .limit(16 * MIB)
                .swap(16 * MIB)
                .build()
                .unwrap(),
        )
    });
    mgr.apply(&r).unwrap();
    assert_eq!(s.written(&leaf, "memory.swap.max"), ["max", "0"].concat());
    assert_eq!(
        s.written(&leaf, "memory.max"),
        ["max".to_string(), (16 * MIB).to_string()].concat()
    );

    // Refusals. A unified key that leaves the cgroup directory, or names the runtime's own
    // files, is refused before anything is written.
    for (key, needle) in [
        ("../escape.max", "not a cgroup file name"),
        ("a/b.max", "not a cgroup file name"),
        ("cgroup.procs", "managed by the runtime"),
    ] {
        let r = resources(|b| {
            b.pids(LinuxPidsBuilder::default().limit(5).build().unwrap())
                .unified(
                    [(key.to_string(), "1".to_string())]
                        .into_iter()
                        .collect::<HashMap<_, _>>(),
                )
        });
        let err = mgr.apply(&r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{key}: {err}");
        assert!(err.to_string().contains(needle), "{key}: {err}");
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
    assert_eq!(s.written(&leaf, "pids.max"), "max", "nothing was applied");
    assert!(!s.root.path().join("berth/escape.max").exists());
    // A key the cgroup has no file for fails naming the file, and creates none.
    let r = resources(|b| {
        b.unified(
            [("memory.nosuch".to_string(), "1".to_string())]
                .into_iter()
                .collect::<HashMap<_, _>>(),
        )
    });
    let err = mgr.apply(&r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "write 1 to {}",
            leaf.join("memory.nosuch").display()
        )),
        "{err}"
    );
    assert!(!leaf.join("memory.nosuch").exists());

    // A controller the parent did not enable (absent from the cgroup's cgroup.controllers):
    // a FailedPrecondition naming the controller and the cgroup, before any write for it.
    let mut s = StandIn::new(V2_CONTROLLERS);
    let leaf = s.leaf("c3", "cpu memory pids", &[]);
    let mgr = CgroupManager::new_in(&s.layout(), Some("/berth/c3"), "c3").unwrap();
    mgr.create().unwrap();
    let unified = |k: &str, v: &str| {
        [(k.to_string(), v.to_string())]
            .into_iter()
            .collect::<HashMap<_, _>>()
    };
    for (r, controller) in [
        (
            resources(|b| {
                b.block_io(
                    LinuxBlockIoBuilder::default()
                        .weight(100u16)
                        .build()
                        .unwrap(),
                )
            }),
            "io",
        ),
        (
            resources(|b| {
                b.block_io(
                    LinuxBlockIoBuilder::default()
                        .throttle_read_bps_device(vec![throttle(8, 0, 1)])
                        .build()
                        .unwrap(),
                )
            }),
            "io",
        ),
        (
            resources(|b| b.cpu(LinuxCpuBuilder::default().cpus("0").build().unwrap())),
            "cpuset",
        ),
        (resources(|b| b.unified(unified("io.weight", "50"))), "io"),
    ] {
        let err = mgr.apply(&r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("the {controller} controller is not enabled")),
            "{msg}"
        );
        assert!(msg.contains(&leaf.display().to_string()), "{msg}");
        assert!(msg.contains("enabled: cpu memory pids"), "{msg}");
    }
    // Huge page limits without hugetlb are skipped with a warning (as runc does), not written.
    let r = resources(|b| {
        b.hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(2 * MIB)
                .build()
                .unwrap(),
        ])
        .pids(LinuxPidsBuilder::default().limit(7).build().unwrap())
    });
    mgr.apply(&r).unwrap();
    assert_eq!(s.written(&leaf, "pids.max"), "7");
    assert!(!leaf.join("hugetlb.2MB.max").exists());
    // So are rdma limits (as on v1).
    let rdma = |b: LinuxResourcesBuilder| {
        b.rdma(
            [
                ("mlx5_1", Some(2u32), None),
                ("mlx5_0", Some(4), Some(1000u32)),
            ]
            .into_iter()
            .map(|(dev, handles, objects)| {
                let mut l = oci_spec::runtime::LinuxRdmaBuilder::default();
                if let Some(h) = handles {
                    l = l.hca_handles(h);
                }
                if let Some(o) = objects {
                    l = l.hca_objects(o);
                }
                (dev.to_string(), l.build().unwrap())
            })
            .collect::<HashMap<_, _>>(),
        )
    };
    mgr.apply(&resources(rdma)).unwrap();
    assert!(!leaf.join("rdma.max").exists());
    // With the rdma controller: one rdma.max line per device, unset counts as "max".
    let mut s = StandIn::new("cpu memory pids rdma");
    let leaf = s.leaf("c6", "pids rdma", &[]);
    let mgr = CgroupManager::new_in(&s.layout(), Some("/berth/c6"), "c6").unwrap();
    mgr.create().unwrap();
    assert_eq!(
        s.written(s.root.path(), "cgroup.subtree_control"),
        "+cpu+memory+pids+rdma"
    );
    mgr.apply(&resources(rdma)).unwrap();
    assert_eq!(
        s.written(&leaf, "rdma.max"),
        [
            "mlx5_0 hca_handle=4 hca_object=1000",
            "mlx5_1 hca_handle=2 hca_object=max"
        ]
        .concat()
    );

    // The controller listed but its file missing (an older kernel): the error names the file
    // and the value.
    let mut s = StandIn::new(V2_CONTROLLERS);
    let leaf = s.leaf("c4", V2_CONTROLLERS, &[]);
    std::fs::remove_file(leaf.join("cpu.max.burst")).unwrap();
    let mgr = CgroupManager::new_in(&s.layout(), Some("/berth/c4"), "c4").unwrap();
    let r = resources(|b| b.cpu(LinuxCpuBuilder::default().burst(500u64).build().unwrap()));
    let err = mgr.apply(&r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "write 500 to {}",
            leaf.join("cpu.max.burst").display()
        )),
        "{err}"
    );

    // create makes a cgroup directory that does not exist yet.
    let new = CgroupManager::new_in(&s.layout(), Some("/berth/fresh/c5"), "c5").unwrap();
    new.create().unwrap();
    assert!(s.root.path().join("berth/fresh/c5").is_dir());
}

/// Stand-in stat files with what a 6.x kernel writes in them; checks the parsed [`Stats`].
#[test]
fn v2_stats_are_parsed() {
    let mut s = StandIn::new(V2_CONTROLLERS);
    let memory_stat = "\
anon 41943040
file 8388608
kernel 2097152
kernel_stack 163840
pagetables 327680
sec_pagetables 0
percpu 5760
sock 4096
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped 1048576
file_dirty 4096
file_writeback 0
swapcached 0
anon_thp 20971520
file_thp 0
shmem_thp 0
inactive_anon 40960000
active_anon 983040
inactive_file 6291456
active_file 2097152
unevictable 0
slab_reclaimable 524288
slab_unreclaimable 786432
slab 1310720
workingset_refault_anon 0
workingset_refault_file 0
pgscan 0
pgsteal 0
pgfault 123456
pgmajfault 78
pgrefill 0
pgactivate 12
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
thp_fault_alloc 10
thp_collapse_alloc 0
";
    let cpu_stat = "\
usage_usec 2345678
user_usec 2000000
system_usec 345678
core_sched.force_idle_usec 0
nr_periods 120
nr_throttled 15
throttled_usec 456789
nr_bursts 0
burst_usec 0
";
    let io_stat = "\
8:0 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0 cost.usage=42 cost.wait=0
253:1 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=512 dios=1
";
    let leaf = s.leaf(
        "stats",
        V2_CONTROLLERS,
        &[
            ("memory.current", "52490240\n"),
            ("memory.max", "67108864\n"),
            ("memory.peak", "60817408\n"),
            ("memory.stat", memory_stat),
            (
                "memory.events",
                "low 0\nhigh 4\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n",
            ),
            ("memory.swap.current", "1048576\n"),
            ("memory.swap.max", "max\n"),
            ("memory.swap.events", "high 0\nmax 1\nfail 0\n"),
            ("cpu.stat", cpu_stat),
            ("io.stat", io_stat),
            ("pids.current", "7\n"),
            ("pids.max", "64\n"),
            ("hugetlb.2MB.current", "4194304\n"),
            ("hugetlb.2MB.max", "8388608\n"),
            ("hugetlb.2MB.events", "max 1\n"),
        ],
    );
    let mgr = CgroupManager::load_in(&s.layout(), "/berth/stats").unwrap();
    let st = mgr.stats().unwrap();

    assert_eq!(st.memory.usage.usage, 52_490_240);
    assert_eq!(st.memory.usage.limit, 64 * MIB as u64);
    assert_eq!(st.memory.usage.max, 60_817_408);
    assert_eq!(st.memory.usage.failcnt, 12, "memory.events max");
    assert_eq!(st.memory.swap.usage, 1_048_576);
    assert_eq!(st.memory.swap.limit, u64::MAX, "\"max\" reads as no limit");
    assert_eq!(st.memory.swap.failcnt, 1);
    assert_eq!(st.memory.rss, 41_943_040, "anon");
    assert_eq!(st.memory.cache, 8_388_608, "file");
    assert_eq!(st.memory.rss_huge, 20_971_520);
    assert_eq!(st.memory.mapped_file, 1_048_576);
    assert_eq!(st.memory.dirty, 4096);
    assert_eq!(st.memory.pg_fault, 123_456);
    assert_eq!(st.memory.pg_maj_fault, 78);
    assert_eq!(st.memory.inactive_anon, 40_960_000);
    assert_eq!(st.memory.active_file, 2_097_152);
    assert_eq!(
        st.memory.total_rss, st.memory.rss,
        "v2 stats are hierarchical"
    );
    assert_eq!(st.memory.kernel.usage, 2_097_152);
    assert_eq!(st.memory.kernel_tcp.usage, 4096);
    assert_eq!(st.memory.raw.get("slab"), Some(&1_310_720));
    assert_eq!(st.memory.raw.len(), memory_stat.lines().count());
    assert_eq!(st.memory_oom_control.oom_kill, 2);
    assert_eq!(st.memory_oom_control.oom_events, 3);
    assert_eq!(mgr.oom_kill_count().unwrap(), 2);

    // cpu.stat is in microseconds, Stats in nanoseconds.
    assert_eq!(st.cpu.usage.total, 2_345_678_000);
    assert_eq!(st.cpu.usage.user, 2_000_000_000);
    assert_eq!(st.cpu.usage.kernel, 345_678_000);
    assert!(st.cpu.usage.per_cpu.is_empty());
    assert_eq!(st.cpu.throttling.periods, 120);
    assert_eq!(st.cpu.throttling.throttled_periods, 15);
    assert_eq!(st.cpu.throttling.throttled_time, 456_789_000);

    let entries = |list: &[berth_runtime::cgroups::BlkioEntry]| {
        list.iter()
            .map(|e| (e.major, e.minor, e.op.clone(), e.value))
            .collect::<Vec<_>>()
    };
    let e = |major, minor, op: &str, value| (major, minor, op.to_string(), value);
    assert_eq!(
        entries(&st.blkio.io_service_bytes_recursive),
        vec![
            e(8, 0, "Read", 1_459_200),
            e(8, 0, "Write", 314_773_504),
            e(8, 0, "Discard", 0),
            e(253, 1, "Read", 4096),
            e(253, 1, "Write", 0),
            e(253, 1, "Discard", 512),
        ]
    );
    assert_eq!(
        entries(&st.blkio.io_serviced_recursive),
        vec![
            e(8, 0, "Read", 192),
            e(8, 0, "Write", 353),
            e(8, 0, "Discard", 0),
            e(253, 1, "Read", 1),
            e(253, 1, "Write", 0),
            e(253, 1, "Discard", 1),
        ]
    );

    assert_eq!(st.pids.current, 7);
    assert_eq!(st.pids.limit, 64);

    let two = st.hugetlb.iter().find(|h| h.pagesize == "2MB").unwrap();
    assert_eq!(
        (two.usage, two.limit, two.failcnt),
        (4_194_304, 8_388_608, 1)
    );
    let one = st.hugetlb.iter().find(|h| h.pagesize == "1GB").unwrap();
    assert_eq!((one.usage, one.limit), (0, u64::MAX));

    // No limits: pids "max" reads as 0 (containerd's convention), memory "max" as u64::MAX.
    let _fresh = s.leaf("fresh", V2_CONTROLLERS, &[]);
    let fresh = CgroupManager::load_in(&s.layout(), "/berth/fresh").unwrap();
    let st = fresh.stats().unwrap();
    assert_eq!(st.pids.limit, 0);
    assert_eq!(st.memory.usage.limit, u64::MAX);
    assert_eq!(fresh.oom_kill_count().unwrap(), 0);

    // Without the memory controller there is nothing to count OOM kills with; a cgroup that
    // does not exist is NotFound.
    let _nomem = s.leaf("nomem", "cpu pids", &[]);
    let nomem = CgroupManager::load_in(&s.layout(), "/berth/nomem").unwrap();
    let err = nomem.oom_kill_count().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("memory controller"), "{err}");
    let st = nomem.stats().unwrap();
    assert_eq!(st.memory.usage.usage, 0);
    assert_eq!(st.pids.current, 0);
    let gone = CgroupManager::load_in(&s.layout(), "/berth/gone").unwrap();
    assert_eq!(gone.stats().unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        gone.oom_kill_count().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    drop(leaf);
}
