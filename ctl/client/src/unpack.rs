//! Unpacking an image into a snapshotter from the client, the way `ctr` does it (no daemon-side
//! unpacker involved), plus the small OCI/Docker JSON model the archive code shares.
//!
//! The sequence, per layer `i` of the platform's manifest (lowest first):
//! `Snapshots.Stat(chainID_i)` (present: skip), `Snapshots.Prepare("extract-<nanos>-<b64>
//! <chainID_i>", parent chainID_{i-1})`, `Diff.Apply(layer, mounts)` (the returned diffID must be
//! the config's `rootfs.diff_ids[i]`), `Snapshots.Commit(chainID_i)`, and
//! `Content.Update(layer, containerd.io/uncompressed=<diffID>)`. Finally the config gets
//! `containerd.io/gc.ref.snapshot.<snapshotter>=<top chainID>`, which is what keeps the snapshots
//! alive once the lease the unpack runs under is gone.

use std::collections::BTreeMap;

use berth_core::diff::{Descriptor, LABEL_UNCOMPRESSED};
use berth_core::gc::REF_SNAPSHOT_PREFIX;
use berth_core::images::{is_index_media_type, is_manifest_media_type};
use berth_core::labels::Labels;
use berth_core::transfer::Platform;
use berth_core::{Digest, Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::leases::{LeaseOptions, generate_lease_id};
use crate::snapshots::DEFAULT_SNAPSHOTTER;
use crate::spec::ImageConfig;

/// The largest index, manifest or config read as JSON; anything bigger is not what it claims.
pub const MAX_JSON_BLOB: u64 = 4 << 20;

/// The namespace label naming the namespace's default snapshotter.
pub const LABEL_DEFAULT_SNAPSHOTTER: &str = "containerd.io/defaults/snapshotter";

/// How long the lease an unpack (or import) runs under lives if the client dies midway.
pub(crate) const WORK_LEASE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How deep indexes may nest before the tree is refused as hostile.
pub(crate) const MAX_DEPTH: usize = 8;

/// A descriptor as OCI and Docker JSON spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<JsonPlatform>,
}

/// A platform as OCI JSON spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JsonPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

/// An OCI index or Docker manifest list (only what is needed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<JsonDescriptor>,
}

/// An OCI or Docker schema 2 manifest (only what is needed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: JsonDescriptor,
    pub layers: Vec<JsonDescriptor>,
}

/// An image config (only what an unpack needs).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JsonConfig {
    pub rootfs: JsonRootfs,
    /// What a container run from the image starts with (entrypoint, cmd, env...).
    #[serde(default)]
    pub config: Option<ImageConfig>,
}

/// A config's `rootfs`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JsonRootfs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl JsonDescriptor {
    /// The descriptor from core's type (no platform).
    pub fn from_core(d: &Descriptor) -> Self {
        Self {
            media_type: d.media_type.clone(),
            digest: d.digest.to_string(),
            size: d.size,
            annotations: d.annotations.clone().into_iter().collect(),
            platform: None,
        }
    }

    /// Core's descriptor; a malformed digest is InvalidArgument naming `what`.
    pub fn to_core(&self, what: &str) -> Result<Descriptor> {
        let digest = Digest::parse(&self.digest).map_err(|e| e.context(what))?;
        let mut d = Descriptor::new(self.media_type.clone(), digest, self.size);
        d.annotations = self.annotations.clone().into_iter().collect();
        Ok(d)
    }

    /// The platform, if the descriptor names one.
    pub fn platform(&self) -> Option<Platform> {
        self.platform.as_ref().map(|p| Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
        })
    }
}

/// The platform of this machine, with the architecture names images use (Go's).
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", "v8"),
        "x86" => ("386", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" => ("ppc64le", ""),
        "riscv64" => ("riscv64", ""),
        "s390x" => ("s390x", ""),
        other => (other, ""),
    };
    Platform {
        os: std::env::consts::OS.to_owned(),
        architecture: architecture.to_owned(),
        variant: variant.to_owned(),
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "x86_64" | "x86-64" => ("amd64".to_owned(), String::new()),
        "aarch64" | "arm64" => (
            "arm64".to_owned(),
            if variant == "8" || variant.is_empty() {
                "v8".to_owned()
            } else {
                variant
            },
        ),
        "i386" => ("386".to_owned(), String::new()),
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        _ => (arch, variant),
    }
}

/// Whether an image for `have` runs where `want` is asked for: same OS and architecture, and
/// the same variant unless `want` names none (`arm64` with no variant is `arm64/v8`).
pub fn platform_matches(want: &Platform, have: &Platform) -> bool {
    if !want.os.eq_ignore_ascii_case(&have.os) {
        return false;
    }
    let (want_arch, want_variant) = normalize_arch(&want.architecture, &want.variant);
    let (have_arch, have_variant) = normalize_arch(&have.architecture, &have.variant);
    want_arch == have_arch
        && (want.variant.is_empty() || want_variant.is_empty() || want_variant == have_variant)
}

