//! A connection to one shim: requests multiplexed by id, events handed to a callback.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_core::{Error, ErrorKind, Result};
use berth_shim_api as api;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::oneshot;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<api::Response>>>>;

/// A shim connection.
pub struct ShimClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next: AtomicU64,
}

impl ShimClient {
    /// Connects to the shim at `socket`; `on_event` gets every event it pushes. The returned
    /// future of the reader ends when the shim closes the connection.
    pub async fn connect(
        socket: &Path,
        on_event: impl Fn(api::Event) + Send + 'static,
    ) -> Result<ShimClient> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("connect to shim {}: {e}", socket.display()),
            )
        })?;
        Ok(Self::over(stream, on_event))
    }

    /// A client over a stream already connected to a shim (one end of the socket pair a new
    /// shim was started with).
    pub fn from_std(
        stream: std::os::unix::net::UnixStream,
        on_event: impl Fn(api::Event) + Send + 'static,
    ) -> Result<ShimClient> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("shim connection", e))?;
        let stream = UnixStream::from_std(stream).map_err(|e| Error::io("shim connection", e))?;
        Ok(Self::over(stream, on_event))
    }

    fn over(stream: UnixStream, on_event: impl Fn(api::Event) + Send + 'static) -> ShimClient {
        let (mut reader, writer) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let p = pending.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(8192);
            loop {
                loop {
                    match api::decode_frame(&mut buf) {
                        Ok(Some(msg)) => match msg.kind {
                            Some(api::shim_message::Kind::Response(r)) => {
                                let tx = p.lock().ok().and_then(|mut m| m.remove(&r.id));
                                if let Some(tx) = tx {
                                    let _ = tx.send(r);
                                }
                            }
                            Some(api::shim_message::Kind::Event(e)) => on_event(e),
                            _ => {}
                        },
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("shim connection: {e}");
                            return;
                        }
                    }
                }
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // Callers still waiting get an error when their sender is dropped.
            if let Ok(mut m) = p.lock() {
                m.clear();
            }
        });
        ShimClient {
            writer: tokio::sync::Mutex::new(writer),
            pending,
            next: AtomicU64::new(1),
        }
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, body: api::request::Body) -> Result<Option<api::response::Body>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.pending.lock() {
            m.insert(id, tx);
        }
        let frame = api::encode_frame(&api::ShimMessage {
            kind: Some(api::shim_message::Kind::Request(api::Request {
                id,
                body: Some(body),
            })),
        });
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(&frame).await {
                if let Ok(mut m) = self.pending.lock() {
                    m.remove(&id);
                }
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("send to shim: {e}"),
                ));
            }
        }
        let resp = rx
            .await
            .map_err(|_| Error::new(ErrorKind::Unavailable, "the shim went away"))?;
        match resp.error {
            Some(e) => Err(Error::new(ErrorKind::from_name(&e.kind), e.message)),
            None => Ok(resp.body),
        }
    }
}
