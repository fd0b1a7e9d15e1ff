//! berth-distribution: pulls images from OCI registries into the content store (unpacking
//! them as their layers arrive) and pushes them back, implementing berth-core's
//! `Transfer` contract ([`berth_core::transfer::Transfer`]).
//!
//! - [`client`]: a small client for the OCI distribution API (manifests, blobs, uploads,
//!   mounts) with Basic and Bearer authentication, HTTPS except for loopback and insecure hosts.
//! - [`oci`]: the image JSON, media types, content labels and platform matching.
//! - `pull` and `push`: the two transfers, over the synchronous stores via `spawn_blocking`.
//!
//! Every write of a pull happens under a lease that expires after a day, so GC cannot take a
//! half-pulled tree; the lease is deleted when the pull succeeds. A pull that fails after
//! fetching something, or whose future is dropped, leaves its lease, so its blobs and ingests
//! stay and a later pull resumes them ([`PULL_REFERENCE_LABEL`]).

pub mod auth;
pub mod client;
pub mod oci;
mod pull;
mod push;

use std::sync::Arc;
use std::time::Duration;

use berth_core::content::{ContentStore, ReaderAt};
use berth_core::diff::Applier;
use berth_core::images::{Image, ImageStore};
use berth_core::leases::LeaseManager;
use berth_core::snapshots::SnapshotStore;
use berth_core::transfer::{BoxFuture, ProgressSink, PullRequest, PushRequest, Transfer};
use berth_core::{Digest, Error, RequestContext, Result};

pub use client::RegistryClient;

/// The label on a pull's lease naming the (normalized) reference it pulls. A pull that fails
/// after fetching something keeps its lease, so that what it fetched survives collection and
/// a retry resumes; the next successful pull of the same reference deletes it (else it
/// expires with [`TransferOptions::lease_expiry`]).
pub const PULL_REFERENCE_LABEL: &str = "io.berth.pull.reference";

/// The snapshotter a pull unpacks into when the request names none.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// Tunables of [`RegistryTransfer`].
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Registries (`host` or `host:port`) spoken to over plain HTTP; loopback hosts always are.
    pub insecure_registries: Vec<String>,
    /// Blobs downloaded at once by one pull.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once by one push.
    pub max_concurrent_uploads: usize,
    /// Blobs up to this size are pushed in one PUT; larger ones in PATCH chunks.
    pub monolithic_upload_limit: u64,
    /// The size of a PATCH chunk.
    pub upload_chunk_size: u64,
    /// How long a pull's lease keeps what it fetched if the pull never finishes.
    pub lease_expiry: Duration,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            max_concurrent_downloads: 4,
            max_concurrent_uploads: 4,
            monolithic_upload_limit: 32 << 20,
            upload_chunk_size: 16 << 20,
            lease_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// Pulls from and pushes to OCI registries over the daemon's stores.
pub struct RegistryTransfer {
    content: Arc<dyn ContentStore>,
    images: Arc<dyn ImageStore>,
    leases: Arc<dyn LeaseManager>,
    snapshots: Arc<dyn SnapshotStore>,
    applier: Arc<dyn Applier>,
    client: Arc<RegistryClient>,
    options: TransferOptions,
}

impl std::fmt::Debug for RegistryTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryTransfer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RegistryTransfer {
    /// A transfer service over the daemon's stores.
    pub fn new(
        content: Arc<dyn ContentStore>,
        images: Arc<dyn ImageStore>,
        leases: Arc<dyn LeaseManager>,
        snapshots: Arc<dyn SnapshotStore>,
        applier: Arc<dyn Applier>,
        options: TransferOptions,
    ) -> Result<Self> {
        if options.max_concurrent_downloads == 0
            || options.max_concurrent_uploads == 0
            || options.upload_chunk_size == 0
        {
            return Err(Error::invalid_argument(
                "transfer options: concurrency limits and the upload chunk size must be positive",
            ));
        }
        let client = Arc::new(RegistryClient::new(options.insecure_registries.clone())?);
        Ok(Self {
            content,
            images,
            leases,
            snapshots,
            applier,
            client,
            options,
        })
    }
}

impl Transfer for RegistryTransfer {
    fn pull<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: PullRequest,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<Image>> {
        Box::pin(pull::pull(self, ctx, req, progress))
    }

    fn push<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: PushRequest,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<Image>> {
        Box::pin(push::push(self, ctx, req, progress))
    }
}

/// Runs a synchronous store call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal("a blocking store call failed").with_source(e))?
}

/// Reads a whole blob of at most `limit` bytes from the content store.
pub(crate) fn read_blob(
    content: &dyn ContentStore,
    ctx: &RequestContext,
    digest: &Digest,
    limit: u64,
) -> Result<Vec<u8>> {
    let reader = content.reader(ctx, digest)?;
    let size = reader.size();
    if size > limit {
        return Err(Error::failed_precondition(format!(
            "blob {digest} is {size} bytes, more than the {limit}-byte limit"
        )));
    }
    let len = usize::try_from(size)
        .map_err(|_| Error::failed_precondition(format!("blob {digest} is too large")))?;
    let mut buf = vec![0u8; len];
    read_full(reader.as_ref(), &mut buf, 0)
        .map_err(|e| e.context(format!("reading blob {digest}")))?;
    Ok(buf)
}

/// Fills `buf` from `offset`; a blob that ends early is DataLoss.
pub(crate) fn read_full(reader: &dyn ReaderAt, buf: &mut [u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = reader.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(Error::data_loss(format!(
                "unexpected end of blob at {} of {} bytes",
                offset + done as u64,
                reader.size()
            )));
        }
        done += n;
    }
    Ok(())
}

/// A unique id for a lease or an extraction key: `<nanos>-<base64url of 3 random bytes>`,
/// as containerd makes them.
pub(crate) fn unique_suffix() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut bytes = [0u8; 3];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{nanos}-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
