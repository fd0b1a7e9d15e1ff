//! Snapshots: layered filesystem states, and the [`Snapshotter`] trait that manages them.
//!
//! Backends (overlay, native) implement [`Snapshotter`]; the metadata layer puts namespaces in
//! front of them as one [`SnapshotStore`], which the Snapshots service adapts to the wire.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::filters::{Adaptor, Filters, label_field};
use crate::labels::Labels;
use crate::mount::Mount;
use crate::{Error, RequestContext, Result};

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only snapshot made by [`Snapshotter::view`]; it can never be committed.
    View,
    /// A writable snapshot made by [`Snapshotter::prepare`], waiting to be committed or removed.
    Active,
    /// An immutable snapshot made by [`Snapshotter::commit`]; the only kind that can be a parent.
    Committed,
}

impl Kind {
    /// The lower-case name filters compare against (`kind==active`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    /// containerd's wire number (`KIND_VIEW = 1`, `KIND_ACTIVE = 2`, `KIND_COMMITTED = 3`).
    pub fn as_proto(self) -> i32 {
        match self {
            Kind::View => 1,
            Kind::Active => 2,
            Kind::Committed => 3,
        }
    }

    /// The kind with wire number `n`, `None` for 0 (unknown) or anything else.
    pub fn from_proto(n: i32) -> Option<Self> {
        match n {
            1 => Some(Kind::View),
            2 => Some(Kind::Active),
            3 => Some(Kind::Committed),
            _ => None,
        }
    }
}

/// Capitalised like containerd's `Kind.String()`, which `ctr snapshots ls` prints.
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::View => "View",
            Kind::Active => "Active",
            Kind::Committed => "Committed",
        })
    }
}

impl FromStr for Kind {
    type Err = Error;

    /// Parses `view`, `active` or `committed`, ignoring case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "view" => Ok(Kind::View),
            "active" => Ok(Kind::Active),
            "committed" => Ok(Kind::Committed),
            _ => Err(Error::invalid_argument(format!(
                "unknown snapshot kind {s:?}"
            ))),
        }
    }
}

/// What a snapshotter knows about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key of an active or view snapshot, or the name of a committed one.
    pub name: String,
    /// The committed snapshot this one descends from; `None` for the empty parent.
    pub parent: Option<String>,
    /// The snapshot's kind.
    pub kind: Kind,
    /// When the snapshot was created (for a committed snapshot: when it was committed).
    pub created_at: SystemTime,
    /// When the snapshot's record last changed.
    pub updated_at: SystemTime,
    /// The snapshot's labels (GC references, `containerd.io/snapshot.ref`, ...).
    pub labels: Labels,
}

/// Filter fields: `name`, `parent`, `kind` (`active`, `view`, `committed`) and `labels.<key>`.
/// `parent` is present (possibly empty) on every snapshot, as in containerd.
impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first().map(String::as_str)?, path.len()) {
            ("name", 1) => Some(self.name.clone()),
            ("parent", 1) => Some(self.parent.clone().unwrap_or_default()),
            ("kind", 1) => Some(self.kind.as_str().to_owned()),
            ("labels", _) => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// The disk a snapshot's own files take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes used.
    pub size: u64,
    /// Inodes used.
    pub inodes: u64,
}

impl Usage {
    /// Adds `other`; inodes are assumed distinct, which makes the sum an upper bound.
    pub fn add(&mut self, other: Usage) {
        self.size = self.size.saturating_add(other.size);
        self.inodes = self.inodes.saturating_add(other.inodes);
    }
}

/// Refuses an empty key, name or parent: every snapshot is addressed by a non-empty string.
pub fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument(format!(
            "snapshot {what} must not be empty"
        )));
    }
    Ok(())
}

