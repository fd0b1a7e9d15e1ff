//! Berth's overlayfs snapshotter, laid out and mounted exactly as containerd's `overlayfs`
//! snapshotter, so `ctr` can mount what it returns.
//!
//! Layout under the root:
//! - `metadata.redb`: the metastore ([`berth_snapshot_storage::MetaStore`]).
//! - `snapshots/<id>/fs`: the snapshot's own files (overlay's upper directory; a committed
//!   snapshot's `fs` is a lower directory of its descendants).
//! - `snapshots/<id>/work`: overlay's work directory (active snapshots only).
//!
//! Mounts ([`OverlaySnapshotter::mounts`]):
//! - no parent: `bind` of its own `fs`, `["rw","rbind"]` (`"ro"` for a view);
//! - a view with one parent: `bind` of the parent's `fs`, `["ro","rbind"]`;
//! - otherwise: `overlay` with source `"overlay"` and options `index=off` (only when the kernel
//!   has `/sys/module/overlay/parameters/index`), then for an active snapshot `workdir=…` and
//!   `upperdir=…`, then `lowerdir=<parent fs>:<grandparent fs>:…`, nearest parent first. A
//!   view gets only `lowerdir=`, which overlayfs mounts read-only.
//!
//! # Deep chains and the one-page limit
//!
//! mount(2) copies at most one page (4096 bytes, [`MAX_MOUNT_DATA`]) of option data. With
//! absolute paths, every layer costs the length of `<root>/snapshots/<id>/fs` plus one, so a
//! chain of 128 layers under `/var/lib/berth/io.containerd.snapshotter.v1.overlayfs` needs about
//! 9 KB. This snapshotter does what containerd does, and checks it:
//!
//! - It returns absolute paths regardless of length, because that is the contract `ctr` and
//!   containerd's clients rely on: they mount the returned mounts themselves, and containerd's
//!   mounter shortens over-long overlay data by making the lower directories relative to their
//!   common parent (`<root>/snapshots`) and mounting from that directory.
//!   [`Mount::compact_lowerdirs`] is that rewrite for Berth's own mounters; with it a layer
//!   costs a few bytes (`12/fs:`), so chains of several hundred layers fit.
//! - Prepare and View refuse (FailedPrecondition, naming the depth and the byte count), before
//!   recording anything, a chain whose data would exceed the page **even after** that rewrite:
//!   no consumer could mount it, and failing at Prepare is clearer than failing later at
//!   container start.
//!
//! Symbols `:` and `,` separate overlay options and layers, so the root path may contain
//! neither.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_core::filters::Filters;
use berth_core::labels::Labels;
use berth_core::mount::{MAX_MOUNT_DATA, Mount};
use berth_core::snapshots::{Info, Kind, Snapshotter, Usage, check_key};
use berth_core::{Error, Result};
use berth_snapshot_storage::dirs::SnapshotDirs;
use berth_snapshot_storage::{MetaStore, Snapshot, disk_usage};

/// Present when the kernel's overlayfs knows the `index` option, which containerd then turns
/// off: the inodes index ties upper directories to lower ones, which breaks reusing layers.
const INDEX_PARAMETER: &str = "/sys/module/overlay/parameters/index";

/// The overlayfs snapshotter rooted at one directory.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    root: PathBuf,
    store: MetaStore,
    dirs: SnapshotDirs,
    index_off: bool,
}

