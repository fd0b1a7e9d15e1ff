//! OCI test images built here from the host's static busybox, never downloaded.
//!
//! Every blob is deterministic (sorted tar entries, fixed mtimes, uid/gid 0, a fixed gzip
//! header, JSON with sorted keys), so an image's digests are the same on every build and a
//! test can compare what a registry or the daemon serves with [`TestImage::root`].
//!
//! - [`TestImage::one_layer`]: busybox, its applet links, `/etc/passwd`, `/etc/group`, `/tmp`,
//!   `/root`.
//! - [`TestImage::three_layer`]: that base, then files, then whiteouts (`.wh.motd`) and an
//!   opaque directory (`.wh..wh..opq`).
//! - [`TestImage::two_platform_index`]: an OCI index over linux/amd64 and linux/arm64.
//! - [`big_image`]: a benchmark image of incompressible random layers, streamed to disk.
//!
//! [`TestImage::expected_rootfs`] applies the layers the way an unpacker must, and [`scan_tree`]
//! / [`assert_tree`] compare that with an unpacked snapshot on disk.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use berth_core::Digest;
use berth_core::diff::Descriptor;
use berth_core::digest::Digester;
use flate2::{Compression, GzBuilder};
use serde_json::{Value, json};

use crate::registry::Registry;

/// An OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// A gzip-compressed OCI layer (the only layer type these images use).
pub const MEDIA_TYPE_LAYER_GZIP: &str = berth_core::diff::MEDIA_TYPE_LAYER_GZIP;
/// The OCI layout annotation naming a manifest by tag (`skopeo oci:<dir>:<tag>` looks it up).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's layout annotation carrying the full image name (`ctr images import` uses it).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Where busybox-static installs the binary the images are made of.
pub const BUSYBOX: &str = "/bin/busybox";
/// The applets linked to `/bin/busybox` in the base rootfs (as `/bin/<name>` → `busybox`).
pub const BUSYBOX_APPLETS: &[&str] = &["sh", "true", "echo", "cat", "ls", "sleep", "env", "id"];
/// The `PATH` in every test image's config.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The mtime of every tar entry (2023-11-14T22:13:20Z).
pub const LAYER_MTIME: u64 = 1_700_000_000;
const CREATED: &str = "2023-11-14T22:13:20Z";
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// One filesystem object, in a layer or in a (expected or scanned) rootfs. Modes are the
/// permission bits only (`& 0o7777`); owners are always 0 here.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// The whole contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// The link target, as stored.
        target: String,
    },
    /// Anything else found by [`scan_tree`] (devices, fifos, sockets): never expected.
    Other {
        /// What it is, e.g. `char device 0:0 mode 0`.
        description: String,
    },
}

impl Node {
    /// A directory with `mode`.
    pub fn dir(mode: u32) -> Self {
        Self::Dir { mode }
    }

    /// A regular file with `mode` and `data`.
    pub fn file(mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Self::File {
            mode,
            data: data.into(),
        }
    }

    /// A symlink to `target`.
    pub fn symlink(target: impl Into<String>) -> Self {
        Self::Symlink {
            target: target.into(),
        }
    }

    /// `"dir"`, `"file"`, `"symlink"` or `"other"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dir { .. } => "dir",
            Self::File { .. } => "file",
            Self::Symlink { .. } => "symlink",
            Self::Other { .. } => "other",
        }
    }
}

// Busybox is 2 MB: a derived Debug would print every byte into a failure message.
impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir { mode } => write!(f, "dir {mode:04o}"),
            Self::File { mode, data } if data.len() <= 64 => {
                write!(f, "file {mode:04o} {:?}", String::from_utf8_lossy(data))
            }
            Self::File { mode, data } => write!(
                f,
                "file {mode:04o} {} bytes {}",
                data.len(),
                Digest::of(data)
            ),
            Self::Symlink { target } => write!(f, "symlink -> {target}"),
            Self::Other { description } => f.write_str(description),
        }
    }
}

