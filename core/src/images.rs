//! Images: named references to a root descriptor (an index or a manifest) in the content store.
//!
//! An image record is only a name, a target [`Descriptor`] and labels; the manifests, configs
//! and layers it stands for are content blobs linked by `containerd.io/gc.ref.content.*` labels.
//! Every image is a garbage-collection root: its target digest and the references in its own
//! labels stay alive while the record exists.

use std::time::SystemTime;

use crate::diff::Descriptor;
use crate::filters::{Adaptor, Filters, label_field};
use crate::labels::{self, Labels};
use crate::{Error, RequestContext, Result};

/// An OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image config.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker's manifest list (the index of Docker schema 2).
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Whether `media_type` names an index (OCI index or Docker manifest list).
pub fn is_index_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST
    )
}

/// Whether `media_type` names a single-platform manifest (OCI or Docker schema 2).
pub fn is_manifest_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST
    )
}

/// An image record in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image's name: any non-empty string, usually a reference such as
    /// `docker.io/library/busybox:latest`.
    pub name: String,
    /// The root of the image in the content store.
    pub target: Descriptor,
    /// The record's labels.
    pub labels: Labels,
    /// When the record was created (set by the store).
    pub created_at: SystemTime,
    /// When the record last changed (set by the store).
    pub updated_at: SystemTime,
}

impl Image {
    /// A record named `name` pointing at `target`, without labels; the times are placeholders
    /// the store replaces.
    pub fn new(name: impl Into<String>, target: Descriptor) -> Self {
        Self {
            name: name.into(),
            target,
            labels: Labels::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }
}

/// Filter fields, as containerd's: `name`, `target.digest`, `target.mediatype`, `labels.<key>`
/// and `annotations.<key>` (the target's annotations).
impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first().map(String::as_str)?, path.len()) {
            ("name", 1) => Some(self.name.clone()).filter(|n| !n.is_empty()),
            ("target", 2) => match path.get(1).map(String::as_str)? {
                "digest" => Some(self.target.digest.to_string()),
                "mediatype" => Some(self.target.media_type.clone()).filter(|m| !m.is_empty()),
                _ => None,
            },
            ("labels", _) => label_field(&self.labels, path),
            ("annotations", _) => label_field(&self.target.annotations, path),
            _ => None,
        }
    }
}

/// Checks what a store keeps: a non-empty name, valid labels, and a target with a media type
/// and a positive size (the digest is valid by construction).
pub fn validate(image: &Image) -> Result<()> {
    if image.name.is_empty() {
        return Err(Error::invalid_argument("image name must not be empty"));
    }
    labels::validate(&image.labels)
        .map_err(|e| e.context(format!("image {:?} labels", image.name)))?;
    if image.target.media_type.is_empty() {
        return Err(Error::invalid_argument(format!(
            "image {:?}: target media type must be set",
            image.name
        )));
    }
    if image.target.size == 0 {
        return Err(Error::invalid_argument(format!(
            "image {:?}: target size must be greater than zero",
            image.name
        )));
    }
    Ok(())
}

/// Applies `update` to `current` under a field mask, as containerd's image store does:
/// - no paths: every mutable field (labels and target) is replaced;
/// - `labels` / `labels.<key>`: as [`labels::apply_mask`] (an empty value deletes the key);
/// - `target`: the whole descriptor is replaced;
/// - `annotations` / `annotations.<key>`: the target's annotations, whole or one key.
///
/// Any other path is InvalidArgument. The name and times are left alone.
pub fn apply_mask(current: &mut Image, update: &Image, paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        current.labels = update.labels.clone();
        current.target = update.target.clone();
        return Ok(());
    }
    for path in paths {
        if path == "labels" || path.starts_with("labels.") {
            labels::apply_mask(
                &mut current.labels,
                &update.labels,
                std::slice::from_ref(path),
            );
        } else if path == "target" {
            current.target = update.target.clone();
        } else if path == "annotations" {
            current.target.annotations = update.target.annotations.clone();
        } else if let Some(key) = path.strip_prefix("annotations.") {
            match update.target.annotations.get(key) {
                Some(v) if !v.is_empty() => {
                    current.target.annotations.insert(key.to_owned(), v.clone());
                }
                _ => {
                    current.target.annotations.remove(key);
                }
            }
        } else {
            return Err(Error::invalid_argument(format!(
                "cannot update {path:?} field on image {:?}",
                current.name
            )));
        }
    }
    Ok(())
}

/// Whether an update under `paths` reads the target's digest, media type and size (an empty
/// mask or `target`); otherwise the caller's target is only a carrier of annotations, and a
/// client may leave it zero (`ctr images label` does).
pub fn mask_replaces_target(paths: &[String]) -> bool {
    paths.is_empty() || paths.iter().any(|p| p == "target")
}

/// The namespaced image store behind the Images service.
pub trait ImageStore: Send + Sync {
    /// The namespace's image `name`; NotFound when absent.
    fn get(&self, ctx: &RequestContext, name: &str) -> Result<Image>;

