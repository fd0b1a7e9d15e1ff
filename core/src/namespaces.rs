//! Namespaces: the isolation unit of metadata. They are created implicitly by any write.

use crate::filters::{Adaptor, Filters, label_field};
use crate::labels::Labels;
use crate::{Namespace, Result};

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// The name.
    pub name: Namespace,
    /// The labels (e.g. `containerd.io/defaults/snapshotter`).
    pub labels: Labels,
}

impl Adaptor for NamespaceInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" if path.len() == 1 => Some(self.name.to_string()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// Manages namespaces.
pub trait NamespaceStore: Send + Sync {
    /// Creates a namespace; AlreadyExists when it exists.
    fn create(&self, name: &Namespace, labels: Labels) -> Result<NamespaceInfo>;
    /// A namespace; NotFound when it does not exist.
    fn get(&self, name: &Namespace) -> Result<NamespaceInfo>;
    /// The namespaces matching `filters`.
    fn list(&self, filters: &Filters) -> Result<Vec<NamespaceInfo>>;
    /// Updates labels under a field mask.
    fn update(&self, info: NamespaceInfo, paths: &[String]) -> Result<NamespaceInfo>;
    /// Deletes an empty namespace; FailedPrecondition while it holds anything.
    fn delete(&self, name: &Namespace) -> Result<()>;
}
