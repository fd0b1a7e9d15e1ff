//! Image archives: importing OCI image-layout and docker-save tarballs into the content store
//! and the image records, and exporting images as either. See [`Client::archive`].
//!
//! **Import** follows `ctr images import`: under a lease, every regular file of the tar is
//! streamed into the content store (ref `tar-<path>`); `oci-layout`, `index.json`,
//! `manifest.json` and `repositories` are parsed in memory instead (at most 4 MiB each). A file
//! under `blobs/` must be named `blobs/sha256/<hex>` and its bytes must digest to that name (the
//! server checks it at commit, so a mismatching blob is never stored). For a docker-save archive
//! (a `manifest.json` and no `index.json`) a Docker schema 2 manifest is synthesized per entry
//! (layer media types sniffed from the bytes: gzip, zstd or plain tar), plus an OCI index when
//! there is more than one. The tree is then walked from the roots: children are checked to be in
//! the store with their declared sizes and linked with `containerd.io/gc.ref.content.*` labels,
//! and each named root becomes an image (`Images.Update` with mask `target`, `Images.Create` on
//! NotFound). Names come from `io.containerd.image.name`, else `org.opencontainers.image.ref.name`
//! (a bare tag becomes `<base>:<tag>`, the base being `--base-name` or `import-<YYYY-MM-DD>`;
//! with a base name, full references not under it are dropped), and for docker archives from
//! `RepoTags`, normalized (`busybox` → `docker.io/library/busybox:latest`). Finally each image is
//! optionally unpacked for the host platform ([`Client::unpack`]). On any failure the lease is
//! deleted with a synchronous garbage collection, so nothing the import wrote stays behind.
//!
//! Hostile archives are refused with InvalidArgument before anything is kept: entries whose
//! names are absolute or contain `..`, devices, fifos and hard links, blob names that are not
//! digests, symlinks that leave the archive or stand in for `blobs/` or metadata files, and
//! metadata/manifest/config JSON over 4 MiB. Nothing is ever written outside the content store;
//! the only symlinks honoured are docker-save's in-archive aliases between layer tars
//! (`<id2>/layer.tar -> ../<id1>/layer.tar`), resolved by name inside the archive.
//!
//! **Export** writes a deterministic tar (sorted, mtime 0, uid/gid 0, fixed modes): `oci-layout`,
//! `index.json` listing every image (annotations `io.containerd.image.name` and
//! `org.opencontainers.image.ref.name`), then `blobs/sha256/<hex>` for every blob of the chosen
//! platforms, streamed from `Content.Read` and digest-checked on the way. The docker format adds
//! `manifest.json` (`Config`, `RepoTags`, `Layers`) and `repositories` in the layout docker ≥ 25
//! writes: the config and layers are referenced by their OCI blob paths, and the layers are the
//! blobs as stored (compressed or not; `docker load` detects the compression). The result is both
//! an OCI layout and loadable by `docker load`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::path::{Component, Path};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use berth_core::diff::{
    Descriptor, MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD,
};
use berth_core::digest::Digester;
use berth_core::gc::REF_CONTENT_PREFIX;
use berth_core::images::{
    Image, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, is_index_media_type, is_manifest_media_type,
};
use berth_core::labels::Labels;
use berth_core::leases::Resource;
use berth_core::transfer::Platform;
use berth_core::{Digest, Error, ErrorKind, Result};
use berth_proto::containerd::services::content::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::content::WRITE_CHUNK;
use crate::error::from_status;
use crate::leases::LeaseOptions;
use crate::unpack::{
    JsonDescriptor, JsonIndex, JsonManifest, MAX_DEPTH, MAX_JSON_BLOB, UnpackOptions,
    WORK_LEASE_EXPIRY, host_platform, platform_matches, read_json, wanted,
};

/// The annotation carrying an image's full name in an OCI layout (containerd's).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a layout entry, usually by its tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &str = "oci-layout";
const OCI_INDEX: &str = "index.json";
const DOCKER_MANIFEST: &str = "manifest.json";
const DOCKER_REPOSITORIES: &str = "repositories";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Bytes kept from the start of each file, for sniffing layer compression.
const HEAD_LEN: usize = 8;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// How far symlink aliases are followed before they are taken for a loop.
const MAX_ALIAS_HOPS: usize = 16;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The base of names made from bare `org.opencontainers.image.ref.name` tags (`None`:
    /// `import-<YYYY-MM-DD>`); when set, full reference names not under it are skipped.
    pub base_name: Option<String>,
    /// Also name the archive's index (OCI `index.json`, or the one synthesized for a docker
    /// archive) as an image, as `ctr images import --index-name` does.
    pub index_name: Option<String>,
    /// Keep every platform of an index; otherwise only `platforms` (empty: the host's).
    pub all_platforms: bool,
    /// The platforms to keep (and the first one to unpack); empty means the host's.
    pub platforms: Vec<Platform>,
    /// Unpack each image into this snapshotter afterwards (`Some("")`: the namespace default).
    pub unpack: Option<String>,
    /// Labels for the image records.
    pub labels: Labels,
}

/// The archive layout [`Archive::export`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// An OCI image layout.
    #[default]
    Oci,
    /// An OCI image layout plus docker-save's `manifest.json` and `repositories` (docker ≥ 25).
    Docker,
}

/// How to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The layout.
    pub format: ExportFormat,
    /// The platforms of an index to include; empty means the host's.
    pub platforms: Vec<Platform>,
    /// Include every platform of an index (whatever the store holds of them must be complete).
    pub all_platforms: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The images, in the order asked for.
    pub images: Vec<Image>,
    /// How many blobs the archive holds.
    pub blobs: usize,
    /// Their total size.
    pub blob_bytes: u64,
}

/// Archive import and export; see [`Client::archive`].
#[derive(Debug, Clone, Copy)]
pub struct Archive<'a> {
    client: &'a Client,
}

impl Client {
    /// Image archive import and export.
    pub fn archive(&self) -> Archive<'_> {
        Archive { client: self }
    }
}

// ---------------------------------------------------------------------------------------------
// Names

/// `name` as containerd normalizes docker references: a missing registry is `docker.io`, a
/// one-component docker.io repository gets `library/`, a missing tag is `latest`.
pub fn normalize_docker_name(name: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid_argument(format!("image name {name:?}: {why}"));
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(bad("contains spaces, control characters or backslashes"));
    }
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if rest.is_empty() || rest.starts_with('/') || rest.ends_with('/') || rest.contains("//") {
        return Err(bad("empty path component"));
    }
    let rest = if domain == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    let last = rest.rsplit('/').next().unwrap_or(&rest);
    let tagged = last.contains(':') || last.contains('@');
    Ok(if tagged {
        format!("{domain}/{rest}")
    } else {
        format!("{domain}/{rest}:latest")
    })
}