/// Manages filesystem snapshots that build on each other, the way containerd's snapshotters do.
///
/// A snapshot is a filesystem state. Each one descends from a *parent* (or from the empty
/// parent, an empty directory); the difference between a snapshot and its parent is what an
/// image layer holds. The snapshotter hands out [`Mount`]s rather than paths: mounting them
/// somewhere shows the snapshot's whole tree there, parents included.
///
/// # Terms
///
/// - **key**: the identifier of an active or view snapshot, chosen by the caller.
/// - **name**: the identifier of a committed snapshot, chosen by the caller at commit time
///   (image layers use their chainID).
/// - **parent**: the name of the committed snapshot a new snapshot descends from.
///
/// Keys and names share one space: an active snapshot cannot use the name of a committed one,
/// nor the other way round. Every method that takes a "key" also accepts a name where it makes
/// sense ([`stat`](Self::stat), [`usage`](Self::usage), [`remove`](Self::remove),
/// [`update`](Self::update)).
///
/// # Kinds
///
/// - [`Kind::Active`]: made by [`prepare`](Self::prepare); its mounts are writable; it can be
///   committed.
/// - [`Kind::View`]: made by [`view`](Self::view); its mounts are read-only; it can never be
///   committed.
/// - [`Kind::Committed`]: made by [`commit`](Self::commit); immutable; the only kind that can be
///   a parent, and it has no mounts of its own (take a view of it instead).
///
/// # Lifecycle
///
/// `prepare` (or `view`) creates a snapshot under a key on top of a committed parent and
/// returns its mounts. The caller mounts them and changes files (active only). `commit` turns
/// the active snapshot into a committed one under a name, with the same parent, and the key
/// ceases to exist. `remove` deletes any snapshot that no other snapshot names as its parent,
/// children first. Snapshots never change kind in any other way.
///
/// # Errors
///
/// - `InvalidArgument`: an empty key, name or parent, or an update of a field other than labels.
/// - `NotFound`: the key, name or parent does not exist.
/// - `AlreadyExists`: the key or name is taken.
/// - `FailedPrecondition`: removing a snapshot that has children, committing something that is
///   not active, asking for the mounts of a committed snapshot, or a parent that is not committed.
///
/// # Example: unpacking two layers and preparing a container's rootfs
///
/// ```text
/// // Layer 1: an active snapshot on the empty parent, keyed for extraction.
/// let mounts = sn.prepare("extract-1 sha256:c1", None, labels)?;
/// // mount `mounts` on a temporary directory, untar layer 1 into it, unmount.
/// sn.commit("sha256:c1", "extract-1 sha256:c1", labels)?;   // the key is gone now
///
/// // Layer 2: the same on top of layer 1's chainID.
/// let mounts = sn.prepare("extract-2 sha256:c2", Some("sha256:c1"), labels)?;
/// // untar layer 2 (whiteouts delete what layer 1 had), then:
/// sn.commit("sha256:c2", "extract-2 sha256:c2", labels)?;
///
/// // The container: a writable snapshot keyed by the container id on the top chainID.
/// let rootfs = sn.prepare("web", Some("sha256:c2"), Labels::new())?;
/// // the runtime mounts `rootfs` (later: sn.mounts("web")) as the container's root.
///
/// // When the container is gone, its changes are dropped; layers go children first.
/// sn.remove("web")?;
/// sn.remove("sha256:c2")?;
/// sn.remove("sha256:c1")?;
/// ```
pub trait Snapshotter: Send + Sync {
    /// The snapshot with key or name `key`.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Updates a snapshot's labels under a field mask (see [`crate::labels::apply_mask`]);
    /// `info.name` says which snapshot. Any path other than `labels` or `labels.<key>` is
    /// InvalidArgument. Returns the updated record.
    fn update(&self, info: Info, paths: &[String]) -> Result<Info>;

    /// The disk the snapshot's own files take: not its parents' layers (though a copy-based
    /// backend's snapshot holds a copy of them). For an active snapshot this walks its files
    /// now; for a committed one it is what was recorded at commit.
    fn usage(&self, key: &str) -> Result<Usage>;