impl OverlaySnapshotter {
    /// Opens (creating if needed, mode 0700) the snapshotter at `root`. Fails if another
    /// process holds it open, or if the path cannot appear in overlay options.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| {
                Error::io(
                    format!("create overlay snapshotter root {}", root.display()),
                    e,
                )
            })?;
        // Mount sources must be absolute host paths; symlinks resolved once here keep them short.
        let root = root.canonicalize().map_err(|e| {
            Error::io(
                format!("resolve overlay snapshotter root {}", root.display()),
                e,
            )
        })?;
        match root.to_str() {
            Some(s) if !s.contains([':', ',']) => {}
            _ => {
                return Err(Error::invalid_argument(format!(
                    "overlay snapshotter root {} must be UTF-8 without ':' or ',', which separate overlay options",
                    root.display()
                )));
            }
        }
        let dirs = SnapshotDirs::open(root.join("snapshots"))?;
        let store = MetaStore::open(root.join("metadata.redb"))?;
        Ok(Self {
            root,
            store,
            dirs,
            index_off: Path::new(INDEX_PARAMETER).exists(),
        })
    }

    /// The snapshotter's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn upper(&self, id: u64) -> PathBuf {
        self.dirs.path(id).join("fs")
    }

    fn work(&self, id: u64) -> PathBuf {
        self.dirs.path(id).join("work")
    }

    fn mounts_for(&self, s: &Snapshot) -> Result<Vec<Mount>> {
        let Some(&parent) = s.parent_ids.first() else {
            // overlayfs needs at least one lower directory; a bind does the same job.
            return Ok(vec![Mount::bind(
                path_str(&self.upper(s.id)),
                s.kind == Kind::View,
            )]);
        };
        if s.kind == Kind::View && s.parent_ids.len() == 1 {
            return Ok(vec![Mount::bind(path_str(&self.upper(parent)), true)]);
        }
        let mut options = Vec::with_capacity(4);
        if self.index_off {
            options.push("index=off".to_owned());
        }
        if s.kind == Kind::Active {
            options.push(format!("workdir={}", path_str(&self.work(s.id))));
            options.push(format!("upperdir={}", path_str(&self.upper(s.id))));
        }
        let lower: Vec<String> = s
            .parent_ids
            .iter()
            .map(|&id| path_str(&self.upper(id)))
            .collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        let mount = Mount {
            kind: "overlay".to_owned(),
            source: "overlay".to_owned(),
            target: String::new(),
            options,
        };
        check_mount_data(&mount)?;
        Ok(vec![mount])
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        let mut temp = self.dirs.temp()?;
        let fs = temp.path().join("fs");
        make_dir(&fs, 0o755)?;
        if kind == Kind::Active {
            make_dir(&temp.path().join("work"), 0o711)?;
        }
        self.store
            .write(|tx| {
                let s = tx.create(kind, key, parent, labels)?;
                if let Some(&pid) = s.parent_ids.first() {
                    // The merged root takes the upper directory's attributes, so it starts as
                    // the parent's root looked.
                    copy_root_attributes(&self.upper(pid), &fs)?;
                }
                let mounts = self.mounts_for(&s)?;
                temp.install(s.id)?;
                Ok(mounts)
            })
            .map_err(|e| e.context(format!("{} snapshot {key:?}", verb(kind))))
    }
}

fn verb(kind: Kind) -> &'static str {
    match kind {
        Kind::View => "view",
        _ => "prepare",
    }
}

/// Refuses overlay data that no mounter could pass in one page (see the crate docs).
fn check_mount_data(mount: &Mount) -> Result<()> {
    let full = mount.options.join(",").len();
    if full < MAX_MOUNT_DATA {
        return Ok(());
    }
    let (dir, compacted) = match mount.compact_lowerdirs() {
        Some((dir, m)) => (dir, m.options.join(",").len()),
        None => (String::new(), full),
    };
    if compacted < MAX_MOUNT_DATA {
        return Ok(());
    }
    let layers = mount.lowerdirs().map_or(0, |l| l.len());
    Err(Error::failed_precondition(format!(
        "a chain of {layers} layers is too deep for one overlay mount: its options take {compacted} bytes \
         even with lower directories relative to {dir:?}, and the kernel takes at most {} bytes",
        MAX_MOUNT_DATA - 1
    )))
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    // The umask may have taken bits away.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

fn copy_root_attributes(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from)
        .map_err(|e| Error::io(format!("stat parent directory {}", from.display()), e))?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| Error::io(format!("chown {}", to.display()), e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| Error::io(format!("chmod {}", to.display()), e))
}

/// Paths under the root are UTF-8 (checked at open) and made of ids, so this is lossless.
fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Snapshotter for OverlaySnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        self.store.read(|tx| tx.get(key)).map(|e| e.info)
    }

    fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        self.store.write(|tx| tx.update(&info, paths))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let entry = self.store.read(|tx| tx.get(key))?;
        match entry.info.kind {
            // An active snapshot's changes are all in its upper directory.
            Kind::Active => disk_usage(&self.upper(entry.id)),
            _ => Ok(entry.usage),
        }
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self.store.read(|tx| tx.snapshot(key))?;
        self.mounts_for(&s)
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        berth_snapshot_storage::commit(&self.store, key, name, labels, |id| self.upper(id))
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
mod tests;
