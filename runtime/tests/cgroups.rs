//! The cgroups module against this machine's real cgroups (run as root). The host is hybrid:
//! v1 hierarchies under /sys/fs/cgroup plus a cgroup2 mount at /sys/fs/cgroup/unified, which the
//! v2 backend is pointed at explicitly. Every test uses its own cgroup under /berth-test (v1) or
//! /berth-test-v2 (unified) and removes it, with its processes, even when it fails.

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
