//! Async client library for berthd (and any server of containerd's v1 gRPC API).
//!
//! Layout:
//! - [`Client`] ([`client`]): a connection over a unix socket plus the namespace, lease and
//!   timeout every request carries. Cloning is cheap; [`Client::with_namespace`],
//!   [`Client::with_lease`] and [`Client::with_timeout`] return adjusted clones.
//! - Typed helpers, all returning [`berth_core::Result`]: [`Client::content`] ([`content`]),
//!   [`Client::namespaces`] ([`namespaces`]), [`Client::leases`] ([`leases`]),
//!   [`Client::snapshots`] ([`snapshots`]), [`Client::images`] ([`images`]),
//!   [`Client::containers`] ([`containers`]), [`Client::tasks`] ([`tasks`]: create, start,
//!   wait, kill, exec, pty and stdin control, pause, pids, metrics), [`Client::events`]
//!   ([`events`]: publish, forward, subscribe),
//!   [`Client::diff`] ([`diff`]), [`Client::transfer`] ([`transfer`]: daemon-side pull and
//!   push with streamed progress), [`Client::archive`] ([`archive`]: image import and export
//!   as OCI-layout or docker-save tarballs), [`Client::unpack`] ([`unpack`]), and
//!   [`Client::version`], [`Client::server_uuid`], [`Client::plugins`], [`Client::gc`]
//!   ([`system`]).
//! - [`Client::rpc`]: the generated tonic clients with the headers and message limits already
//!   applied, for services or corner cases the helpers do not cover.
//! - [`spec`]: Docker-like OCI runtime specs built from an image's config (what `berthctl run`
//!   creates containers with).
//! - [`auth`]: registry credentials in a docker-style `config.json`, sent with transfers.
//! - [`error`]: the one place a `tonic::Status` becomes a [`berth_core::Error`].
//! - [`convert`]: wire ↔ berth-core conversions (tolerant of Go's year-1 zero timestamps).
//!
//! ```no_run
//! # async fn demo() -> berth_core::Result<()> {
//! let client = berth_client::Client::connect("/run/berth/berthd.sock", "default").await?;
//! let digest = client.content().write_blob(b"hello", Default::default()).await?;
//! assert_eq!(client.content().read_all(&digest).await?, b"hello");
//! # Ok(()) }
//! ```

pub mod archive;
pub mod auth;
pub mod client;
pub mod containers;
pub mod content;
pub mod convert;
pub mod diff;
pub mod error;
pub mod events;
pub mod images;
pub mod leases;
pub mod logs;
pub mod namespaces;
pub mod snapshots;
pub mod spec;
pub mod system;
pub mod tasks;
pub mod transfer;
pub mod unpack;

pub use archive::{Archive, ExportFormat, ExportOptions, ExportSummary, ImportOptions};
pub use client::{Client, ConnectOptions, DEFAULT_CONNECT_TIMEOUT, Headers, Rpc, Transport};
pub use containers::Containers;
pub use content::{Content, IngestSource, Seekable, Unseekable};
pub use diff::Diff;
pub use error::from_status;
pub use events::{EventStream, Events};
pub use images::Images;
pub use leases::{LeaseOptions, Leases, expiry_value, generate_lease_id};
pub use logs::{LogStreamReader, Logs};
pub use namespaces::Namespaces;
pub use snapshots::{DEFAULT_SNAPSHOTTER, Snapshots};
pub use system::{PluginInfo, ServerVersion};
pub use tasks::Tasks;
pub use transfer::Transfer;
pub use unpack::{UnpackOptions, Unpacked, UnpackedLayer};

/// The socket berthd listens on unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/berth/berthd.sock";
