//! The Diff service end to end against a real berthd: layers unpacked the way `ctr images pull`
//! does it (Stat → Prepare "extract-…" → Diff.Apply → Commit), layers computed with Diff.Diff
//! and applied back, other compressions and refused blobs, hostile layers, a chain too deep for
//! one page of mount data, a SIGKILL in the middle of an Apply, and `ctr snapshots diff`.
//! Every mount a test makes is undone by a guard, also when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_client::Client;
use berth_core::diff::{
    Descriptor, LABEL_UNCOMPRESSED, MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD,
};
use berth_core::gc::ROOT_LABEL;
use berth_core::labels::Labels;
use berth_core::mount::{MAX_MOUNT_DATA, Mount};
use berth_core::snapshots::Kind;
use berth_core::{Digest, ErrorKind};
use berth_integration::{CmdOutput, Daemon, random_bytes};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Layers

/// The mtime every entry of a built layer carries.
const MTIME: u64 = 1_600_000_000;

/// Builds layer tars entry by entry, names written exactly as given (`..` included).
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// A header for one entry: root-owned, [`MTIME`], no data yet.
    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    /// Appends `h` under `name`, written into the header raw (the `tar` crate's path setters
    /// refuse `..`), with `xattrs` as PAX records.
    fn push(
        &mut self,
        mut h: tar::Header,
        name: &[u8],
        xattrs: &[(&str, &[u8])],
        data: &[u8],
    ) -> &mut Self {
        let field = &mut h.as_old_mut().name;
        assert!(name.len() <= field.len(), "keep test names short");
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        if !xattrs.is_empty() {
            let keys: Vec<String> = xattrs
                .iter()
                .map(|(k, _)| format!("SCHILY.xattr.{k}"))
                .collect();
            let records = keys
                .iter()
                .map(String::as_str)
                .zip(xattrs.iter().map(|x| x.1));
            self.b.append_pax_extensions(records).unwrap();
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, mode);
        self.push(h, format!("{name}/").as_bytes(), &[], b"")
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), mode, data)
    }

    fn raw(&mut self, name: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, mode);
        self.push(h, name, &[], data)
    }

    fn owned(&mut self, name: &str, mode: u32, owner: (u64, u64), data: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        self.push(h, name.as_bytes(), &[], data)
    }

    fn with_xattr(&mut self, name: &str, key: &str, value: &[u8], data: &[u8]) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, 0o644);
        self.push(h, name.as_bytes(), &[(key, value)], data)
    }

    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, 0o777);
        h.set_link_name_literal(target).unwrap();
        self.push(h, name.as_bytes(), &[], b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }

    /// `.wh.<name>` in `dir`: deletes `dir/name` from the layers below.
    fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh.{name}"), 0, b"")
    }

    /// `.wh..wh..opq` in `dir`: hides what the layers below put there.
    fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0, b"")
    }

    fn finish(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `gzip -1` of `data` into `out` by the system's gzip: flate2 in a debug build needs seconds
/// for every few MiB.
fn gzip_cli(data: &[u8], out: &Path) {
    let mut child = Command::new("gzip")
        .arg("-1")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(fs::File::create(out).unwrap())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(data).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success(), "gzip failed");
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The entry names of a tar, without `./` prefixes or trailing slashes.
fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let name = name.trim_start_matches("./").trim_end_matches('/');
            name.to_owned()
        })
        .collect()
}

/// L1: files, an executable, a symlink, a hardlink, an owned file, a directory tree.
fn layer1() -> Vec<u8> {
    Layer::new()
        .dir("etc", 0o755)
        .file("etc/motd", 0o644, b"v1")
        .file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")
        .dir("bin", 0o755)
        .file("bin/tool", 0o755, b"#!/bin/sh\necho tool\n")
        .symlink("bin/link", "tool")
        .hardlink("bin/hard", "bin/tool")
        .dir("data", 0o750)
        .file("data/a", 0o600, b"a")
        .owned("data/b", 0o640, (1000, 1001), b"b")
        .dir("data/sub", 0o755)
        .file("data/sub/c", 0o644, b"c")
        .finish()
}

/// L2: changes /etc/motd, adds files, one under parents the tar does not list.
fn layer2() -> Vec<u8> {
    Layer::new()
        .file("etc/motd", 0o644, b"v2")
        .file("etc/new", 0o644, b"new")
        .file("data/d", 0o644, b"d")
        .with_xattr("opt/app/conf", "user.origin", b"l2", b"conf")
        .finish()
}

