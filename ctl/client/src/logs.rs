//! Container logs (`berth.services.logs.v1.Logs`): what a container created with the
//! `io.berth.log=json-file` label wrote, as its shim logged it.

use std::time::SystemTime;

use berth_core::logs::{LogEntry, LogStream, ReadLogs};
use berth_core::{Error, Result};
use berth_proto::berth::services::logs::v1 as pb;
use prost_types::Timestamp;
use tonic::Streaming;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

impl Client {
    /// Container log helpers.
    pub fn logs(&self) -> Logs<'_> {
        Logs { client: self }
    }
}

/// Container log helpers; see [`Client::logs`].
#[derive(Debug, Clone, Copy)]
pub struct Logs<'a> {
    client: &'a Client,
}

/// A container's log entries as the server streams them.
pub struct LogStreamReader {
    inner: Streaming<pb::LogEntry>,
}

impl LogStreamReader {
    /// The next entry; `None` at the end of the log (or of the follow).
    pub async fn next(&mut self) -> Result<Option<LogEntry>> {
        let Some(e) = self.inner.message().await.map_err(from_status)? else {
            return Ok(None);
        };
        let stream = LogStream::parse(&e.stream).ok_or_else(|| {
            Error::internal(format!("server sent a log entry of stream {:?}", e.stream))
        })?;
        Ok(Some(LogEntry {
            time: convert::system_time(e.time.as_ref()),
            stream,
            data: e.data,
        }))
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

impl Logs<'_> {
    /// Reads container `id`'s log. Only the start of the call is under the client's deadline:
    /// a followed log may go on for as long as the container runs.
    pub async fn read(&self, id: &str, opts: &ReadLogs) -> Result<LogStreamReader> {
        self.client
            .call(|| format!("read the log of container {id:?}"), async {
                let inner = self
                    .client
                    .rpc()
                    .logs()
                    .read(pb::ReadRequest {
                        container_id: id.to_owned(),
                        follow: opts.follow,
                        since: opts.since.map(timestamp),
                        until: opts.until.map(timestamp),
                        tail: opts.tail,
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                Ok(LogStreamReader { inner })
            })
            .await
    }
}
