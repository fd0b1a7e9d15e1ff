//! Shared test helpers: a real content store, layer tars built entry by entry (including
//! hostile raw headers), and tree snapshots to compare directories by.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_content::LocalStore;
use berth_core::content::{BlobStore, ContentStore};
use berth_core::diff::Descriptor;
use berth_core::labels::Labels;
use berth_core::mount::Mount;
use berth_core::{Digest, Namespace, RequestContext};
use berth_diff::WalkingDiff;
use berth_metadata::{GcOptions, Metadata};
use sha2::Digest as _;

/// A content store (raw store + namespaced metadata) in a temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub blobs: Arc<LocalStore>,
    pub store: Arc<Metadata>,
    pub ctx: RequestContext,
    pub differ: WalkingDiff,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(LocalStore::open(dir.path().join("content")).unwrap());
        let raw: Arc<dyn BlobStore> = blobs.clone();
        let store = Metadata::open(&dir.path().join("meta.db"), raw, GcOptions::default()).unwrap();
        let content: Arc<dyn ContentStore> = store.clone();
        let mounts = dir.path().join("mnt");
        fs::create_dir(&mounts).unwrap();
        Self {
            differ: WalkingDiff::new(content).with_temp_dir(&mounts),
            ctx: RequestContext::new(Namespace::new("test").unwrap()),
            dir,
            blobs,
            store,
        }
    }

    /// Commits `bytes` and returns a layer descriptor for them.
    pub fn put(&self, bytes: &[u8], media_type: &str) -> Descriptor {
        let digest = Digest::of(bytes);
        let mut w = self
            .store
            .writer(&self.ctx, &format!("put-{}", digest.hex()), 0, None)
            .unwrap();
        w.write(bytes).unwrap();
        match w.commit(bytes.len() as u64, Some(digest.clone()), Labels::new()) {
            Ok(_) => {}
            Err(e) if e.is(berth_core::ErrorKind::AlreadyExists) => {}
            Err(e) => panic!("{e}"),
        }
        Descriptor::new(media_type, digest, bytes.len() as u64)
    }

    /// A fresh empty directory under the environment.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Reads a committed blob back.
    pub fn read(&self, digest: &Digest) -> Vec<u8> {
        let r = self.store.reader(&self.ctx, digest).unwrap();
        let mut buf = vec![0; r.size() as usize];
        let mut off = 0;
        while off < buf.len() {
            let n = r.read_at(&mut buf[off..], off as u64).unwrap();
            assert!(n > 0);
            off += n;
        }
        buf
    }
}

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Builds layer tars entry by entry with the `tar` crate's raw header API, so names are
/// written exactly as given (`..`, absolute paths, anything).
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
    pub mtime: u64,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
            mtime: 1_600_000_000,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(0);
        h
    }

    /// Appends `header` under `name` written raw (PAX `path` when longer than 100 bytes).
    pub fn raw(&mut self, mut h: tar::Header, name: &[u8], data: &[u8]) -> &mut Self {
        self.raw_pax(&mut h, name, data, &[])
    }

    pub fn raw_pax(
        &mut self,
        h: &mut tar::Header,
        name: &[u8],
        data: &[u8],
        pax: &[(&str, &[u8])],
    ) -> &mut Self {
        let mut records: Vec<(&str, &[u8])> = pax.to_vec();
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        if name.len() > field.len() || name.contains(&0) {
            records.push(("path", name));
            let n = name.len().min(field.len());
            field[..n].copy_from_slice(&name[..n]);
            if let Some(z) = field.iter().position(|b| *b == 0) {
                field[z..].fill(0);
            }
        } else {
            field[..name.len()].copy_from_slice(name);
        }
        if !records.is_empty() {
            self.b.append_pax_extensions(records).unwrap();
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = self.header(tar::EntryType::Directory, mode);
        self.raw(h, format!("{name}/").as_bytes(), b"")
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let h = self.header(tar::EntryType::Regular, mode);
        self.raw(h, name.as_bytes(), data)
    }

    /// A file with an owner, mtime and xattrs.
    pub fn file_full(
        &mut self,
        name: &str,
        mode: u32,
        owner: (u64, u64),
        mtime: u64,
        xattrs: &[(&str, &[u8])],
        data: &[u8],
    ) -> &mut Self {
        let mut h = self.header(tar::EntryType::Regular, mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(mtime);
        let keys: Vec<String> = xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        let pax: Vec<(&str, &[u8])> = keys
            .iter()
            .zip(xattrs)
            .map(|(k, (_, v))| (k.as_str(), *v))
            .collect();
        self.raw_pax(&mut h, name.as_bytes(), data, &pax)
    }

    pub fn link(&mut self, kind: tar::EntryType, name: &str, target: &[u8]) -> &mut Self {
        let mut h = self.header(kind, 0o777);
        if target.len() <= 100 {
            h.set_link_name_literal(target).unwrap();
            self.raw(h, name.as_bytes(), b"")
        } else {
            self.raw_pax(&mut h, name.as_bytes(), b"", &[("linkpath", target)])
        }
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target.as_bytes())
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target.as_bytes())
    }

    pub fn device(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = self.header(kind, 0o640);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, name.as_bytes(), b"")
    }

    pub fn fifo(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = self.header(tar::EntryType::Fifo, mode);
        self.raw(h, name.as_bytes(), b"")
    }

    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&path, 0, b"")
    }

    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0, b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// What a test compares about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds; layers carry whole seconds.
    pub mtime: i64,
    pub rdev: u64,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) sharing this file's inode, for hardlinked files.
    pub same_inode_as: Option<PathBuf>,
}

