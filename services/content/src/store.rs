//! The store itself: paths, committed blobs and the ingest directory.

use std::collections::HashSet;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_core::content::{BlobInfo, BlobStore, IngestStatus, ReaderAt, Writer};
use berth_core::{Digest, Error, Result};
use tracing::{debug, warn};

use crate::ingest::{self, Loaded, LocalWriter, RefLock};

/// A sha256 content-addressed store rooted at one directory.
///
/// One root belongs to one store at a time: opening clears leftovers under `tmp/` from a crash.
/// Clones share the same ref locks, so clone the store rather than opening the root twice.
#[derive(Debug, Clone)]
pub struct LocalStore {
    shared: Arc<Shared>,
}

/// State shared by the store and its open writers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `<root>/blobs/sha256`.
    pub(crate) blobs: PathBuf,
    /// `<root>/ingest`.
    pub(crate) ingests: PathBuf,
    /// `<root>/tmp`.
    pub(crate) tmp: PathBuf,
    /// Refs held by a live writer in this process.
    pub(crate) locks: Mutex<HashSet<String>>,
    /// Serialises the exists-check and rename of commits, so two ingests of the same bytes
    /// cannot both claim the blob.
    pub(crate) commit: Mutex<()>,
}

impl Shared {
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        // The digest is validated hex, so it cannot name anything outside blobs/sha256.
        self.blobs.join(digest.hex())
    }

    pub(crate) fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.ingests.join(ingest::dir_name(reference))
    }
}

impl LocalStore {
    /// Opens (creating) a store rooted at `root` (berthd passes `<daemon root>/content`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let shared = Shared {
            blobs: root.join("blobs").join("sha256"),
            ingests: root.join("ingest"),
            tmp: root.join("tmp"),
            locks: Mutex::new(HashSet::new()),
            commit: Mutex::new(()),
        };
        for dir in [&shared.blobs, &shared.ingests, &shared.tmp] {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create content directory {}", dir.display()), e))?;
        }
        clear_dir(&shared.tmp)?;
        debug!(root = %root.display(), "opened content store");
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Where a committed blob lives (for later in-daemon consumers such as the diff service).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.shared.blob_path(digest)
    }
}

/// Removes everything inside `dir`: half-assembled ingests a crash left behind.
fn clear_dir(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("read directory {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read directory {}", dir.display()), e))?;
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match removed {
            Ok(()) => debug!(path = %path.display(), "removed stale temporary"),
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove stale temporary"),
        }
    }
    Ok(())
}

fn blob_not_found(digest: &Digest) -> Error {
    Error::not_found(format!("content digest {digest}: not found"))
}

/// Maps an I/O error on a blob, turning a missing file into the NotFound clients branch on.
fn blob_error(digest: &Digest, what: &str, path: &Path, err: io::Error) -> Error {
    if err.kind() == io::ErrorKind::NotFound {
        blob_not_found(digest)
    } else {
        Error::io(format!("{what} blob {digest} at {}", path.display()), err)
    }
}

fn blob_info(digest: Digest, md: &Metadata) -> BlobInfo {
    BlobInfo {
        digest,
        size: md.len(),
        // The file is never modified after its rename into place, so mtime is commit time.
        created_at: md.modified().unwrap_or(UNIX_EPOCH),
    }
}

/// Positional reads of one committed blob; shareable because `read_at` takes no cursor.
struct BlobReader {
    digest: Digest,
    file: File,
    size: u64,
}

impl ReaderAt for BlobReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match FileExt::read_at(&self.file, buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("read blob {} at offset {offset}", self.digest),
                        e,
                    ));
                }
            }
        }
    }
}

impl BlobStore for LocalStore {
    fn info(&self, digest: &Digest) -> Result<BlobInfo> {
        let path = self.blob_path(digest);
        let md = fs::metadata(&path).map_err(|e| blob_error(digest, "stat", &path, e))?;
        if !md.is_file() {
            return Err(blob_not_found(digest));
        }
        Ok(blob_info(digest.clone(), &md))
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn ReaderAt>> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| blob_error(digest, "open", &path, e))?;
        let md = file
            .metadata()
            .map_err(|e| blob_error(digest, "stat", &path, e))?;
        if !md.is_file() {
            return Err(blob_not_found(digest));
        }
        Ok(Box::new(BlobReader {
            digest: digest.clone(),
            file,
            size: md.len(),
        }))
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        fs::remove_file(&path).map_err(|e| blob_error(digest, "remove", &path, e))?;
        debug!(%digest, "deleted blob");
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlobInfo>> {
        let dir = &self.shared.blobs;
        let entries = fs::read_dir(dir)
            .map_err(|e| Error::io(format!("list blobs in {}", dir.display()), e))?;
        let mut blobs = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("list blobs in {}", dir.display()), e))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            else {
                continue;
            };
            match entry.metadata() {
                Ok(md) if md.is_file() => blobs.push(blob_info(digest, &md)),
                Ok(_) => {}
                // Deleted between the listing and the stat.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(blob_error(&digest, "stat", &entry.path(), e)),
            }
        }
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(blobs)
    }

    fn status(&self, reference: &str) -> Result<IngestStatus> {
        let dir = self.shared.ingest_dir(reference);
        match ingest::load(&dir, Some(reference))? {
            Loaded::Found(reference, meta) => ingest::status(&dir, reference, &meta),
            Loaded::Absent | Loaded::Broken(_) => Err(ingest::not_found(reference)),
        }
    }

    fn list_statuses(&self) -> Result<Vec<IngestStatus>> {
        let root = &self.shared.ingests;
        let entries = fs::read_dir(root)
            .map_err(|e| Error::io(format!("list ingests in {}", root.display()), e))?;
        let mut statuses = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("list ingests in {}", root.display()), e))?;
            let dir = entry.path();
            match ingest::load(&dir, None)? {
                Loaded::Found(reference, meta) => match ingest::status(&dir, reference, &meta) {
                    Ok(status) => statuses.push(status),
                    // Committed or aborted while we looked.
                    Err(e) if e.is(berth_core::ErrorKind::NotFound) => {}
                    Err(e) => return Err(e),
                },
                Loaded::Absent => {}
                Loaded::Broken(why) => {
                    warn!(dir = %dir.display(), why, "skipping unreadable ingest");
                }
            }
        }
        statuses.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(statuses)
    }

    /// Removes the ingest even while a writer holds it, as containerd does: that writer's
    /// later commit then fails with NotFound, so aborted bytes never become a blob.
    fn abort(&self, reference: &str) -> Result<()> {
        let dir = self.shared.ingest_dir(reference);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {
                debug!(reference, "aborted ingest");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ingest::not_found(reference)),
            Err(e) => Err(Error::io(
                format!("remove ingest {reference:?} at {}", dir.display()),
                e,
            )),
        }
    }

    fn writer(
        &self,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn Writer>> {
        if reference.is_empty() {
            return Err(Error::invalid_argument("ingest ref must not be empty"));
        }
        let lock = RefLock::acquire(&self.shared, reference)?;
        let mut writer = LocalWriter::open(Arc::clone(&self.shared), lock, SystemTime::now())?;
        writer.set_expectations((total != 0).then_some(total), expected)?;
        Ok(Box::new(writer))
    }
}