/// L3: deletes /etc/motd and makes /data opaque; its own file precedes the marker.
fn layer3() -> Vec<u8> {
    Layer::new()
        .whiteout("etc", "motd")
        .dir("data", 0o750)
        .file("data/l3", 0o644, b"l3")
        .opaque("data")
        .finish()
}

// ---------------------------------------------------------------------------------------------
// Unpacking the ctr way

/// `chain_0 = diffID_0`, `chain_i = sha256("<chain_{i-1}> <diffID_i>")`.
fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// `extract-<nanos>-<base64url of 3 random bytes> <chainID>`, as ctr names extract snapshots.
fn extract_key(chain: &Digest) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let r = random_bytes(3);
    let n = u32::from(r[0]) << 16 | u32::from(r[1]) << 8 | u32::from(r[2]);
    let b64: String = (0..4)
        .map(|i| B64[(n >> (18 - 6 * i)) as usize & 63] as char)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("extract-{nanos}-{b64} {chain}")
}

/// A layer to unpack: the uncompressed tar and the blob as stored.
struct Blob {
    tar: Vec<u8>,
    blob: Vec<u8>,
    media_type: &'static str,
}

impl Blob {
    fn gzip(tar: Vec<u8>) -> Self {
        Self {
            blob: gzip(&tar, 6),
            tar,
            media_type: MEDIA_TYPE_LAYER_GZIP,
        }
    }
}

/// What unpacking one layer left: its chainID and the extract snapshot's mounts.
struct Unpacked {
    chain: Digest,
    mounts: Vec<Mount>,
}

/// Unpacks one layer on `parent` exactly as ctr does, checking every step.
async fn unpack(c: &Client, sn: &str, parent: Option<&Digest>, layer: &Blob) -> Unpacked {
    let diff_id = Digest::of(&layer.tar);
    let chain = chain_id(parent, &diff_id);
    let digest = c
        .content()
        .write_blob(&layer.blob, Labels::new())
        .await
        .unwrap();
    let desc = Descriptor::new(layer.media_type, digest.clone(), layer.blob.len() as u64);
    let snaps = c.snapshots(sn);
    let err = snaps.stat(chain.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{chain} exists already");
    let key = extract_key(&chain);
    let mounts = snaps
        .prepare(&key, parent.map(Digest::as_str), &Labels::new())
        .await
        .unwrap();
    let applied = c.diff().apply(&desc, &mounts).await.unwrap();
    assert_eq!(applied.media_type, MEDIA_TYPE_LAYER);
    assert_eq!(
        applied.digest, diff_id,
        "the diffID is the uncompressed tar's"
    );
    assert_eq!(applied.size, layer.tar.len() as u64);
    snaps
        .commit(chain.as_str(), &key, &Labels::new())
        .await
        .unwrap();
    let info = snaps.stat(chain.as_str()).await.unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent.as_deref(), parent.map(Digest::as_str));
    let err = snaps.stat(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "the extract key is gone");
    let label = Labels::from([(LABEL_UNCOMPRESSED.to_owned(), diff_id.to_string())]);
    c.content().update_labels(&digest, &label).await.unwrap();
    Unpacked { chain, mounts }
}

/// Unpacks L1..L3 as gzip layers; returns what each step left.
async fn unpack_chain(c: &Client, sn: &str) -> Vec<Unpacked> {
    let mut out: Vec<Unpacked> = Vec::new();
    for tar in [layer1(), layer2(), layer3()] {
        let parent = out.last().map(|u| u.chain.clone());
        out.push(unpack(c, sn, parent.as_ref(), &Blob::gzip(tar)).await);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mounts and trees

/// Snapshot mounts mounted on a fresh directory; unmounted on drop, also when the test fails.
struct Mounted {
    mounts: usize,
    target: PathBuf,
    _dir: TempDir,
}

impl Mounted {
    /// Mounts `mounts` in order, each as `mount -t <type> <source> <target> -o <options>`.
    /// Overlay data over one page is shortened as containerd's mounter does: lower directories
    /// relative to their common parent, mounted from that directory.
    fn new(mounts: &[Mount]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-mnt-")
            .tempdir()
            .unwrap();
        let target = dir.path().join("m");
        fs::create_dir(&target).unwrap();
        let mut m = Mounted {
            mounts: 0,
            target,
            _dir: dir,
        };
        assert!(!mounts.is_empty(), "nothing to mount");
        for mount in mounts {
            let mut cmd = Command::new("mount");
            let compacted = (mount.options.join(",").len() >= MAX_MOUNT_DATA)
                .then(|| mount.compact_lowerdirs())
                .flatten();
            let mount = match &compacted {
                Some((dir, short)) => {
                    cmd.current_dir(dir);
                    short
                }
                None => mount,
            };
            cmd.arg("-t")
                .arg(&mount.kind)
                .arg(&mount.source)
                .arg(&m.target);
            if !mount.options.is_empty() {
                cmd.arg("-o").arg(mount.options.join(","));
            }
            CmdOutput::run_public(&mut cmd).ok();
            m.mounts += 1;
        }
        m
    }

    fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for _ in 0..self.mounts {
            let ok = Command::new("umount")
                .arg(&self.target)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Something still holds it; detach so the tempdir can go.
                let _ = Command::new("umount").arg("-l").arg(&self.target).status();
            }
        }
    }
}

