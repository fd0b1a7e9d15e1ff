//! `berthctl version`, `info` and `gc`.

use berth_client::PluginInfo;
use berth_core::gc::GcStats;
use serde::Serialize;

use super::{Ctx, print};
use crate::CmdResult;
use crate::output::{self, Format, Table};

/// This binary's version.
const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Versions as printed.
#[derive(Debug, Serialize)]
pub struct VersionOut {
    /// The client.
    pub client: ClientVersion,
    /// The server.
    pub server: ServerOut,
}

/// The client's version.
#[derive(Debug, Serialize)]
pub struct ClientVersion {
    /// Its release.
    pub version: String,
}

/// The server's version as printed.
#[derive(Debug, Serialize)]
pub struct ServerOut {
    /// Its release.
    pub version: String,
    /// Its source revision.
    pub revision: String,
    /// Its UUID.
    pub uuid: String,
}

/// The client section of `version`'s table.
fn client_table(c: &ClientVersion) -> String {
    format!("Client:\n  Version:  {}\n", c.version)
}

/// The server section of `version`'s table.
fn server_table(s: &ServerOut) -> String {
    format!(
        "\nServer:\n  Version:  {}\n  Revision: {}\n  UUID:     {}\n",
        s.version, s.revision, s.uuid
    )
}

/// Both versions, as a table or a JSON object.
pub fn render_version(format: Format, v: &VersionOut) -> String {
    output::render(format, v, |v| {
        client_table(&v.client) + &server_table(&v.server)
    })
}

/// Prints the client's version, then the server's.
pub async fn version(ctx: &Ctx) -> CmdResult {
    let client_version = ClientVersion {
        version: CLIENT_VERSION.to_owned(),
    };
    if ctx.format == Format::Table {
        // The client half is useful even when the daemon is down.
        print(&client_table(&client_version))?;
    }
    let client = ctx.connect().await?;
    let v = client.version().await?;
    let server = ServerOut {
        version: v.version,
        revision: v.revision,
        uuid: client.server_uuid().await?,
    };
    match ctx.format {
        Format::Table => print(&server_table(&server)),
        Format::Json => print(&render_version(
            Format::Json,
            &VersionOut {
                client: client_version,
                server,
            },
        )),
    }
}

/// A plugin as printed.
#[derive(Debug, Serialize)]
pub struct PluginRow {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its platforms.
    pub platforms: Vec<String>,
    /// ok, skip or error.
    pub status: String,
    /// Why it failed, `null` when it did not.
    pub error: Option<String>,
}

impl From<PluginInfo> for PluginRow {
    fn from(p: PluginInfo) -> Self {
        Self {
            status: p.status().to_owned(),
            kind: p.kind,
            id: p.id,
            platforms: p.platforms,
            error: p.init_error,
        }
    }
}

/// `info`'s output.
#[derive(Debug, Serialize)]
pub struct InfoOut {
    /// The server's UUID.
    pub uuid: String,
    /// Its plugins.
    pub plugins: Vec<PluginRow>,
}

/// The server info as a table or a JSON object.
pub fn render_info(format: Format, info: &InfoOut) -> String {
    output::render(format, info, |info| {
        let mut t = Table::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]);
        for p in &info.plugins {
            let platforms = if p.platforms.is_empty() {
                "-".to_owned()
            } else {
                p.platforms.join(",")
            };
            t.row(vec![
                p.kind.clone(),
                p.id.clone(),
                platforms,
                p.status.clone(),
            ]);
        }
        format!("UUID: {}\n\n{}", info.uuid, t.render())
    })
}

/// Prints the server's UUID and plugins.
pub async fn info(ctx: &Ctx) -> CmdResult {
    let client = ctx.connect().await?;
    let uuid = client.server_uuid().await?;
    let plugins = client.plugins(&[]).await?;
    print(&render_info(
        ctx.format,
        &InfoOut {
            uuid,
            plugins: plugins.into_iter().map(Into::into).collect(),
        },
    ))
}

/// `gc`'s output.
#[derive(Debug, Serialize)]
pub struct GcOut {
    /// Metadata records removed.
    pub records_removed: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Bytes freed.
    pub bytes_removed: u64,
    /// Ingests removed.
    pub ingests_removed: u64,
    /// Snapshots removed.
    pub snapshots_removed: u64,
    /// How long it took, in seconds.
    pub duration_seconds: f64,
    #[serde(skip)]
    duration: std::time::Duration,
}

