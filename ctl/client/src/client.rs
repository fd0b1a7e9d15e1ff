//! The connection: a tonic channel over a unix socket, plus the headers every request carries.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::{Error, ErrorKind, Result};
use berth_proto::berth::services::admin::v1::admin_client::AdminClient;
use berth_proto::berth::services::logs::v1::logs_client::LogsClient;
use berth_proto::berth::services::transfer::v1::transfer_client::TransferClient;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::diff::v1::diff_client::DiffClient;
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use berth_proto::{LEASE_HEADER, MAX_MESSAGE_SIZE, NAMESPACE_HEADER};
use hyper_util::rt::TokioIo;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::content::Content;
use crate::error::connect_error;
use crate::leases::Leases;
use crate::namespaces::Namespaces;

/// How long [`Client::connect`] waits for the socket, as `ctr`'s default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The channel type of every generated client [`Rpc`] hands out.
pub type Transport = InterceptedService<Channel, Headers>;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long to wait for the socket to accept the connection.
    pub connect_timeout: Duration,
    /// A deadline for every call (and whole streams); `None` waits as long as the server takes.
    pub timeout: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: None,
        }
    }
}

/// The metadata every request carries: the namespace, the lease if any, and the deadline.
///
/// The values are sent as given, without client-side validation, so the server stays the one
/// judge of a namespace name (tests rely on sending bad ones); a value that cannot be an HTTP
/// header fails the call with InvalidArgument.
#[derive(Debug, Clone)]
pub struct Headers {
    namespace: String,
    lease: Option<String>,
    timeout: Option<Duration>,
}

fn header_value(what: &str, value: &str) -> Result<AsciiMetadataValue, tonic::Status> {
    AsciiMetadataValue::try_from(value).map_err(|_| {
        tonic::Status::invalid_argument(format!("{what} {value:?} cannot be sent as a gRPC header"))
    })
}

impl Interceptor for Headers {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let ns = header_value("namespace", &self.namespace)?;
        req.metadata_mut().insert(NAMESPACE_HEADER, ns);
        if let Some(lease) = &self.lease {
            let lease = header_value("lease", lease)?;
            req.metadata_mut().insert(LEASE_HEADER, lease);
        }
        if let Some(timeout) = self.timeout {
            // Lets the server give up too, not only this side.
            req.set_timeout(timeout);
        }
        Ok(req)
    }
}

/// A connection to berthd acting in one namespace (and optionally under one lease).
///
/// Clones share the connection; [`with_namespace`](Self::with_namespace),
/// [`with_lease`](Self::with_lease) and [`with_timeout`](Self::with_timeout) return such clones.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    headers: Headers,
    socket: Arc<PathBuf>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("namespace", &self.headers.namespace)
            .field("lease", &self.headers.lease)
            .field("timeout", &self.headers.timeout)
            .finish()
    }
}

impl Client {
    /// Connects to the unix socket at `socket`, acting in `namespace`, with
    /// [`ConnectOptions::default`]. Fails with Unavailable (naming the socket) when nothing
    /// answers.
    pub async fn connect(socket: impl AsRef<Path>, namespace: impl Into<String>) -> Result<Self> {
        Self::connect_with(socket, namespace, ConnectOptions::default()).await
    }