/// Whether an index entry is kept for `platforms` (empty: the host's): entries that name no
/// platform always are.
pub(crate) fn wanted(entry: Option<&Platform>, platforms: &[Platform]) -> bool {
    let Some(have) = entry else { return true };
    if platforms.is_empty() {
        platform_matches(&host_platform(), have)
    } else {
        platforms.iter().any(|want| platform_matches(want, have))
    }
}

/// Reads `desc` from the content store as JSON of type `T`, refusing blobs over
/// [`MAX_JSON_BLOB`] and bytes that are not what the descriptor says.
pub(crate) async fn read_json<T: DeserializeOwned>(
    client: &Client,
    desc: &Descriptor,
    what: &str,
) -> Result<T> {
    if desc.size > MAX_JSON_BLOB {
        return Err(Error::invalid_argument(format!(
            "{what} {} is {} bytes, more than the {MAX_JSON_BLOB} allowed for image JSON",
            desc.digest, desc.size
        )));
    }
    // One byte more than claimed: enough to tell a lying size without reading a huge blob.
    let data = client
        .content()
        .read_range(&desc.digest, 0, desc.size + 1)
        .await
        .map_err(|e| e.context(format!("read {what} {}", desc.digest)))?;
    if data.len() as u64 != desc.size {
        return Err(Error::invalid_argument(format!(
            "{what} {} is {} bytes, its descriptor says {}",
            desc.digest,
            data.len(),
            desc.size
        )));
    }
    serde_json::from_slice(&data).map_err(|e| {
        Error::invalid_argument(format!("{what} {} is not valid JSON: {e}", desc.digest))
    })
}

/// The manifest of `target` for the first of `platforms` (empty: the host's) that an index
/// offers, walking nested indexes; `target` itself when it is a manifest.
pub(crate) async fn resolve_manifest(
    client: &Client,
    target: &Descriptor,
    platforms: &[Platform],
) -> Result<(Descriptor, JsonManifest)> {
    let host = [host_platform()];
    let prefs: &[Platform] = if platforms.is_empty() {
        &host
    } else {
        platforms
    };
    let mut current = target.clone();
    for _ in 0..MAX_DEPTH {
        if is_manifest_media_type(&current.media_type) {
            let manifest = read_json(client, &current, "manifest").await?;
            return Ok((current, manifest));
        }
        if !is_index_media_type(&current.media_type) {
            return Err(Error::invalid_argument(format!(
                "{} has media type {:?}, neither an index nor a manifest",
                current.digest, current.media_type
            )));
        }
        let index: JsonIndex = read_json(client, &current, "index").await?;
        let mut next = None;
        'prefs: for want in prefs {
            for entry in &index.manifests {
                let fits = match entry.platform() {
                    Some(have) => platform_matches(want, &have),
                    None => true,
                };
                if fits {
                    next = Some(entry.to_core("an index entry")?);
                    break 'prefs;
                }
            }
        }
        current = next.ok_or_else(|| {
            let names: Vec<String> = prefs.iter().map(ToString::to_string).collect();
            Error::not_found(format!(
                "index {} has no manifest for platform {}",
                current.digest,
                names.join(", ")
            ))
        })?;
    }
    Err(Error::invalid_argument(format!(
        "{}: indexes nest more than {MAX_DEPTH} deep",
        target.digest
    )))
}

/// The chain IDs of `diff_ids`: `chain[0] = diff[0]`, `chain[i] = sha256("chain[i-1] diff[i]")`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// What to unpack and where.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// The snapshotter; `None` (or empty) means the namespace's default
    /// ([`LABEL_DEFAULT_SNAPSHOTTER`]), else [`DEFAULT_SNAPSHOTTER`].
    pub snapshotter: Option<String>,
    /// The platform whose manifest to unpack; `None` means the host's.
    pub platform: Option<Platform>,
}

/// One layer of an unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// The layer blob.
    pub digest: Digest,
    /// Its uncompressed digest.
    pub diff_id: Digest,
    /// The committed snapshot's name.
    pub chain_id: Digest,
    /// False when the snapshot was already there and the layer was not applied again.
    pub applied: bool,
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The snapshotter the layers went into.
    pub snapshotter: String,
    /// The manifest unpacked.
    pub manifest: Digest,
    /// Its config, now labelled with the top snapshot.
    pub config: Digest,
    /// The top snapshot: a container's rootfs is prepared on it.
    pub chain_id: Digest,
    /// Each layer, lowest first.
    pub layers: Vec<UnpackedLayer>,
    /// The config's run-time part, read on the way (a `run` needs it next).
    pub image_config: ImageConfig,
}

