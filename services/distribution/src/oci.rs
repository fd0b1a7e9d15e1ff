//! The OCI / Docker image JSON this crate reads (indexes, manifests, configs), media-type
//! classification, the content labels containerd puts on a pulled tree, and platform matching.

use std::collections::BTreeMap;

use berth_core::diff::Descriptor;
use berth_core::images::{
    MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
    is_index_media_type, is_manifest_media_type,
};
use berth_core::labels::Labels;
use berth_core::transfer::Platform;
use berth_core::{Digest, Error, ErrorKind, Result};
use serde::Deserialize;

/// The largest index, manifest or config this crate reads into memory (containerd's limit).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Docker's schema 1 manifest types, which Berth refuses.
pub const MEDIA_TYPE_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// The signed variant of schema 1.
pub const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests: every index and manifest type Berth reads.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Whether a layer of `media_type` is non-distributable: OCI's `nondistributable` layers and
/// Docker's foreign ones, which registries need not hold and pushes do not upload (they are
/// downloaded from the URLs their descriptors list).
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.foreign.")
}

/// containerd's prefix of the label naming where a blob was pulled from.
pub const LABEL_DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source";
/// The prefix of the label that keeps an image's top snapshot alive from its config.
pub const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";
/// The prefix of content GC references.
pub const LABEL_GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";

/// What a manifest-endpoint blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An OCI index or Docker manifest list.
    Index,
    /// A single-platform manifest.
    Manifest,
}

/// Classifies a manifest media type, refusing schema 1 and anything unknown with a clear error.
pub fn classify(media_type: &str, what: &str) -> Result<ManifestKind> {
    if is_index_media_type(media_type) {
        Ok(ManifestKind::Index)
    } else if is_manifest_media_type(media_type) {
        Ok(ManifestKind::Manifest)
    } else if is_schema1(media_type) {
        Err(Error::not_implemented(format!(
            "{what}: schema 1 manifests are not supported ({media_type}); push the image \
             again with a current client"
        )))
    } else {
        Err(Error::not_implemented(format!(
            "{what}: unsupported manifest media type {media_type:?}"
        )))
    }
}

fn is_schema1(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_DOCKER_SCHEMA1 | MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED
    )
}

/// Whether `media_type` is an image config type.
pub fn is_config_media_type(media_type: &str) -> bool {
    matches!(media_type, MEDIA_TYPE_OCI_CONFIG | MEDIA_TYPE_DOCKER_CONFIG)
}

/// The media type of a manifest body whose response named none usable (some registries say
/// `application/json`): from its own `mediaType`, else from its shape.
pub fn sniff_media_type(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u64>,
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
        #[serde(rename = "fsLayers", default)]
        fs_layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    if let Some(mt) = probe.media_type.filter(|m| !m.is_empty()) {
        return Some(mt);
    }
    if probe.schema_version == Some(1) || probe.fs_layers.is_some() {
        return Some(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED.to_owned());
    }
    if probe.manifests.is_some() {
        return Some(MEDIA_TYPE_OCI_INDEX.to_owned());
    }
    if probe.config.is_some() {
        return Some(MEDIA_TYPE_OCI_MANIFEST.to_owned());
    }
    None
}

/// A descriptor as JSON has it.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonDescriptor {
    /// The media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The digest, unvalidated.
    pub digest: String,
    /// The size.
    pub size: u64,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The platform (index entries).
    #[serde(default)]
    pub platform: Option<JsonPlatform>,
    /// Where else the blob may be downloaded from (foreign / non-distributable layers).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

impl JsonDescriptor {
    /// The core descriptor, with the digest validated.
    pub fn to_descriptor(&self, what: &str) -> Result<Descriptor> {
        let digest = Digest::parse(&self.digest).map_err(|e| e.context(what))?;
        let mut desc = Descriptor::new(self.media_type.clone(), digest, self.size);
        if let Some(a) = &self.annotations {
            desc.annotations = a.clone();
        }
        Ok(desc)
    }
}

/// A platform as JSON has it.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonPlatform {
    /// The OS.
    #[serde(default)]
    pub os: String,
    /// The architecture.
    #[serde(default)]
    pub architecture: String,
    /// The variant.
    #[serde(default)]
    pub variant: String,
}