    /// The namespace's images matching `filters`, sorted by name.
    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Image>>;

    /// Records a new image (see [`validate`]), setting both times to now; AlreadyExists when
    /// the name is taken. Creates the namespace if needed.
    fn create(&self, ctx: &RequestContext, image: Image) -> Result<Image>;

    /// Changes image `image.name` under a field mask (see [`apply_mask`]), keeping its
    /// creation time and setting its update time; NotFound when absent.
    fn update(&self, ctx: &RequestContext, image: Image, paths: &[String]) -> Result<Image>;

    /// Removes image `name` (NotFound when absent) and asks for a garbage collection; with
    /// `sync` the collection has run when this returns.
    fn delete(&self, ctx: &RequestContext, name: &str, sync: bool) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn image() -> Image {
        let mut target = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"m"), 100);
        target
            .annotations
            .insert("org.opencontainers.image.ref.name".into(), "latest".into());
        let mut img = Image::new("docker.io/library/busybox:latest", target);
        img.labels.insert("tier".into(), "base".into());
        img
    }

    #[test]
    fn filter_fields() {
        let img = image();
        let m = |f: &str| Filters::parse(&[f]).unwrap().matches(&img);
        assert!(m("name==docker.io/library/busybox:latest"));
        assert!(m("name~=busybox"));
        assert!(!m("name==alpine"));
        assert!(m(&format!("target.digest=={}", Digest::of(b"m"))));
        assert!(m(&format!("target.mediatype=={MEDIA_TYPE_OCI_MANIFEST}")));
        assert!(!m("target"));
        assert!(m("labels.tier==base"));
        assert!(!m("labels.missing"));
        assert!(m(
            r#"annotations."org.opencontainers.image.ref.name"==latest"#
        ));
    }

    #[test]
    fn validation() {
        assert!(validate(&image()).is_ok());
        // Any non-empty name will do, as in containerd 1.6.
        let mut odd = image();
        odd.name = "import-2024-01-01:tag".into();
        assert!(validate(&odd).is_ok());

        let mut bad = image();
        bad.name.clear();
        assert_eq!(
            validate(&bad).unwrap_err().kind(),
            crate::ErrorKind::InvalidArgument
        );
        let mut bad = image();
        bad.target.media_type.clear();
        assert!(validate(&bad).is_err());
        let mut bad = image();
        bad.target.size = 0;
        assert!(validate(&bad).is_err());
        let mut bad = image();
        bad.labels.insert("k".into(), "v".repeat(4096));
        assert!(validate(&bad).is_err());
    }

    #[test]
    fn masks() {
        let mut cur = image();
        let mut upd = Image::new(
            "ignored",
            Descriptor::new(MEDIA_TYPE_OCI_INDEX, Digest::of(b"i"), 7),
        );
        upd.labels.insert("new".into(), "1".into());
        upd.target.annotations.insert("a".into(), "b".into());

        apply_mask(&mut cur, &upd, &["labels.new".into(), "labels.tier".into()]).unwrap();
        assert_eq!(cur.labels, Labels::from([("new".into(), "1".into())]));
        assert_eq!(cur.target.digest, Digest::of(b"m"), "target untouched");
        assert_eq!(cur.name, "docker.io/library/busybox:latest");

        apply_mask(&mut cur, &upd, &["annotations.a".into()]).unwrap();
        assert_eq!(
            cur.target.annotations.get("a").map(String::as_str),
            Some("b")
        );
        assert_eq!(cur.target.annotations.len(), 2);
        apply_mask(&mut cur, &upd, &["annotations".into()]).unwrap();
        assert_eq!(cur.target.annotations, upd.target.annotations);

        apply_mask(&mut cur, &upd, &["target".into()]).unwrap();
        assert_eq!(cur.target, upd.target);

        let mut cur = image();
        apply_mask(&mut cur, &upd, &[]).unwrap();
        assert_eq!((&cur.labels, &cur.target), (&upd.labels, &upd.target));

        let err = apply_mask(&mut cur, &upd, &["name".into()]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.message().contains("\"name\""), "{err}");

        assert!(mask_replaces_target(&[]));
        assert!(mask_replaces_target(&["labels.a".into(), "target".into()]));
        assert!(!mask_replaces_target(&["annotations.x".into()]));
        assert!(!mask_replaces_target(&["labels".into(), "labels.a".into()]));
    }

    #[test]
    fn media_types() {
        assert!(is_index_media_type(MEDIA_TYPE_OCI_INDEX));
        assert!(is_index_media_type(MEDIA_TYPE_DOCKER_MANIFEST_LIST));
        assert!(!is_index_media_type(MEDIA_TYPE_OCI_MANIFEST));
        assert!(is_manifest_media_type(MEDIA_TYPE_OCI_MANIFEST));
        assert!(is_manifest_media_type(MEDIA_TYPE_DOCKER_MANIFEST));
        assert!(!is_manifest_media_type(MEDIA_TYPE_OCI_CONFIG));
    }
}
