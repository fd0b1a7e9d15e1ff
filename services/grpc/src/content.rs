//! `containerd.services.content.v1.Content` over a [`ContentStore`].

use std::pin::Pin;
use std::sync::Arc;

use berth_core::content::{ContentStore, Info, IngestStatus, Writer};
use berth_core::filters::Filters;
use berth_core::{Error, RequestContext};
use berth_proto::containerd::services::content::v1 as pb;
use futures::Stream;
use pb::content_server::Content;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::context::request_context;
use crate::convert::{self, timestamp};
use crate::{blocking, error::to_status, inline};

/// How many infos go in one List response, as containerd does.
const LIST_BATCH: usize = 100;
/// The largest chunk one Read response carries.
const READ_CHUNK: usize = 1 << 20;
/// Reads up to this size are served on the request's worker in one message.
const SMALL_READ: usize = 64 << 10;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Content service.
pub struct ContentService {
    store: Arc<dyn ContentStore>,
}

impl ContentService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self { store }
    }
}

fn wire_info(info: &Info) -> pb::Info {
    pb::Info {
        digest: info.digest.to_string(),
        size: info.size as i64,
        created_at: Some(timestamp(info.created_at)),
        updated_at: Some(timestamp(info.updated_at)),
        labels: convert::wire_labels(&info.labels),
    }
}