    /// Connects like [`connect`](Self::connect) with explicit options.
    pub async fn connect_with(
        socket: impl AsRef<Path>,
        namespace: impl Into<String>,
        options: ConnectOptions,
    ) -> Result<Self> {
        let socket = Arc::new(socket.as_ref().to_path_buf());
        // The URI is never dialed; the connector below ignores it. It only has to be valid.
        let endpoint =
            Endpoint::from_static("http://[::]:50051").connect_timeout(options.connect_timeout);
        let dial = socket.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let path = dial.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| connect_error(&socket, e))?;
        tracing::debug!(socket = %socket.display(), "connected to berthd");
        Ok(Self {
            channel,
            headers: Headers {
                namespace: namespace.into(),
                lease: None,
                timeout: options.timeout,
            },
            socket,
        })
    }

    /// Connects like [`connect`](Self::connect), retrying while the daemon is still starting
    /// (socket missing or refusing), for up to `within`.
    pub async fn connect_when_ready(
        socket: impl AsRef<Path>,
        namespace: impl Into<String>,
        within: Duration,
    ) -> Result<Self> {
        let socket = socket.as_ref();
        let namespace = namespace.into();
        let give_up = tokio::time::Instant::now() + within;
        loop {
            match Self::connect(socket, namespace.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    return Err(e.context(format!("berthd not ready within {within:?}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// A clone acting in `namespace` (keeping the lease, which leases are per namespace, so
    /// callers switching namespace usually want [`without_lease`](Self::without_lease) too).
    pub fn with_namespace(&self, namespace: impl Into<String>) -> Self {
        let mut c = self.clone();
        c.headers.namespace = namespace.into();
        c
    }

    /// A clone whose requests carry the `containerd-lease` header with `lease`.
    pub fn with_lease(&self, lease: impl Into<String>) -> Self {
        let mut c = self.clone();
        c.headers.lease = Some(lease.into());
        c
    }

    /// A clone whose requests carry no lease.
    pub fn without_lease(&self) -> Self {
        let mut c = self.clone();
        c.headers.lease = None;
        c
    }

    /// A clone with a per-call deadline (`None`: wait as long as the server takes).
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Self {
        let mut c = self.clone();
        c.headers.timeout = timeout;
        c
    }

    /// The namespace requests act in.
    pub fn namespace(&self) -> &str {
        &self.headers.namespace
    }

    /// The lease requests carry, if any.
    pub fn lease(&self) -> Option<&str> {
        self.headers.lease.as_deref()
    }

    /// The per-call deadline, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.headers.timeout
    }

    /// The socket this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Content store helpers.
    pub fn content(&self) -> Content<'_> {
        Content::new(self)
    }

    /// Namespace helpers.
    pub fn namespaces(&self) -> Namespaces<'_> {
        Namespaces::new(self)
    }

    /// Lease helpers.
    pub fn leases(&self) -> Leases<'_> {
        Leases::new(self)
    }

    /// The generated gRPC clients, with this client's headers and message limits.
    pub fn rpc(&self) -> Rpc<'_> {
        Rpc(self)
    }

    /// Runs `fut` under the per-call deadline; `what` names the call in the timeout error.
    pub(crate) async fn call<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.headers.timeout {
            None => fut.await,
            Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
                Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!("{}: no answer from berthd within {t:?}", what()),
                )
            })?,
        }
    }

    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.headers.clone())
    }
}

/// Hands out the generated clients; see [`Client::rpc`].
#[derive(Debug, Clone, Copy)]
pub struct Rpc<'a>(&'a Client);

macro_rules! rpc_clients {
    ($($(#[$doc:meta])* $name:ident => $ty:ident),* $(,)?) => {
        impl Rpc<'_> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> $ty<Transport> {
                    $ty::new(self.0.transport())
                        .max_decoding_message_size(MAX_MESSAGE_SIZE)
                        .max_encoding_message_size(MAX_MESSAGE_SIZE)
                }
            )*
        }
    };
}

rpc_clients! {
    /// `containerd.services.content.v1.Content`.
    content => ContentClient,
    /// `containerd.services.namespaces.v1.Namespaces`.
    namespaces => NamespacesClient,
    /// `containerd.services.leases.v1.Leases`.
    leases => LeasesClient,
    /// `containerd.services.images.v1.Images`.
    images => ImagesClient,
    /// `containerd.services.containers.v1.Containers`.
    containers => ContainersClient,
    /// `containerd.services.tasks.v1.Tasks`.
    tasks => TasksClient,
    /// `containerd.services.snapshots.v1.Snapshots`.
    snapshots => SnapshotsClient,
    /// `containerd.services.diff.v1.Diff`.
    diff => DiffClient,
    /// `containerd.services.events.v1.Events`.
    events => EventsClient,
    /// `containerd.services.introspection.v1.Introspection`.
    introspection => IntrospectionClient,
    /// `containerd.services.version.v1.Version`.
    version => VersionClient,
    /// `berth.services.admin.v1.Admin`.
    admin => AdminClient,
    /// `berth.services.transfer.v1.Transfer`.
    transfer => TransferClient,
    /// `berth.services.logs.v1.Logs`.
    logs => LogsClient,
}
