//! Ingests: their on-disk directory, the per-ref lock and the writer.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use berth_core::content::{IngestStatus, Writer};
use berth_core::digest::Digester;
use berth_core::labels::Labels;
use berth_core::{Digest, Error, Result};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::store::Shared;

const REF_FILE: &str = "ref";
const META_FILE: &str = "meta.json";
const META_TEMP: &str = "meta.json.tmp";
const DATA_FILE: &str = "data";

/// Read size when re-hashing the bytes of a resumed ingest.
const HASH_CHUNK: usize = 1 << 20;
/// Every this many bytes appended, their writeback to disk is started (see
/// [`start_writeback`]).
const WRITEBACK_WINDOW: u64 = 4 << 20;

/// The directory name of ingest `reference`: the hex sha256 of the ref, so that the ref never
/// takes part in a path.
pub(crate) fn dir_name(reference: &str) -> String {
    Digest::of(reference.as_bytes()).hex().to_owned()
}

pub(crate) fn not_found(reference: &str) -> Error {
    Error::not_found(format!("ingest ref {reference:?}: not found"))
}

/// What the metadata file records; the offset and update time come from the data file itself
/// so that writes never touch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IngestMeta {
    started_at: SystemTime,
    total: u64,
    expected: Option<Digest>,
}

#[derive(Serialize, Deserialize)]
struct MetaFile {
    started_at: SystemTime,
    total: u64,
    expected: Option<String>,
}

impl IngestMeta {
    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&MetaFile {
            started_at: self.started_at,
            total: self.total,
            expected: self.expected.as_ref().map(Digest::to_string),
        })
        .map_err(|e| Error::internal("encode ingest metadata").with_source(e))
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let file: MetaFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let expected = match file.expected {
            Some(s) => Some(Digest::parse(&s).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Self {
            started_at: file.started_at,
            total: file.total,
            expected,
        })
    }
}

/// Writes the metadata file through a temporary and a rename, so a crash leaves the old or the
/// new version, never a torn one.
fn write_meta(dir: &Path, meta: &IngestMeta) -> Result<()> {
    let temp = dir.join(META_TEMP);
    let path = dir.join(META_FILE);
    fs::write(&temp, meta.encode()?)
        .map_err(|e| Error::io(format!("write ingest metadata {}", temp.display()), e))?;
    fs::rename(&temp, &path).map_err(|e| {
        Error::io(
            format!("rename {} to {}", temp.display(), path.display()),
            e,
        )
    })
}

/// An ingest directory as found on disk.
pub(crate) enum Loaded {
    /// No such ingest.
    Absent,
    /// The directory exists but cannot be used (says why); it can only be discarded.
    Broken(String),
    /// A usable ingest: its ref and metadata.
    Found(String, IngestMeta),
}

/// `Absent` when `dir` itself is gone (e.g. committed meanwhile), else `Broken` for `why`.
fn missing(dir: &Path, why: &str) -> Result<Loaded> {
    match fs::symlink_metadata(dir) {
        Ok(_) => Ok(Loaded::Broken(why.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Loaded::Absent),
        Err(e) => Err(Error::io(format!("stat ingest {}", dir.display()), e)),
    }
}

/// Reads the ingest at `dir`. With `reference`, also checks that `dir` holds that ref.
pub(crate) fn load(dir: &Path, reference: Option<&str>) -> Result<Loaded> {
    let ref_path = dir.join(REF_FILE);
    let stored = match fs::read(&ref_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return missing(dir, "no ref file"),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Ok(Loaded::Broken("not a directory".into()));
        }
        Err(e) => return Err(Error::io(format!("read {}", ref_path.display()), e)),
    };
    let Ok(stored) = String::from_utf8(stored) else {
        return Ok(Loaded::Broken("ref is not UTF-8".into()));
    };
    // A torn ref file (a crash before it reached the disk) or a stray directory must not be
    // taken for another ref's ingest.
    if dir.file_name().and_then(|n| n.to_str()) != Some(dir_name(&stored).as_str()) {
        return Ok(Loaded::Broken(
            "ref does not match the directory name".into(),
        ));
    }
    if reference.is_some_and(|r| r != stored) {
        return Ok(Loaded::Broken("holds a different ref".into()));
    }
    let meta_path = dir.join(META_FILE);
    let meta = match fs::read(&meta_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return missing(dir, "no metadata file"),
        Err(e) => return Err(Error::io(format!("read {}", meta_path.display()), e)),
    };
    match IngestMeta::decode(&meta) {
        Ok(meta) => Ok(Loaded::Found(stored, meta)),
        Err(why) => Ok(Loaded::Broken(format!("bad metadata: {why}"))),
    }
}

