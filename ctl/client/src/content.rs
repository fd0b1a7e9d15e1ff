//! Content store helpers, including containerd's resumable Write protocol ([`Content::ingest`]).

use std::io;
use std::path::Path;
use std::time::Duration;

use berth_core::content::{Info, IngestStatus};
use berth_core::labels::Labels;
use berth_core::{Digest, Error, ErrorKind, Result};
use berth_proto::containerd::services::content::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

/// The largest chunk one WRITE message carries, as containerd's client.
pub const WRITE_CHUNK: usize = 1 << 20;

/// How long [`Content::ingest`] keeps retrying a ref locked by another writer when the client
/// has no deadline of its own.
pub const LOCK_RETRY_WINDOW: Duration = Duration::from_secs(60);

const FIRST_BACKOFF: Duration = Duration::from_millis(16);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Something an ingest reads from. When the server already holds the first bytes of the ref,
/// the ingest resumes by calling [`skip`](Self::skip) on a reader still at its start.
pub trait IngestSource: AsyncRead + Unpin + Send {
    /// Moves past the first `n` bytes. Fails with `UnexpectedEof` when there are fewer.
    fn skip(&mut self, n: u64) -> impl Future<Output = io::Result<()>> + Send;
}

/// Any reader, resumed by reading and discarding the bytes the server has (works for pipes).
#[derive(Debug)]
pub struct Unseekable<R>(pub R);

/// A seekable reader, resumed by seeking.
#[derive(Debug)]
pub struct Seekable<R>(pub R);

impl<R: AsyncRead + Unpin + Send> AsyncRead for Unseekable<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: AsyncRead + Unpin + Send> IngestSource for Unseekable<R> {
    async fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = tokio::io::copy(&mut (&mut self.0).take(n), &mut tokio::io::sink()).await?;
        if copied < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("input ended after {copied} of {n} bytes"),
            ));
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin + Send> AsyncRead for Seekable<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: AsyncRead + AsyncSeek + Unpin + Send> IngestSource for Seekable<R> {
    async fn skip(&mut self, n: u64) -> io::Result<()> {
        let end = self.0.seek(io::SeekFrom::End(0)).await?;
        if end < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("input has {end} bytes, fewer than {n}"),
            ));
        }
        self.0.seek(io::SeekFrom::Start(n)).await?;
        Ok(())
    }
}

/// Content helpers; see [`Client::content`].
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    client: &'a Client,
}

/// Why one ingest attempt ended without a digest.
enum Attempt {
    /// The ref is held by another writer; nothing was read, so the attempt may be repeated.
    Locked(Error),
    /// Any other failure.
    Failed(Error),
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Self {
        Attempt::Failed(e)
    }
}

fn mask(paths: Vec<String>) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths })
}

