//! The container's root filesystem: spec mounts, /dev, pivot_root, masked and read-only paths.
//!
//! Runs in the container's init, inside its new mount namespace, through [`Syscall`] so the whole
//! order can be checked by unit tests. Targets inside the rootfs are always resolved in-root
//! ([`Syscall::prepare_target`]) so a symlink in an image cannot point a mount at the host.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_core::{Error, ErrorKind, Result};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::spec::{DevicePlan, MountKind, MountPlan, Plan};
use crate::syscall::{FileKind, Syscall};

/// One entry of the container's view of its cgroups, for a `cgroup` spec mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupView {
    /// The host is cgroup v2: mount a cgroup2 filesystem.
    Unified,
    /// Bind the container's directory `host` at `<dest>/<name>` (a v1 hierarchy), or at
    /// `<dest>` itself when `name` is empty (v2 without a cgroup namespace).
    Hierarchy {
        /// Directory name under the mount point (e.g. `cpu,cpuacct`).
        name: String,
        /// The container's cgroup directory in that hierarchy on the host.
        host: PathBuf,
    },
    /// A new v1 cgroup filesystem at `<dest>/<name>` with `options` (the subsystems, e.g.
    /// `cpu,cpuacct` or `name=systemd`): inside a cgroup namespace it is rooted at the
    /// container's cgroup.
    Fresh {
        /// Directory name under the mount point.
        name: String,
        /// Mount data: the hierarchy's subsystems.
        options: String,
    },
    /// A symlink `<dest>/<name>` → `target` (e.g. `cpu` → `cpu,cpuacct`).
    Link {
        /// Link name.
        name: String,
        /// What it points to.
        target: String,
    },
}

/// Turns an errno from `step` into an error naming the step, and the kind its errno implies.
pub(crate) fn sys_err(step: impl std::fmt::Display, errno: Errno) -> Error {
    let kind = match errno {
        Errno::ENOENT => ErrorKind::NotFound,
        Errno::EPERM | Errno::EACCES => ErrorKind::PermissionDenied,
        Errno::EINVAL => ErrorKind::InvalidArgument,
        Errno::EEXIST => ErrorKind::AlreadyExists,
        _ => ErrorKind::Unknown,
    };
    Error::new(kind, format!("{step}: {errno:?} ({})", errno.desc()))
}

fn in_root(rootfs: &Path, dest: &Path) -> PathBuf {
    rootfs.join(dest.strip_prefix("/").unwrap_or(dest))
}

/// Mounts everything the spec asks for under the rootfs, then /dev's devices and links.
///
/// Before this the process must be in its own mount namespace; after it, [`pivot`] makes the
/// rootfs `/`.
pub fn prepare(
    sys: &dyn Syscall,
    plan: &Plan,
    cgroups: &[CgroupView],
    sources: &MountSources,
) -> Result<()> {
    let rootfs = plan.rootfs.as_path();
    let root_desc = rootfs.display();
    // No mount made below may propagate back to the host (or, with rshared, it must: the spec
    // decides). This is done before anything else is mounted.
    sys.mount(None, Path::new("/"), None, plan.rootfs_propagation, None)
        .map_err(|e| sys_err("set propagation of / in the container's mount namespace", e))?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| sys_err(format!("bind rootfs {root_desc} onto itself"), e))?;

    let mut dev_is_fresh = false;
    for (index, m) in plan.mounts.iter().enumerate() {
        mount_one(sys, plan, m, cgroups, sources.get(index))?;
        if m.destination == Path::new("/dev") {
            dev_is_fresh = m.kind != MountKind::Bind;
        }
    }
    if dev_is_fresh {
        create_devices(sys, plan)?;
        dev_links(sys, plan)?;
    }
    Ok(())
}