/// `name` as docker shows it (`docker.io/library/busybox:latest` → `busybox:latest`).
pub fn familiar_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// The object part of a reference (what follows the repository: `latest`, `v1@sha256:…`,
/// `@sha256:…`), which OCI layouts use as `org.opencontainers.image.ref.name`.
pub fn reference_object(name: &str) -> Option<&str> {
    let start = name.rfind('/').map_or(0, |i| i + 1);
    let last = &name[start..];
    let i = last.find([':', '@'])?;
    let object = if last[i..].starts_with('@') {
        &last[i..]
    } else {
        &last[i + 1..]
    };
    (!object.is_empty()).then_some(object)
}

/// Whether `reference` names an image under `prefix` (`prefix` followed by `:`, `@` or `/`).
fn is_image_prefix(reference: &str, prefix: &str) -> bool {
    reference
        .strip_prefix(prefix)
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| matches!(c, ':' | '@' | '/'))
}

/// The image name for a layout entry's annotations (see the module docs), or `None` to skip.
pub fn import_name(
    annotations: &BTreeMap<String, String>,
    base_name: Option<&str>,
    today: &str,
) -> Option<String> {
    if let Some(name) = annotations
        .get(ANNOTATION_IMAGE_NAME)
        .filter(|n| !n.is_empty())
    {
        return Some(name.clone());
    }
    let reference = annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|n| !n.is_empty())?;
    if reference.contains(['/', ':', '@']) {
        return match base_name {
            Some(base) if !is_image_prefix(reference, base) => None,
            _ => Some(reference.clone()),
        };
    }
    Some(match base_name {
        Some(base) => format!("{base}:{reference}"),
        None => format!("import-{today}:{reference}"),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading the tar (on a blocking thread)

/// What the tar reader found, in archive order.
enum Entry {
    /// A metadata file parsed by the client, read whole.
    Meta { path: String, data: Vec<u8> },
    /// A file to store; its bytes follow on `chunks`, exactly `size` of them.
    Blob {
        path: String,
        size: u64,
        expected: Option<Digest>,
        head: Vec<u8>,
        chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    },
    /// A symlink, resolved to an archive path.
    Alias { path: String, target: String },
}

/// The reader's error, kept where the consumer finds it: the consumer only sees a broken chunk
/// stream, which would lose the reason.
type FailureSlot = Arc<Mutex<Option<Error>>>;

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_argument(msg)
}

/// An I/O error while reading the archive: malformed data is the archive's fault.
fn archive_io(what: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            invalid(format!("{what}: the archive is corrupt: {e}"))
        }
        _ => Error::io(format!("{what}: read the archive"), e),
    }
}

/// `raw` as a clean relative archive path (`./a//b` → `a/b`); `None` for the root itself.
fn clean_path(raw: &Path) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| invalid(format!("archive entry {raw:?}: name is not UTF-8")))?,
            ),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(invalid(format!(
                    "archive entry {raw:?}: names with `..` are not allowed"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(format!(
                    "archive entry {raw:?}: absolute names are not allowed"
                )));
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Where the symlink `path` → `target` points inside the archive; refuses targets that are
/// absolute or climb out of it.
fn resolve_link(path: &str, target: &Path) -> Result<String> {
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for c in target.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().ok_or_else(|| {
                invalid(format!("archive symlink {path:?}: target is not UTF-8"))
            })?),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(invalid(format!(
                        "archive symlink {path:?} -> {target:?} points outside the archive"
                    )));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(format!(
                    "archive symlink {path:?} -> {target:?} is absolute"
                )));
            }
        }
    }
    if parts.is_empty() {
        return Err(invalid(format!(
            "archive symlink {path:?} -> {target:?} points at the archive root"
        )));
    }
    Ok(parts.join("/"))
}

fn is_meta(path: &str) -> bool {
    matches!(
        path,
        OCI_LAYOUT | OCI_INDEX | DOCKER_MANIFEST | DOCKER_REPOSITORIES
    )
}

/// The digest a `blobs/…` path names; anything but `blobs/sha256/<64 hex>` is refused.
fn blob_digest(path: &str) -> Result<Digest> {
    let Some(rest) = path.strip_prefix("blobs/") else {
        return Err(invalid(format!("{path:?} is not a blob path")));
    };
    let Some((algorithm, hex)) = rest.split_once('/') else {
        return Err(invalid(format!(
            "archive entry {path:?}: blobs must be named blobs/<algorithm>/<hex>"
        )));
    };
    Digest::parse(&format!("{algorithm}:{hex}")).map_err(|e| {
        invalid(format!(
            "archive entry {path:?}: blob name is not a digest: {}",
            e.message()
        ))
    })
}

