//! berthd's gRPC face: one thin adapter per containerd v1 service.
//!
//! Each adapter decodes a request, resolves the [`RequestContext`](berth_core::RequestContext)
//! from the `containerd-namespace` / `containerd-lease` headers ([`context`]), calls a berth-core
//! trait on a blocking thread ([`blocking`]), and encodes the answer. Errors become gRPC statuses in
//! exactly one place ([`error::to_status`]). Proto ↔ core conversions live in [`convert`].
//!
//! This crate never names a backend: berthd hands it trait objects through [`Services`].

pub mod admin;
pub mod containers;
pub mod content;
pub mod context;
pub mod convert;
pub mod diff;
pub mod error;
pub mod events;
pub mod health;
pub mod images;
pub mod introspection;
pub mod layers;
pub mod leases;
pub mod logs;
pub mod namespaces;
pub mod snapshots;
pub mod tasks;
pub mod transfer;

use std::sync::Arc;

use berth_core::containers::ContainerStore;
use berth_core::content::ContentStore;
use berth_core::diff::{Applier, Comparer};
use berth_core::events::EventExchange;
use berth_core::gc::GarbageCollector;
use berth_core::images::ImageStore;
use berth_core::leases::LeaseManager;
use berth_core::namespaces::NamespaceStore;
use berth_core::snapshots::SnapshotStore;
use berth_core::transfer::Transfer;

pub use introspection::{PluginEntry, ServerInfo};

/// The trait objects and facts the services are built from.
#[derive(Clone)]
pub struct Services {
    /// The namespaced content store.
    pub content: Arc<dyn ContentStore>,
    /// Namespaces.
    pub namespaces: Arc<dyn NamespaceStore>,
    /// Leases.
    pub leases: Arc<dyn LeaseManager>,
    /// The namespaced view of every snapshotter.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Image records.
    pub images: Arc<dyn ImageStore>,
    /// Container records.
    pub containers: Arc<dyn ContainerStore>,
    /// The event bus: what the Events service publishes to and subscribes on.
    pub events: Arc<dyn EventExchange>,
    /// Tasks (one shim per container); the Tasks service is only routed when this is set.
    pub tasks: Option<Arc<dyn berth_core::tasks::TaskManager>>,
    /// Containers' logs; the Logs service is only routed when this is set.
    pub logs: Option<Arc<dyn berth_core::logs::ContainerLogs>>,
    /// Applies layers onto mounts.
    pub applier: Arc<dyn Applier>,
    /// Computes layers from two mounts.
    pub comparer: Arc<dyn Comparer>,
    /// Garbage collection.
    pub gc: Arc<dyn GarbageCollector>,
    /// What introspection and version report.
    pub server: Arc<ServerInfo>,
    /// Registry pull and push; the Transfer service is only routed when this is set.
    pub transfer: Option<Arc<dyn Transfer>>,
}

/// Adds every implemented service to a tonic router builder. Services whose issues have not
/// landed yet are not routed, so tonic answers `Unimplemented` for them, which is what
/// containerd's clients expect of a missing service.
pub fn routes(services: &Services) -> tonic::service::Routes {
    use berth_proto::berth::services::admin::v1::admin_server::AdminServer;
    use berth_proto::berth::services::transfer::v1::transfer_server::TransferServer;
    use berth_proto::containerd::services::containers::v1::containers_server::ContainersServer;
    use berth_proto::containerd::services::content::v1::content_server::ContentServer;
    use berth_proto::containerd::services::diff::v1::diff_server::DiffServer;
    use berth_proto::containerd::services::events::v1::events_server::EventsServer;
    use berth_proto::containerd::services::images::v1::images_server::ImagesServer;
    use berth_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
    use berth_proto::containerd::services::leases::v1::leases_server::LeasesServer;
    use berth_proto::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
    use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
    use berth_proto::containerd::services::version::v1::version_server::VersionServer;
    use berth_proto::grpc::health::v1::health_server::HealthServer;

    let max = berth_proto::MAX_MESSAGE_SIZE;
    let mut routes = tonic::service::Routes::default();
    if let Some(tasks) = &services.tasks {
        use berth_proto::containerd::services::tasks::v1::tasks_server::TasksServer;
        routes = routes.add_service(
            TasksServer::new(tasks::TasksService::new(tasks.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    }
    if let Some(logs) = &services.logs {
        use berth_proto::berth::services::logs::v1::logs_server::LogsServer;
        routes = routes.add_service(LogsServer::new(logs::LogsService::new(logs.clone())));
    }
    routes = routes
        .add_service(
            ContentServer::new(content::ContentService::new(services.content.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(NamespacesServer::new(namespaces::NamespacesService::new(
            services.namespaces.clone(),
        )))
        .add_service(LeasesServer::new(leases::LeasesService::new(
            services.leases.clone(),
        )))
        .add_service(
            SnapshotsServer::new(snapshots::SnapshotsService::new(services.snapshots.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            ImagesServer::new(images::ImagesService::new(services.images.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            ContainersServer::new(containers::ContainersService::new(
                services.containers.clone(),
            ))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        )
        .add_service(
            EventsServer::new(events::EventsService::new(services.events.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(DiffServer::new(diff::DiffService::new(
            services.applier.clone(),
            services.comparer.clone(),
        )))
        .add_service(IntrospectionServer::new(
            introspection::IntrospectionService::new(services.server.clone()),
        ))
        .add_service(VersionServer::new(introspection::VersionService::new(
            services.server.clone(),
        )))
        .add_service(HealthServer::new(health::HealthService))
        .add_service(AdminServer::new(admin::AdminService::new(
            services.gc.clone(),
        )));
    if let Some(transfer) = &services.transfer {
        routes = routes.add_service(
            TransferServer::new(transfer::TransferService::new(transfer.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    }
    routes
}

/// Runs a point lookup `f` on the calling worker and maps its error to a status.
///
/// For reads of one record or one small blob: they touch cached pages and take microseconds,
/// less than the two thread wake-ups of a hop to the blocking pool. Writes (which flush), scans
/// and anything sized by the caller stay on [`blocking`].
pub fn inline<T>(f: impl FnOnce() -> berth_core::Result<T>) -> Result<T, tonic::Status> {
    f().map_err(error::to_status)
}

/// Runs `f` on a blocking thread inside the caller's tracing span and maps its error to a status.
pub async fn blocking<T, F>(f: F) -> Result<T, tonic::Status>
where
    F: FnOnce() -> berth_core::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(result) => result.map_err(error::to_status),
        Err(join) => Err(tonic::Status::internal(format!(
            "blocking task failed: {join}"
        ))),
    }
}
