//! Disk usage of a snapshot's directory tree.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_core::snapshots::Usage;
use berth_core::{Error, Result};

/// The disk used by the tree at `root`, `root` included, without following symlinks or
/// crossing into anything mounted below it.
///
/// Size counts **allocated blocks** (`st_blocks` × 512), not file lengths, of every distinct
/// inode — files, directories, symlinks, whiteout devices — as containerd's `fs.DiskUsage`
/// does: it is what the snapshot costs the disk, and sparse files count what they use. Inodes
/// counts distinct inodes, so hard links count once. Entries that vanish during the walk are
/// skipped: usage of a live active snapshot is a moment's estimate.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let meta = std::fs::symlink_metadata(root)
        .map_err(|e| Error::io(format!("measure usage of {}", root.display()), e))?;
    let dev = meta.dev();
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut count = |meta: &std::fs::Metadata, usage: &mut Usage| {
        if seen.insert((meta.dev(), meta.ino())) {
            usage.add(Usage {
                size: meta.blocks().saturating_mul(512),
                inodes: 1,
            });
        }
    };
    count(&meta, &mut usage);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("measure usage: read directory {}", dir.display()),
                    e,
                ));
            }
        };
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::io(
                    format!("measure usage: read directory {}", dir.display()),
                    e,
                )
            })?;
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("measure usage: stat {}", path.display()),
                        e,
                    ));
                }
            };
            count(&meta, &mut usage);
            if meta.is_dir() && meta.dev() == dev {
                stack.push(path);
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_and_hardlinks_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/file"), vec![7u8; 100_000]).unwrap();
        std::fs::hard_link(root.join("d/file"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("d/file", root.join("sym")).unwrap();
        // A sparse file: 10 MB long, a few bytes allocated.
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(10_000_000).unwrap();

        let usage = disk_usage(root).unwrap();
        // root, d, file (= link), sym, sparse
        assert_eq!(usage.inodes, 5);
        assert!(usage.size >= 100_000, "{usage:?}");
        assert!(
            usage.size < 200_000,
            "hard link or sparse file over-counted: {usage:?}"
        );
    }

    #[test]
    fn missing_root_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = disk_usage(&dir.path().join("nope")).unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::NotFound);
    }
}
