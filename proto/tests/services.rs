//! Service and method names are all that reach the wire besides the messages (as the HTTP/2
//! path `/<package>.<Service>/<Method>`), so check every one of them against containerd 1.6, and
//! check that each method streams the way containerd's does.

// Test helpers outside #[test] fns are still test code: panicking on a broken invariant is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::server::NamedService;

use berth_proto::berth::services::admin::v1::admin_server::AdminServer;
use berth_proto::berth::services::logs::v1::logs_server::LogsServer;
use berth_proto::containerd::services::{
    containers::v1::containers_server::ContainersServer,
    content::v1::content_server::ContentServer, diff::v1::diff_server::DiffServer,
    events::v1::events_server::EventsServer, images::v1::images_server::ImagesServer,
    introspection::v1::introspection_server::IntrospectionServer,
    leases::v1::leases_server::LeasesServer, namespaces::v1::namespaces_server::NamespacesServer,
    snapshots::v1::snapshots_server::SnapshotsServer, tasks::v1::tasks_server::TasksServer,
    version::v1::version_server::VersionServer,
};
use berth_proto::grpc::health::v1::health_server::HealthServer;

/// How a method streams, named after the tonic client call that implements it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStreaming,
    Bidi,
}

impl Kind {
    fn tonic_call(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStreaming => "server_streaming",
            Kind::Bidi => "streaming",
        }
    }
}

use Kind::{Bidi, ServerStreaming as Stream, Unary};

struct Service {
    name: &'static str,
    server_name: &'static str,
    generated: &'static str,
    methods: &'static [(&'static str, Kind)],
}

macro_rules! generated {
    ($file:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/", $file, ".rs"))
    };
}

fn services() -> Vec<Service> {
    vec![
        Service {
            name: "containerd.services.content.v1.Content",
            server_name: <ContentServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.content.v1"),
            methods: &[
                ("Info", Unary),
                ("Update", Unary),
                ("List", Stream),
                ("Delete", Unary),
                ("Read", Stream),
                ("Status", Unary),
                ("ListStatuses", Unary),
                ("Write", Bidi),
                ("Abort", Unary),
            ],
        },
        Service {
            name: "containerd.services.snapshots.v1.Snapshots",
            server_name: <SnapshotsServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.snapshots.v1"),
            methods: &[
                ("Prepare", Unary),
                ("View", Unary),
                ("Mounts", Unary),
                ("Commit", Unary),
                ("Remove", Unary),
                ("Stat", Unary),
                ("Update", Unary),
                ("List", Stream),
                ("Usage", Unary),
                ("Cleanup", Unary),
            ],
        },
        Service {
            name: "containerd.services.images.v1.Images",
            server_name: <ImagesServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.images.v1"),
            methods: &[
                ("Get", Unary),
                ("List", Unary),
                ("Create", Unary),
                ("Update", Unary),
                ("Delete", Unary),
            ],
        },
        Service {
            name: "containerd.services.containers.v1.Containers",
            server_name: <ContainersServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.containers.v1"),
            methods: &[
                ("Get", Unary),
                ("List", Unary),
                ("ListStream", Stream),
                ("Create", Unary),
                ("Update", Unary),
                ("Delete", Unary),
            ],
        },
        Service {
            name: "containerd.services.tasks.v1.Tasks",
            server_name: <TasksServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.tasks.v1"),
            methods: &[
                ("Create", Unary),
                ("Start", Unary),
                ("Delete", Unary),
                ("DeleteProcess", Unary),
                ("Get", Unary),
                ("List", Unary),
                ("Kill", Unary),
                ("Exec", Unary),
                ("ResizePty", Unary),
                ("CloseIO", Unary),
                ("Pause", Unary),
                ("Resume", Unary),
                ("ListPids", Unary),
                ("Checkpoint", Unary),
                ("Update", Unary),
                ("Metrics", Unary),
                ("Wait", Unary),
            ],
        },
        Service {
            name: "containerd.services.leases.v1.Leases",
            server_name: <LeasesServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.leases.v1"),
            methods: &[
                ("Create", Unary),
                ("Delete", Unary),
                ("List", Unary),
                ("AddResource", Unary),
                ("DeleteResource", Unary),
                ("ListResources", Unary),
            ],
        },
        Service {
            name: "containerd.services.namespaces.v1.Namespaces",
            server_name: <NamespacesServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.namespaces.v1"),
            methods: &[
                ("Get", Unary),
                ("List", Unary),
                ("Create", Unary),
                ("Update", Unary),
                ("Delete", Unary),
            ],
        },
        Service {
            name: "containerd.services.diff.v1.Diff",
            server_name: <DiffServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.diff.v1"),
            methods: &[("Apply", Unary), ("Diff", Unary)],
        },
        Service {
            name: "containerd.services.events.v1.Events",
            server_name: <EventsServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.events.v1"),
            methods: &[
                ("Publish", Unary),
                ("Forward", Unary),
                ("Subscribe", Stream),
            ],
        },
        Service {
            name: "containerd.services.introspection.v1.Introspection",
            server_name: <IntrospectionServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.introspection.v1"),
            methods: &[("Plugins", Unary), ("Server", Unary)],
        },
        Service {
            name: "containerd.services.version.v1.Version",
            server_name: <VersionServer<()> as NamedService>::NAME,
            generated: generated!("containerd.services.version.v1"),
            methods: &[("Version", Unary)],
        },
        Service {
            name: "grpc.health.v1.Health",
            server_name: <HealthServer<()> as NamedService>::NAME,
            generated: generated!("grpc.health.v1"),
            methods: &[("Check", Unary), ("Watch", Stream)],
        },
        Service {
            name: "berth.services.admin.v1.Admin",
            server_name: <AdminServer<()> as NamedService>::NAME,
            generated: generated!("berth.services.admin.v1"),
            methods: &[("GarbageCollect", Unary)],
        },
        Service {
            name: "berth.services.logs.v1.Logs",
            server_name: <LogsServer<()> as NamedService>::NAME,
            generated: generated!("berth.services.logs.v1"),
            methods: &[("Read", Stream)],
        },
    ]
}

