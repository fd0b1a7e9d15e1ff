//! Cgroups v1 and v2: placing a container in its cgroup, applying the spec's resources,
//! freezing, reading statistics and removing the cgroup.
//!
//! [`CgroupLayout`] is what the host has: v1 hierarchies (plus, on a "hybrid" host, a cgroup2
//! mount such as /sys/fs/cgroup/unified that the container joins too, like runc does), or one
//! unified v2 tree. [`CgroupManager`] is one container's cgroup in that layout, named by one
//! absolute path (like "/berth/default/web") that is the same in every hierarchy, so the state
//! directory can record it as one string and [`CgroupManager::load`] can reopen it.
//!
//! Only the cgroupfs driver exists (no systemd). Kernel semantics follow the kernel's
//! cgroup-v1/*.rst and cgroup-v2.rst; where runc has settled a convention (shares → weight,
//! swap on v2, ordering of memory and memsw writes) the same convention is used so a spec means
//! the same as under runc.
//!
//! cgroups-rs is used for what it does right: finding whether /sys/fs/cgroup is a cgroup2 mount
//! and parsing /proc/self/cgroup. Everything else is plain file I/O, because in cgroups-rs 0.3
//! creating a v1 cgroup panics on some paths and ignores mkdir errors, v2 always lives at
//! /sys/fs/cgroup (so it can neither run on a hybrid host's unified mount nor be tested there),
//! v2 creation enables every controller while ignoring errors, its stats parsers `unwrap` on
//! unexpected lines, its errors lose the errno, and it has no eBPF device filter.
//!
//! Ordering for callers: [`CgroupManager::create`] before [`CgroupManager::apply`] (v1 cpuset
//! needs the parent's cpus/mems copied first), and both before
//! [`CgroupManager::add_process`] or [`CgroupManager::entry`] so the container's first process
//! starts limited.
//!
//! How a new process gets in matters for speed. Writing a pid to `cgroup.procs` moves a whole
//! thread group, for which the kernel takes its global `cgroup_threadgroup_rwsem` for writing;
//! the first such write after a quiet spell waits for an RCU grace period (5 to 14 ms here),
//! and holds `cgroup_mutex` meanwhile, stalling every cgroup mkdir on the host.
//! [`CgroupEntry`] avoids both: the child is forked straight into the cgroup2 part with
//! `clone3(CLONE_INTO_CGROUP)`, and moves its one thread into each v1 hierarchy by writing "0"
//! to `tasks`, a move the kernel makes without that lock.

mod convert;
mod devices;
mod files;
mod hierarchy;
mod stats;
mod v1;
mod v2;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_core::{Error, Result};
use oci_spec::runtime::LinuxResources;

pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry, MemoryOomControl,
    MemoryStats, PidsStats, Stats, Throttling,
};

use hierarchy::{UnifiedMount, V1Hierarchy};

/// Where a pure cgroup v2 host mounts the unified tree.
const UNIFIED_MOUNTPOINT: &str = "/sys/fs/cgroup";

/// The host's cgroup filesystems. A container's state records the layout it was made on, so
/// what comes later (delete, pause, stats) need not read the host's mount table again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CgroupLayout {
    inner: Layout,
    mounts: Vec<CgroupFsMount>,
}

/// One cgroup or cgroup2 filesystem mount of the host, as its mount table lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupFsMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// "cgroup" or "cgroup2".
    pub fs_type: String,
    /// Its super options without "rw" and "ro" ("cpu,cpuacct", "xattr,name=systemd").
    pub options: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Layout {
    V1 {
        hierarchies: Vec<V1Hierarchy>,
        unified: Option<UnifiedMount>,
    },
    V2(UnifiedMount),
}