fn mount_one(
    sys: &dyn Syscall,
    plan: &Plan,
    m: &MountPlan,
    cgroups: &[CgroupView],
    idmapped: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let rootfs = plan.rootfs.as_path();
    let dest = m.destination.display();
    let step = |what: &str| {
        format!(
            "mount {} on {dest} in rootfs {}{what}",
            m.source
                .as_deref()
                .map(|s| s.display().to_string())
                .or_else(|| m.fstype.clone())
                .unwrap_or_default(),
            rootfs.display()
        )
    };
    match m.kind {
        MountKind::Bind => {
            let source = m.source.as_deref().unwrap_or(Path::new(""));
            let kind = sys.file_kind(source).map_err(|e| {
                sys_err(
                    format!("bind mount on {dest}: source {}", source.display()),
                    e,
                )
            })?;
            let target = sys
                .prepare_target(rootfs, &m.destination, kind)
                .map_err(|e| sys_err(step(" (create target)"), e))?;
            match idmapped {
                // The parent made the id-mapped copy of the source (it needs privilege over
                // the source's filesystem that the container's user namespace lacks).
                Some(tree) => sys
                    .move_mount(tree, &target)
                    .map_err(|e| sys_err(step(" (move the id-mapped tree into place)"), e))?,
                None => {
                    let bind = m.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
                    sys.mount(Some(source), target.path(), None, bind, None)
                        .map_err(|e| sys_err(step(""), e))?;
                }
            }
            // The descriptor still names the directory under the new mount: reopen it so the
            // calls below act on the mount itself.
            let target = sys
                .prepare_target(rootfs, &m.destination, kind)
                .map_err(|e| sys_err(step(" (reopen target)"), e))?;
            let rest = m.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
            if !rest.is_empty() {
                // A bind mount ignores every flag but MS_BIND|MS_REC; they take effect on a
                // remount, which must keep the flags the kernel locked on the source mount.
                let locked = sys.mount_flags(target.path()).unwrap_or(MsFlags::empty())
                    & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
                sys.mount(
                    None,
                    target.path(),
                    None,
                    rest | locked | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    None,
                )
                .map_err(|e| sys_err(step(" (remount with its options)"), e))?;
            }
            for p in &m.propagation {
                sys.mount(None, target.path(), None, *p, None)
                    .map_err(|e| sys_err(step(" (set propagation)"), e))?;
            }
            recursive_attrs(sys, rootfs, m, kind)?;
        }
        MountKind::Cgroup => {
            mount_cgroup(sys, plan, m, cgroups)?;
            recursive_attrs(sys, rootfs, m, FileKind::Dir)?;
        }
        MountKind::Filesystem => {
            let target = sys
                .prepare_target(rootfs, &m.destination, FileKind::Dir)
                .map_err(|e| sys_err(step(" (create target)"), e))?;
            let source = m
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from(m.fstype.clone().unwrap_or_default()));
            let fstype = m.fstype.as_deref();
            match sys.mount(
                Some(&source),
                target.path(),
                fstype,
                m.flags,
                m.data.as_deref(),
            ) {
                Ok(()) => {}
                // sysfs can only be mounted by the owner of the network namespace; without one
                // of its own (or inside a user namespace), the container gets the host's /sys
                // bound read-only instead, as runc does.
                Err(Errno::EPERM) if fstype == Some("sysfs") => {
                    sys.mount(
                        Some(Path::new("/sys")),
                        target.path(),
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .map_err(|e| sys_err(step(" (bind of /sys instead of sysfs)"), e))?;
                    sys.mount(
                        None,
                        target.path(),
                        None,
                        MsFlags::MS_BIND
                            | MsFlags::MS_REMOUNT
                            | MsFlags::MS_RDONLY
                            | MsFlags::MS_NOSUID
                            | MsFlags::MS_NODEV
                            | MsFlags::MS_NOEXEC,
                        None,
                    )
                    .map_err(|e| sys_err(step(" (remount /sys read-only)"), e))?;
                }
                Err(e) => return Err(sys_err(step(""), e)),
            }
            let target = sys
                .prepare_target(rootfs, &m.destination, FileKind::Dir)
                .map_err(|e| sys_err(step(" (reopen target)"), e))?;
            for p in &m.propagation {
                sys.mount(None, target.path(), None, *p, None)
                    .map_err(|e| sys_err(step(" (set propagation)"), e))?;
            }
            recursive_attrs(sys, rootfs, m, FileKind::Dir)?;
        }
    }
    Ok(())
}

