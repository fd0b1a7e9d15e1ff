//! Containers: the records a task is later created from. No process lives here.
//!
//! A container names its runtime, carries the OCI runtime spec (JSON in an [`AnyValue`] of
//! type [`RUNTIME_SPEC_TYPE_URL`] when made by containerd's clients), and usually points at a
//! writable snapshot (`snapshotter` / `snapshot_key`) and the image it was made from.
//!
//! Every container is a garbage-collection root: its snapshot stays alive while the record
//! exists, and so does whatever its own `containerd.io/gc.ref.*` labels reference.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::any::AnyValue;
use crate::filters::{Adaptor, Filters, label_field};
use crate::labels::{self, Labels};
use crate::{Error, RequestContext, Result, identifiers};

/// The type URL containerd's clients give a container's spec: OCI runtime-spec JSON.
pub const RUNTIME_SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The label asking berthd to remove the container (task, snapshot, record) once its init
/// exits, as `docker run -d --rm` does.
pub const AUTO_REMOVE_LABEL: &str = "io.berth.auto-remove";

/// The label asking berthd to write `etc/hostname`, `etc/hosts` and `etc/resolv.conf` into the
/// task's bundle, for the spec to bind-mount (bundle-relative sources).
pub const ETC_FILES_LABEL: &str = "io.berth.etc-files";

/// The runtime that runs a container's task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The runtime's name, e.g. `io.containerd.runc.v2`.
    pub name: String,
    /// Runtime-specific options (e.g. `containerd.runc.v1.Options`).
    pub options: Option<AnyValue>,
}

/// A container record in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The id: an identifier (see [`identifiers::validate`]), unique in the namespace.
    pub id: String,
    /// The record's labels.
    pub labels: Labels,
    /// The name of the image the container was made from; may be empty.
    pub image: String,
    /// The runtime that runs its task.
    pub runtime: RuntimeInfo,
    /// The OCI runtime spec; required.
    pub spec: Option<AnyValue>,
    /// The snapshotter holding `snapshot_key`; required when the key is set.
    pub snapshotter: String,
    /// The key of the container's writable snapshot; may be empty.
    pub snapshot_key: String,
    /// When the record was created (set by the store).
    pub created_at: SystemTime,
    /// When the record last changed (set by the store).
    pub updated_at: SystemTime,
    /// Client-defined data, keyed by client.
    pub extensions: BTreeMap<String, AnyValue>,
}

impl Container {
    /// A record `id` for `runtime` with `spec`, nothing else set; the times are placeholders
    /// the store replaces.
    pub fn new(id: impl Into<String>, runtime: impl Into<String>, spec: AnyValue) -> Self {
        Self {
            id: id.into(),
            labels: Labels::new(),
            image: String::new(),
            runtime: RuntimeInfo {
                name: runtime.into(),
                options: None,
            },
            spec: Some(spec),
            snapshotter: String::new(),
            snapshot_key: String::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            extensions: BTreeMap::new(),
        }
    }
}

/// Filter fields: containerd's `id`, `image`, `runtime.name` and `labels.<key>`, plus
/// `snapshotter`. An empty field is absent, as in containerd.
impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        let non_empty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        match (path.first().map(String::as_str)?, path.len()) {
            ("id", 1) => non_empty(&self.id),
            ("image", 1) => non_empty(&self.image),
            ("snapshotter", 1) => non_empty(&self.snapshotter),
            ("runtime", 2) if path.get(1).is_some_and(|p| p == "name") => {
                non_empty(&self.runtime.name)
            }
            ("labels", _) => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// Checks a record as containerd does before storing it: a valid id, non-empty extension keys,
/// valid labels, a runtime name, a spec, and a snapshotter whenever a snapshot key is set. Every
/// failure is InvalidArgument.
pub fn validate(container: &Container) -> Result<()> {
    identifiers::validate("container id", &container.id)?;
    let id = &container.id;
    if container.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: extension keys must not be empty"
        )));
    }
    labels::validate(&container.labels)
        .map_err(|e| e.context(format!("container {id:?} labels")))?;
    if container.runtime.name.is_empty() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: runtime name must be set"
        )));
    }
    if container.spec.is_none() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: spec must be set"
        )));
    }
    if !container.snapshot_key.is_empty() && container.snapshotter.is_empty() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: snapshotter must be set if the snapshot key is set"
        )));
    }
    Ok(())
}

