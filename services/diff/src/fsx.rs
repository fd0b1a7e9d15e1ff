//! Path resolution and file operations relative to directory descriptors.
//!
//! Every path that comes from a layer is resolved with `openat2(2)` relative to the target's
//! root descriptor: either [`RESOLVE_IN_ROOT`](ResolveFlag::RESOLVE_IN_ROOT), so symlinks
//! (absolute ones and `..` included) resolve as if the root were `/`, or, for a single name
//! inside an already resolved directory, without following any symlink at all. The operation
//! itself is then an `*at` call on that directory with one name that has no `/`, `.` or `..`,
//! and never follows a symlink in that name. Nothing is ever resolved by joining strings onto
//! the root path.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Starts writing `len` bytes of `fd` from `offset` back to disk, without waiting. The apply
/// ends with one `syncfs`; started early, the writeback overlaps with decompressing and untarring
/// the rest of the layer instead of all of it waiting for that sync. A hint only: its errors
/// are ignored, the sync reports real ones.
pub(crate) fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads only its integer arguments and touches no memory of ours;
    // the descriptor is borrowed, so it stays open for the call.
    unsafe {
        libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Resolution as if `root` were `/`: symlinks and `..` can never leave it.
fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Resolution of one name that must not be a symlink (or, with `O_PATH | O_NOFOLLOW`, opens
/// the symlink itself).
fn no_symlinks() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS
}

/// Opens `path` (relative, `/`-separated, empty for the root itself) under `root`, following
/// symlinks as if `root` were `/`.
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    openat2(
        root,
        path,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(in_root()),
    )
}

/// Opens directory `path` under `root` (see [`open_in_root`]).
pub(crate) fn open_dir_in_root(root: BorrowedFd<'_>, path: &[u8]) -> nix::Result<OwnedFd> {
    open_in_root(root, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// Opens the entry `name` of `dir` without following it; with `O_PATH` a symlink opens as
/// itself, otherwise a symlink is `ELOOP`.
pub(crate) fn open_child(dir: BorrowedFd<'_>, name: &CStr, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2(
        dir,
        name,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(no_symlinks()),
    )
}

/// Opens `path` (relative, possibly several components, empty for `dir` itself) below `dir`
/// without following any symlink on the way; with `O_PATH` a final symlink opens as itself.
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    openat2(
        dir,
        path,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(no_symlinks()),
    )
}

/// Opens the directory `name` of `dir`; a symlink is `ELOOP`, never followed.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    open_child(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_child(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file type bits of a stat.
pub(crate) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Whether a stat is a directory.
pub(crate) fn is_dir(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFDIR
}

