//! Berth's copy-based snapshotter, like containerd's `native`: it works on any filesystem
//! because it needs nothing but directories and bind mounts.
//!
//! Layout under the root:
//! - `metadata.redb`: the metastore ([`berth_snapshot_storage::MetaStore`]).
//! - `snapshots/<id>`: the snapshot's whole tree.
//!
//! Prepare on a parent copies the parent's tree into the new snapshot's directory (see
//! [`copy::copy_tree`] for what is kept), so every active snapshot is a complete, independent
//! filesystem. Views are the exception, as in containerd: a committed parent never changes, so
//! a view of it is a read-only bind of the parent's own directory and costs no copy; a view
//! without a parent gets an empty directory of its own.
//!
//! Mounts are single bind mounts: `["rw","rbind"]` of the snapshot's directory for an active
//! snapshot, `["ro","rbind"]` for a view.

pub mod copy;

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_core::filters::Filters;
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::snapshots::{Info, Kind, Snapshotter, Usage, check_key};
use berth_core::{Error, ErrorKind, Result};
use berth_snapshot_storage::dirs::SnapshotDirs;
use berth_snapshot_storage::{MetaStore, Snapshot, disk_usage};

/// The native snapshotter rooted at one directory.
#[derive(Debug)]
pub struct NativeSnapshotter {
    root: PathBuf,
    store: MetaStore,
    dirs: SnapshotDirs,
}

