//! `containerd.services.leases.v1.Leases` over a [`LeaseManager`].

use std::sync::Arc;

use berth_core::filters::Filters;
use berth_core::leases::{Lease, LeaseManager, Resource};
use berth_proto::containerd::services::leases::v1 as pb;
use pb::leases_server::Leases;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert::{self, timestamp};
use crate::{blocking, error::to_status};

/// The Leases service.
pub struct LeasesService {
    leases: Arc<dyn LeaseManager>,
}

impl LeasesService {
    /// A service over `leases`.
    pub fn new(leases: Arc<dyn LeaseManager>) -> Self {
        Self { leases }
    }
}

fn wire(lease: &Lease) -> pb::Lease {
    pb::Lease {
        id: lease.id.clone(),
        created_at: Some(timestamp(lease.created_at)),
        labels: convert::wire_labels(&lease.labels),
    }
}

fn resource(r: Option<pb::Resource>) -> Result<Resource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource must be set"))?;
    Ok(Resource {
        id: r.id,
        kind: r.r#type,
    })
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let labels = convert::labels(req.labels);
        let leases = self.leases.clone();
        let lease = blocking(move || leases.create(&ctx, &req.id, labels)).await?;
        Ok(Response::new(pb::CreateResponse {
            lease: Some(wire(&lease)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let leases = self.leases.clone();
        blocking(move || leases.delete(&ctx, &req.id, req.sync)).await?;
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ctx = request_context(&req)?;
        let filters = Filters::parse(&req.get_ref().filters).map_err(to_status)?;
        let leases = self.leases.clone();
        let list = blocking(move || leases.list(&ctx, &filters)).await?;
        Ok(Response::new(pb::ListResponse {
            leases: list.iter().map(wire).collect(),
        }))
    }

    async fn add_resource(
        &self,
        req: Request<pb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let r = resource(req.resource)?;
        let leases = self.leases.clone();
        blocking(move || leases.add_resource(&ctx, &req.id, r)).await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let r = resource(req.resource)?;
        let leases = self.leases.clone();
        blocking(move || leases.delete_resource(&ctx, &req.id, r)).await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let ctx = request_context(&req)?;
        let id = req.into_inner().id;
        let leases = self.leases.clone();
        let list = blocking(move || leases.list_resources(&ctx, &id)).await?;
        Ok(Response::new(pb::ListResourcesResponse {
            resources: list
                .into_iter()
                .map(|r| pb::Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