/// A filesystem tree: relative path (`bin/sh`, no leading `/`, the root itself left out) → node.
pub type Rootfs = BTreeMap<String, Node>;

/// A layer's entries: relative paths (parents listed before children once sorted) → node.
/// Whiteouts are empty files named `.wh.<name>`; an opaque directory holds `.wh..wh..opq`.
pub type LayerSpec = Vec<(String, Node)>;

/// An image platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// The OCI architecture name: `amd64`, `arm64`, …
    pub architecture: String,
}

impl Platform {
    /// `linux/<architecture>`.
    pub fn linux(architecture: &str) -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
        }
    }

    /// The platform of this machine, with Go's architecture names (as containerd matches).
    pub fn host() -> Self {
        Self::linux(match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        })
    }
}

/// A built layer.
#[derive(Clone)]
pub struct LayerInfo {
    /// The gzip blob ([`MEDIA_TYPE_LAYER_GZIP`]).
    pub descriptor: Descriptor,
    /// The sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// What the layer holds, sorted by path.
    pub entries: LayerSpec,
}

impl LayerInfo {
    /// The uncompressed tar, rebuilt (the build is deterministic, so its digest is `diff_id`).
    pub fn tar(&self) -> Vec<u8> {
        layer_tar(&self.entries)
    }
}

/// One image manifest with its config and layers.
#[derive(Clone)]
pub struct ManifestInfo {
    /// The manifest blob ([`MEDIA_TYPE_MANIFEST`]).
    pub descriptor: Descriptor,
    /// Its platform (recorded in the config, and in the index entry when there is an index).
    pub platform: Platform,
    /// The config blob ([`MEDIA_TYPE_CONFIG`]).
    pub config: Descriptor,
    /// The layers, lowest first.
    pub layers: Vec<LayerInfo>,
}

impl ManifestInfo {
    /// The diffIDs, lowest layer first (the config's `rootfs.diff_ids`).
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The chain IDs, lowest first: the snapshot names an unpack commits.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.diff_ids())
    }

    /// The tree after applying the lowest `layers` layers.
    pub fn rootfs_after(&self, layers: usize) -> Rootfs {
        let mut tree = Rootfs::new();
        for layer in &self.layers[..layers] {
            apply_layer(&mut tree, &layer.entries);
        }
        tree
    }
}

/// The chain IDs of `diff_ids`: `chain[0] = diff[0]`, `chain[i] = sha256("chain[i-1] diff[i]")`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// An image held in memory as real OCI blobs.
#[derive(Clone)]
pub struct TestImage {
    /// The full image name, written as [`ANNOTATION_IMAGE_NAME`] (its tag becomes
    /// [`ANNOTATION_REF_NAME`]).
    pub name: String,
    /// Every blob (index, manifests, configs, layers) by digest: media type and bytes.
    pub blobs: BTreeMap<Digest, (String, Vec<u8>)>,
    /// What the image name points at: the index, or the manifest of a one-platform image.
    pub root: Descriptor,
    /// The manifests, in index order (one for a one-platform image).
    pub manifests: Vec<ManifestInfo>,
}

impl TestImage {
    /// busybox on one layer: `berth.test/one-layer:latest`.
    pub fn one_layer() -> Self {
        Self::from_layers("berth.test/one-layer:latest", vec![base_layer()])
    }

