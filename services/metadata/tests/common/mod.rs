//! Test helpers: a small directory-backed `BlobStore` (berth-metadata must not depend on
//! berth-content) and an environment that opens `Metadata` over it in a tempdir.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::content::{BlobInfo, BlobStore, ContentStore, IngestStatus, ReaderAt, Writer};
use berth_core::digest::Digester;
use berth_core::labels::Labels;
use berth_core::{Digest, Error, ErrorKind, Namespace, RequestContext, Result};
use berth_metadata::{GcOptions, Metadata};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::io(what, e)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[derive(Serialize, Deserialize)]
struct IngestMeta {
    reference: String,
    total: u64,
    expected: Option<String>,
    started_at: u64,
    updated_at: u64,
}

/// Blobs in `<root>/blobs/<hex>`, ingests in `<root>/ingests/<hex of ref>/{data,meta}`.
pub struct DirBlobs {
    root: PathBuf,
    locked: Arc<Mutex<HashSet<String>>>,
}

impl DirBlobs {
    pub fn new(root: &Path) -> Self {
        fs::create_dir_all(root.join("blobs")).unwrap();
        fs::create_dir_all(root.join("ingests")).unwrap();
        Self {
            root: root.to_owned(),
            locked: Arc::default(),
        }
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.hex())
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.root.join("ingests").join(hex::encode(reference))
    }

    fn read_meta(dir: &Path) -> Result<IngestMeta> {
        let bytes = fs::read(dir.join("meta")).map_err(io(format!("read {}", dir.display())))?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    fn write_meta(dir: &Path, meta: &IngestMeta) -> Result<()> {
        fs::write(dir.join("meta"), serde_json::to_vec(meta).unwrap())
            .map_err(io(format!("write meta in {}", dir.display())))
    }

    fn status_of(dir: &Path) -> Result<IngestStatus> {
        let meta = Self::read_meta(dir)?;
        let offset = fs::metadata(dir.join("data"))
            .map_err(io("stat ingest data"))?
            .len();
        Ok(IngestStatus {
            reference: meta.reference,
            offset,
            total: meta.total,
            expected: meta.expected.map(|d| Digest::parse(&d).unwrap()),
            started_at: UNIX_EPOCH + Duration::from_nanos(meta.started_at),
            updated_at: UNIX_EPOCH + Duration::from_nanos(meta.updated_at),
        })
    }

    /// Every blob file on disk.
    pub fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.root.join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        out.sort();
        out
    }
}

struct FileReader {
    file: fs::File,
    size: u64,
}

impl ReaderAt for FileReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        self.file
            .read_at(buf, offset)
            .map_err(io("read blob".to_string()))
    }
}

impl BlobStore for DirBlobs {
    fn info(&self, digest: &Digest) -> Result<BlobInfo> {
        let meta = fs::metadata(self.blob_path(digest)).map_err(io(format!("stat {digest}")))?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size: meta.len(),
            created_at: meta.modified().unwrap(),
        })
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn ReaderAt>> {
        let file = fs::File::open(self.blob_path(digest)).map_err(io(format!("open {digest}")))?;
        let size = file.metadata().unwrap().len();
        Ok(Box::new(FileReader { file, size }))
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        fs::remove_file(self.blob_path(digest)).map_err(io(format!("remove {digest}")))
    }

    fn list(&self) -> Result<Vec<BlobInfo>> {
        self.files()
            .iter()
            .map(|hex| self.info(&Digest::parse(&format!("sha256:{hex}")).unwrap()))
            .collect()
    }

    fn status(&self, reference: &str) -> Result<IngestStatus> {
        let dir = self.ingest_dir(reference);
        if !dir.exists() {
            return Err(Error::not_found(format!("ingest {reference:?}: not found")));
        }
        Self::status_of(&dir)
    }

    fn list_statuses(&self) -> Result<Vec<IngestStatus>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("ingests")).unwrap() {
            out.push(Self::status_of(&entry.unwrap().path())?);
        }
        Ok(out)
    }

    fn abort(&self, reference: &str) -> Result<()> {
        fs::remove_dir_all(self.ingest_dir(reference))
            .map_err(io(format!("abort ingest {reference:?}")))
    }

    fn writer(
        &self,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn Writer>> {
        if !self.locked.lock().unwrap().insert(reference.to_owned()) {
            return Err(Error::unavailable(format!("ref {reference:?} locked")));
        }
        let lock = RefLock {
            locked: Arc::clone(&self.locked),
            reference: reference.to_owned(),
        };
        let dir = self.ingest_dir(reference);
        let now = nanos(SystemTime::now());
        let mut meta = if dir.exists() {
            Self::read_meta(&dir)?
        } else {
            fs::create_dir_all(&dir).map_err(io("create ingest dir"))?;
            fs::write(dir.join("data"), b"").map_err(io("create ingest data"))?;
            IngestMeta {
                reference: reference.to_owned(),
                total: 0,
                expected: None,
                started_at: now,
                updated_at: now,
            }
        };
        if total != 0 {
            meta.total = total;
        }
        if let Some(expected) = expected {
            meta.expected = Some(expected.to_string());
        }
        Self::write_meta(&dir, &meta)?;
        let existing = fs::read(dir.join("data")).map_err(io("read ingest data"))?;
        let mut digester = Digester::new();
        digester.update(&existing);
        Ok(Box::new(DirWriter {
            _lock: lock,
            blobs: self.root.join("blobs"),
            dir,
            digester,
            offset: existing.len() as u64,
        }))
    }
}