fn wire_status(status: &IngestStatus) -> pb::Status {
    pb::Status {
        started_at: Some(timestamp(status.started_at)),
        updated_at: Some(timestamp(status.updated_at)),
        r#ref: status.reference.clone(),
        offset: status.offset as i64,
        total: status.total as i64,
        expected: status
            .expected
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let ctx = request_context(&req)?;
        let digest = convert::digest(&req.get_ref().digest).map_err(to_status)?;
        let info = inline(|| self.store.info(&ctx, &digest))?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(wire_info(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let wire = req
            .info
            .ok_or_else(|| Status::invalid_argument("update needs info"))?;
        let info = Info {
            digest: convert::digest(&wire.digest).map_err(to_status)?,
            size: 0,
            created_at: std::time::UNIX_EPOCH,
            updated_at: std::time::UNIX_EPOCH,
            labels: convert::labels(wire.labels),
        };
        let paths = convert::mask_paths(req.update_mask);
        let store = self.store.clone();
        let info = blocking(move || store.update(&ctx, info, &paths)).await?;
        Ok(Response::new(pb::UpdateResponse {
            info: Some(wire_info(&info)),
        }))
    }

    type ListStream = BoxStream<pb::ListContentResponse>;

    async fn list(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ctx = request_context(&req)?;
        let filters = Filters::parse(&req.get_ref().filters).map_err(to_status)?;
        let store = self.store.clone();
        let infos = blocking(move || store.list(&ctx, &filters)).await?;
        let batches: Vec<Result<pb::ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|chunk| {
                Ok(pb::ListContentResponse {
                    info: chunk.iter().map(wire_info).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let digest = convert::digest(&req.get_ref().digest).map_err(to_status)?;
        let store = self.store.clone();
        blocking(move || store.delete(&ctx, &digest)).await?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<pb::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let digest = convert::digest(&req.digest).map_err(to_status)?;
        let offset = convert::size(req.offset, "offset").map_err(to_status)?;
        let reader = inline(|| self.store.reader(&ctx, &digest))?;
        let reader: Arc<dyn berth_core::content::ReaderAt> = Arc::from(reader);
        let total = reader.size();
        if offset > total {
            return Err(Status::out_of_range(format!(
                "read offset {offset} is past the end of the blob ({total} bytes)"
            )));
        }
        let end = if req.size <= 0 {
            total
        } else {
            total.min(offset.saturating_add(req.size as u64))
        };
        if end - offset <= SMALL_READ as u64 {
            // Manifests, indexes and configs: one read from the page cache, no reader thread.
            let mut buf = vec![0u8; (end - offset) as usize];
            read_full(reader.as_ref(), &mut buf, offset).map_err(to_status)?;
            let msg = pb::ReadContentResponse {
                offset: offset as i64,
                data: buf,
            };
            let stream: Self::ReadStream = if end == offset {
                Box::pin(tokio_stream::empty())
            } else {
                Box::pin(tokio_stream::once(Ok(msg)))
            };
            return Ok(Response::new(stream));
        }
        let (tx, rx) = mpsc::channel(4);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut pos = offset;
            while pos < end {
                let len = (end - pos).min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; len];
                let msg = match read_full(reader.as_ref(), &mut buf, pos) {
                    Ok(()) => Ok(pb::ReadContentResponse {
                        offset: pos as i64,
                        data: buf,
                    }),
                    Err(e) => Err(to_status(e)),
                };
                let failed = msg.is_err();
                if tx.blocking_send(msg).is_err() || failed {
                    return;
                }
                pos += len as u64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ctx = request_context(&req)?;
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        let status = blocking(move || store.status(&ctx, &reference)).await?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(wire_status(&status)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let ctx = request_context(&req)?;
        let filters = Filters::parse(&req.get_ref().filters).map_err(to_status)?;
        let store = self.store.clone();
        let statuses = blocking(move || store.list_statuses(&ctx, &filters)).await?;
        Ok(Response::new(pb::ListStatusesResponse {
            statuses: statuses.iter().map(wire_status).collect(),
        }))
    }

    type WriteStream = BoxStream<pb::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ctx = request_context(&req)?;
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(status) = write_session(store, ctx, inbound, &tx).await {
                    tracing::debug!(code = ?status.code(), message = status.message(), "write ended");
                    let _ = tx.send(Err(status)).await;
                }
            },
            span,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let reference = req.into_inner().r#ref;
        let store = self.store.clone();
        blocking(move || store.abort(&ctx, &reference)).await?;
        Ok(Response::new(()))
    }
}

fn read_full(
    reader: &dyn berth_core::content::ReaderAt,
    buf: &mut [u8],
    offset: u64,
) -> berth_core::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = reader.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(Error::data_loss(format!(
                "blob ended at {} bytes, before {}",
                offset + done as u64,
                offset + buf.len() as u64
            )));
        }
        done += n;
    }
    Ok(())
}

/// Runs one writer-owning step on a blocking thread and hands the writer back.
async fn with_writer<T: Send + 'static>(
    mut writer: Box<dyn Writer>,
    f: impl FnOnce(&mut dyn Writer) -> berth_core::Result<T> + Send + 'static,
) -> (Box<dyn Writer>, Result<T, Status>) {
    let span = tracing::Span::current();
    let joined = tokio::task::spawn_blocking(move || {
        let result = span.in_scope(|| f(writer.as_mut()));
        (writer, result)
    })
    .await;
    match joined {
        Ok((writer, result)) => (writer, result.map_err(to_status)),
        // A panicking step loses the writer; the ingest's bytes stay on disk for a resume.
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

fn reply(action: i32, status: &IngestStatus, digest: String) -> pb::WriteContentResponse {
    pb::WriteContentResponse {
        action,
        started_at: Some(timestamp(status.started_at)),
        updated_at: Some(timestamp(status.updated_at)),
        offset: status.offset as i64,
        total: status.total as i64,
        digest,
    }
}

/// One Write stream: STAT / WRITE / COMMIT messages against one ingest, as containerd's
/// protocol defines (see docs/content.md).
async fn write_session(
    store: Arc<dyn ContentStore>,
    ctx: RequestContext,
    mut inbound: Streaming<pb::WriteContentRequest>,
    tx: &mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let Some(first) = inbound.message().await? else {
        return Ok(());
    };
    if first.r#ref.is_empty() {
        return Err(Status::invalid_argument(
            "first message must have a reference",
        ));
    }
    let reference = first.r#ref.clone();
    tracing::Span::current().record("id", reference.as_str());
    let total = convert::size(first.total, "total").map_err(to_status)?;
    let expected = convert::optional_digest(&first.expected).map_err(to_status)?;
    let mut writer = {
        let store = store.clone();
        let ctx = ctx.clone();
        let reference = reference.clone();
        let expected = expected.clone();
        blocking(move || store.writer(&ctx, &reference, total, expected)).await?
    };
    let mut current_expected = expected;
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        // Later messages may announce or change total/expected; the latest values win.
        let total = convert::size(msg.total, "total").map_err(to_status)?;
        let expected = convert::optional_digest(&msg.expected).map_err(to_status)?;
        if let Some(d) = expected
            .clone()
            .filter(|d| current_expected.as_ref() != Some(d))
        {
            // A newly announced digest the namespace already holds ends the ingest: the client
            // takes AlreadyExists as "skip, you have it".
            let (s, c, probe) = (store.clone(), ctx.clone(), d.clone());
            if blocking(move || s.info(&c, &probe)).await.is_ok() {
                drop(writer);
                let (s, c, r) = (store.clone(), ctx.clone(), reference.clone());
                let _ = blocking(move || s.abort(&c, &r)).await;
                return Err(Status::already_exists(format!(
                    "content {d}: already exists"
                )));
            }
            current_expected = Some(d);
        }
        let set_total = (total > 0).then_some(total);
        let (w, r) = with_writer(writer, move |w| w.set_expectations(set_total, expected)).await;
        writer = w;
        r?;

        let action = pb::WriteAction::try_from(msg.action).map_err(|_| {
            Status::invalid_argument(format!("unknown write action {}", msg.action))
        })?;
        match action {
            pb::WriteAction::Stat => {
                let (w, r) =
                    with_writer(writer, |w| Ok((w.status()?, w.digest().to_string()))).await;
                writer = w;
                let (status, digest) = r?;
                send(tx, reply(msg.action, &status, digest)).await?;
            }
            pb::WriteAction::Write | pb::WriteAction::Commit => {
                let offset = convert::size(msg.offset, "offset").map_err(to_status)?;
                let data = msg.data;
                let (w, r) = with_writer(writer, move |w| {
                    let current = w.status()?.offset;
                    if offset > 0 && offset != current {
                        return Err(Error::out_of_range(format!(
                            "write offset {offset} does not match the ingest's offset {current}"
                        )));
                    }
                    // As containerd: a write or commit at offset 0 restarts a non-empty ingest.
                    if offset == 0 && current > 0 {
                        w.truncate()?;
                    }
                    if !data.is_empty() {
                        w.write(&data)?;
                    }
                    Ok(())
                })
                .await;
                writer = w;
                r?;
                if action == pb::WriteAction::Commit {
                    let labels = convert::labels(msg.labels);
                    let expected = current_expected.clone();
                    let commit_total = total;
                    let (status, digest) = {
                        let span = tracing::Span::current();
                        tokio::task::spawn_blocking(move || {
                            span.in_scope(|| {
                                let status = writer.status()?;
                                let digest = writer.commit(commit_total, expected, labels)?;
                                Ok::<_, Error>((status, digest))
                            })
                        })
                        .await
                        .map_err(|e| Status::internal(format!("commit task failed: {e}")))?
                        .map_err(to_status)?
                    };
                    send(tx, reply(msg.action, &status, digest.to_string())).await?;
                    return Ok(());
                }
                let (w, r) =
                    with_writer(writer, |w| Ok((w.status()?, w.digest().to_string()))).await;
                writer = w;
                let (status, digest) = r?;
                send(tx, reply(msg.action, &status, digest)).await?;
            }
        }
        next = inbound.message().await?;
    }
    Ok(())
}

async fn send(
    tx: &mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
    msg: pb::WriteContentResponse,
) -> Result<(), Status> {
    tx.send(Ok(msg))
        .await
        .map_err(|_| Status::cancelled("client went away"))
}