    /// Three layers: the base; `/data/{a,b}`, `/etc/motd` ("v2") and `/opt/x/*`; then a whiteout
    /// of `/etc/motd` and `/opt/x` made opaque with only `only-in-l3` in it.
    /// `berth.test/three-layer:latest`.
    pub fn three_layer() -> Self {
        let layer2 = vec![
            ("data".to_owned(), Node::dir(0o755)),
            ("data/a".to_owned(), Node::file(0o644, "a\n")),
            ("data/b".to_owned(), Node::file(0o600, "bbbb\n")),
            ("etc".to_owned(), Node::dir(0o755)),
            ("etc/motd".to_owned(), Node::file(0o644, "v2\n")),
            ("opt".to_owned(), Node::dir(0o755)),
            ("opt/x".to_owned(), Node::dir(0o755)),
            ("opt/x/one".to_owned(), Node::file(0o644, "one\n")),
            ("opt/x/sub".to_owned(), Node::dir(0o755)),
            ("opt/x/sub/two".to_owned(), Node::file(0o644, "two\n")),
            ("opt/x/link".to_owned(), Node::symlink("one")),
        ];
        let layer3 = vec![
            ("etc".to_owned(), Node::dir(0o755)),
            ("etc/.wh.motd".to_owned(), Node::file(0o644, "")),
            ("opt".to_owned(), Node::dir(0o755)),
            ("opt/x".to_owned(), Node::dir(0o755)),
            ("opt/x/.wh..wh..opq".to_owned(), Node::file(0o644, "")),
            ("opt/x/only-in-l3".to_owned(), Node::file(0o644, "l3\n")),
        ];
        Self::from_layers(
            "berth.test/three-layer:latest",
            vec![base_layer(), layer2, layer3],
        )
    }

    /// An OCI index over linux/amd64 and linux/arm64: both manifests share the one base layer
    /// blob, each has its own config. `berth.test/multi-platform:latest`.
    pub fn two_platform_index() -> Self {
        let mut blobs = BTreeMap::new();
        let layers = vec![build_layer(&mut blobs, base_layer())];
        let manifests: Vec<ManifestInfo> = ["amd64", "arm64"]
            .iter()
            .map(|arch| build_manifest(&mut blobs, Platform::linux(arch), layers.clone()))
            .collect();
        let entries: Vec<Value> = manifests
            .iter()
            .map(|m| {
                let mut entry = descriptor_json(&m.descriptor);
                entry["platform"] =
                    json!({"os": m.platform.os, "architecture": m.platform.architecture});
                entry
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": entries,
        });
        let root = add_blob(&mut blobs, MEDIA_TYPE_INDEX, to_json(&index));
        Self {
            name: "berth.test/multi-platform:latest".to_owned(),
            blobs,
            root,
            manifests,
        }
    }

    /// A one-platform (host) image of arbitrary layers, lowest first.
    pub fn from_layers(name: &str, layers: Vec<LayerSpec>) -> Self {
        let mut blobs = BTreeMap::new();
        let layers = layers
            .into_iter()
            .map(|spec| build_layer(&mut blobs, spec))
            .collect();
        let manifest = build_manifest(&mut blobs, Platform::host(), layers);
        Self {
            name: name.to_owned(),
            blobs,
            root: manifest.descriptor.clone(),
            manifests: vec![manifest],
        }
    }

    /// The same image under another name (the blobs and digests do not change).
    pub fn with_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// The same one-platform image with layer `index` made non-distributable: its descriptor
    /// gets `media_type` (e.g. `application/vnd.oci.image.layer.nondistributable.v1.tar+gzip`)
    /// and lists `urls`. The layer's bytes, digest and diffID do not change; the manifest is
    /// rewritten, so the image's digest does. A push with skopeo leaves such a layer out, as
    /// registries expect: the registry then does not have it.
    pub fn with_foreign_layer(mut self, index: usize, media_type: &str, urls: &[String]) -> Self {
        assert_eq!(self.manifests.len(), 1, "one-platform images only");
        let old = self.manifests[0].descriptor.clone();
        assert_eq!(self.root.digest, old.digest, "the root is the manifest");
        let mut manifest: Value = serde_json::from_slice(self.blob(&old.digest)).expect("manifest");
        manifest["layers"][index]["mediaType"] = json!(media_type);
        manifest["layers"][index]["urls"] = json!(urls);
        self.blobs.remove(&old.digest);
        let layer = &mut self.manifests[0].layers[index];
        layer.descriptor.media_type = media_type.to_owned();
        if let Some(entry) = self.blobs.get_mut(&layer.descriptor.digest) {
            media_type.clone_into(&mut entry.0);
        }
        let descriptor = add_blob(&mut self.blobs, MEDIA_TYPE_MANIFEST, to_json(&manifest));
        self.manifests[0].descriptor = descriptor.clone();
        self.root = descriptor;
        self
    }

