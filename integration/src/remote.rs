//! [`RemoteContentStore`]: berth-core's synchronous [`ContentStore`] over a live daemon's gRPC
//! Content service, so the same conformance suite that checks the local store checks the whole
//! wire path (client → gRPC → server → metadata → blobs).
//!
//! Every call blocks on a runtime the adapter owns, so it must be used from plain threads, not
//! from inside an async context. Calls act in the context's namespace and under its lease.
//!
//! Two things cannot be expressed one to one:
//! - [`Filters`] keeps no source text, so `list` and `list_statuses` fetch everything and filter
//!   here with the same matcher the server uses.
//! - The Write protocol has no "truncate to empty": a WRITE at offset 0 only truncates when it
//!   carries data. [`Writer::truncate`] on a non-empty ingest therefore ends the stream, aborts
//!   the ingest and opens a new stream on the same ref (see [`RemoteWriter`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use berth_client::content::WRITE_CHUNK;
use berth_client::{Client, convert, from_status};
use berth_core::content::{ContentStore, Info, IngestStatus, ReaderAt, Writer};
use berth_core::filters::Filters;
use berth_core::labels::Labels;
use berth_core::{Digest, Error, RequestContext, Result};
use berth_proto::containerd::services::content::v1 as pb;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// How long dropping a writer waits for the server to end its stream (and release the ref).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`ContentStore`] that forwards every call to a daemon over gRPC.
pub struct RemoteContentStore {
    runtime: Arc<Runtime>,
    client: Client,
}

impl std::fmt::Debug for RemoteContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteContentStore")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl RemoteContentStore {
    /// Connects to the daemon listening on `socket`, on a runtime of its own.
    pub fn connect(socket: &std::path::Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // Two workers keep the connection's background tasks moving while a caller thread
            // sits between calls with streams open.
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the remote content store's runtime", e))?;
        let client = runtime.block_on(Client::connect(socket, "default"))?;
        Ok(Self {
            runtime: Arc::new(runtime),
            client,
        })
    }

    /// The client a call in `ctx` uses: its namespace, and its lease or none.
    fn client_for(&self, ctx: &RequestContext) -> Client {
        scoped(&self.client, ctx)
    }
}

fn scoped(client: &Client, ctx: &RequestContext) -> Client {
    let c = client.with_namespace(ctx.namespace.as_str());
    match &ctx.lease {
        Some(lease) => c.with_lease(lease.as_str()),
        None => c.without_lease(),
    }
}

impl ContentStore for RemoteContentStore {
    fn info(&self, ctx: &RequestContext, digest: &Digest) -> Result<Info> {
        let c = self.client_for(ctx);
        self.runtime.block_on(c.content().info(digest))
    }

