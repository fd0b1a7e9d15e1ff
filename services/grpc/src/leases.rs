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

/// A lease id in containerd's form: `<nanoseconds>-<base64url of 3 random bytes>`.
pub fn random_id() -> String {
    use base64::Engine as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let bytes: [u8; 3] = rand::random();
    format!(
        "{nanos}-{}",
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    )
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
        // containerd's service picks an id when the client names none (`ctr leases create`).
        let id = if req.id.is_empty() {
            random_id()
        } else {
            req.id
        };
        let leases = self.leases.clone();
        let lease = blocking(move || leases.create(&ctx, &id, labels)).await?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn random_ids_are_valid_identifiers_and_differ() {
        let a = super::random_id();
        let b = super::random_id();
        assert_ne!(a, b);
        let (nanos, suffix) = a.split_once('-').unwrap();
        assert!(nanos.parse::<u32>().is_ok(), "{a}");
        assert_eq!(suffix.len(), 4, "{a}");
    }
}