    /// The tag part of [`Self::name`] (`latest` when it has none): the layout's ref name.
    pub fn ref_name(&self) -> &str {
        let last = self.name.rsplit('/').next().unwrap_or(&self.name);
        let last = last.split('@').next().unwrap_or(last);
        match last.split_once(':') {
            Some((_, tag)) if !tag.is_empty() => tag,
            _ => "latest",
        }
    }

    /// The manifest an unpack on this machine picks: the host platform's, else the first.
    pub fn manifest(&self) -> &ManifestInfo {
        let host = Platform::host();
        self.manifests
            .iter()
            .find(|m| m.platform == host)
            .unwrap_or(&self.manifests[0])
    }

    /// The layers of [`Self::manifest`].
    pub fn layers(&self) -> &[LayerInfo] {
        &self.manifest().layers
    }

    /// The config of [`Self::manifest`].
    pub fn config(&self) -> &Descriptor {
        &self.manifest().config
    }

    /// The diffIDs of [`Self::manifest`].
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.manifest().diff_ids()
    }

    /// The chain IDs of [`Self::manifest`]; the last one is the unpacked top snapshot.
    pub fn chain_ids(&self) -> Vec<Digest> {
        self.manifest().chain_ids()
    }

    /// A blob's bytes.
    pub fn blob(&self, digest: &Digest) -> &[u8] {
        &self
            .blobs
            .get(digest)
            .unwrap_or_else(|| panic!("{} has no blob {digest}", self.name))
            .1
    }

    /// The tree an unpack of [`Self::manifest`] must produce (all layers applied).
    pub fn expected_rootfs(&self) -> Rootfs {
        let manifest = self.manifest();
        manifest.rootfs_after(manifest.layers.len())
    }

    /// The `index.json` of this image's OCI layout.
    pub fn layout_index(&self) -> Vec<u8> {
        layout_index(&self.root, &self.name, self.ref_name())
    }

    /// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/*`) into `dir`,
    /// creating it if needed.
    pub fn write_oci_layout(&self, dir: &Path) {
        let blob_dir = dir.join("blobs/sha256");
        fs::create_dir_all(&blob_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", blob_dir.display()));
        write(&dir.join("oci-layout"), OCI_LAYOUT.as_bytes());
        write(&dir.join("index.json"), &self.layout_index());
        for (digest, (_, data)) in &self.blobs {
            write(&blob_dir.join(digest.hex()), data);
        }
    }

    /// Writes the OCI layout as a tar archive at `path` (what `ctr images import` takes).
    pub fn write_oci_archive(&self, path: &Path) {
        let dir = tempdir("berth-oci-layout-");
        self.write_oci_layout(dir.path());
        tar_oci_layout(dir.path(), path);
    }

    /// Pushes the image (every platform, digests preserved) to `registry` as `repo:tag` with
    /// skopeo. Returns the pushed reference, `127.0.0.1:PORT/repo:tag`.
    pub fn push(&self, registry: &Registry, repo: &str, tag: &str) -> String {
        let dir = tempdir("berth-oci-layout-");
        self.write_oci_layout(dir.path());
        registry.push_oci_layout(dir.path(), self.ref_name(), repo, tag)
    }
}

/// An OCI layout's `index.json` naming one image `name` (ref name `ref_name`) at `root`.
pub fn layout_index(root: &Descriptor, name: &str, ref_name: &str) -> Vec<u8> {
    let mut entry = descriptor_json(root);
    entry["annotations"] = json!({
        ANNOTATION_IMAGE_NAME: name,
        ANNOTATION_REF_NAME: ref_name,
    });
    to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [entry],
    }))
}

