//! `berthctl image …`, `berthctl images`, `berthctl tag`, `berthctl rmi`.
//!
//! Image records only name a target; sizes and the inspect view come from reading the target's
//! manifest (through an index, the first entry for this host's platform) and config from the
//! content store. Blobs that are missing or unreadable show as `-` / `null`: a record may well
//! outlive its content, or precede it.

use std::time::SystemTime;

use berth_client::Client;
use berth_client::convert::known_time;
use berth_core::Digest;
use berth_core::diff::Descriptor;
use berth_core::images::{Image, is_index_media_type, is_manifest_media_type};
use berth_core::labels::Labels;
use serde::Serialize;
use serde_json::Value;

use super::{Ctx, label_map, print, remove_each};
use crate::CmdResult;
use crate::cli::{ImageCommand, RmiArgs, TagArgs};
use crate::output::{self, Format, Table};

/// Manifests, indexes and configs larger than this are not read: they are not what they claim.
const MAX_JSON_BLOB: u64 = 16 << 20;

/// An image as `image ls` prints it.
#[derive(Debug, Serialize)]
pub struct ImageRow {
    /// The image's name.
    pub name: String,
    /// The target's media type.
    pub media_type: String,
    /// The target's digest.
    pub digest: String,
    /// The config and layer bytes of this platform's manifest; `null` when not all known.
    pub size: Option<u64>,
    /// RFC 3339, `null` when unknown.
    pub created_at: Option<String>,
    /// RFC 3339, `null` when unknown.
    pub updated_at: Option<String>,
    /// The record's labels.
    pub labels: Labels,
    #[serde(skip)]
    created: Option<SystemTime>,
}

impl ImageRow {
    fn new(image: Image, size: Option<u64>) -> Self {
        let created = known_time(image.created_at);
        Self {
            name: image.name,
            media_type: image.target.media_type,
            digest: image.target.digest.to_string(),
            size,
            created_at: output::rfc3339(created),
            updated_at: output::rfc3339(known_time(image.updated_at)),
            labels: image.labels,
            created,
        }
    }
}

/// The first 12 hex digits of a digest, as docker shows ids.
fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// Images as a table (ages relative to `now`) or a JSON array.
pub fn render_list(format: Format, rows: &[ImageRow], now: SystemTime) -> String {
    output::render(format, rows, |rows| {
        let mut t = Table::new(&["NAME", "DIGEST", "SIZE", "CREATED"]);
        for r in rows {
            t.row(vec![
                r.name.clone(),
                short_digest(&r.digest),
                r.size.map_or_else(|| "-".to_owned(), output::human_size),
                output::age(r.created, now),
            ]);
        }
        t.render()
    })
}

/// A target descriptor as `image inspect` prints it.
#[derive(Debug, Serialize)]
pub struct TargetView {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    pub annotations: Labels,
}

/// An image as `image inspect` prints it.
#[derive(Debug, Serialize)]
pub struct InspectView {
    /// The image's name.
    pub name: String,
    /// The root descriptor.
    pub target: TargetView,
    /// The record's labels.
    pub labels: Labels,
    /// RFC 3339, `null` when unknown.
    pub created: Option<String>,
    /// RFC 3339, `null` when unknown.
    pub updated: Option<String>,
    /// The index, when the target is one and it is in the content store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Value>,
    /// This platform's manifest, when it is in the content store.
    pub manifest: Option<Value>,
    /// The manifest's config, when it is in the content store.
    pub config: Option<Value>,
    /// The config and layer bytes, `null` when the manifest is missing.
    pub size: Option<u64>,
}

/// What the content store knows of an image's tree.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The index, for an index target.
    pub index: Option<Value>,
    /// The chosen manifest.
    pub manifest: Option<Value>,
    /// The manifest's config.
    pub config: Option<Value>,
}

impl Resolved {
    /// The manifest's config size plus its layers' sizes; `None` without a manifest or with
    /// a malformed one.
    pub fn size(&self) -> Option<u64> {
        let manifest = self.manifest.as_ref()?;
        let mut total = manifest.get("config")?.get("size")?.as_u64()?;
        for layer in manifest.get("layers")?.as_array()? {
            total = total.checked_add(layer.get("size")?.as_u64()?)?;
        }
        Some(total)
    }
}