impl CgroupLayout {
    /// Finds the cgroup filesystems of the host: v2 when /sys/fs/cgroup itself is cgroup2,
    /// else the mounted v1 hierarchies (and a cgroup2 mount beside them, if any).
    pub fn detect() -> Result<Self> {
        let mounts = hierarchy::self_mounts()?;
        let (v1, unified) = hierarchy::cgroup_mounts(&mounts);
        // Kept so that what a container sees of them needs no second read of the mount table,
        // whose text grows with every container running on the host.
        let mounts = mounts
            .into_iter()
            .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
            .map(|m| CgroupFsMount {
                mount_point: m.mount_point,
                options: (m.super_opts.iter())
                    .filter(|o| *o != "rw" && *o != "ro")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
                fs_type: m.fs_type,
            })
            .collect();
        let inner = if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
            let root = unified
                .filter(|u| u.mount == Path::new(UNIFIED_MOUNTPOINT))
                .map_or_else(|| "/".to_string(), |u| u.root);
            Layout::V2(UnifiedMount {
                mount: PathBuf::from(UNIFIED_MOUNTPOINT),
                root,
            })
        } else if !v1.is_empty() {
            Layout::V1 {
                hierarchies: v1,
                unified,
            }
        } else if let Some(u) = unified {
            Layout::V2(u)
        } else {
            return Err(Error::failed_precondition(
                "no cgroup filesystem is mounted (none in /proc/self/mountinfo)",
            ));
        };
        Ok(Self { inner, mounts })
    }

    /// The host's cgroup and cgroup2 mounts in mount-table order (empty for a layout made by
    /// [`CgroupLayout::v2_at`]).
    pub fn mounts(&self) -> &[CgroupFsMount] {
        &self.mounts
    }

    /// A pure v2 layout with the unified tree mounted at `mount` (tests use a hybrid host's
    /// /sys/fs/cgroup/unified).
    pub fn v2_at(mount: impl Into<PathBuf>) -> Self {
        Self {
            inner: Layout::V2(UnifiedMount {
                mount: mount.into(),
                root: "/".to_string(),
            }),
            mounts: Vec::new(),
        }
    }

    /// Whether this is a unified (v2) layout.
    pub fn is_v2(&self) -> bool {
        matches!(self.inner, Layout::V2(_))
    }

    /// The cgroup the calling process is in, relative to the mounts: on v2 its unified cgroup;
    /// on v1 its memory cgroup (the hierarchy an outer manager uses to budget us), else the
    /// first hierarchy's. One hierarchy decides so that the container has one path everywhere.
    fn own_cgroup(&self) -> Result<String> {
        let own = hierarchy::self_cgroups()?;
        match &self.inner {
            Layout::V2(u) => {
                let path = own.get("").map_or("/", String::as_str);
                Ok(hierarchy::relative_to_mount(path, &u.root))
            }
            Layout::V1 { hierarchies, .. } => {
                let pick = hierarchies
                    .iter()
                    .find(|h| h.controllers.iter().any(|c| c == "memory"))
                    .map(|h| ("memory", h))
                    .or_else(|| {
                        hierarchies
                            .first()
                            .and_then(|h| h.controllers.first().map(|c| (c.as_str(), h)))
                    });
                match pick {
                    Some((controller, h)) => {
                        let path = own.get(controller).map_or("/", String::as_str);
                        Ok(hierarchy::relative_to_mount(path, &h.root))
                    }
                    None => Ok("/".to_string()),
                }
            }
        }
    }
}

/// What to mount at /sys/fs/cgroup inside a container that has no cgroup namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMountSource {
    /// Bind-mount `host_dir` (this container's cgroup in one hierarchy) at
    /// /sys/fs/cgroup/`name`; on v2 `name` is empty: the mount is /sys/fs/cgroup itself.
    Bind {
        /// The directory name under /sys/fs/cgroup ("memory", "cpu,cpuacct", "systemd").
        name: String,
        /// The host directory to bind.
        host_dir: PathBuf,
    },
    /// A symlink /sys/fs/cgroup/`name` → `target`, for each controller of a co-mounted v1
    /// hierarchy ("cpu" → "cpu,cpuacct"), as v1 hosts have.
    Symlink {
        /// The link's name under /sys/fs/cgroup.
        name: String,
        /// What it points to (a sibling directory name).
        target: String,
    },
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    path: String,
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