impl<'a> Content<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// The namespace's record of `digest`; NotFound when it holds none.
    pub async fn info(&self, digest: &Digest) -> Result<Info> {
        self.client
            .call(|| format!("content info {digest}"), async {
                let resp = self
                    .client
                    .rpc()
                    .content()
                    .info(pb::InfoRequest {
                        digest: digest.to_string(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let info = resp.info.ok_or_else(|| {
                    Error::internal(format!("server sent no info for content {digest}"))
                })?;
                convert::content_info(info)
            })
            .await
    }

    /// The namespace's blobs matching any of `filters` (all when empty).
    pub async fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        self.client
            .call(|| "list content".to_owned(), async {
                let mut stream = self
                    .client
                    .rpc()
                    .content()
                    .list(pb::ListContentRequest {
                        filters: filters.to_vec(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let mut out = Vec::new();
                while let Some(batch) = stream.message().await.map_err(from_status)? {
                    for info in batch.info {
                        out.push(convert::content_info(info)?);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Sets each label in `labels` on `digest`'s record, removing those whose value is empty;
    /// other labels are kept. Returns the updated record.
    pub async fn update_labels(&self, digest: &Digest, labels: &Labels) -> Result<Info> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.update(digest, labels, paths).await
    }

    /// Replaces all labels of `digest`'s record with `labels`.
    pub async fn replace_labels(&self, digest: &Digest, labels: &Labels) -> Result<Info> {
        self.update(digest, labels, vec!["labels".to_owned()]).await
    }

    async fn update(&self, digest: &Digest, labels: &Labels, paths: Vec<String>) -> Result<Info> {
        self.client
            .call(|| format!("update labels of content {digest}"), async {
                let resp = self
                    .client
                    .rpc()
                    .content()
                    .update(pb::UpdateRequest {
                        info: Some(pb::Info {
                            digest: digest.to_string(),
                            labels: convert::wire_labels(labels),
                            ..Default::default()
                        }),
                        update_mask: mask(paths),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let info = resp.info.ok_or_else(|| {
                    Error::internal(format!("server sent no info for content {digest}"))
                })?;
                convert::content_info(info)
            })
            .await
    }

    /// Removes the namespace's record of `digest`.
    pub async fn delete(&self, digest: &Digest) -> Result<()> {
        self.client
            .call(|| format!("delete content {digest}"), async {
                self.client
                    .rpc()
                    .content()
                    .delete(pb::DeleteContentRequest {
                        digest: digest.to_string(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// The whole blob `digest`.
    pub async fn read_all(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.read_range(digest, 0, 0).await
    }

    /// `size` bytes of `digest` from `offset` (`size` 0: to the end).
    pub async fn read_range(&self, digest: &Digest, offset: u64, size: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(digest, offset, size, &mut out).await?;
        Ok(out)
    }

    /// Streams the whole blob `digest` into `out`; returns the bytes written.
    pub async fn read_to<W: AsyncWrite + Unpin + Send>(
        &self,
        digest: &Digest,
        out: &mut W,
    ) -> Result<u64> {
        self.read_into(digest, 0, 0, out).await
    }

    async fn read_into<W: AsyncWrite + Unpin + Send>(
        &self,
        digest: &Digest,
        offset: u64,
        size: u64,
        out: &mut W,
    ) -> Result<u64> {
        self.client
            .call(|| format!("read content {digest}"), async {
                let mut stream = self
                    .client
                    .rpc()
                    .content()
                    .read(pb::ReadContentRequest {
                        digest: digest.to_string(),
                        offset: wire_i64(offset, "read offset")?,
                        size: wire_i64(size, "read size")?,
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let mut written = 0u64;
                while let Some(chunk) = stream.message().await.map_err(from_status)? {
                    out.write_all(&chunk.data)
                        .await
                        .map_err(|e| Error::io(format!("write content {digest}"), e))?;
                    written += chunk.data.len() as u64;
                }
                out.flush()
                    .await
                    .map_err(|e| Error::io(format!("write content {digest}"), e))?;
                Ok(written)
            })
            .await
    }

    /// The in-progress ingest `reference`; NotFound when there is none.
    pub async fn status(&self, reference: &str) -> Result<IngestStatus> {
        self.client
            .call(|| format!("status of ingest {reference:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .content()
                    .status(pb::StatusRequest {
                        r#ref: reference.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                let status = resp.status.ok_or_else(|| {
                    Error::internal(format!("server sent no status for ingest {reference:?}"))
                })?;
                convert::ingest_status(status)
            })
            .await
    }

    /// The namespace's in-progress ingests matching any of `filters` (all when empty).
    pub async fn statuses(&self, filters: &[String]) -> Result<Vec<IngestStatus>> {
        self.client
            .call(|| "list ingests".to_owned(), async {
                let resp = self
                    .client
                    .rpc()
                    .content()
                    .list_statuses(pb::ListStatusesRequest {
                        filters: filters.to_vec(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                resp.statuses
                    .into_iter()
                    .map(convert::ingest_status)
                    .collect()
            })
            .await
    }

    /// Drops the in-progress ingest `reference` and its bytes.
    pub async fn abort(&self, reference: &str) -> Result<()> {
        self.client
            .call(|| format!("abort ingest {reference:?}"), async {
                self.client
                    .rpc()
                    .content()
                    .abort(pb::AbortRequest {
                        r#ref: reference.to_owned(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }

    /// Stores `data` (ref `blob-<digest>`) and returns its digest; a blob the namespace already
    /// holds is not sent again.
    pub async fn write_blob(&self, data: &[u8], labels: Labels) -> Result<Digest> {
        let digest = Digest::of(data);
        let reference = format!("blob-{digest}");
        self.ingest(&reference, data, data.len() as u64, Some(&digest), labels)
            .await
    }

    /// Ingests everything `reader` yields under `reference` and commits it with `labels`;
    /// returns the digest.
    ///
    /// `total` is the size to expect (0: unknown) and `expected` the digest to expect; the
    /// server checks both at commit. When the namespace already holds `expected`, nothing is
    /// sent and `expected` is returned. When the server already holds the first bytes of the
    /// ref (an interrupted earlier ingest), those bytes are read and discarded from `reader`
    /// and the rest is appended; use [`ingest_file`](Self::ingest_file) or
    /// [`ingest_source`](Self::ingest_source) with [`Seekable`] to seek instead. A ref held by
    /// another writer is retried with backoff until the client's deadline (or
    /// [`LOCK_RETRY_WINDOW`]).
    pub async fn ingest<R: AsyncRead + Unpin + Send>(
        &self,
        reference: &str,
        reader: R,
        total: u64,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<Digest> {
        self.ingest_source(reference, Unseekable(reader), total, expected, labels)
            .await
    }

    /// Ingests the file at `path` (its size is the expected total), resuming by seeking.
    pub async fn ingest_file(
        &self,
        reference: &str,
        path: &Path,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<Digest> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let total = file
            .metadata()
            .await
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        self.ingest_source(reference, Seekable(file), total, expected, labels)
            .await
            .map_err(|e| e.context(format!("ingest {}", path.display())))
    }

    /// [`ingest`](Self::ingest) over any [`IngestSource`].
    pub async fn ingest_source<S: IngestSource>(
        &self,
        reference: &str,
        mut source: S,
        total: u64,
        expected: Option<&Digest>,
        labels: Labels,
    ) -> Result<Digest> {
        let started = Instant::now();
        // The client's deadline bounds everything; without one, only waiting for a lock is
        // bounded, so a stuck writer elsewhere cannot hang us forever.
        let deadline = self.client.timeout().map(|t| started + t);
        let give_up = deadline.unwrap_or(started + LOCK_RETRY_WINDOW);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = self.ingest_once(reference, &mut source, total, expected, &labels);
            let attempt = match deadline {
                None => attempt.await,
                Some(at) => tokio::time::timeout_at(at, attempt).await.map_err(|_| {
                    Error::new(
                        ErrorKind::DeadlineExceeded,
                        format!("ingest {reference:?}: not done within {:?}", at - started),
                    )
                })?,
            };
            match attempt {
                Ok(d) => return Ok(d),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Locked(e)) => {
                    let now = Instant::now();
                    if now < give_up {
                        tracing::debug!(reference, ?backoff, "ref locked, retrying");
                        tokio::time::sleep(backoff.min(give_up - now)).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    // Checked after the sleep too: an attempt begun at the deadline would
                    // only report the deadline and hide that the ref was locked.
                    if Instant::now() >= give_up {
                        return Err(e.context(format!(
                            "ingest {reference:?} still locked after {:?}",
                            give_up - started
                        )));
                    }
                }
            }
        }
    }

    async fn ingest_once<S: IngestSource>(
        &self,
        reference: &str,
        source: &mut S,
        total: u64,
        expected: Option<&Digest>,
        labels: &Labels,
    ) -> std::result::Result<Digest, Attempt> {
        let wire_total = wire_i64(total, "ingest total")?;
        let wire_expected = expected.map(ToString::to_string).unwrap_or_default();
        // Small: the protocol is lock-step, at most one message is ever in flight.
        let (tx, rx) = mpsc::channel(2);
        let mut stream = WriteStream {
            tx,
            replies: None,
            reference,
        };
        // Queued before the call so a server that waits for the first message before sending
        // headers cannot deadlock us.
        stream
            .queue(pb::WriteContentRequest {
                action: pb::WriteAction::Stat as i32,
                r#ref: reference.to_owned(),
                total: wire_total,
                expected: wire_expected.clone(),
                ..Default::default()
            })
            .await?;
        let opened = self
            .client
            .rpc()
            .content()
            .write(ReceiverStream::new(rx))
            .await;
        let stat = match opened {
            Ok(resp) => {
                stream.replies = Some(resp.into_inner());
                stream.reply().await
            }
            Err(status) => Err(from_status(status)),
        };
        let stat = match stat {
            Ok(stat) => stat,
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                if let Some(expected) = expected {
                    return Ok(expected.clone());
                }
                return Err(Attempt::Failed(e));
            }
            Err(e) if e.is(ErrorKind::Unavailable) => return Err(Attempt::Locked(e)),
            Err(e) => return Err(Attempt::Failed(e)),
        };

        let mut offset = convert::size(stat.offset, "ingest offset")?;
        let mut last_digest = stat.digest;
        if total > 0 && offset > total {
            // More than we mean to send: the held bytes cannot be ours, so start over (offset 0
            // on the first WRITE truncates).
            offset = 0;
        }
        if offset > 0 {
            tracing::debug!(reference, offset, "resuming ingest");
            source.skip(offset).await.map_err(|e| {
                Error::io(
                    format!("skip the {offset} bytes ingest {reference:?} already holds"),
                    e,
                )
            })?;
        }

        let mut buf = vec![0u8; WRITE_CHUNK];
        loop {
            let n = read_full(source, &mut buf)
                .await
                .map_err(|e| Error::io(format!("read input of ingest {reference:?}"), e))?;
            if n == 0 {
                break;
            }
            let reply = stream
                .send(pb::WriteContentRequest {
                    action: pb::WriteAction::Write as i32,
                    offset: wire_i64(offset, "ingest offset")?,
                    data: buf[..n].to_vec(),
                    ..Default::default()
                })
                .await?;
            let want = offset + n as u64;
            if convert::size(reply.offset, "ingest offset")? != want {
                return Err(Attempt::Failed(Error::data_loss(format!(
                    "ingest {reference:?}: server holds {} bytes after a write, want {want}",
                    reply.offset
                ))));
            }
            offset = want;
            last_digest = reply.digest;
            if n < buf.len() {
                break;
            }
        }

        let committed = stream
            .send(pb::WriteContentRequest {
                action: pb::WriteAction::Commit as i32,
                total: wire_total,
                offset: wire_i64(offset, "ingest offset")?,
                expected: wire_expected,
                labels: convert::wire_labels(labels),
                ..Default::default()
            })
            .await;
        let reply = match committed {
            Ok(reply) => reply,
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                // Committed meanwhile by someone else: the bytes we sent are what was asked for.
                return match expected {
                    Some(d) => Ok(d.clone()),
                    None => Ok(convert::digest(&last_digest, "an ingest digest")?),
                };
            }
            Err(e) => return Err(Attempt::Failed(e)),
        };
        if total != 0 && reply.offset != wire_total {
            return Err(Attempt::Failed(Error::failed_precondition(format!(
                "ingest {reference:?}: committed {} bytes, want {total}",
                reply.offset
            ))));
        }
        let digest = if reply.digest.is_empty() {
            convert::digest(&last_digest, "an ingest digest")?
        } else {
            convert::digest(&reply.digest, "a committed digest")?
        };
        if let Some(expected) = expected
            && &digest != expected
        {
            return Err(Attempt::Failed(Error::failed_precondition(format!(
                "ingest {reference:?}: committed {digest}, want {expected}"
            ))));
        }
        stream.finish().await?;
        Ok(digest)
    }
}

/// One Write stream, driven in lock-step: every request is answered by one reply.
struct WriteStream<'r> {
    tx: mpsc::Sender<pb::WriteContentRequest>,
    replies: Option<Streaming<pb::WriteContentResponse>>,
    reference: &'r str,
}

impl WriteStream<'_> {
    async fn queue(&self, req: pb::WriteContentRequest) -> Result<()> {
        self.tx.send(req).await.map_err(|_| {
            Error::unavailable(format!(
                "write stream of ingest {:?} closed by the server",
                self.reference
            ))
        })
    }

    async fn reply(&mut self) -> Result<pb::WriteContentResponse> {
        let Some(replies) = self.replies.as_mut() else {
            return Err(Error::internal("write stream not open"));
        };
        replies
            .message()
            .await
            .map_err(from_status)?
            .ok_or_else(|| {
                Error::unavailable(format!(
                    "server ended the write stream of ingest {:?} without a reply",
                    self.reference
                ))
            })
    }

    /// Sends `req` and waits for its reply; when the server has already ended the stream, its
    /// final status is the error.
    async fn send(&mut self, req: pb::WriteContentRequest) -> Result<pb::WriteContentResponse> {
        match self.queue(req).await {
            Ok(()) => self.reply().await,
            Err(closed) => match self.reply().await {
                Err(status) => Err(status),
                Ok(_) => Err(closed),
            },
        }
    }

    /// Half-closes and reads the server's final status, surfacing a late failure.
    async fn finish(self) -> Result<()> {
        let WriteStream { tx, replies, .. } = self;
        drop(tx);
        if let Some(mut replies) = replies {
            // containerd repeats its last reply before ending; extra replies are harmless.
            while replies.message().await.map_err(from_status)?.is_some() {}
        }
        Ok(())
    }
}

/// Fills `buf` unless the input ends first; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn wire_i64(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid_argument(format!("{what} {n} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unseekable_skip_discards_and_reports_short_input() {
        let mut src = Unseekable(&b"abcdef"[..]);
        src.skip(2).await.unwrap();
        let mut rest = String::new();
        src.0.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "cdef");

        let mut short = Unseekable(&b"ab"[..]);
        let err = short.skip(3).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn seekable_skip_seeks_in_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut src = Seekable(tokio::fs::File::open(&path).await.unwrap());
        src.skip(7).await.unwrap();
        let mut rest = Vec::new();
        src.0.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"789");

        let mut src = Seekable(tokio::fs::File::open(&path).await.unwrap());
        assert_eq!(
            src.skip(11).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[tokio::test]
    async fn read_full_fills_across_short_reads() {
        // A chain of two readers returns at most the first's bytes per read.
        let mut r = (&b"abc"[..]).chain(&b"defgh"[..]);
        let mut buf = [0u8; 6];
        assert_eq!(read_full(&mut r, &mut buf).await.unwrap(), 6);
        assert_eq!(&buf, b"abcdef");
        assert_eq!(read_full(&mut r, &mut buf).await.unwrap(), 2);
        assert_eq!(read_full(&mut r, &mut buf).await.unwrap(), 0);
    }
}
