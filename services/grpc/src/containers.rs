//! `containerd.services.containers.v1.Containers` over a [`ContainerStore`].

use std::pin::Pin;
use std::sync::Arc;

use berth_core::containers::{Container, ContainerStore, RuntimeInfo};
use berth_core::filters::Filters;
use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::{to_any_value, to_wire_any};
use futures::Stream;
use pb::containers_server::Containers;
use tonic::{Request, Response, Status};

use crate::context::request_context;
use crate::convert::{self, timestamp};
use crate::{blocking, error::to_status, inline};

type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListContainerMessage, Status>> + Send>>;

/// The Containers service.
pub struct ContainersService {
    containers: Arc<dyn ContainerStore>,
}

impl ContainersService {
    /// A service over `containers`.
    pub fn new(containers: Arc<dyn ContainerStore>) -> Self {
        Self { containers }
    }
}

/// A container for the wire.
pub fn wire_container(c: &Container) -> pb::Container {
    pb::Container {
        id: c.id.clone(),
        labels: convert::wire_labels(&c.labels),
        image: c.image.clone(),
        runtime: Some(pb::container::Runtime {
            name: c.runtime.name.clone(),
            options: c.runtime.options.as_ref().map(to_wire_any),
        }),
        // ctr unmarshals `spec.value` without a nil check; stored containers always have one.
        spec: c.spec.as_ref().map(to_wire_any),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), to_wire_any(v)))
            .collect(),
    }
}

/// A container from the wire. Its times are ignored (the store sets them; Go clients send
/// year 1); validation is the store's.
pub fn container(c: Option<pb::Container>) -> Result<Container, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("container must be set"))?;
    let runtime = c.runtime.unwrap_or_default();
    Ok(Container {
        id: c.id,
        labels: convert::labels(c.labels),
        image: c.image,
        runtime: RuntimeInfo {
            name: runtime.name,
            options: runtime.options.map(to_any_value),
        },
        spec: c.spec.map(to_any_value),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: std::time::UNIX_EPOCH,
        updated_at: std::time::UNIX_EPOCH,
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, to_any_value(v)))
            .collect(),
    })
}

impl ContainersService {
    async fn list_matching(
        &self,
        req: &Request<pb::ListContainersRequest>,
    ) -> Result<Vec<Container>, Status> {
        let ctx = request_context(req)?;
        let filters = Filters::parse(&req.get_ref().filters).map_err(to_status)?;
        let containers = self.containers.clone();
        blocking(move || containers.list(&ctx, &filters)).await
    }
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        req: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let ctx = request_context(&req)?;
        let id = req.into_inner().id;
        tracing::Span::current().record("id", id.as_str());
        let c = inline(|| self.containers.get(&ctx, &id))?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(wire_container(&c)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let list = self.list_matching(&req).await?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: list.iter().map(wire_container).collect(),
        }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        // Records are small and already read in one transaction: stream them from memory, one
        // message each as containerd does.
        let list = self.list_matching(&req).await?;
        let messages = list.into_iter().map(|c| {
            Ok(pb::ListContainerMessage {
                container: Some(wire_container(&c)),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let ctx = request_context(&req)?;
        let c = container(req.into_inner().container)?;
        tracing::Span::current().record("id", c.id.as_str());
        let containers = self.containers.clone();
        let created = blocking(move || containers.create(&ctx, c)).await?;
        Ok(Response::new(pb::CreateContainerResponse {
            container: Some(wire_container(&created)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::UpdateContainerResponse>, Status> {
        let ctx = request_context(&req)?;
        let req = req.into_inner();
        let paths = convert::mask_paths(req.update_mask);
        let c = container(req.container)?;
        tracing::Span::current().record("id", c.id.as_str());
        let containers = self.containers.clone();
        let updated = blocking(move || containers.update(&ctx, c, &paths)).await?;
        Ok(Response::new(pb::UpdateContainerResponse {
            container: Some(wire_container(&updated)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = request_context(&req)?;
        let id = req.into_inner().id;
        tracing::Span::current().record("id", id.as_str());
        let containers = self.containers.clone();
        blocking(move || containers.delete(&ctx, &id)).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use berth_core::AnyValue;

    use super::*;

    #[test]
    fn wire_containers_round_trip_and_tolerate_go_zero_values() {
        let go_zero = prost_types::Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        };
        let spec = prost_types::Any {
            type_url: berth_proto::RUNTIME_SPEC_TYPE_URL.into(),
            value: b"{}".to_vec(),
        };
        let wire = pb::Container {
            id: "web".into(),
            labels: [("k".to_owned(), "v".to_owned())].into(),
            image: "busybox".into(),
            runtime: Some(pb::container::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: Some(prost_types::Any {
                    type_url: "containerd.runc.v1.Options".into(),
                    value: vec![],
                }),
            }),
            spec: Some(spec.clone()),
            snapshotter: "overlayfs".into(),
            snapshot_key: "web".into(),
            created_at: Some(go_zero),
            updated_at: Some(go_zero),
            extensions: [(
                "x".to_owned(),
                prost_types::Any {
                    type_url: "x.Y".into(),
                    value: vec![1],
                },
            )]
            .into(),
        };
        let c = container(Some(wire.clone())).unwrap();
        assert_eq!(c.spec, Some(AnyValue::new(spec.type_url, spec.value)));
        assert_eq!(c.created_at, std::time::UNIX_EPOCH);
        assert_eq!(c.extensions["x"].value, vec![1]);
        let back = wire_container(&c);
        assert_eq!(
            pb::Container {
                created_at: Some(go_zero),
                updated_at: Some(go_zero),
                ..back
            },
            wire
        );

        // No runtime reads as an empty one, for the store to refuse.
        let bare = container(Some(pb::Container {
            runtime: None,
            ..wire
        }))
        .unwrap();
        assert!(bare.runtime.name.is_empty());
        assert_eq!(
            container(None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