/// Splits a cgroup path into its names, refusing anything that could leave the hierarchy.
fn components<'a>(path: &'a str, what: &str) -> Result<Vec<&'a str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid_argument(format!(
                    "{what} {path:?} contains \"..\": a cgroup path must stay inside the hierarchy"
                )));
            }
            c if c.contains('\0') => {
                return Err(Error::invalid_argument(format!(
                    "{what} {path:?} contains a NUL"
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Resolves the spec's `cgroupsPath` (see [`CgroupManager::new`]); `own` yields the runtime's
/// own cgroup, for relative paths.
fn resolve_path(
    cgroups_path: Option<&str>,
    container_id: &str,
    own: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let Some(spec) = cgroups_path.filter(|p| !p.is_empty()) else {
        let bad = container_id.is_empty()
            || container_id == "."
            || container_id == ".."
            || container_id.contains(['/', '\0']);
        if bad {
            return Err(Error::invalid_argument(format!(
                "container id {container_id:?} cannot name a cgroup"
            )));
        }
        return Ok(format!("/berth/{container_id}"));
    };
    if spec.contains(':') {
        return Err(Error::invalid_argument(format!(
            "cgroupsPath {spec:?} looks like systemd's \"slice:prefix:name\" syntax; Berth \
             manages cgroups through cgroupfs only, so give a path such as \"/berth/{container_id}\""
        )));
    }
    let mut names: Vec<String> = Vec::new();
    if !spec.starts_with('/') {
        let parent = own()?;
        names.extend(
            components(&parent, "own cgroup")?
                .into_iter()
                .map(str::to_string),
        );
    }
    names.extend(
        components(spec, "cgroupsPath")?
            .into_iter()
            .map(str::to_string),
    );
    if names.is_empty() {
        return Err(Error::invalid_argument(format!(
            "cgroupsPath {spec:?} names the root cgroup, which a container cannot own"
        )));
    }
    Ok(format!("/{}", names.join("/")))
}

impl CgroupManager {
    /// Resolves `cgroups_path` from the spec on the host's layout: absolute ("/berth/ns/id") as
    /// is, relative under the runtime's own cgroup, `None` as "/berth/<id>". Creates nothing.
    /// systemd's "slice:prefix:name" syntax and paths with ".." are InvalidArgument.
    pub fn new(cgroups_path: Option<&str>, container_id: &str) -> Result<Self> {
        Self::new_in(&CgroupLayout::detect()?, cgroups_path, container_id)
    }

    /// [`CgroupManager::new`] on a given layout.
    pub fn new_in(
        layout: &CgroupLayout,
        cgroups_path: Option<&str>,
        container_id: &str,
    ) -> Result<Self> {
        let path = resolve_path(cgroups_path, container_id, || layout.own_cgroup())?;
        Ok(Self::open(layout, path))
    }

    /// Reopens a cgroup by the path [`CgroupManager::path`] returned when it was made.
    pub fn load(path: &str) -> Result<Self> {
        Self::load_in(&CgroupLayout::detect()?, path)
    }

    /// [`CgroupManager::load`] on a given layout.
    pub fn load_in(layout: &CgroupLayout, path: &str) -> Result<Self> {
        if !path.starts_with('/') {
            return Err(Error::invalid_argument(format!(
                "cgroup path {path:?} is not absolute"
            )));
        }
        let names = components(path, "cgroup path")?;
        if names.is_empty() {
            return Err(Error::invalid_argument(
                "cgroup path \"/\" is the root cgroup, which a container cannot own",
            ));
        }
        Ok(Self::open(layout, format!("/{}", names.join("/"))))
    }

    fn open(layout: &CgroupLayout, path: String) -> Self {
        let backend = match &layout.inner {
            Layout::V1 {
                hierarchies,
                unified,
            } => Backend::V1(v1::V1Cgroup::new(hierarchies, unified.as_ref(), &path)),
            Layout::V2(u) => Backend::V2(v2::V2Cgroup::new(&u.mount, &path)),
        };
        Self { path, backend }
    }

    /// The cgroup's absolute path within each hierarchy (what state records).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the cgroup lives in a unified (v2) tree.
    pub fn is_v2(&self) -> bool {
        matches!(self.backend, Backend::V2(_))
    }

    /// Creates the cgroup: in every v1 hierarchy (copying cpuset.cpus/mems from the parent, so
    /// processes can join), or in the unified tree with every available controller enabled in
    /// the ancestors' cgroup.subtree_control. Existing directories are fine.
    pub fn create(&self) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.create(),
            Backend::V2(c) => c.create(true),
        }
    }

    /// Checks the resources without touching the cgroup (ranges, device rules, hugepage sizes,
    /// v2-only settings on v1 and v1-only ones on v2). [`CgroupManager::apply`] does it too;
    /// call it early to fail before cloning the container.
    pub fn validate(&self, resources: &LinuxResources) -> Result<()> {
        convert::validate(resources, self.is_v2())
    }

    /// Writes the spec's resources. Settings a kernel has dropped (kernel memory limits; on v2
    /// swappiness and disableOOMKiller) are ignored with a warning; a setting whose controller
    /// is missing is a FailedPrecondition error, except hugetlb, network and rdma, which are
    /// skipped with a warning. Errors name the file and the value.
    pub fn apply(&self, resources: &LinuxResources) -> Result<()> {
        self.validate(resources)?;
        match &self.backend {
            Backend::V1(c) => c.apply(resources),
            Backend::V2(c) => c.apply(resources),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.add_process(pid),
            Backend::V2(c) => c.add_process(pid),
        }
    }

    /// Opens the cgroup for a process about to be forked into it: see [`CgroupEntry`].
    pub fn entry(&self) -> Result<CgroupEntry> {
        match &self.backend {
            Backend::V1(c) => c.entry(),
            Backend::V2(c) => Ok(CgroupEntry {
                clone_into: Some(c.open_dir()?),
                tasks: Vec::new(),
            }),
        }
    }

    /// The processes in the cgroup itself (not its descendants); on v1 the union over the
    /// hierarchies. NotFound if the cgroup does not exist.
    pub fn pids(&self) -> Result<Vec<i32>> {
        match &self.backend {
            Backend::V1(c) => c.pids(),
            Backend::V2(c) => c.pids(),
        }
    }

    /// Freezes every process of the cgroup and waits until the kernel reports it frozen (up to
    /// 5 s; on timeout it thaws again and fails with Unavailable).
    pub fn freeze(&self) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.freeze(),
            Backend::V2(c) => c.freeze(),
        }
    }

    /// Thaws the cgroup and waits until it is.
    pub fn thaw(&self) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.thaw(),
            Backend::V2(c) => c.thaw(),
        }
    }

    /// Whether the cgroup is frozen (a v1 cgroup still FREEZING is not).
    pub fn is_frozen(&self) -> Result<bool> {
        match &self.backend {
            Backend::V1(c) => c.is_frozen(),
            Backend::V2(c) => c.is_frozen(),
        }
    }

    /// Reads usage statistics (see [`Stats`]). NotFound if the cgroup does not exist.
    pub fn stats(&self) -> Result<Stats> {
        match &self.backend {
            Backend::V1(c) => c.stats(),
            Backend::V2(c) => c.stats(),
        }
    }

    /// How many processes the OOM killer has killed in the cgroup.
    pub fn oom_kill_count(&self) -> Result<u64> {
        match &self.backend {
            Backend::V1(c) => c.oom_kill_count(),
            Backend::V2(c) => c.oom_kill_count(),
        }
    }

    /// Removes the cgroup (and any cgroups below it) from every hierarchy, retrying briefly
    /// while the last processes leave. A cgroup that does not exist is success. It still fails
    /// with Unavailable if processes remain: kill them first.
    pub fn destroy(&self) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.destroy(),
            Backend::V2(c) => c.destroy(),
        }
    }

    /// What to mount at /sys/fs/cgroup in a container without a cgroup namespace, so that it
    /// sees its own cgroup as the root of each hierarchy.
    pub fn mount_sources(&self) -> Vec<CgroupMountSource> {
        match &self.backend {
            Backend::V1(c) => c.mount_sources(),
            Backend::V2(c) => vec![CgroupMountSource::Bind {
                name: String::new(),
                host_dir: c.dir().to_path_buf(),
            }],
        }
    }
}