/// Whether a stat is an overlayfs whiteout: a character device 0/0.
pub(crate) fn is_whiteout(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// The names in directory `dir` (not `.` and `..`), sorted bytewise.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Vec<CString>> {
    // A fresh descriptor: the directory stream owns and moves its own offset.
    let mut stream = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Removes `name` from `dir` and, if it is a directory, everything below it. Never follows a
/// symlink: a symlink is removed as itself. A missing `name` is not an error.
///
/// Iterative, so a deep tree cannot exhaust the stack; it holds one descriptor per level.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<()> {
    if unlink_non_dir(dir, name)? {
        return Ok(());
    }
    struct Frame {
        fd: OwnedFd,
        pending: Vec<CString>,
        /// This directory's name in the frame below (the bottom frame's is `name` in `dir`).
        name: CString,
    }
    let fd = match open_child_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let pending = list_dir(fd.as_fd())?;
    let mut stack = vec![Frame {
        fd,
        pending,
        name: name.to_owned(),
    }];
    while let Some(top) = stack.last_mut() {
        match top.pending.pop() {
            Some(child) => {
                if unlink_non_dir(top.fd.as_fd(), &child)? {
                    continue;
                }
                let fd = match open_child_dir(top.fd.as_fd(), &child) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                let pending = list_dir(fd.as_fd())?;
                stack.push(Frame {
                    fd,
                    pending,
                    name: child,
                });
            }
            None => {
                let done = stack.pop();
                let parent = stack.last().map_or(dir, |f| f.fd.as_fd());
                if let Some(done) = done {
                    drop(done.fd);
                    match unlinkat(parent, done.name.as_c_str(), UnlinkatFlags::RemoveDir) {
                        Ok(()) | Err(Errno::ENOENT) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Unlinks `name` if it is not a directory; `Ok(true)` when it is gone (or was never there).
fn unlink_non_dir(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<bool> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(true),
        Err(Errno::EISDIR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A path that names the object behind `fd` itself: path-based calls that follow it land on
/// that object, even when it is a symlink opened with `O_PATH | O_NOFOLLOW`.
pub(crate) fn proc_fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// All extended attributes of the object behind `fd` (any file type), sorted by name.
pub(crate) fn read_xattrs(fd: &impl AsRawFd) -> std::io::Result<Vec<(CString, Vec<u8>)>> {
    let path = proc_fd_path(fd);
    let names = match xattr::list_deref(&path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get_deref(&path, &name)? {
            use std::os::unix::ffi::OsStrExt;
            // Listed names never hold NUL (the kernel separates them with it).
            if let Ok(name) = CString::new(name.as_bytes()) {
                out.push((name, value));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute on the object behind `fd` (any file type).
pub(crate) fn set_xattr(fd: &impl AsRawFd, name: &CStr, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::OsStr::from_bytes(name.to_bytes());
    xattr::set_deref(proc_fd_path(fd), name, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("d");
        fs::create_dir_all(d.join("a/b/c")).unwrap();
        fs::write(d.join("a/b/c/f"), b"y").unwrap();
        symlink(outside.path(), d.join("a/link")).unwrap();
        let fd = nix::fcntl::open(root.path(), OFlag::O_RDONLY, Mode::empty()).unwrap();
        remove_all_at(fd.as_fd(), c"d").unwrap();
        assert!(!d.exists());
        assert!(outside.path().join("keep").exists());
        remove_all_at(fd.as_fd(), c"missing").unwrap();
    }

    #[test]
    fn in_root_clamps_escapes() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        symlink("/", root.path().join("abs")).unwrap();
        symlink("../../..", root.path().join("up")).unwrap();
        let fd = nix::fcntl::open(root.path(), OFlag::O_RDONLY, Mode::empty()).unwrap();
        for path in [&b"abs/etc"[..], b"up/etc", b"/etc", b"../../etc"] {
            let d = open_dir_in_root(fd.as_fd(), path).unwrap();
            let st = nix::sys::stat::fstat(&d).unwrap();
            let want = fs::metadata(root.path().join("etc")).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(st.st_ino, want.ino(), "{}", String::from_utf8_lossy(path));
        }
        // A symlink is never followed: O_DIRECTORY | O_NOFOLLOW reports it as not a directory.
        let err = open_child_dir(fd.as_fd(), c"abs").unwrap_err();
        assert!(matches!(err, Errno::ELOOP | Errno::ENOTDIR), "{err}");
    }

    #[test]
    fn xattrs_on_symlinks_through_proc() {
        let root = tempfile::tempdir().unwrap();
        symlink("/nonexistent", root.path().join("s")).unwrap();
        let fd = nix::fcntl::open(root.path(), OFlag::O_RDONLY, Mode::empty()).unwrap();
        let link = open_child(fd.as_fd(), c"s", OFlag::O_PATH).unwrap();
        set_xattr(&link, c"trusted.test", b"v").unwrap();
        let got = read_xattrs(&link).unwrap();
        assert_eq!(got, vec![(c"trusted.test".to_owned(), b"v".to_vec())]);
        assert_eq!(
            xattr::get(root.path().join("s"), "trusted.test").unwrap(),
            Some(b"v".to_vec())
        );
    }
}
