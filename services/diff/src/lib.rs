//! The walking differ: applies OCI layer blobs onto snapshot mounts and computes layers from
//! two sets of mounts, over a namespaced content store (containerd's `walking` diff plugin).
//!
//! [`WalkingDiff`] implements berth-core's [`Applier`] and [`Comparer`]. Both are blocking:
//! the gRPC layer calls them on a blocking thread.
//!
//! Apply (Diff.Apply):
//! 1. The blob is read from the content store and decompressed; its compressed digest is
//!    checked and the diffID computed on threads beside the untar (`pipeline`), and a blob
//!    whose digest does not match is DataLoss. Decompression is chosen by magic bytes (gzip,
//!    zstd, else a plain tar) whatever the media type says, but only layer media types are
//!    accepted, and encrypted ones are NotImplemented.
//! 2. Where it goes depends on the mounts: a single overlay mount with an `upperdir` is
//!    applied straight into that directory, whiteouts becoming overlayfs whiteouts; a single
//!    bind mount straight into its source; anything else is mounted on a temporary
//!    directory (and always unmounted) and applied there. See [`apply`] for the rules and the
//!    safety argument.
//! 3. The applied descriptor is the uncompressed tar's: its sha256 (the diffID) and size.
//!
//! Compare (Diff.Diff): both sides are made visible read-only (a bind mount's source is read
//! in place, anything else is mounted read-only on a temporary directory), the trees are
//! walked together ([`compare`]) and the tar is compressed as the media type asks and written
//! through a content-store ingest, committed with `containerd.io/uncompressed=<diffID>`.
//!
//! Layout: [`apply`] (safe untar), [`compare`] (tree walk to tar), [`compress`], `guard`
//! (tar extension size limit), `fsx` (descriptor-relative file operations), `mounts`
//! (temporary mounts), `pipeline` (the threads of one apply).

pub mod apply;
pub mod compare;
pub mod compress;
mod fsx;
mod guard;
mod mounts;
mod pipeline;

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::content::{ContentStore, ReaderAt, Writer};
use berth_core::diff::{
    Applier, Comparer, Descriptor, DiffOptions, LABEL_UNCOMPRESSED, MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP, is_layer_media_type,
};
use berth_core::digest::Digester;
use berth_core::mount::Mount;
use berth_core::{Digest, Error, ErrorKind, RequestContext, Result, ResultExt};
use tracing::{debug, warn};

pub use apply::{Whiteouts, apply_tar};
pub use compare::write_diff;
pub use compress::Compression;
pub use guard::MAX_EXTENSION;

/// Read and write buffer size: large, so one layer costs few store calls and syscalls.
const BUFFER: usize = 1 << 20;

/// containerd's walking differ over a namespaced content store.
pub struct WalkingDiff {
    store: Arc<dyn ContentStore>,
    temp_dir: PathBuf,
}