/// Fills `buf` unless the input ends first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads the archive, sending what it finds to `tx`. Returns Ok when the consumer went away.
fn read_archive(input: impl Read, tx: &mpsc::Sender<Entry>, slot: &FailureSlot) -> Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let gzipped = input
        .fill_buf()
        .map_err(|e| archive_io("sniff the archive", e))?
        .starts_with(GZIP_MAGIC);
    let input: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(input);
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; WRITE_CHUNK];
    let entries = archive
        .entries()
        .map_err(|e| archive_io("list archive entries", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_io("read an archive entry", e))?;
        let kind = entry.header().entry_type();
        let raw = entry
            .path()
            .map_err(|e| archive_io("read an archive entry name", e))?
            .into_owned();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(path) = clean_path(&raw)? else {
            if kind.is_dir() {
                continue;
            }
            return Err(invalid(format!("archive entry {raw:?} has no name")));
        };
        if kind.is_dir() {
            continue;
        }
        if !seen.insert(path.clone()) {
            return Err(invalid(format!(
                "archive entry {path:?} appears twice; which one counts is ambiguous"
            )));
        }
        if kind.is_symlink() {
            if is_meta(&path) || path.starts_with("blobs/") {
                return Err(invalid(format!(
                    "archive entry {path:?} is a symlink; it must be a regular file"
                )));
            }
            let link = entry
                .link_name()
                .map_err(|e| archive_io("read a symlink target", e))?
                .ok_or_else(|| invalid(format!("archive symlink {path:?} has no target")))?
                .into_owned();
            let target = resolve_link(&path, &link)?;
            if tx.blocking_send(Entry::Alias { path, target }).is_err() {
                return Ok(());
            }
            continue;
        }
        if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(invalid(format!(
                "archive entry {path:?} is a {kind:?}; only regular files, directories and \
                 in-archive symlinks are allowed"
            )));
        }
        let size = entry.size();
        if is_meta(&path) {
            if size > MAX_JSON_BLOB {
                return Err(invalid(format!(
                    "archive entry {path:?} is {size} bytes, more than the {MAX_JSON_BLOB} \
                     allowed for image JSON"
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| archive_io(&format!("read {path:?}"), e))?;
            if tx.blocking_send(Entry::Meta { path, data }).is_err() {
                return Ok(());
            }
            continue;
        }
        let expected = if path.starts_with("blobs/") {
            Some(blob_digest(&path)?)
        } else {
            None
        };
        let (chunk_tx, chunks) = mpsc::channel(4);
        let want = usize::try_from(size.min(WRITE_CHUNK as u64)).unwrap_or(WRITE_CHUNK);
        let n = read_full(&mut entry, &mut buf[..want])
            .map_err(|e| archive_io(&format!("read {path:?}"), e))?;
        if n < want {
            return Err(invalid(format!(
                "archive entry {path:?} is cut short: {n} of {size} bytes"
            )));
        }
        let head = buf[..n.min(HEAD_LEN)].to_vec();
        // Cannot block: the channel is new and has room.
        if n > 0 && chunk_tx.try_send(Ok(buf[..n].to_vec())).is_err() {
            return Err(Error::internal("queue the first chunk of an archive entry"));
        }
        let blob = Entry::Blob {
            path: path.clone(),
            size,
            expected,
            head,
            chunks,
        };
        if tx.blocking_send(blob).is_err() {
            return Ok(());
        }
        let mut remaining = size - n as u64;
        while remaining > 0 {
            let want = usize::try_from(remaining.min(WRITE_CHUNK as u64)).unwrap_or(WRITE_CHUNK);
            let got = match read_full(&mut entry, &mut buf[..want]) {
                Ok(got) if got == want => got,
                Ok(got) => {
                    let e = invalid(format!(
                        "archive entry {path:?} is cut short: {} of {size} bytes",
                        size - remaining + got as u64
                    ));
                    fail_chunks(&chunk_tx, slot, copy_error(&e));
                    return Err(e);
                }
                Err(err) => {
                    let e = archive_io(&format!("read {path:?}"), err);
                    fail_chunks(&chunk_tx, slot, copy_error(&e));
                    return Err(e);
                }
            };
            remaining -= got as u64;
            // The consumer may stop early (the store already had the blob): skip the rest,
            // which the tar reader does by itself at the next entry.
            if chunk_tx.blocking_send(Ok(buf[..got].to_vec())).is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// Records `e` for the consumer and breaks the entry's chunk stream.
fn fail_chunks(chunks: &mpsc::Sender<io::Result<Vec<u8>>>, slot: &FailureSlot, e: Error) {
    let msg = e.message().to_owned();
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert(e);
    let _ = chunks.blocking_send(Err(io::Error::new(io::ErrorKind::InvalidData, msg)));
}

/// The same kind and message (the source, if any, folded into the message): [`Error`] is not
/// `Clone`, and the reader both records its error and returns it.
fn copy_error(e: &Error) -> Error {
    Error::new(e.kind(), e.to_string())
}

/// An async reader over the chunks of one archive entry.
struct ChunkReader {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(chunks: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            chunks,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.current.len() {
                let n = buf.remaining().min(self.current.len() - self.pos);
                let start = self.pos;
                buf.put_slice(&self.current[start..start + n]);
                self.pos += n;
                return Poll::Ready(Ok(()));
            }
            match self.chunks.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Import

/// A file of the archive now in the content store.
#[derive(Debug, Clone)]
struct Stored {
    digest: Digest,
    size: u64,
    head: Vec<u8>,
}

/// Everything the archive held, once read.
#[derive(Default)]
struct Collected {
    files: BTreeMap<String, Stored>,
    aliases: BTreeMap<String, String>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl Collected {
    /// The stored file at `path`, following in-archive symlinks.
    fn file(&self, path: &str, what: &str) -> Result<&Stored> {
        let clean = clean_path(Path::new(path))
            .map_err(|e| e.context(what))?
            .ok_or_else(|| invalid(format!("{what}: empty path")))?;
        let mut current = clean;
        for _ in 0..MAX_ALIAS_HOPS {
            if let Some(stored) = self.files.get(&current) {
                return Ok(stored);
            }
            match self.aliases.get(&current) {
                Some(next) => current = next.clone(),
                None => {
                    return Err(invalid(format!(
                        "{what}: the archive holds no file {path:?}"
                    )));
                }
            }
        }
        Err(invalid(format!("{what}: symlinks from {path:?} loop")))
    }
}

/// One image root of the archive and the names it gets.
#[derive(Debug, Clone)]
struct Root {
    desc: Descriptor,
    names: Vec<String>,
}

/// One entry of docker-save's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The synthesized docker manifest: the field order is the JSON's, so the bytes are stable.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: JsonDescriptor,
    layers: Vec<JsonDescriptor>,
}

fn layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(GZIP_MAGIC) {
        MEDIA_TYPE_DOCKER_LAYER_GZIP
    } else if head.starts_with(ZSTD_MAGIC) {
        MEDIA_TYPE_LAYER_ZSTD
    } else {
        MEDIA_TYPE_DOCKER_LAYER
    }
}

fn json_bytes<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("encode {what}: {e}")))
}

struct Importer<'a> {
    /// Carries the import's lease.
    client: &'a Client,
    lease: &'a str,
    options: &'a ImportOptions,
}

impl Importer<'_> {
    async fn run<R: Read + Send + 'static>(&self, input: R) -> Result<Vec<Image>> {
        let collected = self.collect(input).await?;
        let roots = if collected.meta.contains_key(OCI_INDEX) {
            self.oci_roots(&collected).await?
        } else if collected.meta.contains_key(DOCKER_MANIFEST) {
            self.docker_roots(&collected).await?
        } else {
            return Err(invalid(
                "the archive is neither an OCI image layout (no index.json) nor a docker-save \
                 archive (no manifest.json)",
            ));
        };
        let mut labelled = HashSet::new();
        for root in &roots {
            self.walk(&root.desc, 0, &mut labelled)
                .await
                .map_err(|e| e.context(format!("image root {}", root.desc.digest)))?;
        }
        let mut images = Vec::new();
        for root in &roots {
            for name in &root.names {
                images.push(self.put_image(name, &root.desc).await?);
            }
        }
        Ok(images)
    }

    /// Streams the archive's files into the content store.
    async fn collect<R: Read + Send + 'static>(&self, input: R) -> Result<Collected> {
        let (tx, mut rx) = mpsc::channel(2);
        let slot: FailureSlot = Arc::default();
        let reader_slot = slot.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let result = read_archive(input, &tx, &reader_slot);
            drop(tx);
            result
        });
        let mut collected = Collected::default();
        while let Some(entry) = rx.recv().await {
            match entry {
                Entry::Meta { path, data } => {
                    collected.meta.insert(path, data);
                }
                Entry::Alias { path, target } => {
                    collected.aliases.insert(path, target);
                }
                Entry::Blob {
                    path,
                    size,
                    expected,
                    head,
                    chunks,
                } => {
                    let stored = self.store(&path, size, expected, chunks).await;
                    let digest = match stored {
                        Ok(d) => d,
                        Err(e) => {
                            drop(rx);
                            let reader_error =
                                slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                            return Err(reader_error.unwrap_or(e));
                        }
                    };
                    collected.files.insert(path, Stored { digest, size, head });
                }
            }
        }
        reader
            .await
            .map_err(|e| Error::internal(format!("the archive reader failed: {e}")))??;
        Ok(collected)
    }

    /// Stores one archive file and adds it to the lease (a blob the namespace already had is
    /// not leased by its write).
    async fn store(
        &self,
        path: &str,
        size: u64,
        expected: Option<Digest>,
        chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    ) -> Result<Digest> {
        // Unverifiable files get a ref of their own, so they can never resume someone else's
        // bytes under a shared name.
        let reference = match expected {
            Some(_) => format!("tar-{path}"),
            None => format!("tar-{path}@{}", self.lease),
        };
        let content = self.client.content();
        let result = content
            .ingest(
                &reference,
                ChunkReader::new(chunks),
                size,
                expected.as_ref(),
                Labels::new(),
            )
            .await;
        let digest = match result {
            Ok(d) => d,
            Err(e) => {
                if let Err(abort) = content.abort(&reference).await
                    && !abort.is(ErrorKind::NotFound)
                {
                    tracing::warn!(reference, error = %abort, "import: could not abort ingest");
                }
                return Err(match expected {
                    Some(want) if e.is(ErrorKind::FailedPrecondition) => invalid(format!(
                        "archive entry {path:?}: its bytes are not the blob {want} its name \
                         says: {}",
                        e.message()
                    )),
                    _ => e.context(format!("store archive entry {path:?}")),
                });
            }
        };
        self.client
            .leases()
            .add_resource(
                self.lease,
                &Resource {
                    id: digest.to_string(),
                    kind: "content".to_owned(),
                },
            )
            .await?;
        Ok(digest)
    }

    /// Writes a blob the client made (a synthesized manifest or index) under the lease.
    async fn write_made(&self, data: &[u8], ref_prefix: &str) -> Result<Digest> {
        let digest = Digest::of(data);
        self.client
            .content()
            .ingest(
                &format!("{ref_prefix}-{digest}"),
                data,
                data.len() as u64,
                Some(&digest),
                Labels::new(),
            )
            .await?;
        self.client
            .leases()
            .add_resource(
                self.lease,
                &Resource {
                    id: digest.to_string(),
                    kind: "content".to_owned(),
                },
            )
            .await?;
        Ok(digest)
    }

    fn today() -> String {
        chrono::Local::now().format("%Y-%m-%d").to_string()
    }

    async fn oci_roots(&self, collected: &Collected) -> Result<Vec<Root>> {
        if let Some(layout) = collected.meta.get(OCI_LAYOUT) {
            let parsed: serde_json::Value = serde_json::from_slice(layout)
                .map_err(|e| invalid(format!("oci-layout is not valid JSON: {e}")))?;
            let version = parsed
                .get("imageLayoutVersion")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            if !version.starts_with("1.") {
                return Err(invalid(format!(
                    "oci-layout: unsupported imageLayoutVersion {version:?}"
                )));
            }
        }
        let data = collected.meta.get(OCI_INDEX).map_or(&[][..], Vec::as_slice);
        let index: JsonIndex = serde_json::from_slice(data)
            .map_err(|e| invalid(format!("index.json is not a valid OCI index: {e}")))?;
        let today = Self::today();
        let mut roots = Vec::new();
        for entry in &index.manifests {
            if !self.options.all_platforms
                && !wanted(entry.platform().as_ref(), &self.options.platforms)
            {
                continue;
            }
            let desc = entry.to_core("index.json entry")?;
            let names = import_name(
                &entry.annotations,
                self.options.base_name.as_deref(),
                &today,
            )
            .into_iter()
            .collect();
            roots.push(Root { desc, names });
        }
        if roots.is_empty() && !index.manifests.is_empty() {
            return Err(self.filtered_out("index.json"));
        }
        if let Some(name) = &self.options.index_name {
            let digest = self.write_made(data, "index").await?;
            let mut desc = Descriptor::new(MEDIA_TYPE_OCI_INDEX, digest, data.len() as u64);
            if let Some(mt) = index.media_type.clone().filter(|m| is_index_media_type(m)) {
                desc.media_type = mt;
            }
            roots.push(Root {
                desc,
                names: vec![name.clone()],
            });
        }
        Ok(roots)
    }

    async fn docker_roots(&self, collected: &Collected) -> Result<Vec<Root>> {
        let data = collected
            .meta
            .get(DOCKER_MANIFEST)
            .map_or(&[][..], Vec::as_slice);
        let entries: Vec<DockerEntry> = serde_json::from_slice(data)
            .map_err(|e| invalid(format!("manifest.json is not a docker-save manifest: {e}")))?;
        if entries.is_empty() {
            return Err(invalid("manifest.json lists no images"));
        }
        let mut roots = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let what = format!("manifest.json entry {i}");
            let config = collected.file(&entry.config, &what)?;
            if config.size > MAX_JSON_BLOB {
                return Err(invalid(format!(
                    "{what}: config {:?} is {} bytes, more than the {MAX_JSON_BLOB} allowed \
                     for image JSON",
                    entry.config, config.size
                )));
            }
            let mut layers = Vec::with_capacity(entry.layers.len());
            let mut oci = false;
            for layer in &entry.layers {
                let stored = collected.file(layer, &what)?;
                let media_type = layer_media_type(&stored.head);
                oci |= media_type == MEDIA_TYPE_LAYER_ZSTD;
                layers.push((media_type, stored));
            }
            // Docker has no zstd layer type: such an image is described in OCI terms.
            let (manifest_type, config_type) = if oci {
                (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_CONFIG)
            } else {
                (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_CONFIG)
            };
            let manifest = NewManifest {
                schema_version: 2,
                media_type: manifest_type,
                config: JsonDescriptor {
                    media_type: config_type.to_owned(),
                    digest: config.digest.to_string(),
                    size: config.size,
                    annotations: BTreeMap::new(),
                    platform: None,
                },
                layers: layers
                    .iter()
                    .map(|(media_type, stored)| JsonDescriptor {
                        media_type: (*media_type).to_owned(),
                        digest: stored.digest.to_string(),
                        size: stored.size,
                        annotations: BTreeMap::new(),
                        platform: None,
                    })
                    .collect(),
            };
            let bytes = json_bytes(&manifest, "a docker manifest")?;
            let digest = self.write_made(&bytes, "manifest").await?;
            let names = entry
                .repo_tags
                .iter()
                .flatten()
                .map(|tag| normalize_docker_name(tag).map_err(|e| e.context(&what)))
                .collect::<Result<Vec<_>>>()?;
            roots.push(Root {
                desc: Descriptor::new(manifest_type, digest, bytes.len() as u64),
                names,
            });
        }
        if roots.len() > 1 || self.options.index_name.is_some() {
            let index = JsonIndex {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_INDEX.to_owned()),
                manifests: roots
                    .iter()
                    .map(|root| {
                        let mut d = JsonDescriptor::from_core(&root.desc);
                        if let Some(name) = root.names.first() {
                            d.annotations
                                .insert(ANNOTATION_IMAGE_NAME.to_owned(), name.clone());
                            if let Some(object) = reference_object(name) {
                                d.annotations
                                    .insert(ANNOTATION_REF_NAME.to_owned(), object.to_owned());
                            }
                        }
                        d
                    })
                    .collect(),
            };
            let bytes = json_bytes(&index, "an index")?;
            let digest = self.write_made(&bytes, "index").await?;
            roots.push(Root {
                desc: Descriptor::new(MEDIA_TYPE_OCI_INDEX, digest, bytes.len() as u64),
                names: self.options.index_name.iter().cloned().collect(),
            });
        }
        Ok(roots)
    }

    fn filtered_out(&self, what: &str) -> Error {
        let platforms: Vec<String> = if self.options.platforms.is_empty() {
            vec![host_platform().to_string()]
        } else {
            self.options
                .platforms
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        Error::not_found(format!(
            "{what} has no manifest for platform {}; import all platforms to keep them",
            platforms.join(", ")
        ))
    }

    /// Checks that `digest` is in the store with `size`.
    async fn check_present(&self, desc: &Descriptor, what: &str) -> Result<()> {
        let info = match self.client.content().info(&desc.digest).await {
            Ok(info) => info,
            Err(e) if e.is(ErrorKind::NotFound) => {
                return Err(invalid(format!(
                    "{what} {} is neither in the archive nor in the content store",
                    desc.digest
                )));
            }
            Err(e) => return Err(e),
        };
        if info.size != desc.size {
            return Err(invalid(format!(
                "{what} {} is {} bytes, its descriptor says {}",
                desc.digest, info.size, desc.size
            )));
        }
        Ok(())
    }

    /// Checks the tree under `desc` and links it with gc.ref labels, keeping only the wanted
    /// platforms of indexes.
    async fn walk(
        &self,
        desc: &Descriptor,
        depth: usize,
        labelled: &mut HashSet<Digest>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "indexes nest more than {MAX_DEPTH} deep at {}",
                desc.digest
            )));
        }
        if !labelled.insert(desc.digest.clone()) {
            return Ok(());
        }
        self.check_present(desc, "blob").await?;
        let mut labels = Labels::new();
        if is_index_media_type(&desc.media_type) {
            let index: JsonIndex = read_json(self.client, desc, "index").await?;
            let mut kept = Vec::new();
            for entry in &index.manifests {
                if self.options.all_platforms
                    || wanted(entry.platform().as_ref(), &self.options.platforms)
                {
                    kept.push(entry.to_core("an index entry")?);
                }
            }
            if kept.is_empty() && !index.manifests.is_empty() {
                return Err(self.filtered_out(&format!("index {}", desc.digest)));
            }
            for (i, child) in kept.iter().enumerate() {
                Box::pin(self.walk(child, depth + 1, labelled)).await?;
                labels.insert(
                    format!("{REF_CONTENT_PREFIX}.m.{i}"),
                    child.digest.to_string(),
                );
            }
        } else if is_manifest_media_type(&desc.media_type) {
            let manifest: JsonManifest = read_json(self.client, desc, "manifest").await?;
            let config = manifest.config.to_core("a manifest's config")?;
            if config.size > MAX_JSON_BLOB {
                return Err(invalid(format!(
                    "config {} is {} bytes, more than the {MAX_JSON_BLOB} allowed for image JSON",
                    config.digest, config.size
                )));
            }
            self.check_present(&config, "config").await?;
            labels.insert(
                format!("{REF_CONTENT_PREFIX}.config"),
                config.digest.to_string(),
            );
            for (i, layer) in manifest.layers.iter().enumerate() {
                let layer = layer.to_core("a manifest's layer")?;
                self.check_present(&layer, "layer").await?;
                labels.insert(
                    format!("{REF_CONTENT_PREFIX}.l.{i}"),
                    layer.digest.to_string(),
                );
            }
        }
        if !labels.is_empty() {
            self.client
                .content()
                .update_labels(&desc.digest, &labels)
                .await
                .map_err(|e| e.context(format!("label {}", desc.digest)))?;
        }
        Ok(())
    }

    /// Points image `name` at `target` as `ctr images import` does: Update with mask `target`
    /// (and the requested labels), Create when the image does not exist yet.
    async fn put_image(&self, name: &str, target: &Descriptor) -> Result<Image> {
        let mut image = Image::new(name, target.clone());
        image.labels = self.options.labels.clone();
        let mut paths = vec!["target".to_owned()];
        paths.extend(self.options.labels.keys().map(|k| format!("labels.{k}")));
        let images = self.client.images();
        loop {
            match images.update(&image, &paths).await {
                Err(e) if e.is(ErrorKind::NotFound) => {}
                other => return other.map_err(|e| e.context(format!("image {name:?}"))),
            }
            match images.create(&image).await {
                // Created meanwhile by someone else: update theirs.
                Err(e) if e.is(ErrorKind::AlreadyExists) => continue,
                other => return other.map_err(|e| e.context(format!("image {name:?}"))),
            }
        }
    }
}