/// containerd's name for this host's CPU architecture (GOARCH).
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// The index entry to follow on this host: the first manifest whose platform is
/// `linux/<host arch>`, or that names no platform.
pub fn pick_manifest<'a>(index: &'a Value, architecture: &str) -> Option<&'a Value> {
    index.get("manifests")?.as_array()?.iter().find(|entry| {
        let media_type = entry.get("mediaType").and_then(Value::as_str);
        if !media_type.is_some_and(is_manifest_media_type) {
            return false;
        }
        match entry.get("platform") {
            None | Some(Value::Null) => true,
            Some(p) => {
                p.get("os").and_then(Value::as_str) == Some("linux")
                    && p.get("architecture").and_then(Value::as_str) == Some(architecture)
            }
        }
    })
}

/// A descriptor object from a manifest or index.
fn json_descriptor(v: &Value) -> Option<Descriptor> {
    Some(Descriptor::new(
        v.get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        Digest::parse(v.get("digest")?.as_str()?).ok()?,
        v.get("size")?.as_u64()?,
    ))
}

/// Reads and parses a JSON blob; `None` (logged) when missing, oversized or not JSON.
async fn read_json(client: &Client, desc: &Descriptor) -> Option<Value> {
    if desc.size > MAX_JSON_BLOB {
        tracing::warn!(digest = %desc.digest, size = desc.size, "not reading an oversized blob");
        return None;
    }
    let bytes = match client.content().read_all(&desc.digest).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(digest = %desc.digest, error = %e, "blob not readable");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(digest = %desc.digest, error = %e, "blob is not JSON");
            None
        }
    }
}

/// Follows `target` to a manifest and its config, as far as the content store allows.
pub async fn resolve(client: &Client, target: &Descriptor) -> Resolved {
    let mut out = Resolved::default();
    let manifest_desc = if is_index_media_type(&target.media_type) {
        out.index = read_json(client, target).await;
        out.index
            .as_ref()
            .and_then(|index| pick_manifest(index, host_architecture()))
            .and_then(json_descriptor)
    } else if is_manifest_media_type(&target.media_type) {
        Some(target.clone())
    } else {
        None
    };
    if let Some(desc) = manifest_desc {
        out.manifest = read_json(client, &desc).await;
    }
    let config_desc = out
        .manifest
        .as_ref()
        .and_then(|m| m.get("config"))
        .and_then(json_descriptor);
    if let Some(desc) = config_desc {
        out.config = read_json(client, &desc).await;
    }
    out
}

/// The inspect view of an image and what was resolved of it.
pub fn inspect_view(image: Image, resolved: Resolved) -> InspectView {
    let size = resolved.size();
    InspectView {
        target: TargetView {
            media_type: image.target.media_type,
            digest: image.target.digest.to_string(),
            size: image.target.size,
            annotations: image.target.annotations,
        },
        labels: image.labels,
        created: output::rfc3339(known_time(image.created_at)),
        updated: output::rfc3339(known_time(image.updated_at)),
        index: resolved.index,
        manifest: resolved.manifest,
        config: resolved.config,
        size,
        name: image.name,
    }
}