struct RefLock {
    locked: Arc<Mutex<HashSet<String>>>,
    reference: String,
}

impl Drop for RefLock {
    fn drop(&mut self) {
        self.locked.lock().unwrap().remove(&self.reference);
    }
}

struct DirWriter {
    _lock: RefLock,
    blobs: PathBuf,
    dir: PathBuf,
    digester: Digester,
    offset: u64,
}

impl DirWriter {
    fn touch(&self) -> Result<()> {
        let mut meta = DirBlobs::read_meta(&self.dir)?;
        meta.updated_at = nanos(SystemTime::now());
        DirBlobs::write_meta(&self.dir, &meta)
    }
}

impl Writer for DirWriter {
    fn status(&self) -> Result<IngestStatus> {
        DirBlobs::status_of(&self.dir)
    }

    fn digest(&self) -> Digest {
        self.digester.current()
    }

    fn set_expectations(&mut self, total: Option<u64>, expected: Option<Digest>) -> Result<()> {
        let mut meta = DirBlobs::read_meta(&self.dir)?;
        if let Some(total) = total {
            meta.total = total;
        }
        if let Some(expected) = expected {
            meta.expected = Some(expected.to_string());
        }
        DirBlobs::write_meta(&self.dir, &meta)
    }

    fn truncate(&mut self) -> Result<()> {
        fs::write(self.dir.join("data"), b"").map_err(io("truncate"))?;
        self.digester = Digester::new();
        self.offset = 0;
        self.touch()
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("data"))
            .map_err(io("open ingest data"))?;
        file.write_all(data).map_err(io("append ingest data"))?;
        self.digester.update(data);
        self.offset += data.len() as u64;
        self.touch()
    }

    fn commit(
        self: Box<Self>,
        size: u64,
        expected: Option<Digest>,
        _labels: Labels,
    ) -> Result<Digest> {
        if size != 0 && size != self.offset {
            return Err(Error::failed_precondition(format!(
                "unexpected commit size {}, expected {size}",
                self.offset
            )));
        }
        let digest = self.digester.current();
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Error::failed_precondition(format!(
                "unexpected commit digest {digest}, expected {expected}"
            )));
        }
        let target = self.blobs.join(digest.hex());
        if target.exists() {
            fs::remove_dir_all(&self.dir).map_err(io("remove ingest"))?;
            return Err(Error::already_exists(format!(
                "content {digest}: already exists"
            )));
        }
        fs::rename(self.dir.join("data"), &target).map_err(io("rename ingest data"))?;
        fs::remove_dir_all(&self.dir).map_err(io("remove ingest"))?;
        Ok(digest)
    }
}

/// A Metadata over a DirBlobs, both in one tempdir.
pub struct Env {
    // Field order is drop order: the store closes before its directory goes.
    pub md: Arc<Metadata>,
    pub blobs: Arc<DirBlobs>,
    pub dir: TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self::with_debounce(Duration::from_millis(20))
    }

    pub fn with_debounce(debounce: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(DirBlobs::new(&dir.path().join("content")));
        let md = Metadata::open(
            &dir.path().join("metadata").join("meta.db"),
            blobs.clone(),
            GcOptions { debounce },
        )
        .unwrap();
        Self { md, blobs, dir }
    }

    /// Drops the store and opens the same files again, as a daemon restart does.
    pub fn restart(self) -> Self {
        let Env { md, dir, .. } = self;
        drop(md);
        let blobs = Arc::new(DirBlobs::new(&dir.path().join("content")));
        let md = Metadata::open(
            &dir.path().join("metadata").join("meta.db"),
            blobs.clone(),
            GcOptions::default(),
        )
        .unwrap();
        Env { md, blobs, dir }
    }

    pub fn on_disk(&self, digest: &Digest) -> bool {
        self.blobs.blob_path(digest).exists()
    }

    /// Writes and commits `data` in `ctx` (with its lease, if any).
    pub fn ingest(&self, ctx: &RequestContext, data: &[u8], labels: Labels) -> Digest {
        let digest = Digest::of(data);
        let mut w = self
            .md
            .writer(
                ctx,
                &format!("ref-{}", digest.hex()),
                data.len() as u64,
                Some(digest.clone()),
            )
            .unwrap();
        w.write(data).unwrap();
        w.commit(data.len() as u64, Some(digest), labels).unwrap()
    }
}

impl Deref for Env {
    type Target = dyn ContentStore;
    fn deref(&self) -> &Self::Target {
        &*self.md
    }
}

pub fn ctx(ns: &str) -> RequestContext {
    RequestContext::new(Namespace::new(ns).unwrap())
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
pub fn assert_kind<T>(result: Result<T>, kind: ErrorKind) -> Error {
    match result {
        Ok(_) => panic!("succeeded, want {kind:?}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            e
        }
    }
}

/// Polls `cond` for up to five seconds.
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
