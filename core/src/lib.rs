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
//!
//! Nothing here knows about gRPC, databases or syscalls: services adapt these traits to the wire,
//! and backends implement them.

pub mod content;
pub mod diff;
pub mod digest;
pub mod error;
pub mod filters;
pub mod gc;
pub mod identifiers;
pub mod images;
pub mod labels;
pub mod leases;
pub mod mount;
pub mod namespaces;
pub mod reference;
pub mod snapshots;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod transfer;

pub use digest::Digest;
pub use error::{Error, ErrorKind, Result, ResultExt};
pub use identifiers::Namespace;

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
