//! Berth's core: the domain types every subsystem shares, the one error type, and one trait per
//! subsystem.
//!
//! Layout:
//! - [`error`]: [`Error`] and [`ErrorKind`], containerd's errdefs classes with context.
//! - [`digest`]: validated `sha256:<hex>` digests and a streaming digester.
//! - [`identifiers`]: namespace / id validation and the [`Namespace`] newtype.
//! - [`filters`]: containerd's filter syntax (`labels."k"==v,digest~=re`), parsed once.
//! - [`labels`]: label validation and field-mask updates.
//! - [`content`]: content-store types and the raw ([`content::BlobStore`]) and namespaced
//!   ([`content::ContentStore`]) traits.
//! - [`leases`], [`namespaces`], [`gc`]: the metadata-side traits.
//! - [`containers`]: container records and the [`containers::ContainerStore`] trait.
//! - [`events`]: envelopes, topics and the publish / subscribe traits of the event bus.
//! - [`logs`]: containers' stdout/stderr logs and the [`logs::ContainerLogs`] trait.
//! - [`any`]: [`AnyValue`], the opaque typed payload containers and events carry.
//! - [`seccomp`]: Docker's default seccomp profile as data, shared by runtime and client.
//!
//! Nothing here knows about gRPC, databases or syscalls: services adapt these traits to the wire,
//! and backends implement them.

pub mod any;
pub mod containers;
pub mod content;
pub mod diff;
pub mod digest;
pub mod error;
pub mod events;
pub mod filters;
pub mod gc;
pub mod identifiers;
pub mod images;
pub mod labels;
pub mod leases;
pub mod logs;
pub mod mount;
pub mod namespaces;
pub mod reference;
pub mod seccomp;
pub mod snapshots;
pub mod tasks;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod transfer;

use std::future::Future;
use std::pin::Pin;

pub use any::AnyValue;
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result, ResultExt};
pub use identifiers::Namespace;

/// A boxed future, so async trait methods can be used through trait objects without an
/// async-trait crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who is asking: the validated namespace and, when the caller holds one, the lease that every
/// resource created by the request is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The namespace the request acts in.
    pub namespace: Namespace,
    /// The lease id from the `containerd-lease` header, if any.
    pub lease: Option<String>,
}

impl RequestContext {
    /// A context with a namespace and no lease.
    pub fn new(namespace: Namespace) -> Self {
        Self {
            namespace,
            lease: None,
        }
    }

    /// The same context holding `lease`.
    pub fn with_lease(mut self, lease: impl Into<String>) -> Self {
        self.lease = Some(lease.into());
        self
    }
}