/// The fields an empty mask replaces.
const MUTABLE_FIELDS: [&str; 5] = ["labels", "spec", "extensions", "image", "snapshotkey"];

/// Applies `update` to `current` under a field mask, as containerd's container store does:
/// - no paths: every mutable field (labels, spec, extensions, image, snapshot key) is
///   replaced, and `update` must keep the snapshotter and runtime name, which are immutable;
/// - `labels` / `labels.<key>`: as [`labels::apply_mask`] (an empty value deletes the key);
/// - `extensions` / `extensions.<key>`: the whole map, or one entry (absent in `update`:
///   removed);
/// - `spec`, `image`, `snapshotkey`: that field.
///
/// Any other path (including `runtime` and `snapshotter`) is InvalidArgument. The id and times
/// are left alone; the caller validates the result.
pub fn apply_mask(current: &mut Container, update: &Container, paths: &[String]) -> Result<()> {
    let id = &current.id;
    let defaults: Vec<String>;
    let paths = if paths.is_empty() {
        if update.snapshotter != current.snapshotter {
            return Err(Error::invalid_argument(format!(
                "container {id:?}: the snapshotter is immutable"
            )));
        }
        if update.runtime.name != current.runtime.name {
            return Err(Error::invalid_argument(format!(
                "container {id:?}: the runtime name is immutable"
            )));
        }
        defaults = MUTABLE_FIELDS.iter().map(|p| (*p).to_owned()).collect();
        &defaults[..]
    } else {
        paths
    };
    for path in paths {
        if path == "labels" || path.starts_with("labels.") {
            labels::apply_mask(
                &mut current.labels,
                &update.labels,
                std::slice::from_ref(path),
            );
        } else if let Some(key) = path.strip_prefix("extensions.") {
            match update.extensions.get(key) {
                Some(v) => {
                    current.extensions.insert(key.to_owned(), v.clone());
                }
                None => {
                    current.extensions.remove(key);
                }
            }
        } else {
            match path.as_str() {
                "extensions" => current.extensions = update.extensions.clone(),
                "spec" => current.spec = update.spec.clone(),
                "image" => current.image = update.image.clone(),
                "snapshotkey" => current.snapshot_key = update.snapshot_key.clone(),
                _ => {
                    return Err(Error::invalid_argument(format!(
                        "cannot update {path:?} field on container {:?}",
                        current.id
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The namespaced container store behind the Containers service.
pub trait ContainerStore: Send + Sync {
    /// The namespace's container `id`; NotFound (`container "id" in namespace "ns"`) when
    /// absent.
    fn get(&self, ctx: &RequestContext, id: &str) -> Result<Container>;

    /// The namespace's containers matching `filters`, sorted by id.
    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Container>>;

    /// Records a new container (see [`validate`]), setting both times to now; AlreadyExists
    /// when the id is taken. Creates the namespace if needed.
    fn create(&self, ctx: &RequestContext, container: Container) -> Result<Container>;

    /// Changes container `container.id` under a field mask (see [`apply_mask`]), keeping its
    /// creation time and setting its update time; NotFound when absent.
    fn update(
        &self,
        ctx: &RequestContext,
        container: Container,
        paths: &[String],
    ) -> Result<Container>;

    /// Removes container `id` (NotFound when absent) and asks for a garbage collection, which
    /// frees its snapshot unless something else holds it.
    fn delete(&self, ctx: &RequestContext, id: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn spec(json: &str) -> AnyValue {
        AnyValue::new(RUNTIME_SPEC_TYPE_URL, json.as_bytes())
    }

    fn container() -> Container {
        let mut c = Container::new("web", "io.containerd.runc.v2", spec("{}"));
        c.image = "docker.io/library/busybox:latest".into();
        c.snapshotter = "overlayfs".into();
        c.snapshot_key = "web".into();
        c.labels.insert("tier".into(), "front".into());
        c.extensions
            .insert("ext".into(), AnyValue::new("x.Y", b"1".to_vec()));
        c
    }

    #[test]
    fn filter_fields() {
        let c = container();
        let m = |f: &str| Filters::parse(&[f]).unwrap().matches(&c);
        assert!(m("id==web"));
        assert!(!m("id==db"));
        assert!(m("image~=busybox"));
        assert!(m("runtime.name==io.containerd.runc.v2"));
        assert!(!m("runtime"));
        assert!(m("snapshotter==overlayfs"));
        assert!(m("labels.tier==front"));
        assert!(!m("labels.other"));
        assert!(m("id==web,labels.tier==front"));
        let mut bare = container();
        bare.image.clear();
        assert!(!Filters::parse(&["image"]).unwrap().matches(&bare));
    }

    #[test]
    fn validation() {
        assert!(validate(&container()).is_ok());
        let kind = |c: &Container| validate(c).unwrap_err().kind();
        let mut bad = container();
        bad.id = "bad/id".into();
        assert_eq!(kind(&bad), ErrorKind::InvalidArgument);
        let mut bad = container();
        bad.runtime.name.clear();
        assert_eq!(kind(&bad), ErrorKind::InvalidArgument);
        let mut bad = container();
        bad.spec = None;
        assert_eq!(kind(&bad), ErrorKind::InvalidArgument);
        let mut bad = container();
        bad.snapshotter.clear();
        assert_eq!(kind(&bad), ErrorKind::InvalidArgument);
        bad.snapshot_key.clear();
        assert!(validate(&bad).is_ok(), "no key, no snapshotter needed");
        let mut bad = container();
        bad.extensions.insert(String::new(), AnyValue::default());
        assert_eq!(kind(&bad), ErrorKind::InvalidArgument);
        let mut bad = container();
        bad.labels.insert("k".into(), "v".repeat(4096));
        assert_eq!(kind(&bad), ErrorKind::InvalidArgument);
    }

    #[test]
    fn masks() {
        let mut upd = container();
        upd.labels = Labels::from([("new".into(), "1".into())]);
        upd.spec = Some(spec(r#"{"ociVersion":"1.0.2"}"#));
        upd.image = "alpine".into();
        upd.snapshot_key = "web-2".into();
        upd.extensions = BTreeMap::from([("other".into(), AnyValue::new("a.B", vec![2]))]);

        let mut cur = container();
        apply_mask(&mut cur, &upd, &["labels.new".into(), "labels.tier".into()]).unwrap();
        assert_eq!(cur.labels, upd.labels);
        assert_eq!(cur.image, container().image, "image untouched");

        apply_mask(
            &mut cur,
            &upd,
            &["extensions.other".into(), "extensions.ext".into()],
        )
        .unwrap();
        assert_eq!(cur.extensions, upd.extensions);

        apply_mask(
            &mut cur,
            &upd,
            &["spec".into(), "image".into(), "snapshotkey".into()],
        )
        .unwrap();
        assert_eq!(
            (&cur.spec, &cur.image, &cur.snapshot_key),
            (&upd.spec, &upd.image, &upd.snapshot_key)
        );

        let mut cur = container();
        apply_mask(&mut cur, &upd, &[]).unwrap();
        assert_eq!(cur.labels, upd.labels);
        assert_eq!(cur.extensions, upd.extensions);
        assert_eq!(cur.spec, upd.spec);
        assert_eq!(cur.snapshot_key, upd.snapshot_key);

        for path in ["runtime", "snapshotter", "id", "created_at"] {
            let err = apply_mask(&mut container(), &upd, &[path.into()]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}");
            assert!(err.message().contains(path), "{err}");
        }
        let mut other_runtime = upd.clone();
        other_runtime.runtime.name = "io.berth.v1".into();
        let err = apply_mask(&mut container(), &other_runtime, &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let mut other_snapshotter = upd;
        other_snapshotter.snapshotter = "native".into();
        let err = apply_mask(&mut container(), &other_snapshotter, &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
