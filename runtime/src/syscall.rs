//! The kernel edge: every call the container's init sequence makes.
//!
//! The init sequence takes a `&dyn Syscall` so that it can be run for real ([`LinuxSyscall`]) or
//! recorded ([`RecordingSyscall`]) by unit tests that check order and arguments without touching
//! the host. Methods return the bare [`Errno`]: the caller knows the step and the path and wraps
//! it into an error that names both.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};

use crate::capabilities::CapabilitySets;
use crate::rlimits::Rlimit;
use crate::seccomp::SeccompProgram;
use crate::spec::{IdMappings, MOUNT_ATTR_IDMAP, MountAttr, SchedAttr};

/// What kind of file a mount target must be (a bind mount of a file needs a file to land on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// Anything that is not a directory (regular file, device, socket...).
    File,
}

/// A mount target resolved inside the container's root: mount onto [`MountTarget::path`].
///
/// For real, the path is `/proc/self/fd/N` of an `O_PATH` descriptor opened with
/// `RESOLVE_IN_ROOT`, so a symlink in the image cannot redirect a mount outside the rootfs, and the
/// descriptor lives as long as this value.
#[derive(Debug)]
pub struct MountTarget {
    path: PathBuf,
    _fd: Option<OwnedFd>,
}

impl MountTarget {
    /// A target that is the path itself (for recording, or for paths the runtime made itself).
    pub fn plain(path: PathBuf) -> Self {
        MountTarget { path, _fd: None }
    }

    /// The path to give mount(2).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `*at` form of the target: its descriptor with an empty path, or the path itself.
    fn at(&self) -> (BorrowedFd<'_>, &Path) {
        match &self._fd {
            Some(fd) => (fd.as_fd(), Path::new("")),
            // SAFETY: AT_FDCWD is a valid "descriptor" for every *at call and is never closed.
            None => (
                unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) },
                &self.path,
            ),
        }
    }
}