/// Runs an image command.
pub async fn run(ctx: &Ctx, cmd: ImageCommand) -> CmdResult {
    let client = ctx.connect().await?;
    match cmd {
        ImageCommand::Ls { filters } => {
            let images = client.images().list(&filters).await?;
            let mut rows = Vec::with_capacity(images.len());
            for image in images {
                let size = resolve(&client, &image.target).await.size();
                rows.push(ImageRow::new(image, size));
            }
            print(&render_list(ctx.format, &rows, SystemTime::now()))
        }
        ImageCommand::Unpack(args) => super::archive::unpack(ctx, &client, args).await,
        ImageCommand::Inspect { name } => {
            let image = client.images().get(&name).await?;
            let resolved = resolve(&client, &image.target).await;
            // Inspect is for scripts and people alike: always JSON, as docker's.
            print(&output::json(&inspect_view(image, resolved)))
        }
        ImageCommand::Tag(TagArgs { source, targets }) => {
            let image = client.images().get(&source).await?;
            let mut tagged = Vec::new();
            for target in targets {
                let named = Image {
                    name: target,
                    ..image.clone()
                };
                let done = client.images().create_or_update(&named).await?;
                if ctx.format == Format::Table {
                    print(&format!("{}\n", done.name))?;
                }
                tagged.push(done.name);
            }
            if ctx.format == Format::Json {
                print(&output::json(&serde_json::json!({ "tagged": tagged })))?;
            }
            Ok(())
        }
        ImageCommand::Rm(RmiArgs { names, sync }) => {
            let client = &client;
            // Each delete waits for its collection, so a failed name never leaves the
            // earlier ones uncollected.
            remove_each(ctx, names, |name| async move {
                client.images().delete(&name, sync).await.map(|()| name)
            })
            .await
        }
        ImageCommand::Label { name, labels } => {
            let image = client
                .images()
                .update_labels(&name, &label_map(labels))
                .await?;
            let size = resolve(&client, &image.target).await.size();
            print(&render_list(
                ctx.format,
                &[ImageRow::new(image, size)],
                SystemTime::now(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_core::images::MEDIA_TYPE_OCI_MANIFEST;

    use super::*;

    fn image() -> Image {
        let mut img = Image::new(
            "docker.io/library/busybox:latest",
            Descriptor::new(
                MEDIA_TYPE_OCI_MANIFEST,
                Digest::parse(
                    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                )
                .unwrap(),
                400,
            ),
        );
        img.created_at = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        img.updated_at = img.created_at;
        img
    }

    fn manifest(config: u64, layers: &[u64]) -> Value {
        let d = Digest::of(b"x").to_string();
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": d,
                "size": config,
            },
            "layers": layers.iter().map(|s| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn list_shapes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(180);
        let rows = [
            ImageRow::new(image(), Some(2048)),
            ImageRow::new(
                Image {
                    name: "x:1".into(),
                    ..image()
                },
                None,
            ),
        ];
        assert_eq!(
            render_list(Format::Table, &rows, now),
            "NAME                               DIGEST         SIZE      CREATED\n\
             docker.io/library/busybox:latest   0123456789ab   2.0 KiB   2 minutes ago\n\
             x:1                                0123456789ab   -         2 minutes ago\n"
        );
        let v: Value = serde_json::from_str(&render_list(Format::Json, &rows, now)).unwrap();
        assert_eq!(v[0]["name"], "docker.io/library/busybox:latest");
        assert_eq!(v[0]["digest"], image().target.digest.to_string());
        assert_eq!(v[0]["media_type"], MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(v[0]["size"], 2048);
        assert_eq!(v[0]["created_at"], "1970-01-01T00:01:00.000000000Z");
        assert_eq!(v[1]["size"], Value::Null);
    }

    #[test]
    fn sizes_and_platforms() {
        let r = Resolved {
            manifest: Some(manifest(100, &[1000, 24])),
            ..Resolved::default()
        };
        assert_eq!(r.size(), Some(1124));
        assert_eq!(Resolved::default().size(), None);
        let broken = Resolved {
            manifest: Some(serde_json::json!({"config": {}})),
            ..Resolved::default()
        };
        assert_eq!(broken.size(), None);

        let entry = |arch: &str, digest: &str| {
            serde_json::json!({
                "mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest, "size": 1,
                "platform": {"os": "linux", "architecture": arch},
            })
        };
        let index = serde_json::json!({"manifests": [
            {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "c", "size": 1},
            entry("s390x", "a"),
            entry("arm64", "b"),
            entry("amd64", "d"),
        ]});
        assert_eq!(pick_manifest(&index, "amd64").unwrap()["digest"], "d");
        assert_eq!(pick_manifest(&index, "arm64").unwrap()["digest"], "b");
        assert!(pick_manifest(&index, "riscv64").is_none());
        let unplatformed = serde_json::json!({"manifests": [
            {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": "e", "size": 1},
        ]});
        assert_eq!(
            pick_manifest(&unplatformed, "amd64").unwrap()["digest"],
            "e"
        );
    }

    #[test]
    fn inspect_shape() {
        let mut img = image();
        img.labels.insert("a".into(), "b".into());
        let resolved = Resolved {
            manifest: Some(manifest(10, &[20])),
            config: Some(serde_json::json!({"architecture": "amd64", "os": "linux"})),
            index: None,
        };
        let v: Value = serde_json::from_str(&output::json(&inspect_view(img, resolved))).unwrap();
        assert_eq!(v["name"], "docker.io/library/busybox:latest");
        assert_eq!(v["target"]["size"], 400);
        assert_eq!(v["target"]["media_type"], MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(v["labels"]["a"], "b");
        assert_eq!(v["created"], "1970-01-01T00:01:00.000000000Z");
        assert_eq!(v["manifest"]["layers"][0]["size"], 20);
        assert_eq!(v["config"]["os"], "linux");
        assert_eq!(v["size"], 30);
        assert!(v.get("index").is_none(), "no index for a manifest target");

        let missing: Value =
            serde_json::from_str(&output::json(&inspect_view(image(), Resolved::default())))
                .unwrap();
        assert_eq!(missing["manifest"], Value::Null);
        assert_eq!(missing["config"], Value::Null);
        assert_eq!(missing["size"], Value::Null);
    }

    #[test]
    fn short_digests() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest("abc"), "abc");
    }
}