impl WalkingDiff {
    /// A differ reading and writing layer blobs in `store`, making temporary mount points in
    /// the system's temporary directory.
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self {
            store,
            temp_dir: std::env::temp_dir(),
        }
    }

    /// Makes temporary mount points under `dir` instead (berthd passes a directory of its
    /// own state, so a crash leaves nothing in `/tmp`).
    pub fn with_temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = dir.into();
        self
    }

    /// Streams the blob through decompression into `apply_tar` while its digest and the
    /// diffID are computed on threads beside it ([`pipeline`]), then checks its digest.
    /// Returns the diffID and uncompressed size.
    fn unpack(
        &self,
        blob: &dyn ReaderAt,
        desc: &Descriptor,
        root: &Path,
        whiteouts: &Whiteouts,
    ) -> Result<(Digest, u64)> {
        let (actual, applied) = pipeline::run(blob, |tar| apply_tar(tar, root, whiteouts))?;
        // The digest decides first: a corrupt blob is DataLoss whatever the untar made of it.
        if actual != desc.digest {
            return Err(Error::data_loss(format!(
                "layer blob {}: content has digest {actual}",
                desc.digest
            )));
        }
        applied
    }

    fn store_writer(&self, ctx: &RequestContext, reference: &str) -> Result<Box<dyn Writer>> {
        self.store
            .writer(ctx, reference, 0, None)
            .with_context(|| format!("open ingest {reference:?} for diff"))
    }

    /// Writes the diff through `writer` and commits it; returns the descriptor.
    fn write_layer(
        &self,
        ctx: &RequestContext,
        writer: Box<dyn Writer>,
        lower: &Path,
        upper: &Path,
        media_type: String,
        mut labels: berth_core::labels::Labels,
    ) -> Result<Descriptor> {
        let compression = Compression::for_media_type(&media_type)?;
        let sink = BufWriter::with_capacity(
            BUFFER,
            StoreWrite {
                writer: Some(writer),
                count: 0,
            },
        );
        let compressor = compress::Compressor::new(compression, sink)
            .map_err(|e| Error::io("start compressing diff", e))?;
        let tee = write_diff(
            lower,
            upper,
            Hashing {
                inner: compressor,
                digester: Digester::new(),
                count: 0,
            },
        )?;
        let diff_id = tee.digester.finish();
        let sink = tee
            .inner
            .finish()
            .map_err(|e| Error::io("finish compressing diff", e))?;
        let mut store = sink
            .into_inner()
            .map_err(|e| Error::io("flush diff to the content store", e.into_error()))?;
        let writer = store
            .writer
            .take()
            .ok_or_else(|| Error::internal("diff writer already taken"))?;
        let size = store.count;
        let digest = writer.digest();
        labels.insert(LABEL_UNCOMPRESSED.to_owned(), diff_id.to_string());
        match writer.commit(size, Some(digest.clone()), labels.clone()) {
            Ok(_) => {}
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                // The same layer exists already: make sure it carries our labels.
                let mut info = self.store.info(ctx, &digest)?;
                let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                info.labels.extend(labels);
                self.store.update(ctx, info, &paths)?;
            }
            Err(e) => return Err(e.context(format!("commit diff {digest}"))),
        }
        debug!(%digest, %diff_id, size, "diff written");
        Ok(Descriptor::new(media_type, digest, size))
    }
}

impl Applier for WalkingDiff {
    fn apply(
        &self,
        ctx: &RequestContext,
        desc: &Descriptor,
        mounts: &[Mount],
    ) -> Result<Descriptor> {
        let media_type = desc.media_type.as_str();
        if media_type.contains("+encrypted") {
            return Err(Error::not_implemented(format!(
                "apply layer {}: encrypted media type {media_type:?} needs a stream processor",
                desc.digest
            )));
        }
        if !is_layer_media_type(media_type) {
            return Err(Error::not_implemented(format!(
                "apply {}: media type {media_type:?} is not a layer",
                desc.digest
            )));
        }
        let blob = self
            .store
            .reader(ctx, &desc.digest)
            .with_context(|| format!("open layer {}", desc.digest))?;
        if desc.size != 0 && blob.size() != desc.size {
            return Err(Error::failed_precondition(format!(
                "layer {}: descriptor size {} but the blob holds {} bytes",
                desc.digest,
                desc.size,
                blob.size()
            )));
        }
        let (diff_id, size) = match mounts {
            [] => return Err(Error::invalid_argument("apply layer: no mounts")),
            [m] if m.kind == "overlay" && m.option_value("upperdir").is_some() => {
                writable(m)?;
                let upper = PathBuf::from(m.option_value("upperdir").unwrap_or_default());
                let lowers = m
                    .lowerdirs()
                    .unwrap_or_default()
                    .into_iter()
                    .map(PathBuf::from)
                    .collect::<Vec<_>>();
                if let Some(rel) = lowers.iter().find(|p| !p.is_absolute()) {
                    return Err(Error::invalid_argument(format!(
                        "apply layer: relative lowerdir {}",
                        rel.display()
                    )));
                }
                let applied = self.unpack(&*blob, desc, &upper, &Whiteouts::Overlay { lowers })?;
                sync(&upper)?;
                applied
            }
            [m] if m.kind == "bind" => {
                writable(m)?;
                let root = PathBuf::from(&m.source);
                let applied = self.unpack(&*blob, desc, &root, &Whiteouts::Oci)?;
                sync(&root)?;
                applied
            }
            _ => {
                let mounted = mounts::TempMount::mount_all(&self.temp_dir, mounts)?;
                let applied = self.unpack(&*blob, desc, mounted.path(), &Whiteouts::Oci)?;
                sync(mounted.path())?;
                applied
            }
        };
        debug!(layer = %desc.digest, %diff_id, size, "layer applied");
        Ok(Descriptor::new(MEDIA_TYPE_LAYER, diff_id, size))
    }
}