/// The `r*` options: one mount_setattr(2) with `AT_RECURSIVE` on the mount now at the
/// destination, so every submount of a recursive bind gets them too (mount(2) flags only ever
/// reach the top mount).
fn recursive_attrs(sys: &dyn Syscall, rootfs: &Path, m: &MountPlan, kind: FileKind) -> Result<()> {
    let Some(attr) = &m.recursive else {
        return Ok(());
    };
    let dest = m.destination.display();
    let target = sys
        .prepare_target(rootfs, &m.destination, kind)
        .map_err(|e| sys_err(format!("reopen {dest} for its recursive attributes"), e))?;
    sys.mount_setattr(&target, attr, true).map_err(|e| {
        sys_err(
            format!(
                "mount_setattr on {dest} in rootfs {} (set {:#x}, clear {:#x}, recursive)",
                rootfs.display(),
                attr.set,
                attr.clear
            ),
            e,
        )
    })
}

/// Detached, id-mapped copies of the sources of the plan's `idmap`/`ridmap` mounts, made by
/// the parent, keyed by the mount's index in `plan.mounts`.
#[derive(Debug, Default)]
pub struct MountSources {
    trees: Vec<(usize, OwnedFd)>,
}

impl MountSources {
    /// Trees by mount index.
    pub fn new(trees: Vec<(usize, OwnedFd)>) -> MountSources {
        MountSources { trees }
    }

    /// Pairs `fds` (in the order of the plan's id-mapped mounts) with their mount indices.
    pub fn from_plan(plan: &Plan, fds: Vec<OwnedFd>) -> Result<MountSources> {
        let indices = idmapped_indices(plan);
        if indices.len() != fds.len() {
            return Err(Error::internal(format!(
                "expected {} id-mapped mount trees from the parent, got {}",
                indices.len(),
                fds.len()
            )));
        }
        Ok(MountSources {
            trees: indices.into_iter().zip(fds).collect(),
        })
    }

    /// The tree for the mount at `index`, if it is id-mapped.
    pub fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.trees
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, fd)| fd.as_fd())
    }

    /// The trees in mount order, to pass on.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.trees.iter().map(|(_, fd)| fd.as_fd()).collect()
    }
}

/// Indices in `plan.mounts` of the id-mapped mounts.
pub fn idmapped_indices(plan: &Plan) -> Vec<usize> {
    plan.mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.idmap.is_some())
        .map(|(i, _)| i)
        .collect()
}

/// Makes the detached id-mapped trees: open_tree(OPEN_TREE_CLONE) of each source, then
/// mount_setattr(MOUNT_ATTR_IDMAP) with the mount's own mappings (a user namespace made for
/// them) or the container's user namespace `container_userns`.
///
/// Runs in the runtime's parent process, in the host's user namespace: marking a mount
/// id-mapped needs CAP_SYS_ADMIN over the source's filesystem, which the container lacks.
pub fn idmapped_sources(
    sys: &dyn Syscall,
    plan: &Plan,
    container_userns: Option<BorrowedFd<'_>>,
) -> Result<MountSources> {
    let mut trees = Vec::new();
    for (index, m) in plan.mounts.iter().enumerate() {
        let Some(idmap) = &m.idmap else {
            continue;
        };
        let dest = m.destination.display();
        let source = m.source.as_deref().unwrap_or(Path::new(""));
        let own = match &idmap.mappings {
            Some(maps) => Some(sys.userns_with_mappings(maps).map_err(|e| {
                sys_err(
                    format!("make a user namespace with the id mappings of mount {dest}"),
                    e,
                )
            })?),
            None => None,
        };
        let userns = match (&own, container_userns) {
            (Some(fd), _) => fd.as_fd(),
            (None, Some(fd)) => fd,
            (None, None) => {
                return Err(Error::invalid_argument(format!(
                    "mount {dest}: id-mapped without mappings of its own, and the container \
                     has no user namespace"
                )));
            }
        };
        let tree = sys
            .open_tree(source, m.flags.contains(MsFlags::MS_REC))
            .map_err(|e| {
                sys_err(
                    format!("open_tree {} for mount {dest}", source.display()),
                    e,
                )
            })?;
        sys.idmap_tree(tree.as_fd(), userns, idmap.recursive)
            .map_err(|e| {
                let why = if e == Errno::EINVAL {
                    " (does the filesystem support id-mapped mounts?)"
                } else {
                    ""
                };
                sys_err(
                    format!(
                        "id-map the tree of {} for mount {dest}{why}",
                        source.display()
                    ),
                    e,
                )
            })?;
        trees.push((index, tree));
    }
    Ok(MountSources { trees })
}