impl JsonPlatform {
    /// As the core type.
    pub fn to_platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[derive(Deserialize)]
struct JsonIndex {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<JsonDescriptor>,
}

#[derive(Deserialize)]
struct JsonManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: JsonDescriptor,
    #[serde(default)]
    layers: Vec<JsonDescriptor>,
}

#[derive(Deserialize)]
struct JsonConfig {
    #[serde(default)]
    rootfs: Option<JsonRootfs>,
}

#[derive(Deserialize)]
struct JsonRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One entry of an index: the child and the platform it is for, if the index says.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// The child (a manifest or a nested index).
    pub descriptor: Descriptor,
    /// Its platform.
    pub platform: Option<Platform>,
}

/// A parsed index.
#[derive(Debug, Clone)]
pub struct Index {
    /// The children, in order.
    pub manifests: Vec<IndexEntry>,
}

/// A parsed manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The config.
    pub config: Descriptor,
    /// The layers, lowest first.
    pub layers: Vec<Descriptor>,
    /// The `urls` of the layers that list any, by digest: where a layer the registry does
    /// not serve (a foreign or non-distributable one) can be downloaded instead.
    pub urls: BTreeMap<Digest, Vec<String>>,
}

fn check_schema(
    what: &str,
    declared: &str,
    schema_version: Option<u64>,
    body_type: Option<&str>,
) -> Result<()> {
    if schema_version == Some(1) {
        return Err(Error::not_implemented(format!(
            "{what}: schema 1 manifests are not supported"
        )));
    }
    if let Some(body_type) = body_type.filter(|t| !t.is_empty())
        && body_type != declared
    {
        return Err(Error::invalid_argument(format!(
            "{what}: mediaType in the manifest is {body_type:?}, not {declared:?} as its \
             descriptor says"
        )));
    }
    Ok(())
}

/// Parses an index whose descriptor says `declared`.
pub fn parse_index(body: &[u8], declared: &str, what: &str) -> Result<Index> {
    let raw: JsonIndex = serde_json::from_slice(body)
        .map_err(|e| Error::invalid_argument(format!("{what}: invalid index JSON: {e}")))?;
    check_schema(
        what,
        declared,
        raw.schema_version,
        raw.media_type.as_deref(),
    )?;
    let manifests = raw
        .manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(IndexEntry {
                descriptor: m.to_descriptor(&format!("{what}: manifests[{i}]"))?,
                platform: m.platform.as_ref().map(JsonPlatform::to_platform),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Index { manifests })
}

/// Parses a manifest whose descriptor says `declared`.
pub fn parse_manifest(body: &[u8], declared: &str, what: &str) -> Result<Manifest> {
    let raw: JsonManifest = serde_json::from_slice(body)
        .map_err(|e| Error::invalid_argument(format!("{what}: invalid manifest JSON: {e}")))?;
    check_schema(
        what,
        declared,
        raw.schema_version,
        raw.media_type.as_deref(),
    )?;
    let config = raw.config.to_descriptor(&format!("{what}: config"))?;
    let layers = raw
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| l.to_descriptor(&format!("{what}: layers[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let urls = layers
        .iter()
        .zip(&raw.layers)
        .filter_map(|(desc, raw)| {
            let urls = raw.urls.as_ref().filter(|u| !u.is_empty())?;
            Some((desc.digest.clone(), urls.clone()))
        })
        .collect();
    Ok(Manifest {
        config,
        layers,
        urls,
    })
}

/// The diffIDs of an image config (`rootfs.diff_ids`).
pub fn parse_diff_ids(body: &[u8], what: &str) -> Result<Vec<Digest>> {
    let raw: JsonConfig = serde_json::from_slice(body)
        .map_err(|e| Error::invalid_argument(format!("{what}: invalid image config JSON: {e}")))?;
    raw.rootfs
        .map(|r| r.diff_ids)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, d)| Digest::parse(d).map_err(|e| e.context(format!("{what}: diff_ids[{i}]"))))
        .collect()
}

/// The chain IDs of `diff_ids` (§8 of the API notes): `chain[0] = diff[0]`,
/// `chain[i] = sha256("chain[i-1] diff[i]")`.
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

/// The GC reference labels containerd puts on an index: `gc.ref.content.m.<i>` for every
/// child, before any platform filter.
pub fn index_labels(index: &Index) -> Labels {
    index
        .manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("{LABEL_GC_REF_CONTENT}.m.{i}"),
                m.descriptor.digest.to_string(),
            )
        })
        .collect()
}

