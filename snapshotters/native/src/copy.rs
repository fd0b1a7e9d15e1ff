//! Copying a snapshot's tree with everything a layer can carry.

use std::collections::HashMap;
use std::fs::{DirBuilder, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_core::{Error, Result};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Copies the tree at `src` into the existing directory `dst`, `src`'s own attributes
/// included.
///
/// Kept: contents, owners, permission bits (setuid, setgid and sticky too), access and
/// modification times to the nanosecond, extended attributes, hard links (as hard links within
/// the copy), symlinks (not followed), device nodes and fifos. Sockets are skipped: they mean
/// nothing without the process that bound them. Extended attributes the destination refuses
/// are skipped with a log line: `security.*` (SELinux labels and the like often cannot be set)
/// and `system.*` at debug level, others (`user.*`, `trusted.*` without privilege) at warn.
/// Directories get their times and modes after their contents are in, so neither a read-only
/// mode nor the act of filling them spoils them. Does not cross into other filesystems mounted
/// below `src`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let root = lstat(src)?;
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Directories in the order they were made; finished in reverse, so children come first.
    let mut made = vec![(src.to_path_buf(), dst.to_path_buf(), root.clone())];
    let mut pending = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((from_dir, to_dir)) = pending.pop() {
        let entries = std::fs::read_dir(&from_dir)
            .map_err(|e| Error::io(format!("copy: list {}", from_dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("copy: list {}", from_dir.display()), e))?;
            let from = entry.path();
            let to = to_dir.join(entry.file_name());
            let meta = lstat(&from)?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if meta.dev() != root.dev() {
                    tracing::debug!(path = %from.display(), "copy: not crossing into another filesystem");
                    continue;
                }
                DirBuilder::new()
                    .mode(0o700)
                    .create(&to)
                    .map_err(|e| Error::io(format!("copy: create {}", to.display()), e))?;
                made.push((from.clone(), to.clone(), meta));
                pending.push((from, to));
                continue;
            }
            if ft.is_socket() {
                tracing::debug!(path = %from.display(), "copy: skipping a socket");
                continue;
            }
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    std::fs::hard_link(first, &to).map_err(|e| {
                        Error::io(
                            format!("copy: link {} to {}", to.display(), first.display()),
                            e,
                        )
                    })?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), to.clone());
            }
            if ft.is_symlink() {
                let target = std::fs::read_link(&from)
                    .map_err(|e| Error::io(format!("copy: read link {}", from.display()), e))?;
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(|e| Error::io(format!("copy: create link {}", to.display()), e))?;
            } else if ft.is_file() {
                std::fs::copy(&from, &to).map_err(|e| {
                    Error::io(format!("copy: {} to {}", from.display(), to.display()), e)
                })?;
            } else {
                let kind = if ft.is_char_device() {
                    SFlag::S_IFCHR
                } else if ft.is_block_device() {
                    SFlag::S_IFBLK
                } else {
                    SFlag::S_IFIFO
                };
                nix::sys::stat::mknod(&to, kind, Mode::from_bits_truncate(0o600), meta.rdev())
                    .map_err(|e| {
                        Error::io(format!("copy: mknod {}", to.display()), io::Error::from(e))
                    })?;
            }
            apply_attributes(&from, &to, &meta)?;
        }
    }
    for (from, to, meta) in made.iter().rev() {
        apply_attributes(from, to, meta)?;
    }
    Ok(())
}

fn lstat(path: &Path) -> Result<Metadata> {
    std::fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("copy: stat {}", path.display()), e))
}

/// Owner first (chown clears setuid/setgid), then mode, extended attributes, times last.
fn apply_attributes(from: &Path, to: &Path, meta: &Metadata) -> Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| Error::io(format!("copy: chown {}", to.display()), e))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::io(format!("copy: chmod {}", to.display()), e))?;
    }
    copy_xattrs(from, to)?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| {
        Error::io(
            format!("copy: set times of {}", to.display()),
            io::Error::from(e),
        )
    })
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let names = match xattr::list(from) {
        Ok(names) => names,
        // A filesystem without extended attributes has none to copy.
        Err(e) if unsupported(&e) => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                format!("copy: list extended attributes of {}", from.display()),
                e,
            ));
        }
    };
    for name in names {
        let label = name.to_string_lossy().into_owned();
        let value = match xattr::get(from, &name) {
            Ok(Some(value)) => value,
            Ok(None) => continue,
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "copy: read extended attribute {label} of {}",
                        from.display()
                    ),
                    e,
                ));
            }
        };
        if let Err(e) = xattr::set(to, &name, &value) {
            let best_effort = label.starts_with("security.") || label.starts_with("system.");
            if best_effort {
                tracing::debug!(error = %e, attr = %label, path = %to.display(), "copy: extended attribute not kept");
            } else if unsupported(&e) || e.kind() == io::ErrorKind::PermissionDenied {
                tracing::warn!(error = %e, attr = %label, path = %to.display(), "copy: extended attribute not permitted here");
            } else {
                return Err(Error::io(
                    format!("copy: set extended attribute {label} on {}", to.display()),
                    e,
                ));
            }
        }
    }
    Ok(())
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::EOPNOTSUPP as i32)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn copies_everything_a_layer_carries() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        std::fs::create_dir_all(src.join("ro/inner")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("ro/inner/f"), "deep").unwrap();
        std::fs::write(src.join("file"), "content").unwrap();
        std::fs::hard_link(src.join("file"), src.join("ro/link")).unwrap();
        xattr::set(src.join("file"), "user.berth", b"u").unwrap();
        xattr::set(src.join("file"), "trusted.berth", b"t").unwrap();
        xattr::set(src.join("ro"), "user.dir", b"d").unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
        std::os::unix::fs::chown(&src, Some(42), Some(43)).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o711)).unwrap();
        // A directory that is read-only and has an old mtime must keep both after being filled.
        std::fs::set_permissions(src.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
        let old = TimeSpec::new(1_234_567_890, 42);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &src.join("ro"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        copy_tree(&src, &dst).unwrap();
        drop(sock);

        let m = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("ro/inner/f")).unwrap(),
            "deep"
        );
        assert_eq!(m("file").ino(), m("ro/link").ino());
        assert_eq!(
            xattr::get(dst.join("file"), "user.berth").unwrap().unwrap(),
            b"u"
        );
        assert_eq!(
            xattr::get(dst.join("file"), "trusted.berth")
                .unwrap()
                .unwrap(),
            b"t"
        );
        assert_eq!(
            xattr::get(dst.join("ro"), "user.dir").unwrap().unwrap(),
            b"d"
        );
        assert_eq!(
            std::fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nonexistent/target")
        );
        assert!(!dst.join("sock").exists(), "sockets are skipped");
        let root = m("");
        assert_eq!(
            (root.uid(), root.gid(), root.mode() & 0o7777),
            (42, 43, 0o711)
        );
        let ro = m("ro");
        assert_eq!(ro.mode() & 0o7777, 0o555);
        assert_eq!((ro.mtime(), ro.mtime_nsec()), (1_234_567_890, 42));
        assert_eq!((ro.atime(), ro.atime_nsec()), (1_234_567_890, 42));
    }

    #[test]
    fn missing_source_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let err = copy_tree(&tmp.path().join("nope"), tmp.path()).unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::NotFound);
    }
}