impl Client {
    /// The snapshotter an unpack uses for `requested`: itself when non-empty, else the
    /// namespace's default label, else [`DEFAULT_SNAPSHOTTER`].
    pub async fn resolve_snapshotter(&self, requested: Option<&str>) -> Result<String> {
        if let Some(name) = requested.filter(|s| !s.is_empty()) {
            return Ok(name.to_owned());
        }
        let ns = self.namespaces().get(self.namespace()).await?;
        Ok(ns
            .labels
            .get(LABEL_DEFAULT_SNAPSHOTTER)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| DEFAULT_SNAPSHOTTER.to_owned()))
    }

    /// Unpacks the image rooted at `target` (an index or a manifest) into a snapshotter, as
    /// `ctr` does, under this client's lease or, without one, a lease of its own that is
    /// deleted afterwards. Layers already committed are skipped.
    pub async fn unpack(&self, target: &Descriptor, options: &UnpackOptions) -> Result<Unpacked> {
        if self.lease().is_some() {
            return unpack_leased(self, target, options).await;
        }
        let lease = self
            .leases()
            .create(LeaseOptions::default().expires_in(WORK_LEASE_EXPIRY))
            .await?;
        let result = unpack_leased(&self.with_lease(&lease.id), target, options).await;
        if let Err(e) = self.leases().delete(&lease.id, false).await {
            tracing::warn!(lease = %lease.id, error = %e, "unpack: could not delete its lease");
        }
        result
    }
}