impl Archive<'_> {
    /// Imports the archive at `path`; see [`import`](Self::import).
    pub async fn import_file(&self, path: &Path, options: &ImportOptions) -> Result<Vec<Image>> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        self.import(file, options)
            .await
            .map_err(|e| e.context(format!("import {}", path.display())))
    }

    /// Imports an OCI image-layout or docker-save tar (optionally gzip-compressed) read from
    /// `input`, streaming every blob into the content store; returns the images created or
    /// updated, in archive order. See the module docs for the rules.
    pub async fn import<R: Read + Send + 'static>(
        &self,
        input: R,
        options: &ImportOptions,
    ) -> Result<Vec<Image>> {
        let leases = self.client.leases();
        let lease = leases
            .create(LeaseOptions::default().expires_in(WORK_LEASE_EXPIRY))
            .await?;
        let leased = self.client.with_lease(&lease.id);
        let importer = Importer {
            client: &leased,
            lease: &lease.id,
            options,
        };
        let images = match importer.run(input).await {
            Ok(images) => images,
            Err(e) => {
                // A synchronous collection, so what the import wrote is gone when we return.
                if let Err(del) = leases.delete(&lease.id, true).await {
                    tracing::warn!(lease = %lease.id, error = %del, "import: could not delete its lease");
                }
                return Err(e);
            }
        };
        if let Err(e) = leases.delete(&lease.id, false).await {
            tracing::warn!(lease = %lease.id, error = %e, "import: could not delete its lease");
        }
        if let Some(snapshotter) = &options.unpack {
            let unpack = UnpackOptions {
                snapshotter: Some(snapshotter.clone()),
                platform: options.platforms.first().cloned(),
            };
            let mut done = BTreeSet::new();
            for image in &images {
                if !done.insert(image.target.digest.clone()) {
                    continue;
                }
                self.client
                    .unpack(&image.target, &unpack)
                    .await
                    .map_err(|e| e.context(format!("unpack {}", image.name)))?;
            }
        }
        Ok(images)
    }
}

