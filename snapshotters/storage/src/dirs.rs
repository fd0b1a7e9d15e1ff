//! The `<root>/snapshots` directory: one subdirectory per snapshot id, plus temporary
//! directories for snapshots being made.
//!
//! The discipline that keeps the directory and the metastore in step across crashes:
//! - A snapshot's directory is built under a temporary name ([`SnapshotDirs::temp`]) and renamed
//!   to its id ([`TempDir::install`]) inside the write transaction that records it, so the store
//!   never knows a snapshot whose directory is half-made.
//! - A crash (or a failed commit) after the rename leaves a directory whose id the store does
//!   not know; ids only grow once committed, so such an id can be handed out again only by the
//!   very next create, which replaces the stale directory. [`SnapshotDirs::orphans`] finds the
//!   rest for Cleanup.
//! - Removal deletes the record first and the directory after; a crash in between leaves an
//!   orphan, never a record without its files. The directory is renamed aside at once and
//!   deleted on a background thread ([`SnapshotDirs::discard`]), so a remove does not wait for
//!   the unlinks of a container's whole upper directory.

use std::collections::{BTreeSet, HashSet};
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use berth_core::{Error, Result};

/// Prefix of temporary directories; anything with it is an orphan unless in flight.
const TEMP_PREFIX: &str = "new-";
/// Prefix of removed snapshots' directories waiting for deletion; orphans unless in flight.
const DISCARD_PREFIX: &str = "rm-";

/// The directory holding every snapshot's directory.
#[derive(Debug)]
pub struct SnapshotDirs {
    dir: PathBuf,
    // Temporary directories being filled, and discarded ones being deleted, right now, which
    // Cleanup must leave alone. Only one process can use a root (the metastore's file lock),
    // so an in-memory set is enough.
    in_flight: Arc<Mutex<HashSet<PathBuf>>>,
}

impl SnapshotDirs {
    /// Uses (creating it, mode 0700, if needed) `dir` as the snapshots directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create snapshots directory {}", dir.display()), e))?;
        Ok(Self {
            dir,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The snapshots directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of snapshot `id`.
    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// A new empty temporary directory (mode 0700) in the snapshots directory, which Cleanup
    /// leaves alone while the returned guard lives and which the guard deletes on drop unless
    /// it was installed.
    pub fn temp(&self) -> Result<TempDir<'_>> {
        loop {
            let path = self
                .dir
                .join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
            // Registered before it exists, so a concurrent Cleanup can never see it unclaimed.
            if !self.lock().insert(path.clone()) {
                continue;
            }
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(TempDir {
                        dirs: self,
                        path,
                        installed: false,
                    });
                }
                Err(e) => {
                    self.lock().remove(&path);
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(Error::io(
                            format!("create temporary directory {}", path.display()),
                            e,
                        ));
                    }
                }
            }
        }
    }

    /// Entries of the snapshots directory that belong to no snapshot in `known` and to no
    /// temporary directory in flight: crash leftovers, failed creates, removals that could not
    /// delete their files. Run it inside a write transaction, so no create can install a
    /// directory between the id scan and this one.
    pub fn orphans(&self, known: &BTreeSet<u64>) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            Error::io(
                format!("list snapshots directory {}", self.dir.display()),
                e,
            )
        })?;
        let in_flight = self.lock().clone();
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::io(
                    format!("list snapshots directory {}", self.dir.display()),
                    e,
                )
            })?;
            let path = entry.path();
            let live = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
                .is_some_and(|id| known.contains(&id));
            if !live && !in_flight.contains(&path) {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes a removed snapshot's directory `path` without making the caller wait: renames
    /// it aside at once and deletes it on a background thread (Cleanup leaves it alone
    /// meanwhile). If the rename fails it is deleted here; if the deletion fails, or the
    /// process ends first, the renamed directory is an orphan for Cleanup.
    pub fn discard(&self, path: &Path) -> Result<()> {
        let aside = loop {
            let aside = self
                .dir
                .join(format!("{DISCARD_PREFIX}{:016x}", rand::random::<u64>()));
            if self.lock().insert(aside.clone()) {
                break aside;
            }
        };
        if let Err(e) = std::fs::rename(path, &aside) {
            self.lock().remove(&aside);
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(());
            }
            tracing::debug!(error = %e, "rename {} aside; deleting it in place", path.display());
            return self.delete(path);
        }
        let in_flight = Arc::clone(&self.in_flight);
        let spawned = std::thread::Builder::new()
            .name("snapshot-rm".into())
            .spawn({
                let aside = aside.clone();
                move || {
                    if let Err(e) = delete_path(&aside) {
                        tracing::warn!(error = %e, "deleting a removed snapshot; cleanup will retry");
                    }
                    in_flight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&aside);
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no thread to delete {} on; deleting it here", aside.display());
            let res = self.delete(&aside);
            self.lock().remove(&aside);
            return res;
        }
        Ok(())
    }

    /// Deletes `path` (a directory or a stray file) and everything below it; a missing path is
    /// fine.
    pub fn delete(&self, path: &Path) -> Result<()> {
        delete_path(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Deletes `path` and everything below it; a missing path is fine.
fn delete_path(path: &Path) -> Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("delete {}", path.display()), e)),
    }
}

