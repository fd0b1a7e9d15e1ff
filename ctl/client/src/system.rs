//! Server-wide calls: version, introspection and garbage collection.

use std::collections::BTreeMap;

use berth_core::Result;
use berth_core::gc::GcStats;
use berth_proto::berth::services::admin::v1 as admin_pb;
use berth_proto::containerd::services::introspection::v1 as introspection_pb;

use crate::client::Client;
use crate::convert;
use crate::error::from_status;

/// The server's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// The release, e.g. `0.1.0`.
    pub version: String,
    /// The source revision it was built from.
    pub revision: String,
}

/// One plugin the server reports, as `ctr plugins ls` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin type, e.g. `io.containerd.grpc.v1`.
    pub kind: String,
    /// The id within its type, e.g. `content`.
    pub id: String,
    /// The plugin types it needs.
    pub requires: Vec<String>,
    /// The platforms it supports, as `os/arch[/variant]`.
    pub platforms: Vec<String>,
    /// Values it exports (e.g. a snapshotter's root).
    pub exports: BTreeMap<String, String>,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Why it failed to initialise, if it did.
    pub init_error: Option<String>,
}

/// The text containerd's `ErrSkipPlugin` carries; such plugins were skipped, not broken.
const SKIP_PLUGIN: &str = "skip plugin";

impl PluginInfo {
    /// `ok`, `skip` (skipped on purpose) or `error`, as `ctr plugins ls` prints it.
    pub fn status(&self) -> &'static str {
        match &self.init_error {
            None => "ok",
            Some(msg) if msg.contains(SKIP_PLUGIN) => "skip",
            Some(_) => "error",
        }
    }
}

fn plugin(p: introspection_pb::Plugin) -> PluginInfo {
    PluginInfo {
        kind: p.r#type,
        id: p.id,
        requires: p.requires,
        platforms: p
            .platforms
            .into_iter()
            .map(|pl| {
                let mut s = format!("{}/{}", pl.os, pl.architecture);
                if !pl.variant.is_empty() {
                    s.push('/');
                    s.push_str(&pl.variant);
                }
                s
            })
            .collect(),
        exports: p.exports.into_iter().collect(),
        capabilities: p.capabilities,
        init_error: p.init_err.map(|s| s.message),
    }
}

impl Client {
    /// The server's version and revision.
    pub async fn version(&self) -> Result<ServerVersion> {
        self.call(|| "version".to_owned(), async {
            let resp = self
                .rpc()
                .version()
                .version(())
                .await
                .map_err(from_status)?
                .into_inner();
            Ok(ServerVersion {
                version: resp.version,
                revision: resp.revision,
            })
        })
        .await
    }

    /// The server's UUID, stable across its restarts.
    pub async fn server_uuid(&self) -> Result<String> {
        self.call(|| "server info".to_owned(), async {
            let resp = self
                .rpc()
                .introspection()
                .server(())
                .await
                .map_err(from_status)?
                .into_inner();
            Ok(resp.uuid)
        })
        .await
    }

    /// The plugins matching any of `filters` (all when empty).
    pub async fn plugins(&self, filters: &[String]) -> Result<Vec<PluginInfo>> {
        self.call(|| "list plugins".to_owned(), async {
            let resp = self
                .rpc()
                .introspection()
                .plugins(introspection_pb::PluginsRequest {
                    filters: filters.to_vec(),
                })
                .await
                .map_err(from_status)?
                .into_inner();
            Ok(resp.plugins.into_iter().map(plugin).collect())
        })
        .await
    }

    /// Runs garbage collection now and reports what it removed.
    pub async fn gc(&self) -> Result<GcStats> {
        self.call(|| "garbage collection".to_owned(), async {
            let resp = self
                .rpc()
                .admin()
                .garbage_collect(admin_pb::GarbageCollectRequest {})
                .await
                .map_err(from_status)?
                .into_inner();
            Ok(GcStats {
                records_removed: resp.records_removed,
                blobs_removed: resp.blobs_removed,
                bytes_removed: resp.bytes_removed,
                ingests_removed: resp.ingests_removed,
                snapshots_removed: resp.snapshots_removed,
                duration: convert::duration(resp.duration.as_ref()),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(err: Option<&str>) -> PluginInfo {
        PluginInfo {
            kind: "io.containerd.snapshotter.v1".into(),
            id: "overlayfs".into(),
            requires: vec![],
            platforms: vec![],
            exports: BTreeMap::new(),
            capabilities: vec![],
            init_error: err.map(str::to_owned),
        }
    }

    #[test]
    fn plugin_status_like_ctr() {
        assert_eq!(info(None).status(), "ok");
        assert_eq!(
            info(Some("no overlay support: skip plugin")).status(),
            "skip"
        );
        assert_eq!(info(Some("mount failed")).status(), "error");
    }
}