// ---------------------------------------------------------------------------------------------
// Export

/// One tar member for the writer thread.
enum Item {
    Dir(String),
    File(String, Vec<u8>),
    Blob {
        path: String,
        size: u64,
        chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    },
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

/// A sync reader over one blob's chunks that insists on exactly `remaining` bytes: a short or
/// long stream would otherwise make a corrupt tar.
struct BlobRead {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    remaining: u64,
}

impl Read for BlobRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.current.len() {
                let n = buf.len().min(self.current.len() - self.pos);
                buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    if chunk.len() as u64 > self.remaining {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "blob is longer than its descriptor",
                        ));
                    }
                    self.remaining -= chunk.len() as u64;
                    self.current = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None if self.remaining == 0 => return Ok(0),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("blob stream ended {} bytes early", self.remaining),
                    ));
                }
            }
        }
    }
}

fn write_archive<W: Write>(out: W, items: &mut mpsc::Receiver<Item>) -> io::Result<()> {
    let mut builder = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, out));
    while let Some(item) = items.blocking_recv() {
        match item {
            Item::Dir(path) => {
                let h = header(&path, tar::EntryType::Directory, 0o755, 0)?;
                builder.append(&h, io::empty())?;
            }
            Item::File(path, data) => {
                let h = header(&path, tar::EntryType::Regular, 0o644, data.len() as u64)?;
                builder.append(&h, data.as_slice())?;
            }
            Item::Blob { path, size, chunks } => {
                let h = header(&path, tar::EntryType::Regular, 0o644, size)?;
                let reader = BlobRead {
                    chunks,
                    current: Vec::new(),
                    pos: 0,
                    remaining: size,
                };
                builder.append(&h, reader)?;
            }
        }
    }
    builder.into_inner()?.flush()
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

