//! `grpc.health.v1.Health`: the server is serving whenever it answers.

use std::pin::Pin;

use berth_proto::grpc::health::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status};

/// The Health service.
pub struct HealthService;

fn serving() -> pb::HealthCheckResponse {
    pb::HealthCheckResponse {
        status: pb::health_check_response::ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl pb::health_server::Health for HealthService {
    async fn check(
        &self,
        _req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        Ok(Response::new(serving()))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<pb::HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // One answer, then the stream stays open as the protocol asks: status never changes
        // while the server runs.
        let stream = tokio_stream::once(Ok(serving())).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

use tokio_stream::StreamExt as _;