/// A cgroup opened, before a fork, for the child to start in without a thread-group migration.
///
/// The parent forks with [`CgroupEntry::clone_into`] as clone3's `CLONE_INTO_CGROUP` target
/// (the unified tree on v2, a hybrid host's cgroup2 mount on v1), and the child, while it still
/// has one thread, calls [`CgroupEntry::enter_v1`]. If the fork into the cgroup fails (a kernel
/// before 5.7), [`CgroupManager::add_process`] from the parent is the way in.
#[derive(Debug, Default)]
pub struct CgroupEntry {
    clone_into: Option<OwnedFd>,
    tasks: Vec<(PathBuf, File)>,
}

impl CgroupEntry {
    /// The cgroup2 directory to fork into, if the layout has one.
    pub fn clone_into(&self) -> Option<BorrowedFd<'_>> {
        self.clone_into.as_ref().map(|f| f.as_fd())
    }

    /// Moves the calling thread into the cgroup in every v1 hierarchy ("0" to each `tasks`
    /// file). Only for a process with one thread, which it then moves whole.
    pub fn enter_v1(&self) -> Result<()> {
        for (path, file) in &self.tasks {
            let mut file = file;
            file.write_all(b"0")
                .map_err(|e| files::os_error(format!("write 0 to {}", path.display()), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use berth_core::ErrorKind;

    fn own() -> Result<String> {
        Ok("/runtime/parent".to_string())
    }

    #[test]
    fn resolves_paths() {
        assert_eq!(resolve_path(None, "web", own).unwrap(), "/berth/web");
        assert_eq!(resolve_path(Some(""), "web", own).unwrap(), "/berth/web");
        assert_eq!(
            resolve_path(Some("/k8s//pod/./c"), "web", own).unwrap(),
            "/k8s/pod/c"
        );
        assert_eq!(
            resolve_path(Some("sub/c"), "web", own).unwrap(),
            "/runtime/parent/sub/c"
        );
        assert_eq!(
            resolve_path(Some("c"), "web", || Ok("/".into())).unwrap(),
            "/c"
        );
    }

    #[test]
    fn rejects_bad_paths() {
        for (path, id, needle) in [
            (Some("../../etc"), "web", "\"..\""),
            (Some("/a/../../b"), "web", "\"..\""),
            (Some("system.slice:berth:web"), "web", "systemd"),
            (Some("a:b:c"), "web", "systemd"),
            (Some("/"), "web", "root cgroup"),
            (None, "../x", "container id"),
            (None, "a/b", "container id"),
        ] {
            let err = resolve_path(path, id, own).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path:?}");
            assert!(err.to_string().contains(needle), "{path:?}: {err}");
        }
    }
}
