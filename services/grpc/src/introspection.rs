//! `Introspection` and `Version`: what this server is and which plugins it runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_core::filters::{Adaptor, Filters};
use berth_proto::containerd::services::introspection::v1 as pb;
use berth_proto::containerd::services::version::v1 as vpb;
use tonic::{Request, Response, Status};

use crate::error::to_status;

/// One row of the plugin table, in containerd's terms (`io.containerd.grpc.v1` / `content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEntry {
    /// The plugin type, e.g. `io.containerd.snapshotter.v1`.
    pub kind: String,
    /// The plugin id, e.g. `overlayfs`.
    pub id: String,
    /// The plugin types it needs.
    pub requires: Vec<String>,
    /// Facts it exports (e.g. a root directory).
    pub exports: BTreeMap<String, String>,
    /// Capability strings.
    pub capabilities: Vec<String>,
    /// Why it failed to load, if it did.
    pub init_error: Option<String>,
}

impl Adaptor for PluginEntry {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first().map(String::as_str)?, path.len()) {
            ("type", 1) => Some(self.kind.clone()),
            ("id", 1) => Some(self.id.clone()),
            ("capabilities", 1) => Some(self.capabilities.join(",")),
            _ => None,
        }
    }
}

/// Facts about this server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// A UUID kept in the root so it is stable across restarts.
    pub uuid: String,
    /// The server's version.
    pub version: String,
    /// The source revision it was built from.
    pub revision: String,
    /// The plugin table.
    pub plugins: Vec<PluginEntry>,
}

/// The Introspection service.
pub struct IntrospectionService {
    info: Arc<ServerInfo>,
}

impl IntrospectionService {
    /// A service reporting `info`.
    pub fn new(info: Arc<ServerInfo>) -> Self {
        Self { info }
    }
}

fn wire_plugin(p: &PluginEntry) -> pb::Plugin {
    pb::Plugin {
        r#type: p.kind.clone(),
        id: p.id.clone(),
        requires: p.requires.clone(),
        platforms: vec![berth_proto::containerd::types::Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: go_arch().to_owned(),
            variant: String::new(),
        }],
        exports: p
            .exports
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        capabilities: p.capabilities.clone(),
        init_err: p
            .init_error
            .as_ref()
            .map(|message| berth_proto::google::rpc::Status {
                code: tonic::Code::Unknown as i32,
                message: message.clone(),
                details: Vec::new(),
            }),
    }
}

/// The architecture as Go (and so OCI) spells it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[tonic::async_trait]
impl pb::introspection_server::Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<pb::PluginsRequest>,
    ) -> Result<Response<pb::PluginsResponse>, Status> {
        let filters = Filters::parse(&req.get_ref().filters).map_err(to_status)?;
        Ok(Response::new(pb::PluginsResponse {
            plugins: self
                .info
                .plugins
                .iter()
                .filter(|p| filters.matches(*p))
                .map(wire_plugin)
                .collect(),
        }))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<pb::ServerResponse>, Status> {
        Ok(Response::new(pb::ServerResponse {
            uuid: self.info.uuid.clone(),
        }))
    }
}

/// The Version service.
pub struct VersionService {
    info: Arc<ServerInfo>,
}

impl VersionService {
    /// A service reporting `info`.
    pub fn new(info: Arc<ServerInfo>) -> Self {
        Self { info }
    }
}

#[tonic::async_trait]
impl vpb::version_server::Version for VersionService {
    async fn version(&self, _req: Request<()>) -> Result<Response<vpb::VersionResponse>, Status> {
        Ok(Response::new(vpb::VersionResponse {
            version: self.info.version.clone(),
            revision: self.info.revision.clone(),
        }))
    }
}