fn mount_cgroup(
    sys: &dyn Syscall,
    plan: &Plan,
    m: &MountPlan,
    cgroups: &[CgroupView],
) -> Result<()> {
    let rootfs = plan.rootfs.as_path();
    let dest = m.destination.display();
    let flags = m.flags & !MsFlags::MS_RDONLY;
    let target = sys
        .prepare_target(rootfs, &m.destination, FileKind::Dir)
        .map_err(|e| sys_err(format!("mount cgroup on {dest} (create target)"), e))?;
    if cgroups.contains(&CgroupView::Unified) {
        return sys
            .mount(
                Some(Path::new("cgroup2")),
                target.path(),
                Some("cgroup2"),
                m.flags,
                None,
            )
            .map_err(|e| sys_err(format!("mount cgroup2 on {dest}"), e));
    }
    if let [CgroupView::Hierarchy { name, host }] = cgroups
        && name.is_empty()
    {
        return bind_cgroup(sys, rootfs, host, &m.destination, m.flags);
    }
    // v1: a tmpfs holding one bind mount per hierarchy, each showing only the container's own
    // cgroup, then the tmpfs and the binds made read-only if the spec asks.
    sys.mount(
        Some(Path::new("tmpfs")),
        target.path(),
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .map_err(|e| sys_err(format!("mount tmpfs for cgroups on {dest}"), e))?;
    let base = in_root(rootfs, &m.destination);
    for view in cgroups {
        match view {
            CgroupView::Unified => {}
            CgroupView::Hierarchy { name, host } => {
                bind_cgroup(sys, rootfs, host, &m.destination.join(name), m.flags)?;
            }
            CgroupView::Fresh { name, options } => {
                let sub = m.destination.join(name);
                let t = sys
                    .prepare_target(rootfs, &sub, FileKind::Dir)
                    .map_err(|e| sys_err(format!("create {}", sub.display()), e))?;
                // A named hierarchy (name=systemd) is mounted with its name as the source,
                // the rest as "cgroup", as runc does.
                let source = options
                    .strip_prefix("name=")
                    .filter(|n| !n.contains(','))
                    .unwrap_or("cgroup");
                sys.mount(
                    Some(Path::new(source)),
                    t.path(),
                    Some("cgroup"),
                    m.flags,
                    Some(options),
                )
                .map_err(|e| sys_err(format!("mount cgroup {options} on {}", sub.display()), e))?;
            }
            CgroupView::Link { name, target } => {
                match sys.symlink(Path::new(target), &base.join(name)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(sys_err(format!("symlink {dest}/{name} -> {target}"), e));
                    }
                }
            }
        }
    }
    // The tmpfs itself stays writable, as runc leaves it: it is the container's own, and what
    // matters (the cgroup binds) is read-only.
    Ok(())
}