/// The GC reference labels containerd puts on a manifest: `gc.ref.content.config` and
/// `gc.ref.content.l.<i>`.
pub fn manifest_labels(manifest: &Manifest) -> Labels {
    let mut labels = Labels::new();
    labels.insert(
        format!("{LABEL_GC_REF_CONTENT}.config"),
        manifest.config.digest.to_string(),
    );
    for (i, layer) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("{LABEL_GC_REF_CONTENT}.l.{i}"),
            layer.digest.to_string(),
        );
    }
    labels
}

/// `containerd.io/distribution.source.<host>`.
pub fn source_label_key(hostname: &str) -> String {
    format!("{LABEL_DISTRIBUTION_SOURCE}.{hostname}")
}

/// Adds `repo` to a comma-separated source list (unchanged when already listed).
pub fn append_source(current: Option<&str>, repo: &str) -> String {
    match current.filter(|c| !c.is_empty()) {
        None => repo.to_owned(),
        Some(c) if c.split(',').any(|r| r == repo) => c.to_owned(),
        Some(c) => format!("{c},{repo}"),
    }
}

/// The repositories a source label value lists.
pub fn source_repos(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter(|r| !r.is_empty())
}

/// This machine's platform with Go's names, as containerd's default matcher sees it.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        "loongarch64" => ("loong64", ""),
        other => (other, ""),
    };
    Platform {
        os: std::env::consts::OS.to_owned(),
        architecture: architecture.to_owned(),
        variant: variant.to_owned(),
    }
}

/// Normalizes architecture aliases and default variants the way containerd's `Normalize` does,
/// so `linux/aarch64` matches `linux/arm64/v8`.
pub fn normalize(p: &Platform) -> Platform {
    let os = p.os.to_ascii_lowercase();
    let (arch, variant) = match (
        p.architecture.to_ascii_lowercase().as_str(),
        p.variant.to_ascii_lowercase().as_str(),
    ) {
        ("i386", _) => ("386".to_owned(), String::new()),
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64".to_owned(), String::new()),
        ("x86_64" | "x86-64", v) => ("amd64".to_owned(), v.to_owned()),
        ("aarch64" | "arm64", "8" | "v8" | "") => ("arm64".to_owned(), String::new()),
        ("aarch64", v) => ("arm64".to_owned(), v.to_owned()),
        ("armhf", _) => ("arm".to_owned(), "v7".to_owned()),
        ("armel", _) => ("arm".to_owned(), "v6".to_owned()),
        ("arm", "") => ("arm".to_owned(), "v7".to_owned()),
        ("arm", v @ ("5" | "6" | "7" | "8")) => ("arm".to_owned(), format!("v{v}")),
        (a, v) => (a.to_owned(), v.to_owned()),
    };
    Platform {
        os,
        architecture: arch,
        variant,
    }
}

/// How well `have` serves `want`: `None` when it cannot, higher is better. A wanted platform
/// without a variant takes any variant, preferring none.
pub fn match_score(want: &Platform, have: &Platform) -> Option<u8> {
    let (w, h) = (normalize(want), normalize(have));
    if w.os != h.os || w.architecture != h.architecture {
        return None;
    }
    if w.variant == h.variant {
        Some(2)
    } else if want.variant.is_empty() {
        Some(1)
    } else {
        None
    }
}

/// The entries of `index` to fetch and the ones to unpack for `wanted`: one best match per
/// wanted platform (an entry without a platform only when nothing matches), or every entry
/// with `all`. Fails with NotFound when a wanted platform has no match.
pub fn select_platforms(
    index: &Index,
    wanted: &[Platform],
    all: bool,
    what: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut unpack = Vec::new();
    for want in wanted {
        let best = index
            .manifests
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match &m.platform {
                Some(p) => match_score(want, p).map(|s| (s, i)),
                None => Some((0, i)),
            })
            // Highest score first, then the index's own order.
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        match best {
            Some((_, i)) => {
                if !unpack.contains(&i) {
                    unpack.push(i);
                }
            }
            None if all => {}
            None => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "{what}: no manifest for platform {want} (the index has {})",
                        describe_platforms(index)
                    ),
                ));
            }
        }
    }
    let fetch = if all {
        (0..index.manifests.len()).collect()
    } else {
        unpack.clone()
    };
    Ok((fetch, unpack))
}