/// A temporary directory being made into a snapshot's directory.
#[derive(Debug)]
pub struct TempDir<'a> {
    dirs: &'a SnapshotDirs,
    path: PathBuf,
    installed: bool,
}

impl TempDir<'_> {
    /// Where to build the snapshot's files.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to snapshot `id`'s name. Call it inside the write transaction
    /// that records `id`. A directory already there belongs to no snapshot (ids are fresh when
    /// created) and is replaced. After this the guard no longer deletes anything: if the
    /// transaction then fails, the directory is an orphan for Cleanup or the next create.
    pub fn install(&mut self, id: u64) -> Result<PathBuf> {
        let dst = self.dirs.path(id);
        if std::fs::symlink_metadata(&dst).is_ok() {
            tracing::warn!(path = %dst.display(), "replacing a leftover snapshot directory");
            self.dirs.delete(&dst)?;
        }
        std::fs::rename(&self.path, &dst).map_err(|e| {
            Error::io(
                format!("rename {} to {}", self.path.display(), dst.display()),
                e,
            )
        })?;
        self.installed = true;
        Ok(dst)
    }
}

impl Drop for TempDir<'_> {
    fn drop(&mut self) {
        let unused = if self.installed {
            Ok(())
        } else {
            self.dirs.delete(&self.path)
        };
        if let Err(e) = unused {
            tracing::warn!(error = %e, "removing an unused temporary snapshot directory");
        }
        self.dirs.lock().remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_skipped_while_in_flight_and_removed_after() {
        let root = tempfile::tempdir().unwrap();
        let dirs = SnapshotDirs::open(root.path().join("snapshots")).unwrap();
        std::fs::create_dir(dirs.path(1)).unwrap();
        std::fs::create_dir(dirs.path(2)).unwrap();
        std::fs::create_dir(dirs.dir().join("new-leftover")).unwrap();
        std::fs::write(dirs.dir().join("stray"), b"x").unwrap();

        let temp = dirs.temp().unwrap();
        assert!(temp.path().is_dir());
        let known = BTreeSet::from([1]);
        let orphans = dirs.orphans(&known).unwrap();
        assert_eq!(
            orphans,
            vec![
                dirs.path(2),
                dirs.dir().join("new-leftover"),
                dirs.dir().join("stray")
            ]
        );
        let path = temp.path().to_path_buf();
        drop(temp);
        assert!(!path.exists());
        for o in &orphans {
            dirs.delete(o).unwrap();
        }
        dirs.delete(&dirs.dir().join("missing")).unwrap();
        assert!(dirs.orphans(&known).unwrap().is_empty());
        assert!(dirs.path(1).is_dir());
    }

    #[test]
    fn install_replaces_stale_directory() {
        let root = tempfile::tempdir().unwrap();
        let dirs = SnapshotDirs::open(root.path().join("snapshots")).unwrap();
        std::fs::create_dir(dirs.path(7)).unwrap();
        std::fs::write(dirs.path(7).join("stale"), b"x").unwrap();
        let mut temp = dirs.temp().unwrap();
        std::fs::write(temp.path().join("fresh"), b"y").unwrap();
        let dst = temp.install(7).unwrap();
        drop(temp);
        assert!(dst.join("fresh").is_file());
        assert!(!dst.join("stale").exists());
        assert!(dirs.orphans(&BTreeSet::from([7])).unwrap().is_empty());
    }
}