const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

/// The base rootfs every test image starts from: `/bin/busybox` with its applet links,
/// `/etc/passwd`, `/etc/group`, `/tmp` (1777) and `/root` (0700).
pub fn base_layer() -> LayerSpec {
    let mut layer = vec![
        ("bin".to_owned(), Node::dir(0o755)),
        ("bin/busybox".to_owned(), Node::file(0o755, busybox())),
        ("etc".to_owned(), Node::dir(0o755)),
        ("etc/passwd".to_owned(), Node::file(0o644, PASSWD)),
        ("etc/group".to_owned(), Node::file(0o644, GROUP)),
        ("root".to_owned(), Node::dir(0o700)),
        ("tmp".to_owned(), Node::dir(0o1777)),
    ];
    for applet in BUSYBOX_APPLETS {
        layer.push((format!("bin/{applet}"), Node::symlink("busybox")));
    }
    layer
}

/// The bytes of the host's static busybox. A missing or dynamically linked one is a setup
/// error: a container could not run it.
pub fn busybox() -> Vec<u8> {
    let data = fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("read {BUSYBOX}: {e}: run scripts/setup.sh (it installs busybox-static)")
    });
    assert!(
        !elf_has_interpreter(&data),
        "{BUSYBOX} is dynamically linked: run scripts/setup.sh (it installs busybox-static)"
    );
    data
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |off: usize| {
        elf.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        elf.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |off: usize| {
        elf.get(off..off + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let off = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(phentsize);
        u32_at(off) == Some(3)
    })
}

/// Applies one layer's entries to `tree` with OCI semantics: whiteouts and opaque markers hide
/// what lower layers had, then the layer's own entries are added.
pub fn apply_layer(tree: &mut Rootfs, entries: &[(String, Node)]) {
    let remove_under = |tree: &mut Rootfs, dir: &str| {
        let prefix = format!("{dir}/");
        tree.retain(|path, _| !path.starts_with(&prefix));
    };
    for (path, _) in entries {
        let (parent, name) = split_path(path);
        if name == ".wh..wh..opq" {
            match parent {
                Some(parent) => remove_under(tree, parent),
                None => tree.clear(),
            }
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            let hidden = match parent {
                Some(parent) => format!("{parent}/{hidden}"),
                None => hidden.to_owned(),
            };
            tree.remove(&hidden);
            remove_under(tree, &hidden);
        }
    }
    for (path, node) in entries {
        let (parent, name) = split_path(path);
        if name.starts_with(".wh.") {
            continue;
        }
        if let Some(parent) = parent {
            assert!(
                matches!(tree.get(parent), Some(Node::Dir { .. })),
                "test image spec error: {path} has no parent directory {parent}"
            );
        }
        if !matches!(node, Node::Dir { .. }) {
            remove_under(tree, path);
        }
        tree.insert(path.clone(), node.clone());
    }
}

fn split_path(path: &str) -> (Option<&str>, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (Some(parent), name),
        None => (None, path),
    }
}

/// Reads the tree under `dir` (not following symlinks) as a [`Rootfs`].
pub fn scan_tree(dir: &Path) -> Rootfs {
    let mut tree = Rootfs::new();
    scan_into(dir, "", &mut tree);
    tree
}

fn scan_into(dir: &Path, prefix: &str, tree: &mut Rootfs) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        let mode = meta.mode() & 0o7777;
        let kind = meta.file_type();
        let node = if kind.is_dir() {
            scan_into(&path, &rel, tree);
            Node::dir(mode)
        } else if kind.is_file() {
            Node::file(mode, crate::read_file(&path))
        } else if kind.is_symlink() {
            let target =
                fs::read_link(&path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
            Node::symlink(target.to_string_lossy())
        } else {
            let what = if kind.is_char_device() {
                "char device"
            } else if kind.is_block_device() {
                "block device"
            } else if kind.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            let rdev = meta.rdev();
            Node::Other {
                description: format!(
                    "{what} {}:{} mode {mode:o}",
                    nix::sys::stat::major(rdev),
                    nix::sys::stat::minor(rdev)
                ),
            }
        };
        tree.insert(rel, node);
    }
}