/// `struct mount_attr` of mount_setattr(2) (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_setattr_raw(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    attr: &RawMountAttr,
) -> Result<(), Errno> {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `path` is NUL-terminated and `attr` points to a live struct of the size passed;
    // the kernel only reads both during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            flags | libc::AT_EMPTY_PATH,
            attr as *const RawMountAttr,
            std::mem::size_of::<RawMountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// The system calls of the init sequence.
pub trait Syscall {
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno>;
    /// setns(2) into the namespace `fd` refers to (opened from `/proc/PID/ns/*` or a bind mount
    /// of one, before any namespace was joined).
    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> Result<(), Errno>;
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    /// chroot(2).
    fn chroot(&self, path: &Path) -> Result<(), Errno>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> Result<(), Errno>;
    /// open(2) of a directory with `O_PATH`, to come back to it with [`Syscall::fchdir`].
    fn open_dir(&self, path: &Path) -> Result<OwnedFd, Errno>;
    /// fchdir(2).
    fn fchdir(&self, fd: BorrowedFd<'_>) -> Result<(), Errno>;
    /// Resolves `dest` inside `root` (symlinks stay in the root), creating what is missing: parent
    /// directories, then a directory or an empty file of `kind` at the end.
    fn prepare_target(
        &self,
        root: &Path,
        dest: &Path,
        kind: FileKind,
    ) -> Result<MountTarget, Errno>;
    /// Whether `path` is a directory (following symlinks); `ENOENT` when it does not exist.
    fn file_kind(&self, path: &Path) -> Result<FileKind, Errno>;
    /// The flags of the mount `path` is on (statvfs), to keep locked flags on a remount.
    fn mount_flags(&self, path: &Path) -> Result<MsFlags, Errno>;
    /// Whether `path` is a regular file the caller may execute.
    fn is_executable(&self, path: &Path) -> bool;
    /// mkdir -p with `mode` for the directories it makes.
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), Errno>;
    /// mknod(2).
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<(), Errno>;
    /// lchown(2).
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), Errno>;
    /// symlink(2): a link at `link` pointing to `target`.
    fn symlink(&self, target: &Path, link: &Path) -> Result<(), Errno>;
    /// Reads a whole (small) file: the container's /etc/passwd.
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, Errno>;
    /// Writes `data` to an existing file (sysctls, oom_score_adj).
    fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Errno>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> Result<(), Errno>;
    /// setdomainname(2).
    fn setdomainname(&self, name: &str) -> Result<(), Errno>;
    /// setgroups(2).
    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno>;
    /// setresgid(2) with all three ids set to `gid`.
    fn setresgid(&self, gid: u32) -> Result<(), Errno>;
    /// setresuid(2) with all three ids set to `uid`.
    fn setresuid(&self, uid: u32) -> Result<(), Errno>;
    /// umask(2).
    fn umask(&self, mask: u32);
    /// prctl(PR_SET_KEEPCAPS): keep the permitted set across the switch away from uid 0.
    fn set_keep_caps(&self, keep: bool) -> Result<(), Errno>;
    /// Drops from the bounding set everything outside `sets.bounding`.
    fn drop_bounding(&self, sets: &CapabilitySets) -> Result<(), Errno>;
    /// capset(2) of effective, permitted and inheritable, then raises the ambient set.
    fn set_capabilities(&self, sets: &CapabilitySets) -> Result<(), Errno>;
    /// setrlimit(2).
    fn setrlimit(&self, limit: &Rlimit) -> Result<(), Errno>;
    /// prctl(PR_SET_NO_NEW_PRIVS).
    fn set_no_new_privs(&self) -> Result<(), Errno>;
    /// seccomp(SECCOMP_SET_MODE_FILTER); returns the notify listener when the program asks for one.
    fn load_seccomp(&self, program: &SeccompProgram) -> Result<Option<OwnedFd>, Errno>;
    /// keyctl(KEYCTL_JOIN_SESSION_KEYRING): a new session keyring, so containers do not share
    /// the host's keys.
    fn join_session_keyring(&self) -> Result<(), Errno>;
    /// Marks every descriptor from `first` up close-on-exec, so only stdio and the descriptors
    /// the caller preserves reach the container's process.
    fn close_on_exec_from(&self, first: i32) -> Result<(), Errno>;
    /// execve(2) with a path already looked up.
    fn execve(&self, path: &CStr, args: &[CString], env: &[CString]) -> Result<Infallible, Errno>;
    /// mount_setattr(2) on the mount at `target` (its root), with `AT_RECURSIVE` when
    /// `recursive`: the `rro`, `rnosuid`... options.
    fn mount_setattr(
        &self,
        target: &MountTarget,
        attr: &MountAttr,
        recursive: bool,
    ) -> Result<(), Errno>;
    /// open_tree(2) with `OPEN_TREE_CLONE`: a detached copy of the mount at `path` (of its
    /// whole tree when `recursive`), as an idmapped mount starts.
    fn open_tree(&self, path: &Path, recursive: bool) -> Result<OwnedFd, Errno>;
    /// mount_setattr(2) of `MOUNT_ATTR_IDMAP` with the user namespace `userns` on a detached
    /// tree from [`Syscall::open_tree`] (every mount of it when `recursive`).
    fn idmap_tree(
        &self,
        tree: BorrowedFd<'_>,
        userns: BorrowedFd<'_>,
        recursive: bool,
    ) -> Result<(), Errno>;
    /// move_mount(2) of a detached tree onto `target`.
    fn move_mount(&self, tree: BorrowedFd<'_>, target: &MountTarget) -> Result<(), Errno>;
    /// A user namespace carrying `maps` (made by a short-lived child, which is reaped), as a
    /// `/proc/PID/ns/user` descriptor: the mapping of an idmapped mount with its own mappings.
    fn userns_with_mappings(&self, maps: &IdMappings) -> Result<OwnedFd, Errno>;
    /// personality(2).
    fn personality(&self, persona: u64) -> Result<(), Errno>;
    /// sched_setattr(2) of the calling thread.
    fn sched_setattr(&self, attr: &SchedAttr) -> Result<(), Errno>;
    /// ioprio_set(IOPRIO_WHO_PROCESS, 0, value).
    fn ioprio_set(&self, value: u16) -> Result<(), Errno>;
    /// rmdir(2) (a resctrl group).
    fn remove_dir(&self, path: &Path) -> Result<(), Errno>;
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl LinuxSyscall {
    fn open_in_root(root: &OwnedFd, rel: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(root.as_fd(), rel, how)
    }
}

impl Syscall for LinuxSyscall {
    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno> {
        nix::sched::unshare(flags)
    }

    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> Result<(), Errno> {
        nix::sched::setns(fd, nstype)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chroot(&self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chroot(path)
    }

    fn chdir(&self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn open_dir(&self, path: &Path) -> Result<OwnedFd, Errno> {
        nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    fn fchdir(&self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        nix::unistd::fchdir(fd)
    }

    fn prepare_target(
        &self,
        root: &Path,
        dest: &Path,
        kind: FileKind,
    ) -> Result<MountTarget, Errno> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let parts: Vec<&std::ffi::OsStr> = dest
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p),
                _ => None,
            })
            .collect();
        // Walk one component at a time so that every directory is created where the in-root
        // resolution of its parent really is, not where a naive join would put it.
        let mut rel = PathBuf::from(".");
        for (i, part) in parts.iter().enumerate() {
            rel.push(part);
            let last = i + 1 == parts.len();
            match Self::open_in_root(&root_fd, &rel, OFlag::O_PATH) {
                Ok(_) => continue,
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let parent = Self::open_in_root(
                &root_fd,
                rel.parent().unwrap_or(Path::new(".")),
                OFlag::O_PATH | OFlag::O_DIRECTORY,
            )?;
            if last && kind == FileKind::File {
                match nix::fcntl::openat(
                    parent.as_fd(),
                    *part,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                ) {
                    Ok(_) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
            } else {
                match nix::sys::stat::mkdirat(
                    parent.as_fd(),
                    *part,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let fd = Self::open_in_root(&root_fd, &rel, OFlag::O_PATH)?;
        Ok(MountTarget {
            path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            _fd: Some(fd),
        })
    }

    fn file_kind(&self, path: &Path) -> Result<FileKind, Errno> {
        let st = nix::sys::stat::stat(path)?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
            Ok(FileKind::Dir)
        } else {
            Ok(FileKind::File)
        }
    }

    fn mount_flags(&self, path: &Path) -> Result<MsFlags, Errno> {
        use nix::sys::statvfs::FsFlags;
        let st = nix::sys::statvfs::statvfs(path)?;
        let f = st.flags();
        let mut out = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                out |= ms;
            }
        }
        Ok(out)
    }

    fn is_executable(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
            Err(_) => false,
        }
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), Errno> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<(), Errno> {
        nix::sys::stat::mknod(path, kind, perm, dev)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), Errno> {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<(), Errno> {
        nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, link)
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, Errno> {
        std::fs::read(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Errno> {
        let fd = nix::fcntl::open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let n = nix::unistd::write(&fd, data)?;
        if n != data.len() {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn sethostname(&self, name: &str) -> Result<(), Errno> {
        nix::unistd::sethostname(name)
    }

    fn setdomainname(&self, name: &str) -> Result<(), Errno> {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        Errno::result(rc).map(drop)
    }

    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno> {
        // SAFETY: the pointer and length describe `gids`, a slice of gid_t-sized integers.
        let rc = unsafe { libc::setgroups(gids.len(), gids.as_ptr()) };
        Errno::result(rc).map(drop)
    }

    fn setresgid(&self, gid: u32) -> Result<(), Errno> {
        let g = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
    }

    fn setresuid(&self, uid: u32) -> Result<(), Errno> {
        let u = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
    }

    fn umask(&self, mask: u32) {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    }

    fn set_keep_caps(&self, keep: bool) -> Result<(), Errno> {
        nix::sys::prctl::set_keepcaps(keep)
    }

    fn drop_bounding(&self, sets: &CapabilitySets) -> Result<(), Errno> {
        crate::capabilities::drop_bounding(sets)
    }

    fn set_capabilities(&self, sets: &CapabilitySets) -> Result<(), Errno> {
        crate::capabilities::apply(sets)
    }

    fn setrlimit(&self, limit: &Rlimit) -> Result<(), Errno> {
        crate::rlimits::apply(limit)
    }

    fn set_no_new_privs(&self) -> Result<(), Errno> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn load_seccomp(&self, program: &SeccompProgram) -> Result<Option<OwnedFd>, Errno> {
        crate::seccomp::load(program)
    }

    fn join_session_keyring(&self) -> Result<(), Errno> {
        const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
        // SAFETY: a NULL name asks for a new anonymous keyring; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<libc::c_char>(),
            )
        };
        Errno::result(rc).map(drop)
    }

    fn close_on_exec_from(&self, first: i32) -> Result<(), Errno> {
        let first = u32::try_from(first).map_err(|_| Errno::EINVAL)?;
        // SAFETY: close_range only changes descriptor flags; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        Errno::result(rc).map(drop)
    }

    fn execve(&self, path: &CStr, args: &[CString], env: &[CString]) -> Result<Infallible, Errno> {
        nix::unistd::execve(path, args, env)
    }

    fn mount_setattr(
        &self,
        target: &MountTarget,
        attr: &MountAttr,
        recursive: bool,
    ) -> Result<(), Errno> {
        let (fd, path) = target.at();
        let raw = RawMountAttr {
            attr_set: attr.set,
            attr_clr: attr.clear,
            propagation: 0,
            userns_fd: 0,
        };
        let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
        mount_setattr_raw(fd, path, flags, &raw)
    }

    fn open_tree(&self, path: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
        const OPEN_TREE_CLONE: libc::c_uint = 1;
        let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
        let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        // SAFETY: `cpath` is NUL-terminated and outlives the call; no other memory is passed.
        let rc =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, cpath.as_ptr(), flags) };
        let fd = Errno::result(rc)?;
        let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
        // SAFETY: open_tree returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn idmap_tree(
        &self,
        tree: BorrowedFd<'_>,
        userns: BorrowedFd<'_>,
        recursive: bool,
    ) -> Result<(), Errno> {
        let raw = RawMountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: u64::try_from(userns.as_raw_fd()).map_err(|_| Errno::EBADF)?,
        };
        let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
        mount_setattr_raw(tree, Path::new(""), flags, &raw)
    }

    fn move_mount(&self, tree: BorrowedFd<'_>, target: &MountTarget) -> Result<(), Errno> {
        const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
        const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
        let (to_fd, to_path) = target.at();
        let to = CString::new(to_path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
        let mut flags = MOVE_MOUNT_F_EMPTY_PATH;
        if to_path.as_os_str().is_empty() {
            flags |= MOVE_MOUNT_T_EMPTY_PATH;
        }
        // SAFETY: both paths are NUL-terminated and outlive the call; the descriptors are live.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                to_fd.as_raw_fd(),
                to.as_ptr(),
                flags,
            )
        };
        Errno::result(rc).map(drop)
    }

    fn userns_with_mappings(&self, maps: &IdMappings) -> Result<OwnedFd, Errno> {
        crate::process::userns_with_mappings(maps)
    }

    fn personality(&self, persona: u64) -> Result<(), Errno> {
        let persona = libc::c_ulong::try_from(persona).map_err(|_| Errno::EINVAL)?;
        // SAFETY: personality only takes an integer.
        let rc = unsafe { libc::personality(persona) };
        Errno::result(rc).map(drop)
    }

    fn sched_setattr(&self, attr: &SchedAttr) -> Result<(), Errno> {
        // `struct sched_attr` as of SCHED_ATTR_SIZE_VER1 (with the utilization clamps).
        #[repr(C)]
        struct Raw {
            size: u32,
            sched_policy: u32,
            sched_flags: u64,
            sched_nice: i32,
            sched_priority: u32,
            sched_runtime: u64,
            sched_deadline: u64,
            sched_period: u64,
            sched_util_min: u32,
            sched_util_max: u32,
        }
        let raw = Raw {
            size: std::mem::size_of::<Raw>() as u32,
            sched_policy: attr.policy,
            sched_flags: attr.flags,
            sched_nice: attr.nice,
            sched_priority: attr.priority,
            sched_runtime: attr.runtime,
            sched_deadline: attr.deadline,
            sched_period: attr.period,
            sched_util_min: 0,
            sched_util_max: 1024,
        };
        // SAFETY: `raw` is a live struct whose `size` field says how much the kernel may read.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw as *const Raw, 0) };
        Errno::result(rc).map(drop)
    }

    fn ioprio_set(&self, value: u16) -> Result<(), Errno> {
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        // SAFETY: ioprio_set only takes integers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0,
                libc::c_int::from(value),
            )
        };
        Errno::result(rc).map(drop)
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Errno> {
        std::fs::remove_dir(path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}

/// One recorded call, with owned arguments so tests can compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// unshare(flags).
    Unshare(CloneFlags),
    /// setns(type).
    Setns(CloneFlags),
    /// mount(source, target, fstype, flags, data).
    Mount {
        /// Source.
        source: Option<PathBuf>,
        /// Target.
        target: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Data (options).
        data: Option<String>,
    },
    /// umount2(target, flags).
    Umount(PathBuf, MntFlags),
    /// pivot_root(new_root, put_old).
    PivotRoot(PathBuf, PathBuf),
    /// chroot(path).
    Chroot(PathBuf),
    /// chdir(path).
    Chdir(PathBuf),
    /// open(path, O_PATH | O_DIRECTORY).
    OpenDir(PathBuf),
    /// fchdir(fd) (to a directory opened earlier).
    Fchdir,
    /// prepare_target(root, dest, kind).
    PrepareTarget(PathBuf, PathBuf, FileKind),
    /// mkdir -p (path, mode).
    MkdirAll(PathBuf, u32),
    /// mknod(path, kind, perm, dev).
    Mknod(PathBuf, SFlag, Mode, u64),
    /// lchown(path, uid, gid).
    Chown(PathBuf, u32, u32),
    /// symlink(target, link).
    Symlink(PathBuf, PathBuf),
    /// write(path, data).
    WriteFile(PathBuf, Vec<u8>),
    /// sethostname(name).
    Sethostname(String),
    /// setdomainname(name).
    Setdomainname(String),
    /// setgroups(gids).
    Setgroups(Vec<u32>),
    /// setresgid(gid).
    Setresgid(u32),
    /// setresuid(uid).
    Setresuid(u32),
    /// umask(mask).
    Umask(u32),
    /// prctl(PR_SET_KEEPCAPS, keep).
    SetKeepCaps(bool),
    /// Bounding set reduced to this mask.
    DropBounding(u64),
    /// capset + ambient.
    SetCapabilities(CapabilitySets),
    /// setrlimit.
    Setrlimit(Rlimit),
    /// prctl(PR_SET_NO_NEW_PRIVS).
    SetNoNewPrivs,
    /// seccomp filter loaded (program length in instructions).
    LoadSeccomp(usize),
    /// keyctl(KEYCTL_JOIN_SESSION_KEYRING).
    JoinSessionKeyring,
    /// Not a call: a marker a test placed with [`RecordingSyscall::mark`].
    Mark(String),
    /// close_range(first, ~0, CLOSE_RANGE_CLOEXEC).
    CloseOnExecFrom(i32),
    /// execve(path, args, env).
    Execve(String, Vec<String>, Vec<String>),
    /// mount_setattr(target, set, clear, AT_RECURSIVE?).
    MountSetattr {
        /// The mount's path.
        target: PathBuf,
        /// `attr_set`.
        set: u64,
        /// `attr_clr`.
        clear: u64,
        /// `AT_RECURSIVE`.
        recursive: bool,
    },
    /// open_tree(path, OPEN_TREE_CLONE [| AT_RECURSIVE]).
    OpenTree(PathBuf, bool),
    /// mount_setattr(tree, MOUNT_ATTR_IDMAP, userns) [AT_RECURSIVE].
    IdmapTree(bool),
    /// move_mount(tree, target).
    MoveMount(PathBuf),
    /// A user namespace made with these mappings.
    UsernsWithMappings(IdMappings),
    /// personality(persona).
    Personality(u64),
    /// sched_setattr(attr).
    SchedSetattr(SchedAttr),
    /// ioprio_set(value).
    IoprioSet(u16),
    /// rmdir(path).
    RemoveDir(PathBuf),
}

/// Records calls instead of making them; `fail` makes one kind of call fail with an errno.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
    failures: RefCell<HashMap<&'static str, Errno>>,
    kinds: RefCell<HashMap<PathBuf, FileKind>>,
    missing: RefCell<Vec<PathBuf>>,
    files: RefCell<HashMap<PathBuf, Vec<u8>>>,
}

