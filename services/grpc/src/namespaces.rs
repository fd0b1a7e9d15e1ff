//! `containerd.services.namespaces.v1.Namespaces` over a [`NamespaceStore`].

use std::sync::Arc;

use berth_core::Namespace;
use berth_core::filters::Filters;
use berth_core::namespaces::{NamespaceInfo, NamespaceStore};
use berth_proto::containerd::services::namespaces::v1 as pb;
use pb::namespaces_server::Namespaces;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::{blocking, error::to_status};

/// The Namespaces service.
pub struct NamespacesService {
    store: Arc<dyn NamespaceStore>,
}

impl NamespacesService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn NamespaceStore>) -> Self {
        Self { store }
    }
}

fn wire(info: &NamespaceInfo) -> pb::Namespace {
    pb::Namespace {
        name: info.name.to_string(),
        labels: convert::wire_labels(&info.labels),
    }
}

fn name(s: &str) -> Result<Namespace, Status> {
    Namespace::new(s).map_err(to_status)
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::GetNamespaceResponse>, Status> {
        let ns = name(&req.get_ref().name)?;
        let store = self.store.clone();
        let lookup = ns.clone();
        let info = match blocking(move || store.get(&lookup)).await {
            Ok(info) => info,
            // containerd 1.6 answers an unknown namespace with empty labels, and ctr depends on
            // it (it reads default labels before every unpack and run).
            Err(status) if status.code() == tonic::Code::NotFound => NamespaceInfo {
                name: ns,
                labels: Default::default(),
            },
            Err(status) => return Err(status),
        };
        Ok(Response::new(pb::GetNamespaceResponse {
            namespace: Some(wire(&info)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let filters = Filters::parse(&[req.get_ref().filter.as_str()]).map_err(to_status)?;
        let store = self.store.clone();
        let list = blocking(move || store.list(&filters)).await?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: list.iter().map(wire).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let wire_ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("create needs a namespace"))?;
        let ns = name(&wire_ns.name)?;
        let labels = convert::labels(wire_ns.labels);
        let store = self.store.clone();
        let info = blocking(move || store.create(&ns, labels)).await?;
        Ok(Response::new(pb::CreateNamespaceResponse {
            namespace: Some(wire(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let wire_ns = req
            .namespace
            .ok_or_else(|| Status::invalid_argument("update needs a namespace"))?;
        let info = NamespaceInfo {
            name: name(&wire_ns.name)?,
            labels: convert::labels(wire_ns.labels),
        };
        let paths = convert::mask_paths(req.update_mask);
        let store = self.store.clone();
        let info = blocking(move || store.update(info, &paths)).await?;
        Ok(Response::new(pb::UpdateNamespaceResponse {
            namespace: Some(wire(&info)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = name(&req.get_ref().name)?;
        let store = self.store.clone();
        blocking(move || store.delete(&ns)).await?;
        Ok(Response::new(()))
    }
}