/// The status of the ingest at `dir`, whose data file supplies the offset and update time.
pub(crate) fn status(dir: &Path, reference: String, meta: &IngestMeta) -> Result<IngestStatus> {
    let data = dir.join(DATA_FILE);
    let (offset, updated_at) = match fs::metadata(&data) {
        // File times come from the kernel's coarse clock and can read a little earlier than
        // the start time taken from the precise one: never report an update before the start.
        Ok(md) => (
            md.len(),
            md.modified()
                .map_or(meta.started_at, |t| t.max(meta.started_at)),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if matches!(missing(dir, "")?, Loaded::Absent) {
                return Err(not_found(&reference));
            }
            // A crash between a commit's rename and the ingest's removal: nothing to resume.
            (0, meta.started_at)
        }
        Err(e) => return Err(Error::io(format!("stat {}", data.display()), e)),
    };
    Ok(IngestStatus {
        reference,
        offset,
        total: meta.total,
        expected: meta.expected.clone(),
        started_at: meta.started_at,
        updated_at,
    })
}

/// Holds one ref for one writer in this process; dropping it releases the ref.
pub(crate) struct RefLock {
    shared: Arc<Shared>,
    reference: String,
}

impl RefLock {
    pub(crate) fn acquire(shared: &Arc<Shared>, reference: &str) -> Result<Self> {
        // The set is valid after any panic (insert/remove are atomic), so poisoning is ignored.
        let mut locks = shared.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if !locks.insert(reference.to_owned()) {
            return Err(Error::unavailable(format!("ref {reference:?} locked")));
        }
        Ok(Self {
            shared: Arc::clone(shared),
            reference: reference.to_owned(),
        })
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        let mut locks = self
            .shared
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.remove(&self.reference);
    }
}

/// An open ingest. Field order matters: the data file closes before the ref lock is released.
pub(crate) struct LocalWriter {
    shared: Arc<Shared>,
    reference: String,
    dir: PathBuf,
    data_path: PathBuf,
    file: File,
    digester: Digester,
    offset: u64,
    /// Where the last started writeback ended.
    flushed: u64,
    meta: IngestMeta,
    _lock: RefLock,
}

impl LocalWriter {
    /// Opens the ingest of the ref `lock` holds, creating it or resuming what is on disk.
    pub(crate) fn open(shared: Arc<Shared>, lock: RefLock, now: SystemTime) -> Result<Self> {
        let reference = lock.reference.clone();
        let dir = shared.ingest_dir(&reference);
        let meta = match load(&dir, Some(&reference))? {
            Loaded::Found(_, meta) => meta,
            Loaded::Absent => create(&shared, &dir, &reference, now)?,
            Loaded::Broken(why) => {
                warn!(reference, dir = %dir.display(), why, "replacing unreadable ingest");
                remove_dir(&dir)?;
                create(&shared, &dir, &reference, now)?
            }
        };
        let data_path = dir.join(DATA_FILE);
        // create: the data file is gone after a crash between a commit's rename and cleanup.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&data_path)
            .map_err(|e| {
                Error::io(
                    format!("open ingest {reference:?} data {}", data_path.display()),
                    e,
                )
            })?;
        // Re-hash what is there: the digest state must survive a daemon restart.
        let (digester, offset) = hash_file(&file).map_err(|e| {
            Error::io(
                format!("read ingest {reference:?} data {}", data_path.display()),
                e,
            )
        })?;
        debug!(reference, offset, "opened ingest");
        Ok(Self {
            shared,
            reference,
            dir,
            data_path,
            file,
            digester,
            offset,
            flushed: offset,
            meta,
            _lock: lock,
        })
    }

    fn data_error(&self, what: &str, err: io::Error) -> Error {
        Error::io(
            format!(
                "{what} ingest {:?} data {}",
                self.reference,
                self.data_path.display()
            ),
            err,
        )
    }

    /// Removes the ingest directory; failures are logged because the caller's outcome stands.
    fn discard(&self) {
        if let Err(e) = remove_dir(&self.dir) {
            warn!(reference = self.reference, error = %e, "cannot remove ingest");
        }
    }

    /// Moves the data into place unless the blob exists; false when it does.
    fn install(&self, blob: &Path) -> Result<bool> {
        let _guard = self
            .shared
            .commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match fs::symlink_metadata(blob) {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("stat blob {}", blob.display()), e)),
        }
        fs::rename(&self.data_path, blob)
            .map_err(|e| self.data_error(&format!("move to {}", blob.display()), e))?;
        Ok(true)
    }
}

/// Assembles a new ingest under tmp/ and renames it into `dir`, so it appears whole.
fn create(shared: &Shared, dir: &Path, reference: &str, now: SystemTime) -> Result<IngestMeta> {
    let temp = tempfile::Builder::new()
        .prefix("ingest-")
        .tempdir_in(&shared.tmp)
        .map_err(|e| {
            Error::io(
                format!("create temporary ingest in {}", shared.tmp.display()),
                e,
            )
        })?;
    let meta = IngestMeta {
        started_at: now,
        total: 0,
        expected: None,
    };
    let ref_path = temp.path().join(REF_FILE);
    fs::write(&ref_path, reference)
        .map_err(|e| Error::io(format!("write {}", ref_path.display()), e))?;
    write_meta(temp.path(), &meta)?;
    let data_path = temp.path().join(DATA_FILE);
    File::create(&data_path)
        .map_err(|e| Error::io(format!("create {}", data_path.display()), e))?;
    fs::rename(temp.path(), dir).map_err(|e| {
        Error::io(
            format!(
                "rename new ingest {reference:?} from {} to {}",
                temp.path().display(),
                dir.display()
            ),
            e,
        )
    })?;
    // Renamed away: nothing left for the guard to clean up.
    let _ = temp.keep();
    debug!(reference, dir = %dir.display(), "created ingest");
    Ok(meta)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove ingest {}", dir.display()), e)),
    }
}