impl RecordingSyscall {
    /// An empty recorder: every call succeeds, every path is a directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call named `call` (the [`Call`] variant's name, e.g. "Mount") fail with `errno`.
    pub fn fail(&self, call: &'static str, errno: Errno) {
        self.failures.borrow_mut().insert(call, errno);
    }

    /// Tells [`Syscall::file_kind`] what `path` is (default: a directory).
    pub fn set_kind(&self, path: impl Into<PathBuf>, kind: FileKind) {
        self.kinds.borrow_mut().insert(path.into(), kind);
    }

    /// Makes `path` missing: [`Syscall::file_kind`] answers ENOENT, it is not executable.
    pub fn set_missing(&self, path: impl Into<PathBuf>) {
        self.missing.borrow_mut().push(path.into());
    }

    /// Gives [`Syscall::read_file`] the contents of `path`.
    pub fn set_file(&self, path: impl Into<PathBuf>, data: &[u8]) {
        self.files.borrow_mut().insert(path.into(), data.to_vec());
    }

    /// Records a marker (a test's fake handshake uses it to show where its steps fall).
    pub fn mark(&self, label: &str) {
        self.calls.borrow_mut().push(Call::Mark(label.to_owned()));
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    fn record(&self, name: &'static str, call: Call) -> Result<(), Errno> {
        self.calls.borrow_mut().push(call);
        match self.failures.borrow().get(name) {
            Some(e) => Err(*e),
            None => Ok(()),
        }
    }
}

impl Syscall for RecordingSyscall {
    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno> {
        self.record("Unshare", Call::Unshare(flags))
    }