/// What the trees of two snapshots are compared by.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Seconds, for everything but directories (whose times creating children moves).
    mtime: Option<i64>,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    /// `user.*` only: overlayfs keeps its own `trusted.overlay.*` on upper files.
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every file below `root`, keyed by relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for entry in fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let full = root.join(&rel);
            let md = fs::symlink_metadata(&full).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                pending.push(rel.clone());
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "other"
            };
            let mut xattrs = BTreeMap::new();
            if !ft.is_symlink() {
                for name in xattr::list(&full).unwrap() {
                    let name = name.to_string_lossy().into_owned();
                    if name.starts_with("user.") {
                        let value = xattr::get(&full, &name).unwrap().unwrap();
                        xattrs.insert(name, value);
                    }
                }
            }
            out.insert(
                rel,
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: (!ft.is_dir()).then(|| md.mtime()),
                    content: ft.is_file().then(|| fs::read(&full).unwrap()),
                    link: ft.is_symlink().then(|| fs::read_link(&full).unwrap()),
                    xattrs,
                },
            );
        }
    }
    out
}

/// Asserts two trees are equal, naming the first difference.
fn assert_same_tree(want: &BTreeMap<PathBuf, Node>, got: &BTreeMap<PathBuf, Node>) {
    let w: Vec<_> = want.keys().collect();
    let g: Vec<_> = got.keys().collect();
    assert_eq!(w, g, "different file sets");
    for (path, node) in want {
        assert_eq!(Some(node), got.get(path), "{}", path.display());
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

// ---------------------------------------------------------------------------------------------
// Unpack like ctr

/// Checks the tree of the top of L1..L3.
fn check_top(root: &Path) {
    let paths: Vec<String> = tree(root).keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        paths,
        [
            "bin",
            "bin/hard",
            "bin/link",
            "bin/tool",
            "data",
            "data/l3",
            "etc",
            "etc/hosts",
            "etc/new",
            "opt",
            "opt/app",
            "opt/app/conf",
        ],
        "the whiteout removed etc/motd, the opaque marker hid data's lower entries"
    );
    assert_eq!(read(&root.join("etc/new")), "new");
    assert_eq!(read(&root.join("data/l3")), "l3");
    assert_eq!(mode(&root.join("data")), 0o750);
    let tool = fs::symlink_metadata(root.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!(read(&root.join("bin/tool")), "#!/bin/sh\necho tool\n");
    assert_eq!(tool.mtime(), MTIME as i64);
    let hard = fs::symlink_metadata(root.join("bin/hard")).unwrap();
    assert_eq!(
        (hard.dev(), hard.ino(), hard.nlink()),
        (tool.dev(), tool.ino(), 2),
        "bin/hard is a hardlink of bin/tool"
    );
    assert_eq!(
        fs::read_link(root.join("bin/link")).unwrap(),
        Path::new("tool")
    );
    // Parents the tar did not list are made 0755.
    assert_eq!(mode(&root.join("opt")), 0o755);
    assert_eq!(mode(&root.join("opt/app")), 0o755);
    assert_eq!(
        xattr::get(root.join("opt/app/conf"), "user.origin").unwrap(),
        Some(b"l2".to_vec())
    );
}

async fn unpack_like_ctr(sn: &str) {
    let d = Daemon::start();
    let c = d.client("default").await;
    let chain = unpack_chain(&c, sn).await;
    let snaps = c.snapshots(sn);

    if sn == "overlayfs" {
        // The first layer has no parent (a bind mount); the others are overlays with an
        // upperdir, which Apply writes into directly, whiteouts in overlayfs's own form.
        assert_eq!(chain[0].mounts[0].kind, "bind");
        let m = &chain[2].mounts[0];
        assert_eq!(m.kind, "overlay");
        assert_eq!(m.lowerdirs().unwrap().len(), 2);
        let upper = Path::new(m.option_value("upperdir").unwrap());
        let wh = fs::symlink_metadata(upper.join("etc/motd")).unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()),
            "{wh:?}"
        );
        assert_eq!(wh.rdev(), 0, "an overlay whiteout is device 0/0");
        assert_eq!(
            xattr::get(upper.join("data"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(names_in(&upper.join("data")), ["l3"]);
    } else {
        assert!(chain.iter().all(|u| u.mounts[0].kind == "bind"));
    }

    // Each layer through a read-only view.
    let views = [(0, "v1"), (1, "v2")];
    for (i, motd) in views {
        let key = format!("view-{i}");
        let mounts = snaps
            .view(&key, Some(chain[i].chain.as_str()), &Labels::new())
            .await
            .unwrap();
        let m = Mounted::new(&mounts);
        assert_eq!(read(&m.path().join("etc/motd")), motd);
        assert_eq!(
            names_in(&m.path().join("data")).len(),
            if i == 0 { 3 } else { 4 }
        );
    }
    let mounts = snaps
        .view("view-top", Some(chain[2].chain.as_str()), &Labels::new())
        .await
        .unwrap();
    let m = Mounted::new(&mounts);
    check_top(m.path());
    assert!(
        fs::write(m.path().join("etc/x"), "x").is_err(),
        "the view is writable"
    );
    // ctr sees the chain as committed snapshots named by chainID.
    let tree = d.ctr(&["snapshots", "--snapshotter", sn, "tree"]).ok();
    for u in &chain {
        assert!(tree.contains(u.chain.as_str()), "{tree}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overlayfs_unpack_like_ctr() {
    unpack_like_ctr("overlayfs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn native_unpack_like_ctr() {
    unpack_like_ctr("native").await;
}

// ---------------------------------------------------------------------------------------------
// Other compressions, corrupt blobs, encrypted layers

#[tokio::test(flavor = "multi_thread")]
async fn zstd_plain_and_refused_blobs() {
    let d = Daemon::start();
    let c = d.client("default").await;
    let snaps = c.snapshots("overlayfs");

    let z_tar = Layer::new().file("z", 0o644, b"zstd").finish();
    let z = Blob {
        blob: zstd::encode_all(&z_tar[..], 3).unwrap(),
        tar: z_tar,
        media_type: MEDIA_TYPE_LAYER_ZSTD,
    };
    let plain_tar = Layer::new().file("p", 0o644, b"plain").finish();
    let plain = Blob {
        blob: plain_tar.clone(),
        tar: plain_tar,
        media_type: MEDIA_TYPE_LAYER,
    };
    // Docker's plain type with gzip bytes: compression is sniffed, not taken from the type.
    let sniffed_tar = Layer::new().file("s", 0o644, b"sniffed").finish();
    let sniffed = Blob {
        blob: gzip(&sniffed_tar, 6),
        tar: sniffed_tar,
        media_type: MEDIA_TYPE_DOCKER_LAYER,
    };
    let l1 = unpack(&c, "overlayfs", None, &z).await;
    let l2 = unpack(&c, "overlayfs", Some(&l1.chain), &plain).await;
    let l3 = unpack(&c, "overlayfs", Some(&l2.chain), &sniffed).await;
    {
        let mounts = snaps
            .view("v", Some(l3.chain.as_str()), &Labels::new())
            .await
            .unwrap();
        let m = Mounted::new(&mounts);
        assert_eq!(names_in(m.path()), ["p", "s", "z"]);
        assert_eq!(read(&m.path().join("z")), "zstd");
        assert_eq!(read(&m.path().join("p")), "plain");
        assert_eq!(read(&m.path().join("s")), "sniffed");
    }

    // A blob whose bytes no longer match its digest: DataLoss, and nothing is committed.
    let bad = Blob::gzip(Layer::new().file("bad", 0o644, &[7u8; 4096]).finish());
    let digest = c
        .content()
        .write_blob(&bad.blob, Labels::new())
        .await
        .unwrap();
    let path = d.root().join("content/blobs/sha256").join(digest.hex());
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let middle = bad.blob.len() as u64 / 2;
    file.write_at(&[bad.blob[middle as usize] ^ 0xff], middle)
        .unwrap();
    drop(file);
    let chain = chain_id(Some(&l3.chain), &Digest::of(&bad.tar));
    let key = extract_key(&chain);
    let mounts = snaps
        .prepare(&key, Some(l3.chain.as_str()), &Labels::new())
        .await
        .unwrap();
    let desc = Descriptor::new(MEDIA_TYPE_LAYER_GZIP, digest.clone(), bad.blob.len() as u64);
    let err = c.diff().apply(&desc, &mounts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.message().contains(digest.as_str()), "{err}");
    assert_eq!(
        snaps.stat(chain.as_str()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(snaps.stat(&key).await.unwrap().kind, Kind::Active);
    snaps.remove(&key).await.unwrap();

    // An encrypted layer needs a stream processor Berth does not have; a non-layer is refused.
    let key = "extract-encrypted";
    let mounts = snaps.prepare(key, None, &Labels::new()).await.unwrap();
    for media_type in [
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        "application/vnd.oci.image.manifest.v1+json",
    ] {
        let desc = Descriptor::new(media_type, Digest::of(&z.blob), z.blob.len() as u64);
        let err = c.diff().apply(&desc, &mounts).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotImplemented, "{media_type}: {err}");
    }
    let m = Mounted::new(&mounts);
    assert!(
        names_in(m.path()).is_empty(),
        "a refused layer wrote nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Round trip: Diff.Diff, then Diff.Apply of what it wrote

async fn round_trip(sn: &str) {
    let d = Daemon::start();
    let c = d.client("default").await;
    let top = unpack_chain(&c, sn).await.pop().unwrap().chain;
    let snaps = c.snapshots(sn);

    let work = snaps
        .prepare("work", Some(top.as_str()), &Labels::new())
        .await
        .unwrap();
    {
        let m = Mounted::new(&work);
        let p = m.path();
        fs::write(p.join("etc/new"), "changed").unwrap();
        fs::create_dir(p.join("newdir")).unwrap();
        fs::set_permissions(p.join("newdir"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(p.join("newdir/file"), "fresh").unwrap();
        fs::set_permissions(p.join("newdir/file"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(p.join("newdir/file"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::symlink("../etc/hosts", p.join("newdir/link")).unwrap();
        fs::remove_file(p.join("data/l3")).unwrap();
        fs::remove_file(p.join("bin/link")).unwrap();
        fs::set_permissions(p.join("etc/hosts"), fs::Permissions::from_mode(0o600)).unwrap();
        xattr::set(p.join("etc/hosts"), "user.x", b"hosts").unwrap();
        xattr::set(p.join("newdir/file"), "user.x", b"file").unwrap();
    }
    let lower = snaps
        .view("work-parent", Some(top.as_str()), &Labels::new())
        .await
        .unwrap();
    let labels = Labels::from([("test".to_owned(), "round-trip".to_owned())]);
    let desc = c
        .diff()
        .compare(&lower, &work, None, None, &labels)
        .await
        .unwrap();
    assert_eq!(desc.media_type, MEDIA_TYPE_LAYER_GZIP);
    let blob = c.content().read_all(&desc.digest).await.unwrap();
    assert_eq!(Digest::of(&blob), desc.digest);
    assert_eq!(blob.len() as u64, desc.size);
    let tar = gunzip(&blob);
    let diff_id = Digest::of(&tar);
    let info = c.content().info(&desc.digest).await.unwrap();
    assert_eq!(
        info.labels.get(LABEL_UNCOMPRESSED),
        Some(&diff_id.to_string())
    );
    assert_eq!(
        info.labels.get("test").map(String::as_str),
        Some("round-trip")
    );
    let names = tar_names(&tar);
    for want in [
        "etc/new",
        "etc/hosts",
        "newdir",
        "newdir/file",
        "newdir/link",
        "data/.wh.l3",
        "bin/.wh.link",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    for unchanged in ["bin/tool", "bin/hard", "opt/app/conf", "data/l3"] {
        assert!(
            !names.iter().any(|n| n == unchanged),
            "{unchanged} in {names:?}"
        );
    }

    let fresh = snaps
        .prepare("fresh", Some(top.as_str()), &Labels::new())
        .await
        .unwrap();
    let applied = c.diff().apply(&desc, &fresh).await.unwrap();
    assert_eq!(applied.digest, diff_id);
    assert_eq!(applied.size, tar.len() as u64);

    let want = tree(Mounted::new(&work).path());
    let got = tree(Mounted::new(&fresh).path());
    assert_same_tree(&want, &got);
    let file = &got[Path::new("newdir/file")];
    assert_eq!((file.uid, file.gid, file.mode), (1234, 5678, 0o640));
    assert_eq!(
        file.xattrs.get("user.x").map(Vec::as_slice),
        Some(&b"file"[..])
    );
    let hosts = &got[Path::new("etc/hosts")];
    assert_eq!(hosts.mode, 0o600);
    assert_eq!(
        hosts.xattrs.get("user.x").map(Vec::as_slice),
        Some(&b"hosts"[..])
    );
    assert_eq!(
        got[Path::new("newdir/link")].link.as_deref(),
        Some(Path::new("../etc/hosts"))
    );
    assert!(!got.contains_key(Path::new("data/l3")));
    assert!(!got.contains_key(Path::new("bin/link")));
}

#[tokio::test(flavor = "multi_thread")]
async fn overlayfs_round_trip() {
    round_trip("overlayfs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn native_round_trip() {
    round_trip("native").await;
}

// ---------------------------------------------------------------------------------------------
// Hostile layers

/// Every path below `dir` (not following symlinks) whose name contains `needle`.
fn find_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let path = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                found.push(path.clone());
            }
            if e.file_type().unwrap().is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

/// Names, modes and contents of everything in `dir`.
fn fingerprint(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out: Vec<_> = tree(dir)
        .into_iter()
        .map(|(p, n)| {
            (
                p.display().to_string(),
                n.mode,
                n.content.unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_are_refused() {
    let d = Daemon::start();
    let c = d.client("default").await;
    // Next to the daemon's root: what an escape from a snapshot would reach.
    let outside = d.root().parent().unwrap().to_path_buf();
    let sentinel = outside.join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    fs::write(sentinel.join("file"), "original").unwrap();
    let before = fingerprint(&sentinel);
    let tag = format!("escape-{}", std::process::id());

    let base = Blob::gzip(Layer::new().file("base", 0o644, b"base").finish());
    let overlay_base = unpack(&c, "overlayfs", None, &base).await.chain;
    let native_base = unpack(&c, "native", None, &base).await.chain;

    let refused: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            Layer::new()
                .file("ok", 0o644, b"ok")
                .raw(format!("../{tag}").as_bytes(), 0o644, b"evil")
                .finish(),
        ),
        (
            "deep dotdot",
            Layer::new()
                .raw(format!("a/../../../../../{tag}").as_bytes(), 0o644, b"evil")
                .finish(),
        ),
        (
            "absolute symlink to the sentinel, then a file through it",
            Layer::new()
                .symlink("s", sentinel.to_str().unwrap())
                .file(&format!("s/{tag}"), 0o644, b"evil")
                .finish(),
        ),
        (
            "relative symlink out of the snapshot, then a file through it",
            Layer::new()
                .symlink("s", "../../../../../../sentinel")
                .file(&format!("s/{tag}"), 0o644, b"evil")
                .finish(),
        ),
        (
            "hardlink to a file outside",
            Layer::new()
                .hardlink(&tag, "../../../../../sentinel/file")
                .finish(),
        ),
    ];
    let targets = [
        ("overlayfs", None),
        ("overlayfs", Some(&overlay_base)),
        ("native", Some(&native_base)),
    ];
    for (sn, parent) in targets {
        let snaps = c.snapshots(sn);
        for (what, tar) in &refused {
            let layer = Blob::gzip(tar.clone());
            let digest = c
                .content()
                .write_blob(&layer.blob, Labels::new())
                .await
                .unwrap();
            let chain = chain_id(parent, &Digest::of(tar));
            let key = extract_key(&chain);
            let mounts = snaps
                .prepare(&key, parent.map(Digest::as_str), &Labels::new())
                .await
                .unwrap();
            let desc = Descriptor::new(layer.media_type, digest, layer.blob.len() as u64);
            let err = c.diff().apply(&desc, &mounts).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{sn} {what}: {err}");
            // What ctr does after a failed apply.
            snaps.remove(&key).await.unwrap();
            assert_eq!(
                snaps.stat(chain.as_str()).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert_eq!(fingerprint(&sentinel), before, "{sn} {what}");
            assert!(
                find_named(&outside, &tag).is_empty(),
                "{sn} {what}: {:?}",
                find_named(&outside, &tag)
            );
        }
    }

    // Overwriting a symlink that points outside replaces the link, never its target.
    let tar = Layer::new()
        .symlink("s", sentinel.join("file").to_str().unwrap())
        .file("s", 0o644, b"overwrite")
        .finish();
    let u = unpack(&c, "overlayfs", Some(&overlay_base), &Blob::gzip(tar)).await;
    assert_eq!(fingerprint(&sentinel), before);
    let mounts = c
        .snapshots("overlayfs")
        .view("v", Some(u.chain.as_str()), &Labels::new())
        .await
        .unwrap();
    let m = Mounted::new(&mounts);
    assert_eq!(read(&m.path().join("s")), "overwrite");
    assert!(fs::symlink_metadata(m.path().join("s")).unwrap().is_file());
}

// ---------------------------------------------------------------------------------------------
// Deep chains

/// A chain whose overlay mount data is longer than one page: Apply still writes into the upper
/// directory (no mount needed), Diff mounts the views through the differ's shortened lowerdirs,
/// and ctr-style compacted mounts show the whole tree.
#[tokio::test(flavor = "multi_thread")]
async fn deep_chain_beyond_one_page_of_mount_data() {
    let d = Daemon::start();
    let c = d.client("default").await;
    let snaps = c.snapshots("overlayfs");
    // Just past one page: each lower directory costs `<root>/…/snapshots/<id>/fs:`.
    let per_layer = d
        .root()
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots/99/fs:")
        .as_os_str()
        .len();
    let depth = MAX_MOUNT_DATA / per_layer + 3;
    let mut chain: Vec<Digest> = Vec::new();
    for i in 0..depth {
        let mut layer = Layer::new();
        if i + 1 == depth {
            layer.file("top", 0o644, b"top").whiteout("", "l0");
        } else {
            layer.file(&format!("l{i}"), 0o644, i.to_string().as_bytes());
        }
        let tar = layer.finish();
        let blob = Blob {
            blob: tar.clone(),
            tar,
            media_type: MEDIA_TYPE_LAYER,
        };
        chain.push(unpack(&c, "overlayfs", chain.last(), &blob).await.chain);
    }
    let top = snaps
        .view("top", Some(chain[depth - 1].as_str()), &Labels::new())
        .await
        .unwrap();
    let below = snaps
        .view("below", Some(chain[depth - 2].as_str()), &Labels::new())
        .await
        .unwrap();
    let data = top[0].options.join(",");
    assert!(data.len() > MAX_MOUNT_DATA, "only {} bytes", data.len());

    let desc = c
        .diff()
        .compare(&below, &top, Some(MEDIA_TYPE_LAYER), None, &Labels::new())
        .await
        .unwrap();
    let tar = c.content().read_all(&desc.digest).await.unwrap();
    let mut names = tar_names(&tar);
    names.sort();
    assert_eq!(names, [".wh.l0", "top"]);

    let m = Mounted::new(&top);
    let mut want: Vec<String> = (1..depth - 1).map(|i| format!("l{i}")).collect();
    want.push("top".to_owned());
    want.sort();
    assert_eq!(names_in(m.path()), want);
    assert_eq!(
        read(&m.path().join(format!("l{}", depth - 2))),
        (depth - 2).to_string()
    );
    // Nothing of the differ's temporary mounts is left.
    assert!(names_in(&d.state().join("tmpmounts")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// SIGKILL during Apply

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_apply() {
    let mut d = Daemon::start();
    let c = d.client("default").await;
    // 32 MiB over four files. One random MiB, rotated differently for every MiB written, is
    // as incompressible to deflate (32 KiB window) as fresh random data and far cheaper to
    // make in a debug build.
    let block = random_bytes(1 << 20);
    let mut layer = Layer::new();
    for i in 0..4 {
        let mut data = Vec::with_capacity(8 << 20);
        for k in 0..8 {
            let at = (i * 8 + k) * 4099;
            data.extend_from_slice(&block[at..]);
            data.extend_from_slice(&block[..at]);
        }
        layer.file(&format!("big-{i}"), 0o644, &data);
    }
    let tar = layer.finish();
    let gz = tempfile::NamedTempFile::new().unwrap();
    gzip_cli(&tar, gz.path());
    // The diffID is only needed afterwards: hash on the other core meanwhile.
    let diff_id = tokio::task::spawn_blocking(move || Digest::of(&tar));
    let digest = c
        .content()
        .ingest_file("sigkill-layer", gz.path(), None, Labels::new())
        .await
        .unwrap();
    let size = fs::metadata(gz.path()).unwrap().len();
    let desc = Descriptor::new(MEDIA_TYPE_LAYER_GZIP, digest, size);
    let chain = chain_id(None, &diff_id.await.unwrap());
    let key = extract_key(&chain);
    let snaps = c.snapshots("overlayfs");
    let mounts = snaps.prepare(&key, None, &Labels::new()).await.unwrap();
    assert_eq!(mounts[0].kind, "bind", "a first layer is applied in place");
    let fs_dir = PathBuf::from(&mounts[0].source);

    let pending = tokio::spawn({
        let c = c.clone();
        let mounts = mounts.clone();
        async move { c.diff().apply(&desc, &mounts).await }
    });
    // Kill once the first file shows up: the apply is under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while names_in(&fs_dir).is_empty() {
        assert!(Instant::now() < deadline, "the apply never started");
        assert!(
            !pending.is_finished(),
            "the apply ended before writing anything"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    d.kill9();
    let err = pending
        .await
        .unwrap()
        .expect_err("the apply finished before the kill: make the layer bigger");
    // The connection died under the call: tonic reports it as a transport error (Unknown),
    // or Unavailable when the stream was refused.
    assert!(
        err.is(ErrorKind::Unavailable)
            || (err.is(ErrorKind::Unknown) && err.message().contains("transport")),
        "not a transport error: {:?}: {err}",
        err.kind()
    );
    let written = names_in(&fs_dir);
    let complete =
        written.len() == 4 && fs::metadata(fs_dir.join("big-3")).unwrap().len() == 8 << 20;
    assert!(!complete, "the layer was fully applied: {written:?}");

    d.restart();
    let c = d.client("default").await;
    let snaps = c.snapshots("overlayfs");
    assert_eq!(
        snaps.stat(chain.as_str()).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "the chainID was not committed"
    );
    match snaps.stat(&key).await {
        Ok(info) => {
            assert_eq!(info.kind, Kind::Active);
            snaps.remove(&key).await.unwrap();
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
    }
    snaps.cleanup().await.unwrap();
    assert!(
        d.snapshot_dirs("overlayfs").is_empty(),
        "left over: {:?}",
        d.snapshot_dirs("overlayfs")
    );
    assert!(snaps.list(&[]).await.unwrap().is_empty());
    // The temporary mount directory holds nothing either.
    assert!(names_in(&d.state().join("tmpmounts")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// ctr interop

#[tokio::test(flavor = "multi_thread")]
async fn ctr_snapshots_diff() {
    let d = Daemon::start();
    let c = d.client("default").await;
    let snaps = c.snapshots("overlayfs");
    // ctr wraps its work in a lease whose deletion runs GC: root what it must not collect.
    let root = Labels::from([(ROOT_LABEL.to_owned(), "test".to_owned())]);
    let base = snaps
        .prepare("base-active", None, &Labels::new())
        .await
        .unwrap();
    {
        let m = Mounted::new(&base);
        fs::write(m.path().join("keep"), "keep").unwrap();
        fs::write(m.path().join("gone"), "gone").unwrap();
    }
    snaps.commit("base", "base-active", &root).await.unwrap();
    let next = snaps.prepare("next", Some("base"), &root).await.unwrap();
    {
        let m = Mounted::new(&next);
        fs::write(m.path().join("added"), "added").unwrap();
        fs::remove_file(m.path().join("gone")).unwrap();
    }

    let diff = |args: &[&str]| {
        let mut all = vec!["snapshots", "--snapshotter", "overlayfs", "diff", "--keep"];
        all.extend(args);
        let out = d.ctr(&all);
        out.ok();
        out.output.stdout
    };
    // Two snapshots: lower first.
    let blob = diff(&["--label", "team=storage", "base", "next"]);
    let digest = Digest::of(&blob);
    let tar = gunzip(&blob);
    let diff_id = Digest::of(&tar);
    let mut names = tar_names(&tar);
    names.sort();
    assert_eq!(names, [".wh.gone", "added"]);

    let ls = d.ctr(&["content", "ls"]).ok();
    let row = ls
        .lines()
        .find(|l| l.starts_with(digest.as_str()))
        .unwrap_or_else(|| panic!("{digest} not listed:\n{ls}"));
    assert!(
        row.contains(&format!("{LABEL_UNCOMPRESSED}={diff_id}")),
        "{row}"
    );
    assert!(row.contains("team=storage"), "{row}");
    assert!(
        row.contains("containerd.io/gc.root="),
        "--keep roots it: {row}"
    );

    // One snapshot: against its parent, the same layer.
    let again = diff(&["next"]);
    assert_eq!(Digest::of(&gunzip(&again)), diff_id);
    // Uncompressed: the tar itself.
    let plain = diff(&["--media-type", MEDIA_TYPE_LAYER, "base", "next"]);
    assert_eq!(Digest::of(&plain), diff_id);
    let ls = d.ctr(&["content", "ls", "-q"]).ok();
    assert!(ls.lines().any(|l| l == diff_id.as_str()), "{ls}");
    // ctr's temporary views are gone again.
    let sn = d
        .ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"])
        .ok();
    assert_eq!(sn.lines().count(), 3, "{sn}");
}
