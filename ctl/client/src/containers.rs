//! Container helpers: the namespace's container records
//! (`containerd.services.containers.v1.Containers`).

use berth_core::containers::{Container, RuntimeInfo};
use berth_core::{Error, Result};
use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::{to_any_value, to_wire_any};

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

impl Client {
    /// Container record helpers.
    pub fn containers(&self) -> Containers<'_> {
        Containers { client: self }
    }
}

/// Container record helpers; see [`Client::containers`].
#[derive(Debug, Clone, Copy)]
pub struct Containers<'a> {
    client: &'a Client,
}

/// A container from the wire.
pub fn container(c: pb::Container) -> Container {
    let runtime = c.runtime.unwrap_or_default();
    Container {
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
        created_at: convert::system_time(c.created_at.as_ref()),
        updated_at: convert::system_time(c.updated_at.as_ref()),
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, to_any_value(v)))
            .collect(),
    }
}

/// A container for the wire. Times are not sent: the server sets them.
pub fn wire_container(c: &Container) -> pb::Container {
    pb::Container {
        id: c.id.clone(),
        labels: convert::wire_labels(&c.labels),
        image: c.image.clone(),
        runtime: Some(pb::container::Runtime {
            name: c.runtime.name.clone(),
            options: c.runtime.options.as_ref().map(to_wire_any),
        }),
        spec: c.spec.as_ref().map(to_wire_any),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        created_at: None,
        updated_at: None,
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), to_wire_any(v)))
            .collect(),
    }
}

fn returned(c: Option<pb::Container>, id: &str) -> Result<Container> {
    c.map(container)
        .ok_or_else(|| Error::internal(format!("server sent no container for {id:?}")))
}

impl Containers<'_> {
    /// Container `id`; NotFound when absent.
    pub async fn get(&self, id: &str) -> Result<Container> {
        self.client
            .call(|| format!("get container {id:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .containers()
                    .get(pb::GetContainerRequest { id: id.to_owned() })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                returned(resp.container, id)
            })
            .await
    }

    /// The containers matching any of `filters` (all when empty), e.g. `id==web`,
    /// `image~=busybox`, `runtime.name==io.containerd.runc.v2`, `labels."k"==v`. Uses the
    /// streaming List and falls back to the unary one on Unimplemented, as `ctr` does.
    pub async fn list(&self, filters: &[String]) -> Result<Vec<Container>> {
        let req = pb::ListContainersRequest {
            filters: filters.to_vec(),
        };
        self.client
            .call(|| "list containers".to_owned(), async {
                let mut rpc = self.client.rpc().containers();
                let mut stream = match rpc.list_stream(req.clone()).await {
                    Ok(resp) => resp.into_inner(),
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        let resp = rpc.list(req).await.map_err(from_status)?.into_inner();
                        return Ok(resp.containers.into_iter().map(container).collect());
                    }
                    Err(status) => return Err(from_status(status)),
                };
                let mut out = Vec::new();
                while let Some(msg) = stream.message().await.map_err(from_status)? {
                    out.push(returned(msg.container, "a listed container")?);
                }
                Ok(out)
            })
            .await
    }

    /// Records `new`; AlreadyExists when the id is taken, InvalidArgument when it lacks a runtime
    /// name or a spec.
    pub async fn create(&self, new: &Container) -> Result<Container> {
        let wire = wire_container(new);
        self.client
            .call(|| format!("create container {:?}", new.id), async {
                let resp = self
                    .client
                    .rpc()
                    .containers()
                    .create(pb::CreateContainerRequest {
                        container: Some(wire),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                returned(resp.container, &new.id)
            })
            .await
    }

    /// Changes container `change.id` under a field mask: `labels`, `labels.<key>`, `spec`,
    /// `image`, `snapshotkey`, `extensions`, `extensions.<key>`; an empty mask replaces all of
    /// them (the runtime and snapshotter are immutable).
    pub async fn update(&self, change: &Container, paths: &[String]) -> Result<Container> {
        let wire = wire_container(change);
        self.client
            .call(|| format!("update container {:?}", change.id), async {
                let resp = self
                    .client
                    .rpc()
                    .containers()
                    .update(pb::UpdateContainerRequest {
                        container: Some(wire),
                        update_mask: Some(prost_types::FieldMask {
                            paths: paths.to_vec(),
                        }),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                returned(resp.container, &change.id)
            })
            .await
    }

    /// Removes container `id`; its snapshot is collected later unless something else holds it.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.client
            .call(|| format!("delete container {id:?}"), async {
                self.client
                    .rpc()
                    .containers()
                    .delete(pb::DeleteContainerRequest { id: id.to_owned() })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use berth_core::AnyValue;
    use berth_core::containers::RUNTIME_SPEC_TYPE_URL;

    use super::*;

    #[test]
    fn round_trip() {
        let mut c = Container::new(
            "web",
            "io.containerd.runc.v2",
            AnyValue::new(RUNTIME_SPEC_TYPE_URL, b"{}".to_vec()),
        );
        c.runtime.options = Some(AnyValue::new("containerd.runc.v1.Options", vec![]));
        c.labels.insert("a".into(), "b".into());
        c.snapshotter = "overlayfs".into();
        c.snapshot_key = "web".into();
        c.extensions
            .insert("x".into(), AnyValue::new("x.Y", vec![3]));
        let wire = wire_container(&c);
        assert_eq!(wire.created_at, None, "times are the server's");
        assert_eq!(container(wire), c);
    }
}