async fn unpack_leased(
    client: &Client,
    target: &Descriptor,
    options: &UnpackOptions,
) -> Result<Unpacked> {
    let platforms: Vec<Platform> = options.platform.iter().cloned().collect();
    let (manifest_desc, manifest) = resolve_manifest(client, target, &platforms).await?;
    let config_desc = manifest.config.to_core("a manifest's config")?;
    let config: JsonConfig = read_json(client, &config_desc, "config").await?;
    let diff_ids = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| e.context(format!("config {}", config_desc.digest))))
        .collect::<Result<Vec<_>>>()?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::invalid_argument(format!(
            "manifest {} has {} layers but its config lists {} diff_ids",
            manifest_desc.digest,
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    if diff_ids.is_empty() {
        return Err(Error::invalid_argument(format!(
            "manifest {} has no layers to unpack",
            manifest_desc.digest
        )));
    }
    let snapshotter = client
        .resolve_snapshotter(options.snapshotter.as_deref())
        .await?;
    let chain = chain_ids(&diff_ids);
    let top = chain[chain.len() - 1].clone();
    let key = format!("{REF_SNAPSHOT_PREFIX}{snapshotter}");
    // Unpacking an image that is already unpacked is the common case (every `run`): the top
    // snapshot is there (a committed snapshot's parents always are) and the config already
    // names it, which one round of two reads tells, sparing a walk and a durable write.
    let snapshots = client.snapshots(&snapshotter);
    let content = client.content();
    let (top_there, config_info) = tokio::join!(
        snapshots.stat(top.as_str()),
        content.info(&config_desc.digest)
    );
    let labelled = config_info.is_ok_and(|info| info.labels.get(&key) == Some(&top.to_string()));
    let all_there = match top_there {
        Ok(_) => true,
        Err(e) if e.is(ErrorKind::NotFound) => false,
        Err(e) => return Err(e.context(format!("stat snapshot {top}"))),
    };
    let mut layers = Vec::with_capacity(chain.len());
    for (i, json_layer) in manifest.layers.iter().enumerate() {
        let layer = json_layer.to_core("a manifest's layer")?;
        let parent = i.checked_sub(1).map(|p| chain[p].to_string());
        let applied = !all_there
            && unpack_layer(
                client,
                &snapshotter,
                &layer,
                &diff_ids[i],
                &chain[i],
                parent.as_deref(),
            )
            .await
            .map_err(|e| e.context(format!("unpack layer {i} ({})", layer.digest)))?;
        layers.push(UnpackedLayer {
            digest: layer.digest,
            diff_id: diff_ids[i].clone(),
            chain_id: chain[i].clone(),
            applied,
        });
    }
    if !labelled {
        let mut labels = Labels::new();
        labels.insert(key, top.to_string());
        client
            .content()
            .update_labels(&config_desc.digest, &labels)
            .await
            .map_err(|e| e.context(format!("label config {}", config_desc.digest)))?;
    }
    Ok(Unpacked {
        snapshotter,
        manifest: manifest_desc.digest,
        config: config_desc.digest,
        chain_id: top,
        layers,
        image_config: config.config.unwrap_or_default(),
    })
}

/// Applies one layer as the snapshot `chain_id`; false when it was already there.
async fn unpack_layer(
    client: &Client,
    snapshotter: &str,
    layer: &Descriptor,
    diff_id: &Digest,
    chain_id: &Digest,
    parent: Option<&str>,
) -> Result<bool> {
    let sn = client.snapshots(snapshotter);
    let name = chain_id.to_string();
    match sn.stat(&name).await {
        Ok(_) => return Ok(false),
        Err(e) if e.is(ErrorKind::NotFound) => {}
        Err(e) => return Err(e),
    }
    // A key collision (another unpacker picked the same random part) is retried with a new
    // key, as containerd's client does.
    let mut attempt = 0;
    let (key, mounts) = loop {
        let key = format!("extract-{} {name}", generate_lease_id());
        match sn.prepare(&key, parent, &Labels::new()).await {
            Ok(mounts) => break (key, mounts),
            Err(e) if e.is(ErrorKind::AlreadyExists) && attempt < 3 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let applied = match client.diff().apply(layer, &mounts).await {
        Ok(applied) => applied,
        Err(e) => {
            remove_quietly(client, snapshotter, &key).await;
            return Err(e);
        }
    };
    if &applied.digest != diff_id {
        remove_quietly(client, snapshotter, &key).await;
        return Err(Error::failed_precondition(format!(
            "layer {} unpacks to diffID {}, but the config says {diff_id}",
            layer.digest, applied.digest
        )));
    }
    match sn.commit(&name, &key, &Labels::new()).await {
        Ok(()) => {}
        // Someone else committed the same layer meanwhile: theirs is as good as ours.
        Err(e) if e.is(ErrorKind::AlreadyExists) => remove_quietly(client, snapshotter, &key).await,
        Err(e) => {
            remove_quietly(client, snapshotter, &key).await;
            return Err(e);
        }
    }
    let mut labels = Labels::new();
    labels.insert(LABEL_UNCOMPRESSED.to_owned(), diff_id.to_string());
    client
        .content()
        .update_labels(&layer.digest, &labels)
        .await
        .map_err(|e| e.context(format!("label layer {}", layer.digest)))?;
    Ok(true)
}

async fn remove_quietly(client: &Client, snapshotter: &str, key: &str) {
    if let Err(e) = client.snapshots(snapshotter).remove(key).await {
        tracing::warn!(key, error = %e, "unpack: could not remove the extract snapshot");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn platforms_match_with_go_names_and_variants() {
        assert!(platform_matches(&p("linux/amd64"), &p("linux/amd64")));
        assert!(platform_matches(&p("linux/amd64"), &p("linux/x86_64")));
        assert!(!platform_matches(&p("linux/amd64"), &p("linux/arm64")));
        assert!(!platform_matches(&p("linux/amd64"), &p("windows/amd64")));
        assert!(platform_matches(&p("linux/arm64"), &p("linux/arm64/v8")));
        assert!(platform_matches(&p("linux/arm64/v8"), &p("linux/arm64")));
        assert!(platform_matches(&p("linux/arm/v7"), &p("linux/arm/v7")));
        assert!(!platform_matches(&p("linux/arm/v7"), &p("linux/arm/v6")));
        assert!(platform_matches(&p("linux/arm"), &p("linux/arm/v6")));
    }

    #[test]
    fn host_platform_is_linux_with_go_arch_names() {
        let host = host_platform();
        assert_eq!(host.os, "linux");
        assert!(!host.architecture.contains('_'), "{host}");
        assert!(wanted(None, &[]), "entries without a platform are kept");
        assert!(wanted(Some(&host), &[]));
        let other = if host.architecture == "amd64" {
            p("linux/arm64")
        } else {
            p("linux/amd64")
        };
        assert!(!wanted(Some(&other), &[]));
        assert!(wanted(Some(&other), std::slice::from_ref(&other)));
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn descriptors_convert_and_refuse_bad_digests() {
        let json = r#"{"mediaType":"m","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":3,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}"#;
        let d: JsonDescriptor = serde_json::from_str(json).unwrap();
        assert_eq!(d.platform(), Some(p("linux/arm64/v8")));
        let core = d.to_core("x").unwrap();
        assert_eq!(core.size, 3);
        let back = JsonDescriptor::from_core(&core);
        assert_eq!(back.digest, d.digest);
        let bad = JsonDescriptor {
            digest: "sha256:../../etc".into(),
            ..d
        };
        assert_eq!(
            bad.to_core("x").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let negative = r#"{"mediaType":"m","digest":"sha256:00","size":-1}"#;
        assert!(serde_json::from_str::<JsonDescriptor>(negative).is_err());
    }
}