/// Binds one cgroup directory of the host at `dest`, read-only if `flags` says so.
fn bind_cgroup(
    sys: &dyn Syscall,
    rootfs: &Path,
    host: &Path,
    dest: &Path,
    flags: MsFlags,
) -> Result<()> {
    let t = sys
        .prepare_target(rootfs, dest, FileKind::Dir)
        .map_err(|e| sys_err(format!("create {}", dest.display()), e))?;
    sys.mount(
        Some(host),
        t.path(),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| {
        sys_err(
            format!("bind cgroup {} on {}", host.display(), dest.display()),
            e,
        )
    })?;
    if flags.contains(MsFlags::MS_RDONLY) {
        let t = sys
            .prepare_target(rootfs, dest, FileKind::Dir)
            .map_err(|e| sys_err(format!("reopen {}", dest.display()), e))?;
        sys.mount(
            None,
            t.path(),
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None,
        )
        .map_err(|e| sys_err(format!("remount {} read-only", dest.display()), e))?;
    }
    Ok(())
}

fn create_devices(sys: &dyn Syscall, plan: &Plan) -> Result<()> {
    let rootfs = plan.rootfs.as_path();
    // Device modes are the spec's, not filtered by the runtime's umask.
    sys.umask(0);
    for d in &plan.devices {
        create_device(sys, rootfs, d, plan.new_user_namespace())?;
    }
    sys.umask(0o022);
    Ok(())
}

fn create_device(sys: &dyn Syscall, rootfs: &Path, d: &DevicePlan, userns: bool) -> Result<()> {
    let host_path = in_root(rootfs, &d.path);
    if let Some(parent) = d.path.parent() {
        sys.prepare_target(rootfs, parent, FileKind::Dir)
            .map_err(|e| sys_err(format!("create {}", parent.display()), e))?;
    }
    let bind = |sys: &dyn Syscall| -> Result<()> {
        // In a user namespace mknod is not allowed: the host's node is bound instead.
        let t = sys
            .prepare_target(rootfs, &d.path, FileKind::File)
            .map_err(|e| sys_err(format!("create {}", d.path.display()), e))?;
        sys.mount(Some(&d.path), t.path(), None, MsFlags::MS_BIND, None)
            .map_err(|e| sys_err(format!("bind device {}", d.path.display()), e))
    };
    if userns {
        return bind(sys);
    }
    match sys.mknod(
        &host_path,
        d.kind,
        Mode::from_bits_truncate(d.mode),
        d.dev(),
    ) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(()),
        Err(Errno::EPERM) => return bind(sys),
        Err(e) => return Err(sys_err(format!("mknod {}", d.path.display()), e)),
    }
    sys.chown(&host_path, d.uid, d.gid)
        .map_err(|e| sys_err(format!("chown {}", d.path.display()), e))
}

fn dev_links(sys: &dyn Syscall, plan: &Plan) -> Result<()> {
    let rootfs = plan.rootfs.as_path();
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if sys.file_kind(Path::new("/proc/kcore")).is_ok() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    // Each container's devpts is a new instance; /dev/ptmx must be its ptmx, not the host's.
    // runc makes the link whether or not the spec mounts a devpts, and so do we.
    links.push(("pts/ptmx", "/dev/ptmx"));
    for (target, link) in links {
        match sys.symlink(Path::new(target), &in_root(rootfs, Path::new(link))) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sys_err(format!("symlink {link} -> {target}"), e)),
        }
    }
    Ok(())
}

/// Makes the rootfs `/`: pivot_root, or MS_MOVE + chroot when `no_pivot` (ramfs roots).
pub fn pivot(sys: &dyn Syscall, plan: &Plan, no_pivot: bool) -> Result<()> {
    let rootfs = plan.rootfs.as_path();
    let here = Path::new(".");
    sys.chdir(rootfs)
        .map_err(|e| sys_err(format!("chdir to rootfs {}", rootfs.display()), e))?;
    if no_pivot {
        sys.mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)
            .map_err(|e| sys_err(format!("move rootfs {} to /", rootfs.display()), e))?;
        sys.chroot(here)
            .map_err(|e| sys_err(format!("chroot to {}", rootfs.display()), e))?;
    } else {
        let old_root = sys
            .open_dir(Path::new("/"))
            .map_err(|e| sys_err("open the old root", e))?;
        // pivot_root(".", ".") stacks the old root on top of the new one at "/", so it can be
        // detached without a put_old directory in the image.
        sys.pivot_root(here, here)
            .map_err(|e| sys_err(format!("pivot_root to {}", rootfs.display()), e))?;
        // "." must name the old root, not the new root beneath it: the recursive slave below
        // would otherwise strip the propagation of the container's own mounts.
        sys.fchdir(old_root.as_fd())
            .map_err(|e| sys_err("fchdir to the old root", e))?;
        // The old root's mounts may be shared with the host: make them slaves before
        // detaching so the unmount does not propagate back.
        sys.mount(None, here, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
            .map_err(|e| sys_err("make the old root a slave mount", e))?;
        sys.umount2(here, MntFlags::MNT_DETACH)
            .map_err(|e| sys_err("detach the old root", e))?;
    }
    sys.chdir(Path::new("/"))
        .map_err(|e| sys_err("chdir to / in the new root", e))
}