    fn update(&self, ctx: &RequestContext, info: Info, paths: &[String]) -> Result<Info> {
        let c = self.client_for(ctx);
        // The client's label helpers choose the mask themselves; the trait passes any mask
        // (including invalid ones the server must refuse), so this goes to the raw RPC.
        let req = pb::UpdateRequest {
            info: Some(pb::Info {
                digest: info.digest.to_string(),
                labels: convert::wire_labels(&info.labels),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.to_vec(),
            }),
        };
        self.runtime.block_on(async {
            let resp = c
                .rpc()
                .content()
                .update(req)
                .await
                .map_err(from_status)?
                .into_inner();
            let info = resp.info.ok_or_else(|| {
                Error::internal(format!("server sent no info for content {}", info.digest))
            })?;
            convert::content_info(info)
        })
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Info>> {
        let c = self.client_for(ctx);
        let all = self.runtime.block_on(c.content().list(&[]))?;
        Ok(all.into_iter().filter(|i| filters.matches(i)).collect())
    }

    fn delete(&self, ctx: &RequestContext, digest: &Digest) -> Result<()> {
        let c = self.client_for(ctx);
        self.runtime.block_on(c.content().delete(digest))
    }

    fn reader(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn ReaderAt>> {
        let client = self.client_for(ctx);
        // Info both checks the namespace holds the blob and gives the size reads clamp to.
        let size = self.runtime.block_on(client.content().info(digest))?.size;
        Ok(Box::new(RemoteReader {
            runtime: self.runtime.clone(),
            client,
            digest: digest.clone(),
            size,
        }))
    }

    fn status(&self, ctx: &RequestContext, reference: &str) -> Result<IngestStatus> {
        let c = self.client_for(ctx);
        self.runtime.block_on(c.content().status(reference))
    }

    fn list_statuses(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<IngestStatus>> {
        let c = self.client_for(ctx);
        let all = self.runtime.block_on(c.content().statuses(&[]))?;
        Ok(all.into_iter().filter(|s| filters.matches(s)).collect())
    }

    fn abort(&self, ctx: &RequestContext, reference: &str) -> Result<()> {
        let c = self.client_for(ctx);
        self.runtime.block_on(c.content().abort(reference))
    }

    fn writer(
        &self,
        ctx: &RequestContext,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn Writer>> {
        let client = self.client_for(ctx);
        let session =
            self.runtime
                .block_on(Session::open(&client, reference, total, expected.as_ref()))?;
        Ok(Box::new(RemoteWriter {
            runtime: self.runtime.clone(),
            reference: reference.to_owned(),
            total,
            expected,
            session: Mutex::new(session),
        }))
    }
}

/// Reads one blob with a Read RPC per [`read_at`](ReaderAt::read_at).
struct RemoteReader {
    runtime: Arc<Runtime>,
    client: Client,
    digest: Digest,
    size: u64,
}

impl ReaderAt for RemoteReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (self.size - offset).min(buf.len() as u64);
        let data =
            self.runtime
                .block_on(self.client.content().read_range(&self.digest, offset, want))?;
        if data.len() as u64 > want {
            return Err(Error::data_loss(format!(
                "read of content {} at {offset}: server sent {} bytes, asked for {want}",
                self.digest,
                data.len()
            )));
        }
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }
}

/// One open Write stream, driven in lock-step: every request gets exactly one reply.
struct Session {
    reference: String,
    tx: Option<mpsc::Sender<pb::WriteContentRequest>>,
    replies: Option<Streaming<pb::WriteContentResponse>>,
    /// The latest reply's facts: what the server holds for the ingest.
    offset: u64,
    total: u64,
    started_at: SystemTime,
    updated_at: SystemTime,
    digest: Digest,
}

impl Session {
    /// Opens the stream with a STAT carrying the ref and expectations, so a locked ref
    /// (Unavailable) or a digest the namespace holds (AlreadyExists) fails here, as locally.
    async fn open(
        client: &Client,
        reference: &str,
        total: u64,
        expected: Option<&Digest>,
    ) -> Result<Self> {
        // The protocol is lock-step, so at most one request is ever queued.
        let (tx, rx) = mpsc::channel(2);
        let first = pb::WriteContentRequest {
            action: pb::WriteAction::Stat as i32,
            r#ref: reference.to_owned(),
            total: wire_i64(total, "ingest total")?,
            expected: expected.map(ToString::to_string).unwrap_or_default(),
            ..Default::default()
        };
        // Queued before the call: a server may wait for the first message before answering.
        tx.send(first)
            .await
            .map_err(|_| Error::internal("queue the first write request"))?;
        let replies = client
            .rpc()
            .content()
            .write(ReceiverStream::new(rx))
            .await
            .map_err(from_status)?
            .into_inner();
        let mut session = Self {
            reference: reference.to_owned(),
            tx: Some(tx),
            replies: Some(replies),
            offset: 0,
            total: 0,
            started_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            digest: Digest::of(b""),
        };
        let reply = session.reply().await?;
        session.absorb(&reply)?;
        Ok(session)
    }

    async fn reply(&mut self) -> Result<pb::WriteContentResponse> {
        let Some(replies) = self.replies.as_mut() else {
            return Err(Error::failed_precondition(format!(
                "write stream of ingest {:?} is closed",
                self.reference
            )));
        };
        match replies.message().await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => {
                self.replies = None;
                Err(Error::unavailable(format!(
                    "server ended the write stream of ingest {:?} without a reply",
                    self.reference
                )))
            }
            Err(status) => {
                // The stream is over after an error status: later calls must not wait on it.
                self.replies = None;
                self.tx = None;
                Err(from_status(status))
            }
        }
    }

    /// Sends `req` and returns its reply; when the server already ended the stream, its final
    /// status is the error.
    async fn send(&mut self, req: pb::WriteContentRequest) -> Result<pb::WriteContentResponse> {
        let queued = match &self.tx {
            Some(tx) => tx.send(req).await.is_ok(),
            None => false,
        };
        let reply = self.reply().await;
        if !queued && reply.is_ok() {
            return Err(Error::unavailable(format!(
                "write stream of ingest {:?} closed by the server",
                self.reference
            )));
        }
        let reply = reply?;
        self.absorb(&reply)?;
        Ok(reply)
    }

    fn absorb(&mut self, reply: &pb::WriteContentResponse) -> Result<()> {
        self.offset = convert::size(reply.offset, "ingest offset")?;
        self.total = convert::size(reply.total, "ingest total")?;
        self.started_at = convert::system_time(reply.started_at.as_ref());
        self.updated_at = convert::system_time(reply.updated_at.as_ref());
        self.digest = convert::digest(&reply.digest, "an ingest digest")?;
        Ok(())
    }

    /// Half-closes and waits for the server to end the stream, which it does only after it has
    /// dropped its writer: once this returns, the ref is free for another writer.
    async fn close(&mut self) -> Result<()> {
        self.tx = None;
        if let Some(mut replies) = self.replies.take() {
            // Extra replies are harmless (containerd repeats its last one).
            while replies.message().await.map_err(from_status)?.is_some() {}
        }
        Ok(())
    }
}

/// An ingest held open through one Write stream.
///
/// `truncate` sends a WRITE at offset 0, which the protocol defines as restarting the ingest.
pub struct RemoteWriter {
    runtime: Arc<Runtime>,
    reference: String,
    total: u64,
    expected: Option<Digest>,
    session: Mutex<Session>,
}

impl RemoteWriter {
    fn session(&mut self) -> &mut Session {
        self.session
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Writer for RemoteWriter {
    fn status(&self) -> Result<IngestStatus> {
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        self.runtime
            .block_on(session.send(pb::WriteContentRequest {
                action: pb::WriteAction::Stat as i32,
                ..Default::default()
            }))?;
        Ok(IngestStatus {
            reference: self.reference.clone(),
            offset: session.offset,
            total: session.total,
            expected: self.expected.clone(),
            started_at: session.started_at,
            updated_at: session.updated_at,
        })
    }

    fn digest(&self) -> Digest {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .digest
            .clone()
    }

    fn set_expectations(&mut self, total: Option<u64>, expected: Option<Digest>) -> Result<()> {
        let req = pb::WriteContentRequest {
            action: pb::WriteAction::Stat as i32,
            total: wire_i64(total.unwrap_or(0), "ingest total")?,
            expected: expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ..Default::default()
        };
        let runtime = self.runtime.clone();
        runtime.block_on(self.session().send(req))?;
        if let Some(total) = total {
            self.total = total;
        }
        if expected.is_some() {
            self.expected = expected;
        }
        Ok(())
    }

    fn truncate(&mut self) -> Result<()> {
        if self.session().offset == 0 {
            return Ok(());
        }
        // The protocol's restart: a WRITE at offset 0 empties a non-empty ingest.
        let runtime = self.runtime.clone();
        let session = self.session();
        runtime.block_on(session.send(pb::WriteContentRequest {
            action: pb::WriteAction::Write as i32,
            ..Default::default()
        }))?;
        if session.offset != 0 {
            return Err(Error::data_loss(format!(
                "ingest {:?}: server holds {} bytes after a restart",
                session.reference, session.offset
            )));
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let runtime = self.runtime.clone();
        let session = self.session();
        for chunk in data.chunks(WRITE_CHUNK) {
            let offset = session.offset;
            let want = offset + chunk.len() as u64;
            runtime.block_on(session.send(pb::WriteContentRequest {
                action: pb::WriteAction::Write as i32,
                offset: wire_i64(offset, "ingest offset")?,
                data: chunk.to_vec(),
                ..Default::default()
            }))?;
            if session.offset != want {
                return Err(Error::data_loss(format!(
                    "ingest {:?}: server holds {} bytes after a write, want {want}",
                    session.reference, session.offset
                )));
            }
        }
        Ok(())
    }

    fn commit(
        mut self: Box<Self>,
        size: u64,
        expected: Option<Digest>,
        labels: Labels,
    ) -> Result<Digest> {
        let runtime = self.runtime.clone();
        let session = self.session();
        let req = pb::WriteContentRequest {
            action: pb::WriteAction::Commit as i32,
            total: wire_i64(size, "commit size")?,
            offset: wire_i64(session.offset, "ingest offset")?,
            expected: expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            labels: convert::wire_labels(&labels),
            ..Default::default()
        };
        let reply = runtime.block_on(session.send(req))?;
        let digest = convert::digest(&reply.digest, "a committed digest")?;
        runtime.block_on(session.close())?;
        Ok(digest)
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        let runtime = self.runtime.clone();
        let session = self.session();
        if session.tx.is_none() && session.replies.is_none() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking inside a runtime would panic; half-close and let the server finish.
            session.tx = None;
            return;
        }
        // Waiting for the server's end of the stream is what makes the ref free again when
        // drop returns, as dropping a local writer does.
        let closed =
            runtime.block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, session.close()).await });
        if !matches!(closed, Ok(Ok(()))) {
            // Drop cannot fail; the next writer on the ref would see Unavailable, and this
            // note (on the test's captured stderr) says why.
            eprintln!(
                "remote content store: write stream of ingest {:?} did not close cleanly",
                session.reference
            );
        }
    }
}

fn wire_i64(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid_argument(format!("{what} {n} is too large")))
}