impl Comparer for WalkingDiff {
    fn compare(
        &self,
        ctx: &RequestContext,
        lower: &[Mount],
        upper: &[Mount],
        opts: DiffOptions,
    ) -> Result<Descriptor> {
        let media_type = opts
            .media_type
            .unwrap_or_else(|| MEDIA_TYPE_LAYER_GZIP.to_owned());
        // Refuse an unknown type before mounting anything.
        Compression::for_media_type(&media_type)?;
        if upper.is_empty() {
            return Err(Error::invalid_argument("diff: no upper mounts"));
        }
        let lower_view = View::open(lower, &self.temp_dir)?;
        let upper_view = View::open(upper, &self.temp_dir)?;
        let (reference, generated) = match opts.reference {
            Some(r) if !r.is_empty() => (r, false),
            _ => (
                format!(
                    "diff-{:016x}{:016x}",
                    rand::random::<u64>(),
                    rand::random::<u64>()
                ),
                true,
            ),
        };
        let writer = self.store_writer(ctx, &reference)?;
        let result = self.write_layer(
            ctx,
            writer,
            lower_view.path(),
            upper_view.path(),
            media_type,
            opts.labels,
        );
        if result.is_err()
            && generated
            && let Err(e) = self.store.abort(ctx, &reference)
            && !e.is(ErrorKind::NotFound)
        {
            warn!(reference, error = %e, "cannot abort failed diff ingest");
        }
        result
    }
}

/// Refuses a read-only target: applying to a view is a caller's mistake.
fn writable(m: &Mount) -> Result<()> {
    if m.is_read_only() {
        return Err(Error::failed_precondition(format!(
            "apply layer: {} mount {:?} is read-only",
            m.kind, m.source
        )));
    }
    Ok(())
}

/// One `syncfs` for the whole layer instead of an fsync per file.
fn sync(root: &Path) -> Result<()> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .and_then(|fd| nix::unistd::syncfs(&fd))
    .map_err(|e| Error::io(format!("sync {}", root.display()), e.into()))
}

/// A tree to read for a diff: a directory read in place, an empty directory, or read-only
/// temporary mounts.
enum View {
    Dir(PathBuf),
    Empty(tempfile::TempDir),
    Mounted(mounts::TempMount),
}

impl View {
    fn open(mounts: &[Mount], temp_dir: &Path) -> Result<Self> {
        Ok(match mounts {
            [] => View::Empty(
                tempfile::Builder::new()
                    .prefix("berth-empty-")
                    .tempdir_in(temp_dir)
                    .map_err(|e| {
                        Error::io(
                            format!("create empty directory in {}", temp_dir.display()),
                            e,
                        )
                    })?,
            ),
            // Read in place: the walk only ever reads, through descriptors.
            [m] if m.kind == "bind" => View::Dir(PathBuf::from(&m.source)),
            _ => {
                let ro: Vec<Mount> = mounts.iter().map(mounts::read_only).collect();
                View::Mounted(mounts::TempMount::mount_all(temp_dir, &ro)?)
            }
        })
    }

    fn path(&self) -> &Path {
        match self {
            View::Dir(p) => p,
            View::Empty(t) => t.path(),
            View::Mounted(m) => m.path(),
        }
    }
}

/// Counts and hashes what is written through it.
struct Hashing<T> {
    inner: T,
    digester: Digester,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A content-store ingest as an `io::Write`.
struct StoreWrite {
    writer: Option<Box<dyn Writer>>,
    count: u64,
}

impl Write for StoreWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("diff writer already taken"))?;
        writer.write(buf).map_err(io::Error::other)?;
        self.count += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
