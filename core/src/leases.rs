//! Leases: client-held references that keep what they name alive through garbage collection.

use std::time::SystemTime;

use crate::filters::{Adaptor, Filters, label_field};
use crate::labels::Labels;
use crate::{RequestContext, Result};

/// The label that makes a lease expire: an RFC 3339 time after which GC ignores it.
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// The label that stops GC from following label references out of the lease's snapshots.
pub const FLAT_LABEL: &str = "containerd.io/gc.flat";

/// A lease in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's id.
    pub id: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its labels.
    pub labels: Labels,
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" if path.len() == 1 => Some(self.id.clone()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// A resource held by a lease: `content` (id = digest), `ingests` (id = ref) or
/// `snapshots/<snapshotter>` (id = key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// The resource's id within its kind.
    pub id: String,
    /// The resource kind.
    pub kind: String,
}

/// Creates, lists and deletes leases and their resources, per namespace.
pub trait LeaseManager: Send + Sync {
    /// Creates lease `id`; AlreadyExists when it exists.
    fn create(&self, ctx: &RequestContext, id: &str, labels: Labels) -> Result<Lease>;
    /// Deletes a lease; with `sync`, runs garbage collection before returning.
    fn delete(&self, ctx: &RequestContext, id: &str, sync: bool) -> Result<()>;
    /// The leases matching `filters`.
    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Lease>>;
    /// Adds a resource to a lease.
    fn add_resource(&self, ctx: &RequestContext, id: &str, resource: Resource) -> Result<()>;
    /// Removes a resource from a lease.
    fn delete_resource(&self, ctx: &RequestContext, id: &str, resource: Resource) -> Result<()>;
    /// The resources a lease holds.
    fn list_resources(&self, ctx: &RequestContext, id: &str) -> Result<Vec<Resource>>;
}