fn describe_platforms(index: &Index) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .map(|m| {
            m.platform
                .as_ref()
                .map_or_else(|| "no platform".to_owned(), Platform::to_string)
        })
        .collect();
    if list.is_empty() {
        "no manifests".to_owned()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::images::MEDIA_TYPE_DOCKER_MANIFEST;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    fn d(n: u8) -> Descriptor {
        Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(&[n]), 10)
    }

    fn index(platforms: &[Option<&str>]) -> Index {
        Index {
            manifests: platforms
                .iter()
                .enumerate()
                .map(|(i, pl)| IndexEntry {
                    descriptor: d(i as u8),
                    platform: pl.map(p),
                })
                .collect(),
        }
    }

    #[test]
    fn platform_matching() {
        assert_eq!(match_score(&p("linux/amd64"), &p("linux/amd64")), Some(2));
        assert_eq!(
            match_score(&p("linux/arm64"), &p("linux/arm64/v8")),
            Some(2)
        );
        assert_eq!(match_score(&p("linux/aarch64"), &p("linux/arm64")), Some(2));
        assert_eq!(match_score(&p("linux/x86_64"), &p("linux/amd64")), Some(2));
        assert_eq!(match_score(&p("linux/arm"), &p("linux/arm/v7")), Some(2));
        assert_eq!(match_score(&p("linux/arm"), &p("linux/arm/v6")), Some(1));
        assert_eq!(match_score(&p("linux/arm/v7"), &p("linux/arm/v6")), None);
        assert_eq!(match_score(&p("linux/amd64"), &p("linux/arm64")), None);
        assert_eq!(match_score(&p("linux/amd64"), &p("windows/amd64")), None);
        let host = host_platform();
        assert_eq!(host.os, std::env::consts::OS);
        assert!(!host.architecture.is_empty());
    }

    #[test]
    fn platform_selection() {
        let idx = index(&[
            Some("linux/arm/v6"),
            Some("linux/amd64"),
            Some("linux/arm64"),
            Some("linux/arm/v7"),
            None,
        ]);
        let (fetch, unpack) = select_platforms(&idx, &[p("linux/amd64")], false, "x").unwrap();
        assert_eq!((fetch, unpack), (vec![1], vec![1]));
        let (fetch, unpack) =
            select_platforms(&idx, &[p("linux/arm"), p("linux/arm64")], false, "x").unwrap();
        assert_eq!(fetch, vec![3, 2], "best variant of arm is v7");
        assert_eq!(unpack, vec![3, 2]);
        let (fetch, unpack) = select_platforms(&idx, &[p("linux/amd64")], true, "x").unwrap();
        assert_eq!(fetch, vec![0, 1, 2, 3, 4]);
        assert_eq!(unpack, vec![1]);
        // A platform-less entry is the fallback when nothing matches.
        let (fetch, _) = select_platforms(&idx, &[p("linux/s390x")], false, "x").unwrap();
        assert_eq!(fetch, vec![4]);

        let idx = index(&[Some("linux/amd64"), Some("linux/arm64")]);
        let err = select_platforms(&idx, &[p("linux/s390x")], false, "ref").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(
            err.message().contains(
                "no manifest for platform linux/s390x (the index has linux/amd64, linux/arm64)"
            ),
            "{err}"
        );
        // With every platform fetched, an unmatched wanted platform is not an error.
        let (fetch, unpack) = select_platforms(&idx, &[p("linux/s390x")], true, "x").unwrap();
        assert_eq!((fetch, unpack), (vec![0, 1], vec![]));
    }

    #[test]
    fn labels() {
        let idx = index(&[Some("linux/amd64"), Some("linux/arm64")]);
        let l = index_labels(&idx);
        assert_eq!(l.len(), 2);
        assert_eq!(
            l["containerd.io/gc.ref.content.m.0"],
            d(0).digest.to_string()
        );
        assert_eq!(
            l["containerd.io/gc.ref.content.m.1"],
            d(1).digest.to_string()
        );

        let m = Manifest {
            config: d(9),
            layers: vec![d(1), d(2)],
            urls: BTreeMap::new(),
        };
        let l = manifest_labels(&m);
        assert_eq!(
            l["containerd.io/gc.ref.content.config"],
            d(9).digest.to_string()
        );
        assert_eq!(
            l["containerd.io/gc.ref.content.l.0"],
            d(1).digest.to_string()
        );
        assert_eq!(
            l["containerd.io/gc.ref.content.l.1"],
            d(2).digest.to_string()
        );
        assert_eq!(l.len(), 3);

        assert_eq!(
            source_label_key("127.0.0.1"),
            "containerd.io/distribution.source.127.0.0.1"
        );
        assert_eq!(append_source(None, "a/b"), "a/b");
        assert_eq!(append_source(Some(""), "a/b"), "a/b");
        assert_eq!(append_source(Some("a/b"), "a/b"), "a/b");
        assert_eq!(append_source(Some("x,a/b"), "a/b"), "x,a/b");
        assert_eq!(append_source(Some("x"), "a/b"), "x,a/b");
        assert_eq!(source_repos("x,,a/b").collect::<Vec<_>>(), ["x", "a/b"]);
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn foreign_layers_keep_their_urls() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_TYPE_OCI_CONFIG}","digest":"{}","size":3}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":4}},{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}","size":5,"urls":["https://a.example/l","http://b.example/l"]}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":6,"urls":[]}}]}}"#,
            Digest::of(b"c"),
            Digest::of(b"l1"),
            Digest::of(b"l2"),
            Digest::of(b"l3"),
        );
        let m = parse_manifest(body.as_bytes(), MEDIA_TYPE_OCI_MANIFEST, "m").unwrap();
        assert_eq!(m.layers.len(), 3);
        assert_eq!(
            m.urls,
            BTreeMap::from([(
                Digest::of(b"l2"),
                vec![
                    "https://a.example/l".to_owned(),
                    "http://b.example/l".to_owned()
                ]
            )]),
            "only layers with URLs are listed"
        );

        for yes in [
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ] {
            assert!(is_non_distributable(yes), "{yes}");
        }
        for no in [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            MEDIA_TYPE_OCI_CONFIG,
        ] {
            assert!(!is_non_distributable(no), "{no}");
        }
    }

    #[test]
    fn parsing_and_classification() {
        assert_eq!(
            classify(MEDIA_TYPE_OCI_INDEX, "r").unwrap(),
            ManifestKind::Index
        );
        assert_eq!(
            classify(MEDIA_TYPE_DOCKER_MANIFEST, "r").unwrap(),
            ManifestKind::Manifest
        );
        let err = classify(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED, "r").unwrap_err();
        assert!(
            err.message()
                .contains("schema 1 manifests are not supported"),
            "{err}"
        );
        let err = classify("application/vnd.example+json", "r").unwrap_err();
        assert!(
            err.message().contains("unsupported manifest media type"),
            "{err}"
        );

        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","config":{{"mediaType":"{MEDIA_TYPE_OCI_CONFIG}","digest":"{}","size":3}},"layers":[{{"mediaType":"x","digest":"{}","size":4}}]}}"#,
            Digest::of(b"c"),
            Digest::of(b"l")
        );
        let m = parse_manifest(body.as_bytes(), MEDIA_TYPE_OCI_MANIFEST, "m").unwrap();
        assert_eq!(m.config.digest, Digest::of(b"c"));
        assert_eq!(m.layers[0].size, 4);
        assert_eq!(
            sniff_media_type(body.as_bytes()).as_deref(),
            Some(MEDIA_TYPE_OCI_MANIFEST)
        );
        let err = parse_manifest(body.as_bytes(), MEDIA_TYPE_DOCKER_MANIFEST, "m").unwrap_err();
        assert!(err.message().contains("mediaType in the manifest"), "{err}");
        let err = parse_manifest(
            b"{\"schemaVersion\":1,\"config\":{\"digest\":\"x\",\"size\":1}}",
            MEDIA_TYPE_OCI_MANIFEST,
            "m",
        )
        .unwrap_err();
        assert!(err.message().contains("schema 1"), "{err}");
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":1,"fsLayers":[]}"#).as_deref(),
            Some(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(MEDIA_TYPE_OCI_INDEX)
        );
        let bad_digest = br#"{"manifests":[{"mediaType":"x","digest":"sha256:zz","size":1}]}"#;
        let err = parse_index(bad_digest, MEDIA_TYPE_OCI_INDEX, "i").unwrap_err();
        assert!(err.message().contains("manifests[0]"), "{err}");

        let cfg = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            Digest::of(b"t")
        );
        assert_eq!(
            parse_diff_ids(cfg.as_bytes(), "c").unwrap(),
            vec![Digest::of(b"t")]
        );
    }
}