/// The differences between `expected` and `actual`, one readable line each (empty: equal).
pub fn diff_trees(expected: &Rootfs, actual: &Rootfs) -> Vec<String> {
    let mut out = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => out.push(format!("missing /{path}: want {want:?}")),
            Some(got) if got != want => out.push(format!("/{path}: want {want:?}, got {got:?}")),
            Some(_) => {}
        }
    }
    for (path, got) in actual {
        if !expected.contains_key(path) {
            out.push(format!("unexpected /{path}: {got:?}"));
        }
    }
    out
}

/// Asserts that the tree under `dir` is exactly `expected`.
#[track_caller]
pub fn assert_tree(expected: &Rootfs, dir: &Path) {
    let diffs = diff_trees(expected, &scan_tree(dir));
    assert!(
        diffs.is_empty(),
        "{} differs from the expected rootfs:\n{}",
        dir.display(),
        diffs.join("\n")
    );
}

/// Builds a layer and adds its gzip blob to `blobs`.
fn build_layer(
    blobs: &mut BTreeMap<Digest, (String, Vec<u8>)>,
    mut entries: LayerSpec,
) -> LayerInfo {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        panic!("test image spec error: {} listed twice in a layer", w[0].0);
    }
    let tar = layer_tar(&entries);
    let diff_id = Digest::of(&tar);
    let gz = cached_gzip(&diff_id, &tar);
    LayerInfo {
        descriptor: add_blob(blobs, MEDIA_TYPE_LAYER_GZIP, gz),
        diff_id,
        uncompressed_size: tar.len() as u64,
        entries,
    }
}

fn layer_tar(entries: &[(String, Node)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, node) in entries {
        let data: &[u8] = match node {
            Node::File { data, .. } => data,
            _ => &[],
        };
        let header = tar_header(path, node, data.len() as u64);
        builder
            .append(&header, data)
            .unwrap_or_else(|e| panic!("tar {path}: {e}"));
    }
    builder.into_inner().expect("finish layer tar")
}

fn tar_header(path: &str, node: &Node, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(path)
        .unwrap_or_else(|e| panic!("tar path {path}: {e}"));
    match node {
        Node::Dir { mode } => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode);
        }
        Node::File { mode, .. } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
        }
        Node::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header
                .set_link_name(target)
                .unwrap_or_else(|e| panic!("tar link {path} -> {target}: {e}"));
        }
        Node::Other { description } => panic!("a layer cannot hold {path}: {description}"),
    }
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(LAYER_MTIME);
    header.set_cksum();
    header
}

/// The gzip encoding of every layer blob of a [`TestImage`]: default level, mtime 0, so the
/// same tar always gives the same blob.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// [`gzip`] memoized by diffID: compressing busybox takes most of a second in a debug build,
/// and every test image starts with it.
fn cached_gzip(diff_id: &Digest, tar: &[u8]) -> Vec<u8> {
    static CACHE: Mutex<BTreeMap<Digest, Vec<u8>>> = Mutex::new(BTreeMap::new());
    let cached = CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(diff_id)
        .cloned();
    cached.unwrap_or_else(|| {
        let gz = gzip(tar);
        CACHE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(diff_id.clone(), gz.clone());
        gz
    })
}

fn config_json(platform: &Platform, diff_ids: &[Digest]) -> Vec<u8> {
    let history: Vec<Value> = (0..diff_ids.len())
        .map(|i| json!({"created": CREATED, "created_by": format!("berth test layer {i}")}))
        .collect();
    to_json(&json!({
        "created": CREATED,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {
            "Env": [DEFAULT_PATH_ENV],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(Digest::as_str).collect::<Vec<_>>(),
        },
        "history": history,
    }))
}

fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": descriptor_json(config),
        "layers": layers.iter().map(descriptor_json).collect::<Vec<_>>(),
    }))
}

fn build_manifest(
    blobs: &mut BTreeMap<Digest, (String, Vec<u8>)>,
    platform: Platform,
    layers: Vec<LayerInfo>,
) -> ManifestInfo {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = add_blob(blobs, MEDIA_TYPE_CONFIG, config_json(&platform, &diff_ids));
    let layer_descs: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
    let descriptor = add_blob(
        blobs,
        MEDIA_TYPE_MANIFEST,
        manifest_json(&config, &layer_descs),
    );
    ManifestInfo {
        descriptor,
        platform,
        config,
        layers,
    }
}

fn add_blob(
    blobs: &mut BTreeMap<Digest, (String, Vec<u8>)>,
    media_type: &str,
    data: Vec<u8>,
) -> Descriptor {
    let desc = Descriptor::new(media_type, Digest::of(&data), data.len() as u64);
    blobs.insert(desc.digest.clone(), (media_type.to_owned(), data));
    desc
}

fn descriptor_json(desc: &Descriptor) -> Value {
    let mut value = json!({
        "mediaType": desc.media_type,
        "digest": desc.digest.as_str(),
        "size": desc.size,
    });
    if !desc.annotations.is_empty() {
        value["annotations"] = json!(desc.annotations);
    }
    value
}

fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

/// Tars the OCI layout in `layout` into `archive` (streamed; deterministic headers).
pub fn tar_oci_layout(layout: &Path, archive: &Path) {
    let out = File::create(archive).unwrap_or_else(|e| panic!("create {}: {e}", archive.display()));
    let mut builder = tar::Builder::new(io::BufWriter::new(out));
    let append_file = |builder: &mut tar::Builder<_>, rel: &str| {
        let path = layout.join(rel);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let size = file
            .metadata()
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .len();
        let header = tar_header(rel, &Node::file(0o644, Vec::new()), size);
        builder
            .append(&header, file)
            .unwrap_or_else(|e| panic!("tar {}: {e}", path.display()));
    };
    append_file(&mut builder, "oci-layout");
    append_file(&mut builder, "index.json");
    for dir in ["blobs", "blobs/sha256"] {
        builder
            .append(&tar_header(dir, &Node::dir(0o755), 0), io::empty())
            .unwrap_or_else(|e| panic!("tar {dir}: {e}"));
    }
    let blob_dir = layout.join("blobs/sha256");
    let mut names: Vec<String> = fs::read_dir(&blob_dir)
        .unwrap_or_else(|e| panic!("read dir {}: {e}", blob_dir.display()))
        .map(|e| {
            e.expect("read dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for name in names {
        append_file(&mut builder, &format!("blobs/sha256/{name}"));
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .unwrap_or_else(|e| panic!("write {}: {e}", archive.display()));
}

/// A large image written straight to an OCI layout on disk, for benchmarks.
pub struct BigImage {
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// The image name in the layout (`berth.test/big:latest`).
    pub name: String,
    /// The manifest (the image has no index).
    pub root: Descriptor,
    /// The config.
    pub config: Descriptor,
    /// The layers, lowest first: (gzip blob, diffID, uncompressed size).
    pub layers: Vec<(Descriptor, Digest, u64)>,
}

impl BigImage {
    /// The diffIDs, lowest first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.1.clone()).collect()
    }

    /// The chain IDs, lowest first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.diff_ids())
    }

    /// The sum of the compressed layer sizes.
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.0.size).sum()
    }

    /// Tars the layout into `path` (for `ctr images import`).
    pub fn write_oci_archive(&self, path: &Path) {
        tar_oci_layout(&self.layout, path);
    }

    /// Pushes the image to `registry` as `repo:tag`; returns the reference.
    pub fn push(&self, registry: &Registry, repo: &str, tag: &str) -> String {
        registry.push_oci_layout(&self.layout, "latest", repo, tag)
    }
}

