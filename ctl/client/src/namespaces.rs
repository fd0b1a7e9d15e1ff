//! Namespace helpers. Names are sent as given; the server validates them.

use berth_core::labels::Labels;
use berth_core::namespaces::NamespaceInfo;
use berth_core::{Error, Result};
use berth_proto::containerd::services::namespaces::v1 as pb;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

/// Namespace helpers; see [`Client::namespaces`].
#[derive(Debug, Clone, Copy)]
pub struct Namespaces<'a> {
    client: &'a Client,
}

fn returned(ns: Option<pb::Namespace>, name: &str) -> Result<NamespaceInfo> {
    let ns = ns.ok_or_else(|| Error::internal(format!("server sent no namespace {name:?}")))?;
    convert::namespace(ns)
}

impl<'a> Namespaces<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Creates namespace `name` with `labels`; AlreadyExists when it exists.
    pub async fn create(&self, name: &str, labels: Labels) -> Result<NamespaceInfo> {
        self.client
            .call(|| format!("create namespace {name:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .namespaces()
                    .create(pb::CreateNamespaceRequest {
                        namespace: Some(pb::Namespace {
                            name: name.to_owned(),
                            labels: convert::wire_labels(&labels),
                        }),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                returned(resp.namespace, name)
            })
            .await
    }

    /// Namespace `name` and its labels.
    pub async fn get(&self, name: &str) -> Result<NamespaceInfo> {
        self.client
            .call(|| format!("get namespace {name:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .namespaces()
                    .get(pb::GetNamespaceRequest {
                        name: name.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                returned(resp.namespace, name)
            })
            .await
    }

    /// Every namespace.
    pub async fn list(&self) -> Result<Vec<NamespaceInfo>> {
        self.list_filtered("").await
    }

    /// The namespaces matching `filter` (containerd's filter syntax; empty matches all).
    pub async fn list_filtered(&self, filter: &str) -> Result<Vec<NamespaceInfo>> {
        self.client
            .call(|| "list namespaces".to_owned(), async {
                let resp = self
                    .client
                    .rpc()
                    .namespaces()
                    .list(pb::ListNamespacesRequest {
                        filter: filter.to_owned(),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                resp.namespaces
                    .into_iter()
                    .map(convert::namespace)
                    .collect()
            })
            .await
    }

    /// Sets each label in `labels` on namespace `name`, removing those whose value is empty;
    /// other labels are kept. Returns the updated namespace.
    pub async fn update_labels(&self, name: &str, labels: &Labels) -> Result<NamespaceInfo> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.client
            .call(|| format!("update labels of namespace {name:?}"), async {
                let resp = self
                    .client
                    .rpc()
                    .namespaces()
                    .update(pb::UpdateNamespaceRequest {
                        namespace: Some(pb::Namespace {
                            name: name.to_owned(),
                            labels: convert::wire_labels(labels),
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    })
                    .await
                    .map_err(from_status)?
                    .into_inner();
                returned(resp.namespace, name)
            })
            .await
    }

    /// Deletes namespace `name`; FailedPrecondition while it holds anything.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.client
            .call(|| format!("delete namespace {name:?}"), async {
                self.client
                    .rpc()
                    .namespaces()
                    .delete(pb::DeleteNamespaceRequest {
                        name: name.to_owned(),
                    })
                    .await
                    .map_err(from_status)?;
                Ok(())
            })
            .await
    }
}