impl From<GcStats> for GcOut {
    fn from(s: GcStats) -> Self {
        Self {
            records_removed: s.records_removed,
            blobs_removed: s.blobs_removed,
            bytes_removed: s.bytes_removed,
            ingests_removed: s.ingests_removed,
            snapshots_removed: s.snapshots_removed,
            duration_seconds: s.duration.as_secs_f64(),
            duration: s.duration,
        }
    }
}

/// What GC removed, as a table or a JSON object.
pub fn render_gc(format: Format, gc: &GcOut) -> String {
    output::render(format, gc, |gc| {
        let mut t = Table::new(&[
            "RECORDS",
            "BLOBS",
            "FREED",
            "INGESTS",
            "SNAPSHOTS",
            "DURATION",
        ]);
        t.row(vec![
            gc.records_removed.to_string(),
            gc.blobs_removed.to_string(),
            output::human_size(gc.bytes_removed),
            gc.ingests_removed.to_string(),
            gc.snapshots_removed.to_string(),
            format!("{:?}", gc.duration),
        ]);
        t.render()
    })
}

/// Runs GC and prints what it removed.
pub async fn gc(ctx: &Ctx) -> CmdResult {
    let client = ctx.connect().await?;
    let stats = client.gc().await?;
    print(&render_gc(ctx.format, &stats.into()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn version_shapes() {
        let v = VersionOut {
            client: ClientVersion {
                version: "0.1.0".into(),
            },
            server: ServerOut {
                version: "0.1.0".into(),
                revision: "abc".into(),
                uuid: "u".into(),
            },
        };
        assert_eq!(
            render_version(Format::Table, &v),
            "Client:\n  Version:  0.1.0\n\nServer:\n  Version:  0.1.0\n  Revision: abc\n  UUID:     u\n"
        );
        let j: serde_json::Value = serde_json::from_str(&render_version(Format::Json, &v)).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "client": {"version": "0.1.0"},
                "server": {"version": "0.1.0", "revision": "abc", "uuid": "u"},
            })
        );
    }

    #[test]
    fn info_shapes() {
        let p = |id: &str, err: Option<&str>| PluginInfo {
            kind: "io.containerd.grpc.v1".into(),
            id: id.into(),
            requires: vec![],
            platforms: vec![],
            exports: BTreeMap::new(),
            capabilities: vec![],
            init_error: err.map(str::to_owned),
        };
        let info = InfoOut {
            uuid: "u".into(),
            plugins: vec![
                p("content", None).into(),
                p("tasks", Some("no runc")).into(),
            ],
        };
        assert_eq!(
            render_info(Format::Table, &info),
            "UUID: u\n\n\
             TYPE                    ID        PLATFORMS   STATUS\n\
             io.containerd.grpc.v1   content   -           ok\n\
             io.containerd.grpc.v1   tasks     -           error\n"
        );
        let j: serde_json::Value = serde_json::from_str(&render_info(Format::Json, &info)).unwrap();
        assert_eq!(
            j["plugins"][1],
            serde_json::json!({
                "type": "io.containerd.grpc.v1", "id": "tasks", "platforms": [],
                "status": "error", "error": "no runc",
            })
        );
        assert_eq!(j["uuid"], "u");
    }

    #[test]
    fn gc_shapes() {
        let gc = GcOut::from(GcStats {
            records_removed: 3,
            blobs_removed: 2,
            bytes_removed: 2048,
            ingests_removed: 1,
            snapshots_removed: 4,
            duration: Duration::from_millis(12),
        });
        assert_eq!(
            render_gc(Format::Table, &gc),
            "RECORDS   BLOBS   FREED     INGESTS   SNAPSHOTS   DURATION\n\
             3         2       2.0 KiB   1         4           12ms\n"
        );
        let j: serde_json::Value = serde_json::from_str(&render_gc(Format::Json, &gc)).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "records_removed": 3, "blobs_removed": 2, "bytes_removed": 2048,
                "ingests_removed": 1,
                "snapshots_removed": 4, "duration_seconds": 0.012,
            })
        );
    }
}
