//! `berth.services.logs.v1.Logs` over [`ContainerLogs`]: Berth's own service, as containerd
//! has no log store.

use std::pin::Pin;
use std::sync::Arc;

use berth_core::logs::{ContainerLogs, ReadLogs};
use berth_proto::berth::services::logs::v1 as pb;
use futures::Stream;
use pb::logs_server::Logs;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert::{system_time, timestamp};
use crate::error::to_status;

type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

/// The Logs service.
pub struct LogsService {
    logs: Arc<dyn ContainerLogs>,
}

impl LogsService {
    /// A service over `logs`.
    pub fn new(logs: Arc<dyn ContainerLogs>) -> Self {
        Self { logs }
    }
}

#[tonic::async_trait]
impl Logs for LogsService {
    type ReadStream = EntryStream;

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let opts = ReadLogs {
            follow: req.follow,
            since: system_time(req.since.as_ref()),
            until: system_time(req.until.as_ref()),
            tail: req.tail,
        };
        let reader = self
            .logs
            .read(&ctx, &req.container_id, opts)
            .await
            .map_err(to_status)?;
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let entry = reader.next().await?;
            let item = entry.map_err(to_status).map(|e| pb::LogEntry {
                time: Some(timestamp(e.time)),
                stream: e.stream.as_str().to_owned(),
                data: e.data,
            });
            Some((item, reader))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