/// Every file below `root` (not `root` itself), keyed by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut paths = Vec::new();
    collect(root, Path::new(""), &mut paths);
    paths.sort();
    let mut first_by_inode: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut out = BTreeMap::new();
    for rel in paths {
        let full = root.join(&rel);
        let md = fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "other"
        };
        let same_inode_as = (!ft.is_dir() && md.nlink() > 1).then(|| {
            first_by_inode
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        });
        let mut xattrs = BTreeMap::new();
        for name in xattr::list(&full).unwrap() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("trusted.overlay.") || name == "security.selinux" {
                continue;
            }
            xattrs.insert(name.clone(), xattr::get(&full, &name).unwrap().unwrap());
        }
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                rdev: md.rdev(),
                content: ft.is_file().then(|| fs::read(&full).unwrap()),
                link: ft.is_symlink().then(|| fs::read_link(&full).unwrap()),
                xattrs,
                same_inode_as,
            },
        );
    }
    out
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let child = rel.join(entry.file_name());
        let is_dir = entry.file_type().unwrap().is_dir();
        out.push(child.clone());
        if is_dir {
            collect(root, &child, out);
        }
    }
}

/// Asserts two snapshots are equal, naming the first difference.
pub fn assert_same(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>) {
    let keys_a: Vec<_> = a.keys().collect();
    let keys_b: Vec<_> = b.keys().collect();
    assert_eq!(keys_a, keys_b, "different file sets");
    for (k, va) in a {
        assert_eq!(Some(va), b.get(k), "{}", k.display());
    }
}

/// Applies `tar` (as a plain-tar blob) through the differ onto a bind mount of `dir`.
pub fn apply_bind(env: &Env, dir: &Path, tar: &[u8]) -> Descriptor {
    use berth_core::diff::Applier;
    let desc = env.put(tar, TAR);
    env.differ
        .apply(
            &env.ctx,
            &desc,
            &[Mount::bind(dir.to_str().unwrap(), false)],
        )
        .unwrap()
}

/// An overlay mount in the shape snapshotters hand out for an active snapshot.
pub fn overlay(upper: &Path, work: &Path, lowers: &[&Path]) -> Mount {
    let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}", lowers.join(":")),
        ],
    }
}

/// Mounts a read-only overlay of `lowers` (nearest first) on `target`.
pub fn mount_overlay_ro(target: &Path, lowers: &[&Path]) {
    let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}", lowers.join(":")).as_str()),
    )
    .unwrap();
}

pub fn umount(target: &Path) {
    nix::mount::umount2(target, nix::mount::MntFlags::empty()).unwrap();
}

/// A hash of everything under `dir` (names, metadata, contents), to prove nothing changed.
pub fn fingerprint(dir: &Path) -> String {
    let mut paths = Vec::new();
    collect(dir, Path::new(""), &mut paths);
    paths.sort();
    let mut h = sha2::Sha256::new();
    h.update(format!(
        "{:?}",
        fs::symlink_metadata(dir).map(|m| (m.mode(), m.nlink()))
    ));
    for rel in paths {
        let full = dir.join(&rel);
        let md = fs::symlink_metadata(&full).unwrap();
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(format!(
            "{} {} {} {} {} {} {}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.len(),
            md.mtime(),
            md.mtime_nsec(),
            md.nlink()
        ));
        if md.is_file() {
            h.update(fs::read(&full).unwrap());
        }
        if md.file_type().is_symlink() {
            h.update(fs::read_link(&full).unwrap().as_os_str().as_encoded_bytes());
        }
    }
    hex::encode(h.finalize())
}