/// Starts writing `len` bytes of `file` from `offset` back to disk, without waiting. Commit
/// fsyncs the blob; started early, the writeback of a large blob overlaps with its download
/// instead of all of it waiting for that fsync. A hint only: its errors are ignored, the fsync
/// reports real ones.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads only its integer arguments and touches no memory of ours;
    // `file` is borrowed, so its descriptor stays open for the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn hash_file(file: &File) -> io::Result<(Digester, u64)> {
    let mut digester = Digester::new();
    let mut buf = vec![0; HASH_CHUNK];
    let mut offset = 0u64;
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(0) => return Ok((digester, offset)),
            Ok(n) => {
                digester.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Writer for LocalWriter {
    fn status(&self) -> Result<IngestStatus> {
        let updated_at = self
            .file
            .metadata()
            .and_then(|md| md.modified())
            .map_or(self.meta.started_at, |t| t.max(self.meta.started_at));
        Ok(IngestStatus {
            reference: self.reference.clone(),
            offset: self.offset,
            total: self.meta.total,
            expected: self.meta.expected.clone(),
            started_at: self.meta.started_at,
            updated_at,
        })
    }

    fn digest(&self) -> Digest {
        self.digester.current()
    }

    fn set_expectations(&mut self, total: Option<u64>, expected: Option<Digest>) -> Result<()> {
        let mut next = self.meta.clone();
        if let Some(total) = total {
            next.total = total;
        }
        if expected.is_some() {
            next.expected = expected;
        }
        if next != self.meta {
            write_meta(&self.dir, &next)
                .map_err(|e| e.context(format!("update ingest {:?}", self.reference)))?;
            self.meta = next;
        }
        Ok(())
    }

    fn truncate(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(|e| self.data_error("truncate", e))?;
        self.digester = Digester::new();
        self.offset = 0;
        self.flushed = 0;
        debug!(reference = self.reference, "truncated ingest");
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        // The file is in append mode, so this lands at `offset` (and at 0 after a truncate).
        if let Err(e) = self.file.write_all(data) {
            // Cut off a partial append so the bytes on disk keep matching the digest state;
            // should that fail too, commit's length check refuses the ingest.
            if let Err(cut) = self.file.set_len(self.offset) {
                warn!(reference = self.reference, error = %cut, "cannot undo partial write");
            }
            return Err(self.data_error(&format!("append {} bytes to", data.len()), e));
        }
        self.digester.update(data);
        self.offset += data.len() as u64;
        if self.offset - self.flushed >= WRITEBACK_WINDOW {
            start_writeback(&self.file, self.flushed, self.offset - self.flushed);
            self.flushed = self.offset;
        }
        Ok(())
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
            // These bytes can never commit, so keeping them would only invite a resume.
            self.discard();
            return Err(Error::failed_precondition(format!(
                "unexpected commit digest {digest}, expected {expected}"
            )));
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| self.data_error("stat", e))?
            .len();
        if len != self.offset {
            return Err(Error::data_loss(format!(
                "ingest {:?} holds {len} bytes but {} were written",
                self.reference, self.offset
            )));
        }
        self.file
            .sync_all()
            .map_err(|e| self.data_error("sync", e))?;
        // Read-only before it becomes visible, so no blob is ever seen writable. This also
        // fails with NotFound when the ingest was aborted under us.
        fs::set_permissions(&self.data_path, Permissions::from_mode(0o444))
            .map_err(|e| self.data_error("make read-only", e))?;
        let blob = self.shared.blob_path(&digest);
        match self.install(&blob) {
            Ok(true) => {}
            Ok(false) => {
                self.discard();
                debug!(reference = self.reference, %digest, "blob already exists");
                return Err(Error::already_exists(format!(
                    "content {digest}: already exists"
                )));
            }
            Err(e) => {
                // Keep the ingest resumable by a later writer.
                if let Err(e) = fs::set_permissions(&self.data_path, Permissions::from_mode(0o644))
                {
                    warn!(reference = self.reference, error = %e, "cannot restore ingest mode");
                }
                return Err(e);
            }
        }
        self.discard();
        let blobs = &self.shared.blobs;
        File::open(blobs)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("sync blob directory {}", blobs.display()), e))?;
        debug!(reference = self.reference, %digest, size = self.offset, "committed blob");
        Ok(digest)
    }
}