    fn setns(&self, _fd: BorrowedFd<'_>, nstype: CloneFlags) -> Result<(), Errno> {
        self.record("Setns", Call::Setns(nstype))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        self.record(
            "Mount",
            Call::Mount {
                source: source.map(Path::to_path_buf),
                target: target.to_path_buf(),
                fstype: fstype.map(str::to_owned),
                flags,
                data: data.map(str::to_owned),
            },
        )
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        self.record("Umount", Call::Umount(target.to_path_buf(), flags))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        self.record(
            "PivotRoot",
            Call::PivotRoot(new_root.to_path_buf(), put_old.to_path_buf()),
        )
    }

    fn chroot(&self, path: &Path) -> Result<(), Errno> {
        self.record("Chroot", Call::Chroot(path.to_path_buf()))
    }

    fn chdir(&self, path: &Path) -> Result<(), Errno> {
        self.record("Chdir", Call::Chdir(path.to_path_buf()))
    }

    fn open_dir(&self, path: &Path) -> Result<OwnedFd, Errno> {
        self.record("OpenDir", Call::OpenDir(path.to_path_buf()))?;
        // A real, harmless descriptor so the caller has something to hold.
        nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    fn fchdir(&self, _fd: BorrowedFd<'_>) -> Result<(), Errno> {
        self.record("Fchdir", Call::Fchdir)
    }

    fn prepare_target(
        &self,
        root: &Path,
        dest: &Path,
        kind: FileKind,
    ) -> Result<MountTarget, Errno> {
        self.record(
            "PrepareTarget",
            Call::PrepareTarget(root.to_path_buf(), dest.to_path_buf(), kind),
        )?;
        let rel = dest.strip_prefix("/").unwrap_or(dest);
        Ok(MountTarget::plain(root.join(rel)))
    }

    fn file_kind(&self, path: &Path) -> Result<FileKind, Errno> {
        if self.missing.borrow().iter().any(|p| p == path) {
            return Err(Errno::ENOENT);
        }
        Ok(self
            .kinds
            .borrow()
            .get(path)
            .copied()
            .unwrap_or(FileKind::Dir))
    }

    fn mount_flags(&self, _path: &Path) -> Result<MsFlags, Errno> {
        Ok(MsFlags::empty())
    }

    fn is_executable(&self, path: &Path) -> bool {
        !self.missing.borrow().iter().any(|p| p == path)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), Errno> {
        self.record("MkdirAll", Call::MkdirAll(path.to_path_buf(), mode))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<(), Errno> {
        self.record("Mknod", Call::Mknod(path.to_path_buf(), kind, perm, dev))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), Errno> {
        self.record("Chown", Call::Chown(path.to_path_buf(), uid, gid))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<(), Errno> {
        self.record(
            "Symlink",
            Call::Symlink(target.to_path_buf(), link.to_path_buf()),
        )
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, Errno> {
        self.files.borrow().get(path).cloned().ok_or(Errno::ENOENT)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), Errno> {
        self.record(
            "WriteFile",
            Call::WriteFile(path.to_path_buf(), data.to_vec()),
        )
    }

    fn sethostname(&self, name: &str) -> Result<(), Errno> {
        self.record("Sethostname", Call::Sethostname(name.to_owned()))
    }

    fn setdomainname(&self, name: &str) -> Result<(), Errno> {
        self.record("Setdomainname", Call::Setdomainname(name.to_owned()))
    }

    fn setgroups(&self, gids: &[u32]) -> Result<(), Errno> {
        self.record("Setgroups", Call::Setgroups(gids.to_vec()))
    }

    fn setresgid(&self, gid: u32) -> Result<(), Errno> {
        self.record("Setresgid", Call::Setresgid(gid))
    }

    fn setresuid(&self, uid: u32) -> Result<(), Errno> {
        self.record("Setresuid", Call::Setresuid(uid))
    }

    fn umask(&self, mask: u32) {
        self.calls.borrow_mut().push(Call::Umask(mask));
    }

    fn set_keep_caps(&self, keep: bool) -> Result<(), Errno> {
        self.record("SetKeepCaps", Call::SetKeepCaps(keep))
    }

    fn drop_bounding(&self, sets: &CapabilitySets) -> Result<(), Errno> {
        self.record("DropBounding", Call::DropBounding(sets.bounding))
    }

    fn set_capabilities(&self, sets: &CapabilitySets) -> Result<(), Errno> {
        self.record("SetCapabilities", Call::SetCapabilities(sets.clone()))
    }

    fn setrlimit(&self, limit: &Rlimit) -> Result<(), Errno> {
        self.record("Setrlimit", Call::Setrlimit(limit.clone()))
    }

    fn set_no_new_privs(&self) -> Result<(), Errno> {
        self.record("SetNoNewPrivs", Call::SetNoNewPrivs)
    }

    fn load_seccomp(&self, program: &SeccompProgram) -> Result<Option<OwnedFd>, Errno> {
        self.record("LoadSeccomp", Call::LoadSeccomp(program.len()))?;
        if !program.uses_notify() {
            return Ok(None);
        }
        // A stand-in for the listener, so the hand-over can be followed.
        nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(Some)
    }

    fn join_session_keyring(&self) -> Result<(), Errno> {
        self.record("JoinSessionKeyring", Call::JoinSessionKeyring)
    }

    fn close_on_exec_from(&self, first: i32) -> Result<(), Errno> {
        self.record("CloseOnExecFrom", Call::CloseOnExecFrom(first))
    }

    fn execve(&self, path: &CStr, args: &[CString], env: &[CString]) -> Result<Infallible, Errno> {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        self.record(
            "Execve",
            Call::Execve(
                path.to_string_lossy().into_owned(),
                args.iter().map(s).collect(),
                env.iter().map(s).collect(),
            ),
        )?;
        // A recorded exec "returns" with an error so the caller's flow ends as it would.
        Err(Errno::ENOSYS)
    }

    fn mount_setattr(
        &self,
        target: &MountTarget,
        attr: &MountAttr,
        recursive: bool,
    ) -> Result<(), Errno> {
        self.record(
            "MountSetattr",
            Call::MountSetattr {
                target: target.path().to_path_buf(),
                set: attr.set,
                clear: attr.clear,
                recursive,
            },
        )
    }

    fn open_tree(&self, path: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
        self.record("OpenTree", Call::OpenTree(path.to_path_buf(), recursive))?;
        // A real, harmless descriptor so the caller has something to pass on.
        nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    fn idmap_tree(
        &self,
        _tree: BorrowedFd<'_>,
        _userns: BorrowedFd<'_>,
        recursive: bool,
    ) -> Result<(), Errno> {
        self.record("IdmapTree", Call::IdmapTree(recursive))
    }

    fn move_mount(&self, _tree: BorrowedFd<'_>, target: &MountTarget) -> Result<(), Errno> {
        self.record("MoveMount", Call::MoveMount(target.path().to_path_buf()))
    }

    fn userns_with_mappings(&self, maps: &IdMappings) -> Result<OwnedFd, Errno> {
        self.record("UsernsWithMappings", Call::UsernsWithMappings(maps.clone()))?;
        nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    fn personality(&self, persona: u64) -> Result<(), Errno> {
        self.record("Personality", Call::Personality(persona))
    }

    fn sched_setattr(&self, attr: &SchedAttr) -> Result<(), Errno> {
        self.record("SchedSetattr", Call::SchedSetattr(*attr))
    }

    fn ioprio_set(&self, value: u16) -> Result<(), Errno> {
        self.record("IoprioSet", Call::IoprioSet(value))
    }

    fn remove_dir(&self, path: &Path) -> Result<(), Errno> {
        self.record("RemoveDir", Call::RemoveDir(path.to_path_buf()))
    }
}
