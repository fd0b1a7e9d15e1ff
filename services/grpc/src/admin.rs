//! `berth.services.admin.v1.Admin`: Berth's own operator calls (garbage collection on demand).

use std::sync::Arc;

use berth_core::gc::GarbageCollector;
use berth_proto::berth::services::admin::v1 as pb;
use tonic::{Request, Response, Status};

use crate::blocking;

/// The Admin service.
pub struct AdminService {
    gc: Arc<dyn GarbageCollector>,
}

impl AdminService {
    /// A service over `gc`.
    pub fn new(gc: Arc<dyn GarbageCollector>) -> Self {
        Self { gc }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn garbage_collect(
        &self,
        _req: Request<pb::GarbageCollectRequest>,
    ) -> Result<Response<pb::GarbageCollectResponse>, Status> {
        let gc = self.gc.clone();
        let stats = blocking(move || gc.collect()).await?;
        Ok(Response::new(pb::GarbageCollectResponse {
            records_removed: stats.records_removed,
            blobs_removed: stats.blobs_removed,
            bytes_removed: stats.bytes_removed,
            ingests_removed: stats.ingests_removed,
            snapshots_removed: stats.snapshots_removed,
            duration: prost_types::Duration::try_from(stats.duration).ok(),
        }))
    }
}