/// Writes a `layers`-layer image of about `total_bytes` of incompressible random data (fresh on
/// every call) as an OCI layout into `dir`, streaming every layer from `/dev/urandom` through
/// gzip to disk. Layer 0 also holds the busybox base, so the image can run.
///
/// The gzip stream uses stored blocks (level 0), which is what deflate emits for random data
/// anyway, minus the futile search; in a debug build hashing and CRC still take ~0.25 s/MiB.
pub fn big_image(dir: &Path, layers: usize, total_bytes: u64) -> BigImage {
    assert!(layers > 0, "an image needs a layer");
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).unwrap_or_else(|e| panic!("create {}: {e}", blob_dir.display()));
    let per_layer = total_bytes / layers as u64;
    let mut random = File::open("/dev/urandom").expect("open /dev/urandom");
    let mut built = Vec::with_capacity(layers);
    for i in 0..layers {
        let mut entries = if i == 0 { base_layer() } else { Vec::new() };
        entries.push(("data".to_owned(), Node::dir(0o755)));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let tmp = blob_dir.join(format!(".layer-{i}.tmp"));
        let file = File::create(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
        let compressed = HashingWriter::new(io::BufWriter::new(file));
        let gz = GzBuilder::new()
            .mtime(0)
            .write(compressed, Compression::none());
        let mut builder = tar::Builder::new(HashingWriter::new(gz));
        let failed = |e: io::Error| -> ! { panic!("write {}: {e}", tmp.display()) };
        for (path, node) in &entries {
            let data: &[u8] = match node {
                Node::File { data, .. } => data,
                _ => &[],
            };
            builder
                .append(&tar_header(path, node, data.len() as u64), data)
                .unwrap_or_else(|e| failed(e));
        }
        let name = format!("data/layer-{i}.bin");
        let random = Read::take(&mut random, per_layer);
        builder
            .append(
                &tar_header(&name, &Node::file(0o644, Vec::new()), per_layer),
                random,
            )
            .unwrap_or_else(|e| failed(e));
        let uncompressed = builder.into_inner().unwrap_or_else(|e| failed(e));
        let (diff_id, uncompressed_size, gz) = uncompressed.finish();
        let compressed = gz.finish().unwrap_or_else(|e| failed(e));
        let (digest, size, mut file) = compressed.finish();
        file.flush().unwrap_or_else(|e| failed(e));
        let dest = blob_dir.join(digest.hex());
        fs::rename(&tmp, &dest)
            .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), dest.display()));
        built.push((
            Descriptor::new(MEDIA_TYPE_LAYER_GZIP, digest, size),
            diff_id,
            uncompressed_size,
        ));
    }
    let diff_ids: Vec<Digest> = built.iter().map(|l| l.1.clone()).collect();
    let mut small = BTreeMap::new();
    let config = add_blob(
        &mut small,
        MEDIA_TYPE_CONFIG,
        config_json(&Platform::host(), &diff_ids),
    );
    let layer_descs: Vec<Descriptor> = built.iter().map(|l| l.0.clone()).collect();
    let root = add_blob(
        &mut small,
        MEDIA_TYPE_MANIFEST,
        manifest_json(&config, &layer_descs),
    );
    let name = "berth.test/big:latest";
    for (digest, (_, data)) in &small {
        write(&blob_dir.join(digest.hex()), data);
    }
    write(&dir.join("oci-layout"), OCI_LAYOUT.as_bytes());
    write(
        &dir.join("index.json"),
        &layout_index(&root, name, "latest"),
    );
    BigImage {
        layout: dir.to_owned(),
        name: name.to_owned(),
        root,
        config,
        layers: built,
    }
}

/// A writer that digests and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    digester: Digester,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            digester: Digester::new(),
            written: 0,
        }
    }

    fn finish(self) -> (Digest, u64, W) {
        (self.digester.finish(), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