/// What goes into an export, planned before a byte is written.
#[derive(Default)]
struct Plan {
    images: Vec<Image>,
    blobs: BTreeMap<Digest, u64>,
    /// Per image: the manifests included (descriptor, parsed, platform from its index entry).
    manifests: Vec<Vec<(Descriptor, JsonManifest, Option<Platform>)>>,
}

struct Exporter<'a> {
    client: &'a Client,
    options: &'a ExportOptions,
}

impl Exporter<'_> {
    async fn plan(&self, names: &[String]) -> Result<Plan> {
        if names.is_empty() {
            return Err(invalid("export needs at least one image"));
        }
        let mut plan = Plan::default();
        for name in names {
            let image = self.client.images().get(name).await?;
            let mut manifests = Vec::new();
            self.walk(&image.target, None, 0, &mut plan.blobs, &mut manifests)
                .await
                .map_err(|e| e.context(format!("export image {name:?}")))?;
            plan.images.push(image);
            plan.manifests.push(manifests);
        }
        Ok(plan)
    }

    async fn include(&self, desc: &Descriptor, blobs: &mut BTreeMap<Digest, u64>) -> Result<()> {
        let info = self
            .client
            .content()
            .info(&desc.digest)
            .await
            .map_err(|e| e.context(format!("blob {}", desc.digest)))?;
        if info.size != desc.size {
            return Err(Error::failed_precondition(format!(
                "blob {} is {} bytes in the store, its descriptor says {}",
                desc.digest, info.size, desc.size
            )));
        }
        blobs.insert(desc.digest.clone(), desc.size);
        Ok(())
    }

    async fn walk(
        &self,
        desc: &Descriptor,
        platform: Option<Platform>,
        depth: usize,
        blobs: &mut BTreeMap<Digest, u64>,
        manifests: &mut Vec<(Descriptor, JsonManifest, Option<Platform>)>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "indexes nest more than {MAX_DEPTH} deep at {}",
                desc.digest
            )));
        }
        self.include(desc, blobs).await?;
        if is_index_media_type(&desc.media_type) {
            let index: JsonIndex = read_json(self.client, desc, "index").await?;
            let mut kept = 0;
            for entry in &index.manifests {
                let entry_platform = entry.platform();
                if self.options.all_platforms
                    || wanted(entry_platform.as_ref(), &self.options.platforms)
                {
                    let child = entry.to_core("an index entry")?;
                    Box::pin(self.walk(&child, entry_platform, depth + 1, blobs, manifests))
                        .await?;
                    kept += 1;
                }
            }
            if kept == 0 && !index.manifests.is_empty() {
                let platforms: Vec<String> = if self.options.platforms.is_empty() {
                    vec![host_platform().to_string()]
                } else {
                    self.options
                        .platforms
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                };
                return Err(Error::not_found(format!(
                    "index {} has no manifest for platform {}",
                    desc.digest,
                    platforms.join(", ")
                )));
            }
        } else if is_manifest_media_type(&desc.media_type) {
            let manifest: JsonManifest = read_json(self.client, desc, "manifest").await?;
            let config = manifest.config.to_core("a manifest's config")?;
            self.include(&config, blobs).await?;
            for layer in &manifest.layers {
                let layer = layer.to_core("a manifest's layer")?;
                self.include(&layer, blobs).await?;
            }
            manifests.push((desc.clone(), manifest, platform));
        }
        Ok(())
    }

    fn index_json(plan: &Plan) -> Result<Vec<u8>> {
        let manifests = plan
            .images
            .iter()
            .map(|image| {
                let mut d = JsonDescriptor::from_core(&image.target);
                d.annotations
                    .insert(ANNOTATION_IMAGE_NAME.to_owned(), image.name.clone());
                match reference_object(&image.name) {
                    Some(object) => {
                        d.annotations
                            .insert(ANNOTATION_REF_NAME.to_owned(), object.to_owned());
                    }
                    None => {
                        d.annotations.remove(ANNOTATION_REF_NAME);
                    }
                }
                d
            })
            .collect();
        json_bytes(
            &JsonIndex {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_INDEX.to_owned()),
                manifests,
            },
            "index.json",
        )
    }

    /// The manifest docker gets for one image: the first requested platform's, else the
    /// host's, else the only one.
    fn docker_manifest<'p>(
        &self,
        image: &Image,
        manifests: &'p [(Descriptor, JsonManifest, Option<Platform>)],
    ) -> Result<&'p JsonManifest> {
        let host = [host_platform()];
        let prefs: &[Platform] = if self.options.platforms.is_empty() {
            &host
        } else {
            &self.options.platforms
        };
        for want in prefs {
            if let Some((_, m, _)) = manifests
                .iter()
                .find(|(_, _, p)| p.as_ref().is_none_or(|p| platform_matches(want, p)))
            {
                return Ok(m);
            }
        }
        match manifests {
            [(_, m, _)] => Ok(m),
            _ => Err(Error::not_found(format!(
                "image {:?} has no manifest for the docker format's platform",
                image.name
            ))),
        }
    }

    /// docker-save's `manifest.json` and `repositories`.
    fn docker_files(&self, plan: &Plan) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut entries: Vec<DockerEntry> = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (image, manifests) in plan.images.iter().zip(&plan.manifests) {
            let manifest = self.docker_manifest(image, manifests)?;
            let config = blob_path(&manifest.config.to_core("a manifest's config")?.digest);
            let layers = manifest
                .layers
                .iter()
                .map(|l| Ok(blob_path(&l.to_core("a manifest's layer")?.digest)))
                .collect::<Result<Vec<_>>>()?;
            let familiar = familiar_name(&image.name);
            let tag = reference_object(familiar)
                .filter(|o| !o.contains('@'))
                .map(|tag| {
                    let repo = &familiar[..familiar.len() - tag.len() - 1];
                    (repo.to_owned(), tag.to_owned())
                });
            if let (Some((repo, tag)), Some(top)) = (&tag, manifest.layers.last()) {
                let top = top.to_core("a manifest's layer")?.digest;
                repositories
                    .entry(repo.clone())
                    .or_default()
                    .insert(tag.clone(), top.hex().to_owned());
            }
            let repo_tag = tag.map(|(repo, tag)| format!("{repo}:{tag}"));
            match entries
                .iter_mut()
                .find(|e| e.config == config && e.layers == layers)
            {
                Some(existing) => {
                    if let Some(rt) = repo_tag {
                        let tags = existing.repo_tags.get_or_insert_with(Vec::new);
                        if !tags.contains(&rt) {
                            tags.push(rt);
                        }
                    }
                }
                None => entries.push(DockerEntry {
                    config,
                    repo_tags: Some(repo_tag.into_iter().collect()),
                    layers,
                }),
            }
        }
        Ok((
            json_bytes(&entries, "manifest.json")?,
            json_bytes(&repositories, "repositories")?,
        ))
    }

    /// Streams `digest` to the writer thread, checking its size and digest on the way.
    async fn stream_blob(
        &self,
        digest: &Digest,
        size: u64,
        chunks: &mpsc::Sender<io::Result<Vec<u8>>>,
    ) -> Result<()> {
        let result = self
            .client
            .call(|| format!("read content {digest}"), async {
                let mut stream = self
                    .client
                    .rpc()
                    .content()
                    .read(pb::ReadContentRequest {
                        digest: digest.to_string(),
                        offset: 0,
                        size: 0,
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let mut digester = Digester::new();
                let mut read = 0u64;
                while let Some(msg) = stream.message().await.map_err(from_status)? {
                    read += msg.data.len() as u64;
                    if read > size {
                        return Err(Error::data_loss(format!(
                            "blob {digest} is longer than its {size} bytes"
                        )));
                    }
                    digester.update(&msg.data);
                    chunks
                        .send(Ok(msg.data))
                        .await
                        .map_err(|_| writer_stopped())?;
                }
                let got = digester.finish();
                if read != size || &got != digest {
                    return Err(Error::data_loss(format!(
                        "blob {digest} read back as {read} bytes digesting to {got}"
                    )));
                }
                Ok(())
            })
            .await;
        if let Err(e) = &result {
            // Break the tar entry, so no archive claims a blob it does not hold.
            let _ = chunks.send(Err(io::Error::other(e.to_string()))).await;
        }
        result
    }
}

const WRITER_STOPPED: &str = "the archive writer stopped";

fn writer_stopped() -> Error {
    Error::unavailable(WRITER_STOPPED)
}

impl Archive<'_> {
    /// Exports `images` to the file `path` (replacing it); a failed export removes the file.
    pub async fn export_file(
        &self,
        images: &[String],
        path: &Path,
        options: &ExportOptions,
    ) -> Result<ExportSummary> {
        let file = std::fs::File::create(path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let result = self.export(images, file, options).await;
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result.map_err(|e| e.context(format!("export to {}", path.display())))
    }

    /// Writes `images` (names) as one archive to `out`: an OCI image layout, or with
    /// [`ExportFormat::Docker`] also docker-save's files. See the module docs.
    pub async fn export<W: Write + Send + 'static>(
        &self,
        images: &[String],
        out: W,
        options: &ExportOptions,
    ) -> Result<ExportSummary> {
        let exporter = Exporter {
            client: self.client,
            options,
        };
        let plan = exporter.plan(images).await?;
        let index = Exporter::index_json(&plan)?;
        let docker = match options.format {
            ExportFormat::Oci => None,
            ExportFormat::Docker => Some(exporter.docker_files(&plan)?),
        };

        let (tx, mut rx) = mpsc::channel::<Item>(2);
        let writer = tokio::task::spawn_blocking(move || write_archive(out, &mut rx));
        let sent = async {
            let send = |item: Item| async { tx.send(item).await.map_err(|_| writer_stopped()) };
            send(Item::File(
                OCI_LAYOUT.to_owned(),
                OCI_LAYOUT_CONTENT.to_vec(),
            ))
            .await?;
            send(Item::File(OCI_INDEX.to_owned(), index)).await?;
            if let Some((manifest, repositories)) = docker {
                send(Item::File(DOCKER_MANIFEST.to_owned(), manifest)).await?;
                send(Item::File(DOCKER_REPOSITORIES.to_owned(), repositories)).await?;
            }
            send(Item::Dir("blobs".to_owned())).await?;
            send(Item::Dir("blobs/sha256".to_owned())).await?;
            for (digest, size) in &plan.blobs {
                let (chunk_tx, chunks) = mpsc::channel(4);
                send(Item::Blob {
                    path: blob_path(digest),
                    size: *size,
                    chunks,
                })
                .await?;
                exporter.stream_blob(digest, *size, &chunk_tx).await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Error::internal(format!("the archive writer failed: {e}")))?;
        match (sent, written) {
            (Ok(()), Ok(())) => {}
            // A reading failure also breaks the writer; the reading error says why.
            (Err(e), _) if e.message() != WRITER_STOPPED => return Err(e),
            (_, Err(e)) => return Err(Error::io("write the archive", e)),
            (Err(e), Ok(())) => return Err(e),
        }
        Ok(ExportSummary {
            blob_bytes: plan.blobs.values().sum(),
            blobs: plan.blobs.len(),
            images: plan.images,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_normalize_like_containerd() {
        let n = |s| normalize_docker_name(s).unwrap();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("me/app:v1"), "docker.io/me/app:v1");
        assert_eq!(n("docker.io/app"), "docker.io/library/app:latest");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("reg.io:5000/a/b:c"), "reg.io:5000/a/b:c");
        assert_eq!(n("berth.test/x:v1"), "berth.test/x:v1");
        for bad in ["", "a b", "reg.io/", "a//b"] {
            assert_eq!(
                normalize_docker_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
        assert_eq!(
            familiar_name("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar_name("docker.io/me/app:v1"), "me/app:v1");
        assert_eq!(familiar_name("reg.io:5000/a:b"), "reg.io:5000/a:b");
    }

    #[test]
    fn reference_objects() {
        assert_eq!(
            reference_object("docker.io/library/busybox:latest"),
            Some("latest")
        );
        assert_eq!(reference_object("reg.io:5000/a/b:v1"), Some("v1"));
        assert_eq!(reference_object("reg.io:5000/a/b"), None);
        assert_eq!(
            reference_object("a/b@sha256:00"),
            Some("@sha256:00"),
            "digest-only references keep the @"
        );
        assert_eq!(reference_object("a/b:v1@sha256:00"), Some("v1@sha256:00"));
    }

    #[test]
    fn import_names_follow_ctr() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let today = "2024-01-02";
        let full = ann(&[
            (ANNOTATION_IMAGE_NAME, "reg.io/a:1"),
            (ANNOTATION_REF_NAME, "1"),
        ]);
        assert_eq!(
            import_name(&full, None, today).as_deref(),
            Some("reg.io/a:1")
        );
        assert_eq!(
            import_name(&full, Some("other"), today).as_deref(),
            Some("reg.io/a:1"),
            "the containerd name is never translated"
        );
        let tag = ann(&[(ANNOTATION_REF_NAME, "v2")]);
        assert_eq!(
            import_name(&tag, None, today).as_deref(),
            Some("import-2024-01-02:v2")
        );
        assert_eq!(
            import_name(&tag, Some("my/app"), today).as_deref(),
            Some("my/app:v2")
        );
        let reference = ann(&[(ANNOTATION_REF_NAME, "reg.io/a:3")]);
        assert_eq!(
            import_name(&reference, None, today).as_deref(),
            Some("reg.io/a:3")
        );
        assert_eq!(
            import_name(&reference, Some("reg.io/a"), today).as_deref(),
            Some("reg.io/a:3")
        );
        assert_eq!(import_name(&reference, Some("reg.io/b"), today), None);
        assert_eq!(import_name(&reference, Some("reg.io/"), today), None);
        assert_eq!(import_name(&ann(&[]), None, today), None);
    }

    #[test]
    fn paths_are_cleaned_and_escapes_refused() {
        let c = |s: &str| clean_path(Path::new(s));
        assert_eq!(
            c("./blobs//sha256/x").unwrap().as_deref(),
            Some("blobs/sha256/x")
        );
        assert_eq!(c("./").unwrap(), None);
        for bad in ["../x", "a/../../x", "/etc/passwd", "a/.."] {
            assert_eq!(
                c(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        assert_eq!(
            resolve_link("b/layer.tar", Path::new("../a/layer.tar")).unwrap(),
            "a/layer.tar"
        );
        for bad in ["/etc/passwd", "../../etc/passwd", ".."] {
            assert_eq!(
                resolve_link("b/layer.tar", Path::new(bad))
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn blob_names_must_be_digests() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_digest(&format!("blobs/sha256/{hex}")).unwrap().hex(),
            hex
        );
        for bad in [
            "blobs/sha256/abc".to_owned(),
            format!("blobs/sha512/{hex}"),
            format!("blobs/{hex}"),
            format!("blobs/sha256/{}", "A".repeat(64)),
            format!("blobs/sha256/{hex}/x"),
        ] {
            assert_eq!(
                blob_digest(&bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn layer_types_are_sniffed() {
        assert_eq!(
            layer_media_type(&[0x1f, 0x8b, 8, 0]),
            MEDIA_TYPE_DOCKER_LAYER_GZIP
        );
        assert_eq!(
            layer_media_type(&[0x28, 0xb5, 0x2f, 0xfd]),
            MEDIA_TYPE_LAYER_ZSTD
        );
        assert_eq!(layer_media_type(b"etc/\0\0\0\0"), MEDIA_TYPE_DOCKER_LAYER);
        assert_eq!(layer_media_type(&[]), MEDIA_TYPE_DOCKER_LAYER);
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let h = header(path, tar::EntryType::Regular, 0o644, data.len() as u64).unwrap();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Runs the reader over `tar` and returns what it sent (blob bytes drained).
    async fn read_all_entries(tar: Vec<u8>) -> Result<Vec<(String, Vec<u8>)>> {
        let (tx, mut rx) = mpsc::channel(2);
        let slot: FailureSlot = Arc::default();
        let s2 = slot.clone();
        let reader =
            tokio::task::spawn_blocking(move || read_archive(io::Cursor::new(tar), &tx, &s2));
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            match e {
                Entry::Meta { path, data } => out.push((path, data)),
                Entry::Alias { path, target } => out.push((path, target.into_bytes())),
                Entry::Blob { path, chunks, .. } => {
                    let mut data = Vec::new();
                    let mut r = ChunkReader::new(chunks);
                    match tokio::io::AsyncReadExt::read_to_end(&mut r, &mut data).await {
                        Ok(_) => out.push((path, data)),
                        Err(_) => break,
                    }
                }
            }
        }
        reader.await.unwrap()?;
        Ok(out)
    }

    #[tokio::test]
    async fn reader_streams_files_and_detects_gzip() {
        let big = vec![7u8; WRITE_CHUNK * 2 + 5];
        let tar = tar_of(&[("index.json", b"{}"), ("x/layer.tar", &big), ("empty", b"")]);
        let got = read_all_entries(tar.clone()).await.unwrap();
        assert_eq!(got[0], ("index.json".to_owned(), b"{}".to_vec()));
        assert_eq!(got[1].0, "x/layer.tar");
        assert_eq!(got[1].1, big);
        assert_eq!(got[2], ("empty".to_owned(), Vec::new()));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let again = read_all_entries(gz.finish().unwrap()).await.unwrap();
        assert_eq!(again, got);
    }

    #[tokio::test]
    async fn reader_refuses_hostile_entries() {
        let huge = vec![b' '; (MAX_JSON_BLOB + 1) as usize];
        let cases: Vec<Vec<u8>> = vec![
            tar_of(&[("blobs/sha256/nope", b"x")]),
            tar_of(&[("index.json", &huge)]),
            tar_of(&[("a", b"1"), ("./a", b"2")]),
        ];
        for tar in cases {
            let err = read_all_entries(tar).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        }
        // Names the tar crate refuses to write are set in the raw header.
        let mut raw = tar::Header::new_old();
        raw.as_old_mut().name[..7].copy_from_slice(b"../evil");
        raw.set_size(1);
        raw.set_entry_type(tar::EntryType::Regular);
        raw.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&raw, &b"x"[..]).unwrap();
        let err = read_all_entries(b.into_inner().unwrap()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

        let mut link = header("blobs/sha256/x", tar::EntryType::Symlink, 0o777, 0).unwrap();
        link.set_link_name("/etc/passwd").unwrap();
        link.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&link, io::empty()).unwrap();
        let err = read_all_entries(b.into_inner().unwrap()).await.unwrap_err();
        assert!(err.message().contains("symlink"), "{err}");
    }

    #[tokio::test]
    async fn truncated_archives_fail_with_the_readers_reason() {
        let big = vec![1u8; WRITE_CHUNK + 100];
        let mut tar = tar_of(&[("x/layer.tar", &big)]);
        tar.truncate(512 + WRITE_CHUNK + 10);
        let err = read_all_entries(tar).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains("cut short"), "{err}");
    }

    #[test]
    fn blob_reads_insist_on_the_declared_size() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"abc".to_vec())).unwrap();
        drop(tx);
        let mut r = BlobRead {
            chunks: rx,
            current: Vec::new(),
            pos: 0,
            remaining: 5,
        };
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"abcdef".to_vec())).unwrap();
        drop(tx);
        let mut r = BlobRead {
            chunks: rx,
            current: Vec::new(),
            pos: 0,
            remaining: 5,
        };
        assert_eq!(
            r.read_to_end(&mut Vec::new()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn headers_are_deterministic() {
        let a = header("blobs/sha256/x", tar::EntryType::Regular, 0o644, 3).unwrap();
        let b = header("blobs/sha256/x", tar::EntryType::Regular, 0o644, 3).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.mtime().unwrap(), 0);
        assert_eq!(a.uid().unwrap(), 0);
    }
}