    /// The mounts of an active or view snapshot, as `prepare`/`view` returned them.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Creates a writable snapshot `key` on top of the committed `parent` (`None`: empty).
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;

    /// Creates a read-only snapshot `key` showing the committed `parent` (`None`: empty).
    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;

    /// Commits the active snapshot `key` as `name` with `labels` (labels are not inherited from
    /// the active snapshot), recording its usage. `key` no longer exists afterwards.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;

    /// Removes snapshot `key` and its files; FailedPrecondition while it has children.
    fn remove(&self, key: &str) -> Result<()>;

    /// Every snapshot that matches `filters`.
    fn list(&self, filters: &Filters) -> Result<Vec<Info>>;

    /// Removes files that no snapshot owns, e.g. what a crash left half-made.
    fn cleanup(&self) -> Result<()>;
}

/// The namespaced view of every snapshotter the daemon runs: what the Snapshots service serves.
///
/// Each method is the [`Snapshotter`] method of the same name, acting in `ctx.namespace` on the
/// backend named `snapshotter` (`"overlayfs"`, `"native"`). Keys and names are per namespace:
/// two namespaces may both have a snapshot `k`, and neither sees the other's. A parent must be
/// one of the namespace's own committed snapshots (NotFound otherwise). When `ctx.lease` is
/// set, [`prepare`](Self::prepare), [`view`](Self::view) and [`commit`](Self::commit) attach the
/// new snapshot to that lease as a `snapshots/<snapshotter>` resource.
///
/// An empty or unknown `snapshotter` is InvalidArgument (`snapshotter not loaded: <name>`).
pub trait SnapshotStore: Send + Sync {
    /// The names of the loaded snapshotters, sorted.
    fn snapshotters(&self) -> Vec<String>;

    /// The namespace's snapshot `key` (a key or a committed name).
    fn stat(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Info>;

    /// Updates the labels of the namespace's snapshot `info.name` under a field mask.
    fn update(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        info: Info,
        paths: &[String],
    ) -> Result<Info>;

    /// The disk the namespace's snapshot `key` takes (see [`Snapshotter::usage`]).
    fn usage(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Usage>;

    /// The mounts of the namespace's active or view snapshot `key`.
    fn mounts(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Vec<Mount>>;

    /// Creates a writable snapshot `key` on the namespace's committed `parent`.
    fn prepare(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>>;

    /// Creates a read-only snapshot `key` of the namespace's committed `parent`.
    fn view(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>>;

    /// Commits the namespace's active snapshot `key` as `name`.
    fn commit(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: Labels,
    ) -> Result<()>;

    /// Removes the namespace's snapshot `key`; FailedPrecondition while it has children.
    fn remove(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<()>;

    /// The namespace's snapshots matching `filters`.
    fn list(&self, ctx: &RequestContext, snapshotter: &str, filters: &Filters)
    -> Result<Vec<Info>>;

    /// Removes what the snapshotter holds that no namespace's snapshot owns (what a crash left
    /// half-made), then runs the backend's own [`Snapshotter::cleanup`].
    fn cleanup(&self, ctx: &RequestContext, snapshotter: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info {
            name: "a".into(),
            parent: None,
            kind: Kind::Active,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            labels: Labels::from([("x.y".into(), "1".into())]),
        }
    }

    #[test]
    fn filter_fields() {
        let m = |f: &str| Filters::parse(&[f]).unwrap().matches(&info());
        assert!(m("kind==active"));
        assert!(!m("kind==committed"));
        assert!(m("name==a"));
        assert!(m("parent"));
        assert!(m("labels.x.y==1"));
        assert!(!m("labels.z"));
    }

    #[test]
    fn kind_names() {
        for k in [Kind::View, Kind::Active, Kind::Committed] {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
            assert_eq!(k.to_string().parse::<Kind>().unwrap(), k);
            assert_eq!(Kind::from_proto(k.as_proto()), Some(k));
        }
        assert!("unknown".parse::<Kind>().is_err());
        assert_eq!(Kind::from_proto(0), None);
    }
}