impl NativeSnapshotter {
    /// Opens (creating if needed, mode 0700) the snapshotter at `root`. Fails if another
    /// process holds it open.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| {
                Error::io(
                    format!("create native snapshotter root {}", root.display()),
                    e,
                )
            })?;
        let root = root.canonicalize().map_err(|e| {
            Error::io(
                format!("resolve native snapshotter root {}", root.display()),
                e,
            )
        })?;
        if root.to_str().is_none() {
            return Err(Error::invalid_argument(format!(
                "native snapshotter root {} must be UTF-8: mount sources are strings",
                root.display()
            )));
        }
        let dirs = SnapshotDirs::open(root.join("snapshots"))?;
        let store = MetaStore::open(root.join("metadata.redb"))?;
        Ok(Self { root, store, dirs })
    }

    /// The snapshotter's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let (id, read_only) = match (s.kind, s.parent_ids.first()) {
            (Kind::View, Some(&parent)) => (parent, true),
            (kind, _) => (s.id, kind == Kind::View),
        };
        vec![Mount::bind(self.dirs.path(id).to_string_lossy(), read_only)]
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        let parent = parent.filter(|p| !p.is_empty());
        let mut temp = None;
        let mut copied_from = None;
        if kind == Kind::Active || parent.is_none() {
            let dir = self.dirs.temp()?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(format!("chmod {}", dir.path().display()), e))?;
            if let Some(name) = parent {
                // Copying can take long, so it happens before the write transaction, which
                // then checks the parent is still the one copied.
                if let Some(pid) = self.copyable_parent(key, name)? {
                    copy::copy_tree(&self.dirs.path(pid), dir.path())
                        .map_err(|e| e.context(format!("copy parent {name:?}")))?;
                    copied_from = Some(pid);
                }
            }
            temp = Some(dir);
        }
        self.store
            .write(|tx| {
                let s = tx.create(kind, key, parent, labels)?;
                if let Some(dir) = temp.as_mut() {
                    if s.parent_ids.first().copied() != copied_from {
                        return Err(Error::unavailable(format!(
                            "parent {parent:?} changed while it was being copied; try again"
                        )));
                    }
                    dir.install(s.id)?;
                }
                Ok(self.mounts_for(&s))
            })
            .map_err(|e| {
                let verb = if kind == Kind::View {
                    "view"
                } else {
                    "prepare"
                };
                e.context(format!("{verb} snapshot {key:?}"))
            })
    }

    /// The id of `parent` when a create of `key` on it could succeed; `None` when the write
    /// transaction is going to refuse it anyway (and will say why), so nothing is copied in
    /// vain.
    fn copyable_parent(&self, key: &str, parent: &str) -> Result<Option<u64>> {
        self.store.read(|tx| {
            let entry = match tx.get(parent) {
                Ok(entry) => entry,
                Err(e) if e.is(ErrorKind::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            match tx.get(key) {
                Ok(_) => return Ok(None),
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
            Ok((entry.info.kind == Kind::Committed).then_some(entry.id))
        })
    }
}

impl Snapshotter for NativeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        self.store.read(|tx| tx.get(key)).map(|e| e.info)
    }

    fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        self.store.write(|tx| tx.update(&info, paths))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let entry = self.store.read(|tx| tx.get(key))?;
        match entry.info.kind {
            Kind::Active => disk_usage(&self.dirs.path(entry.id)),
            _ => Ok(entry.usage),
        }
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self.store.read(|tx| tx.snapshot(key))?;
        Ok(self.mounts_for(&s))
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        berth_snapshot_storage::commit(&self.store, key, name, labels, |id| self.dirs.path(id))
    }

    fn remove(&self, key: &str) -> Result<()> {
        berth_snapshot_storage::remove(&self.store, &self.dirs, key)
    }

    fn list(&self, filters: &Filters) -> Result<Vec<Info>> {
        self.store.read(|tx| tx.list(filters))
    }

    fn cleanup(&self) -> Result<()> {
        berth_snapshot_storage::cleanup(&self.store, &self.dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, NativeSnapshotter) {
        let dir = tempfile::tempdir().unwrap();
        let sn = NativeSnapshotter::open(dir.path().join("native")).unwrap();
        (dir, sn)
    }

    fn path(sn: &NativeSnapshotter, id: u64) -> String {
        format!("{}/snapshots/{id}", sn.root().display())
    }

    #[test]
    fn mounts_are_binds() {
        let (_d, sn) = open();
        let m = sn.prepare("k", None, Labels::new()).unwrap();
        assert_eq!(m, vec![Mount::bind(path(&sn, 1), false)]);
        assert_eq!(m[0].options, ["rw", "rbind"]);
        std::fs::write(format!("{}/f", path(&sn, 1)), "x").unwrap();
        sn.commit("c", "k", Labels::new()).unwrap();

        let m = sn.prepare("child", Some("c"), Labels::new()).unwrap();
        assert_eq!(m, vec![Mount::bind(path(&sn, 2), false)]);
        assert_eq!(
            std::fs::read_to_string(format!("{}/f", path(&sn, 2))).unwrap(),
            "x"
        );

        // A view of a parent binds the parent itself, read-only, and copies nothing.
        let m = sn.view("v", Some("c"), Labels::new()).unwrap();
        assert_eq!(m, vec![Mount::bind(path(&sn, 1), true)]);
        assert!(!Path::new(&path(&sn, 3)).exists());
        assert_eq!(sn.mounts("v").unwrap(), m);
        sn.remove("v").unwrap();

        let m = sn.view("empty", None, Labels::new()).unwrap();
        assert_eq!(m, vec![Mount::bind(path(&sn, 4), true)]);
        assert!(Path::new(&path(&sn, 4)).is_dir());
    }

    #[test]
    fn refused_create_copies_nothing() {
        let (_d, sn) = open();
        sn.prepare("k", None, Labels::new()).unwrap();
        std::fs::write(format!("{}/f", path(&sn, 1)), "x").unwrap();
        sn.commit("c", "k", Labels::new()).unwrap();
        sn.prepare("taken", None, Labels::new()).unwrap();
        let err = sn.prepare("taken", Some("c"), Labels::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        let entries: Vec<_> = std::fs::read_dir(sn.root().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
    }

    #[test]
    fn usage_of_a_child_counts_its_copy() {
        let (_d, sn) = open();
        sn.prepare("k", None, Labels::new()).unwrap();
        std::fs::write(format!("{}/f", path(&sn, 1)), vec![0u8; 50_000]).unwrap();
        sn.commit("c", "k", Labels::new()).unwrap();
        sn.prepare("child", Some("c"), Labels::new()).unwrap();
        let u = sn.usage("child").unwrap();
        assert_eq!(u.inodes, 2);
        assert!(u.size >= 50_000);
        assert_eq!(sn.usage("c").unwrap(), u);
    }
}