#[test]
fn server_names_match_containerd() {
    for svc in services() {
        assert_eq!(svc.server_name, svc.name);
    }
}

/// The generated client builds each request with a static path and then one `self.inner.<call>`;
/// the call says how the method streams.
fn client_call<'a>(generated: &'a str, path: &str) -> &'a str {
    let quoted = format!("\"{path}\"");
    let at = generated
        .find(&quoted)
        .unwrap_or_else(|| panic!("no client path {quoted} in generated code"));
    let rest = &generated[at..];
    let call = rest.find("self.inner.").expect("client call after path") + "self.inner.".len();
    let end = rest[call..].find('(').expect("call arguments");
    &rest[call..call + end]
}

#[test]
fn every_method_path_and_streaming_kind() {
    for svc in services() {
        for &(method, kind) in svc.methods {
            let path = format!("/{}/{method}", svc.name);
            assert_eq!(
                client_call(svc.generated, &path),
                kind.tonic_call(),
                "client call kind of {path}"
            );
            // The server routes on the same path, as a match arm.
            assert!(
                svc.generated.contains(&format!("\"{path}\" =>")),
                "no server route for {path}"
            );
        }
        // No extra methods beyond containerd's: each path appears once in the client and once
        // in the server's router.
        let prefix = format!("\"/{}/", svc.name);
        let generated_paths = svc.generated.matches(&prefix).count();
        assert_eq!(
            generated_paths,
            2 * svc.methods.len(),
            "method paths of {}",
            svc.name
        );
    }
}

#[test]
fn content_write_path_is_exact() {
    let content = generated!("containerd.services.content.v1");
    assert!(content.contains("\"/containerd.services.content.v1.Content/Write\""));
    assert_eq!(
        client_call(content, "/containerd.services.content.v1.Content/Write"),
        "streaming"
    );
}