/// After the pivot: read-only root, then read-only and masked paths.
pub fn finalize(sys: &dyn Syscall, plan: &Plan) -> Result<()> {
    if plan.readonly_root {
        let locked = sys.mount_flags(Path::new("/")).unwrap_or(MsFlags::empty());
        sys.mount(
            None,
            Path::new("/"),
            None,
            locked | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
        .map_err(|e| sys_err("remount / read-only", e))?;
    }
    for p in &plan.readonly_paths {
        match sys.file_kind(p) {
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(sys_err(format!("read-only path {}", p.display()), e)),
            Ok(_) => {}
        }
        sys.mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
            .map_err(|e| sys_err(format!("bind read-only path {}", p.display()), e))?;
        let locked = sys.mount_flags(p).unwrap_or(MsFlags::empty());
        sys.mount(
            None,
            p,
            None,
            locked | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None,
        )
        .map_err(|e| sys_err(format!("remount {} read-only", p.display()), e))?;
    }
    for p in &plan.masked_paths {
        match sys.file_kind(p) {
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(sys_err(format!("masked path {}", p.display()), e)),
            Ok(FileKind::Dir) => sys
                .mount(
                    Some(Path::new("tmpfs")),
                    p,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                )
                .map_err(|e| sys_err(format!("mask directory {}", p.display()), e))?,
            Ok(FileKind::File) => sys
                .mount(
                    Some(Path::new("/dev/null")),
                    p,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )
                .map_err(|e| sys_err(format!("mask {}", p.display()), e))?,
        }
    }
    Ok(())
}

/// Makes the directories `names` (single path components such as `proc`, `dev`: the top-level
/// targets of a spec's mounts that the image lacks) in a mounted rootfs, as the container's
/// init would: mode 0755, owned by the caller. A shim that mounts the rootfs itself makes
/// them while the runtime is still preparing the container, where the init would make them
/// one by one on its way to the first exec: each is a new inode in the upper layer, a few
/// hundred µs on some disks. Names with a `/` or that are `.` or `..` are skipped, and so is
/// anything already there (a symlink in the image stays as it is): the init deals with those.
/// Returns how many directories it made.
pub fn make_mount_points(rootfs: &Path, names: &[String]) -> usize {
    if names.is_empty() {
        return 0;
    }
    let Ok(root) = nix::fcntl::open(
        rootfs,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return 0;
    };
    names
        .iter()
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains('/'))
        // mkdirat does not follow a symlink in its last component.
        .filter(|n| {
            nix::sys::stat::mkdirat(root.as_fd(), n.as_str(), Mode::from_bits_truncate(0o755))
                .is_ok()
        })
        .count()
}

#[cfg(test)]
mod mount_point_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn makes_single_components_and_leaves_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(root.join("dev")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("run")).unwrap();
        let names = [
            "proc",
            "dev",
            "run",
            "../escape",
            "sys/fs",
            "..",
            ".",
            "",
            "sys",
        ];
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(make_mount_points(&root, &names), 2);
        let mut made: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        made.sort();
        assert_eq!(made, ["dev", "proc", "run", "sys"]);
        assert!(
            root.join("run").is_symlink(),
            "a symlink in the image is left alone"
        );
        assert!(!dir.path().join("escape").exists());
        assert!(!root.join("sys/fs").exists());
    }
}
