//! [`SnapshotStore`]: the namespaced view over the registered [`Snapshotter`] backends.
//!
//! As in containerd's metadata layer, a namespace's snapshot `key` lives in the backend under
//! the key `<ns>/<seq>/<key>` (seq from a counter that only grows), so namespaces never collide
//! and a re-used key never meets a half-removed predecessor. The namespace's own record (backend
//! key, parent, kind, times, labels) is in the `snapshots` table; the backends' labels are not
//! used, except the `containerd.io/snapshot/` ones handed down for the backend's own use.
//!
//! Ordering keeps crashes harmless: the backend creates (or commits) inside the metadata write
//! transaction, so a crash leaves at worst a backend snapshot that no record names, which the
//! next collection or [`SnapshotStore::cleanup`] removes; a removal drops the record first and
//! the backend snapshot after, with the same fallback.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use berth_core::filters::Filters;
use berth_core::labels::{self, Labels};
use berth_core::mount::Mount;
use berth_core::snapshots::{Info, Kind, SnapshotStore, Snapshotter, Usage};
use berth_core::{Error, ErrorKind, Namespace, RequestContext, Result};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Metadata;
use crate::leases::{SNAPSHOTS_KIND_PREFIX, require_lease, resource_key};
use crate::store::{
    self, DbResultExt, LEASE_RESOURCES, META, check_component, encode, ensure_namespace,
    from_nanos, key, to_nanos,
};

/// `<ns>\0<snapshotter>\0<key>` → [`SnapshotRecord`].
pub(crate) const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// `<ns>\0<snapshotter>\0<parent>\0<child>` → (): "has children" is one range probe.
pub(crate) const SNAPSHOT_CHILDREN: TableDefinition<&str, ()> =
    TableDefinition::new("snapshot_children");
/// The `meta` key of the counter that numbers backend keys.
const SEQ_KEY: &str = "snapshot_seq";
/// Labels with this prefix are handed to the backend, as containerd does for remote
/// snapshotters; the others are only the namespace's business.
const INHERITED_LABEL_PREFIX: &str = "containerd.io/snapshot/";

/// A namespace's record of one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    /// The snapshot's key in its backend, `<ns>/<seq>/<key>`.
    pub backend_key: String,
    /// `active`, `view` or `committed`.
    pub kind: String,
    /// The namespace's name of the committed parent.
    #[serde(default)]
    pub parent: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub labels: Labels,
}

impl SnapshotRecord {
    fn kind(&self) -> Result<Kind> {
        self.kind.parse().map_err(|e: Error| {
            Error::data_loss(format!(
                "metadata: snapshot record {:?} has a bad kind",
                self.backend_key
            ))
            .with_source(e)
        })
    }

    fn info(&self, name: &str) -> Result<Info> {
        Ok(Info {
            name: name.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind()?,
            created_at: from_nanos(self.created_at),
            updated_at: from_nanos(self.updated_at),
            labels: self.labels.clone(),
        })
    }
}

/// Creates the snapshot tables, so read transactions can open them unconditionally.
pub(crate) fn create_tables(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write().db("begin snapshot table creation")?;
    txn.open_table(SNAPSHOTS).db("create table snapshots")?;
    txn.open_table(SNAPSHOT_CHILDREN)
        .db("create table snapshot_children")?;
    txn.commit().db("commit snapshot table creation")
}

fn record_key(ns: &str, snapshotter: &str, name: &str) -> String {
    key(&[ns, snapshotter, name])
}

fn child_key(ns: &str, snapshotter: &str, parent: &str, child: &str) -> String {
    key(&[ns, snapshotter, parent, child])
}

fn not_found(ns: &Namespace, name: &str) -> Error {
    Error::not_found(format!(
        "snapshot {name:?} does not exist in namespace {ns}"
    ))
}

fn inherited(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with(INHERITED_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The next backend key for `name` in `ns`.
fn next_backend_key(txn: &WriteTransaction, ns: &Namespace, name: &str) -> Result<String> {
    let mut meta = txn.open_table(META).db("open table meta")?;
    let seq = meta
        .get(SEQ_KEY)
        .db("read snapshot sequence")?
        .map_or(0, |v| v.value())
        + 1;
    meta.insert(SEQ_KEY, seq).db("write snapshot sequence")?;
    Ok(format!("{ns}/{seq}/{name}"))
}

/// Keeps the backend's name for a snapshot out of errors the namespace sees.
fn rename_backend_error(err: Error, backend_key: &str, name: &str) -> Error {
    if err.to_string().contains(backend_key) {
        // The rewritten message keeps what the cause said, so the cause is not kept as well.
        Error::new(
            err.kind(),
            err.to_string().replace(backend_key, name).as_str(),
        )
    } else {
        err
    }
}

fn read_record(
    txn: &ReadTransaction,
    ns: &Namespace,
    snapshotter: &str,
    name: &str,
) -> Result<SnapshotRecord> {
    let table = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
    store::get(
        &table,
        &record_key(ns.as_str(), snapshotter, name),
        "snapshot",
    )?
    .ok_or_else(|| not_found(ns, name))
}

/// Adds (or with `add == false` drops) resource `snapshots/<snapshotter>`/`id` of `ctx`'s lease.
fn lease_resource(
    txn: &WriteTransaction,
    ctx: &RequestContext,
    snapshotter: &str,
    id: &str,
    add: bool,
) -> Result<()> {
    let Some(lease) = &ctx.lease else {
        return Ok(());
    };
    let ns = &ctx.namespace;
    let kind = format!("{SNAPSHOTS_KIND_PREFIX}{snapshotter}");
    let k = resource_key(ns, lease, &kind, id);
    let mut resources = txn
        .open_table(LEASE_RESOURCES)
        .db("open table lease_resources")?;
    if add {
        require_lease(txn, ns, lease)?;
        resources
            .insert(k.as_str(), ())
            .db(format!("add snapshot {id:?} to lease {lease}"))?;
    } else {
        resources
            .remove(k.as_str())
            .db(format!("drop snapshot {id:?} from lease {lease}"))?;
    }
    Ok(())
}

impl Metadata {
    /// Registers the backend `name` (`"overlayfs"`, `"native"`): from now on the Snapshots
    /// service serves it and garbage collection sweeps it. The backend belongs to this store
    /// from then on: anything in it that no namespace records is removed as garbage.
    pub fn add_snapshotter(&self, name: &str, backend: Arc<dyn Snapshotter>) -> Result<()> {
        check_component("snapshotter name", name)?;
        if name.contains('/') {
            // `/` ends the snapshotter in `containerd.io/gc.ref.snapshot.<name>/…` labels.
            return Err(Error::invalid_argument(format!(
                "snapshotter name {name:?} must not contain '/'"
            )));
        }
        let mut backends = self
            .snapshotters
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if backends.contains_key(name) {
            return Err(Error::already_exists(format!(
                "snapshotter {name} is already registered"
            )));
        }
        backends.insert(name.to_owned(), backend);
        Ok(())
    }

    /// The backend `name`, InvalidArgument when none is registered under it.
    fn backend(&self, name: &str) -> Result<Arc<dyn Snapshotter>> {
        self.snapshotters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::invalid_argument(format!("snapshotter not loaded: {name}")))
    }

    /// Every registered backend, by name.
    pub(crate) fn backends(&self) -> BTreeMap<String, Arc<dyn Snapshotter>> {
        self.snapshotters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The backend keys of `snapshotter` that some namespace records.
    pub(crate) fn recorded_backend_keys(&self, snapshotter: &str) -> Result<BTreeSet<String>> {
        let records: Vec<(String, SnapshotRecord)> = self.read(|txn| {
            let table = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
            store::scan_all(&table, "snapshot")
        })?;
        Ok(records
            .into_iter()
            .filter(|(k, _)| k.split('\0').nth(1) == Some(snapshotter))
            .map(|(_, r)| r.backend_key)
            .collect())
    }

    /// Removes every snapshot of `backend` whose key is not in `recorded`, children before
    /// parents, and returns how many went. Failures are logged and leave the snapshot (and so
    /// its ancestors) for the next sweep. The caller holds the GC lock exclusively, so no
    /// snapshot is being created meanwhile.
    pub(crate) fn sweep_backend(
        name: &str,
        backend: &dyn Snapshotter,
        recorded: &BTreeSet<String>,
    ) -> Result<u64> {
        let all = backend
            .list(&Filters::all())
            .map_err(|e| e.context(format!("gc: list snapshotter {name}")))?;
        let mut children: HashMap<String, usize> = HashMap::new();
        for info in &all {
            if let Some(parent) = &info.parent {
                *children.entry(parent.clone()).or_default() += 1;
            }
        }
        let mut doomed: BTreeMap<String, Option<String>> = all
            .into_iter()
            .filter(|info| !recorded.contains(&info.name))
            .map(|info| (info.name, info.parent))
            .collect();
        let mut removed = 0;
        loop {
            let leaves: Vec<String> = doomed
                .keys()
                .filter(|k| children.get(*k).copied().unwrap_or(0) == 0)
                .cloned()
                .collect();
            if leaves.is_empty() {
                break;
            }
            for leaf in leaves {
                let parent = doomed.remove(&leaf).flatten();
                match backend.remove(&leaf) {
                    Ok(()) => {}
                    Err(e) if e.is(ErrorKind::NotFound) => {}
                    Err(e) => {
                        tracing::warn!(snapshotter = name, key = %leaf, error = %e, "gc: removing a snapshot");
                        continue;
                    }
                }
                removed += 1;
                tracing::debug!(snapshotter = name, key = %leaf, "gc: removed snapshot");
                if let Some(count) = parent.and_then(|p| children.get_mut(&p)) {
                    *count = count.saturating_sub(1);
                }
            }
        }
        if !doomed.is_empty() {
            tracing::warn!(
                snapshotter = name,
                left = doomed.len(),
                "gc: snapshots no namespace records are still held by others"
            );
        }
        Ok(removed)
    }

    /// Creates an active or view snapshot.
    fn create_snapshot(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        kind: Kind,
        name: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let backend = self.backend(snapshotter)?;
        check_component("snapshot key", name)?;
        if let Some(parent) = parent {
            check_component("snapshot parent", parent)?;
        }
        labels::validate(&labels)?;
        let ns = &ctx.namespace;
        // Shared with other changes, exclusive with a sweep, which would take the backend
        // snapshot made here for an orphan before its record commits.
        let _shared = self.gc_lock.read().unwrap_or_else(PoisonError::into_inner);
        // Made under a lease that expires, a snapshot is provisional (as are the files written
        // into it, which nobody syncs) until something durable holds it: its container's
        // record, a commit, or any later durable commit, which flushes this one too. A crash
        // before then loses the record as the lease's expiry would have, and Cleanup removes
        // the directory. Outside such a lease it is flushed now.
        let provisional = match &ctx.lease {
            Some(lease) => self.lease_expires(ns.as_str(), lease)?,
            None => false,
        };
        let mut made: Option<String> = None;
        let result = self.write_lazily_if(provisional, |txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
            let rk = record_key(ns.as_str(), snapshotter, name);
            if table.get(rk.as_str()).db("read snapshot")?.is_some() {
                return Err(Error::already_exists(format!(
                    "snapshot {name:?} already exists in namespace {ns}"
                )));
            }
            let backend_parent = match parent {
                None => None,
                Some(p) => {
                    let record: SnapshotRecord =
                        store::get(&table, &record_key(ns.as_str(), snapshotter, p), "snapshot")?
                            .ok_or_else(|| {
                            Error::not_found(format!(
                                "parent snapshot {p:?} does not exist in namespace {ns}"
                            ))
                        })?;
                    if record.kind()? != Kind::Committed {
                        return Err(Error::failed_precondition(format!(
                            "parent snapshot {p:?} is not committed"
                        )));
                    }
                    Some(record.backend_key)
                }
            };
            lease_resource(txn, ctx, snapshotter, name, true)?;
            let backend_key = next_backend_key(txn, ns, name)?;
            let now = to_nanos(SystemTime::now());
            let record = SnapshotRecord {
                backend_key: backend_key.clone(),
                kind: kind.as_str().to_owned(),
                parent: parent.map(str::to_owned),
                created_at: now,
                updated_at: now,
                labels: labels.clone(),
            };
            let value = encode(&record, "snapshot")?;
            table
                .insert(rk.as_str(), value.as_slice())
                .db(format!("record snapshot {name:?} in namespace {ns}"))?;
            if let Some(p) = parent {
                let mut children = txn
                    .open_table(SNAPSHOT_CHILDREN)
                    .db("open table snapshot_children")?;
                children
                    .insert(child_key(ns.as_str(), snapshotter, p, name).as_str(), ())
                    .db("record snapshot child")?;
            }
            let inherited = inherited(&labels);
            let mounts = match kind {
                Kind::View => backend.view(&backend_key, backend_parent.as_deref(), inherited),
                _ => backend.prepare(&backend_key, backend_parent.as_deref(), inherited),
            }
            .map_err(|e| rename_backend_error(e, &backend_key, name))?;
            made = Some(backend_key);
            Ok(mounts)
        });
        if result.is_err()
            && let Some(backend_key) = made
        {
            // The backend made it but the record did not commit: nothing names it now.
            if let Err(e) = backend.remove(&backend_key) {
                tracing::warn!(key = %backend_key, error = %e, "metadata: removing an unrecorded snapshot; cleanup will retry");
            }
        }
        result.map_err(|e| {
            e.context(format!(
                "{} snapshot {name:?}",
                if kind == Kind::View {
                    "view"
                } else {
                    "prepare"
                }
            ))
        })
    }
}

impl SnapshotStore for Metadata {
    fn snapshotters(&self) -> Vec<String> {
        self.backends().into_keys().collect()
    }

    fn stat(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Info> {
        self.backend(snapshotter)?;
        check_component("snapshot key", key)?;
        self.read(|txn| read_record(txn, &ctx.namespace, snapshotter, key))?
            .info(key)
    }

    fn update(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        info: Info,
        paths: &[String],
    ) -> Result<Info> {
        self.backend(snapshotter)?;
        let name = info.name.as_str();
        check_component("snapshot name", name)?;
        let ns = &ctx.namespace;
        let record = self.write(|txn| {
            let mut table = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
            let rk = record_key(ns.as_str(), snapshotter, name);
            let mut record: SnapshotRecord =
                store::get(&table, &rk, "snapshot")?.ok_or_else(|| not_found(ns, name))?;
            let others = labels::apply_mask(&mut record.labels, &info.labels, paths);
            if let Some(path) = others.first() {
                return Err(Error::invalid_argument(format!(
                    "cannot update {path:?} field on snapshot {name:?}"
                )));
            }
            labels::validate(&record.labels)?;
            record.updated_at = to_nanos(SystemTime::now()).max(record.updated_at);
            let value = encode(&record, "snapshot")?;
            table
                .insert(rk.as_str(), value.as_slice())
                .db(format!("update snapshot {name:?} in namespace {ns}"))?;
            Ok(record)
        })?;
        record.info(name)
    }

    fn usage(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Usage> {
        let backend = self.backend(snapshotter)?;
        check_component("snapshot key", key)?;
        let record = self.read(|txn| read_record(txn, &ctx.namespace, snapshotter, key))?;
        backend
            .usage(&record.backend_key)
            .map_err(|e| rename_backend_error(e, &record.backend_key, key))
    }

    fn mounts(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<Vec<Mount>> {
        let backend = self.backend(snapshotter)?;
        check_component("snapshot key", key)?;
        let record = self.read(|txn| read_record(txn, &ctx.namespace, snapshotter, key))?;
        backend
            .mounts(&record.backend_key)
            .map_err(|e| rename_backend_error(e, &record.backend_key, key))
    }

    fn prepare(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create_snapshot(ctx, snapshotter, Kind::Active, key, parent, labels)
    }

    fn view(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create_snapshot(ctx, snapshotter, Kind::View, key, parent, labels)
    }

    fn commit(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: Labels,
    ) -> Result<()> {
        let backend = self.backend(snapshotter)?;
        check_component("snapshot name", name)?;
        check_component("snapshot key", key)?;
        labels::validate(&labels)?;
        let ns = &ctx.namespace;
        let _shared = self.gc_lock.read().unwrap_or_else(PoisonError::into_inner);
        self.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
            let active_key = record_key(ns.as_str(), snapshotter, key);
            let active: SnapshotRecord =
                store::get(&table, &active_key, "snapshot")?.ok_or_else(|| not_found(ns, key))?;
            if active.kind()? != Kind::Active {
                return Err(Error::failed_precondition(format!(
                    "snapshot {key:?} is {}, only an active snapshot can be committed",
                    active.kind
                )));
            }
            let committed_key = record_key(ns.as_str(), snapshotter, name);
            if table
                .get(committed_key.as_str())
                .db("read snapshot")?
                .is_some()
            {
                return Err(Error::already_exists(format!(
                    "snapshot {name:?} already exists in namespace {ns}"
                )));
            }
            lease_resource(txn, ctx, snapshotter, name, true)?;
            lease_resource(txn, ctx, snapshotter, key, false)?;
            let backend_key = next_backend_key(txn, ns, name)?;
            let now = to_nanos(SystemTime::now());
            let record = SnapshotRecord {
                backend_key: backend_key.clone(),
                kind: Kind::Committed.as_str().to_owned(),
                parent: active.parent.clone(),
                created_at: now,
                updated_at: now,
                labels: labels.clone(),
            };
            table
                .remove(active_key.as_str())
                .db(format!("drop active snapshot {key:?} in namespace {ns}"))?;
            let value = encode(&record, "snapshot")?;
            table
                .insert(committed_key.as_str(), value.as_slice())
                .db(format!("record snapshot {name:?} in namespace {ns}"))?;
            if let Some(p) = &active.parent {
                let mut children = txn
                    .open_table(SNAPSHOT_CHILDREN)
                    .db("open table snapshot_children")?;
                children
                    .remove(child_key(ns.as_str(), snapshotter, p, key).as_str())
                    .db("drop snapshot child")?;
                children
                    .insert(child_key(ns.as_str(), snapshotter, p, name).as_str(), ())
                    .db("record snapshot child")?;
            }
            backend
                .commit(&backend_key, &active.backend_key, inherited(&labels))
                .map_err(|e| {
                    let e = rename_backend_error(e, &active.backend_key, key);
                    rename_backend_error(e, &backend_key, name)
                })
        })
        .map_err(|e| e.context(format!("commit snapshot {key:?} as {name:?}")))
    }

    fn remove(&self, ctx: &RequestContext, snapshotter: &str, key: &str) -> Result<()> {
        let backend = self.backend(snapshotter)?;
        check_component("snapshot key", key)?;
        let ns = &ctx.namespace;
        let _shared = self.gc_lock.read().unwrap_or_else(PoisonError::into_inner);
        let backend_key = self.write(|txn| {
            let mut table = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
            let rk = record_key(ns.as_str(), snapshotter, key);
            let record: SnapshotRecord =
                store::get(&table, &rk, "snapshot")?.ok_or_else(|| not_found(ns, key))?;
            let mut children = txn
                .open_table(SNAPSHOT_CHILDREN)
                .db("open table snapshot_children")?;
            if store::any_under(
                &children,
                &[ns.as_str(), snapshotter, key],
                "snapshot children",
            )? {
                return Err(Error::failed_precondition(format!(
                    "cannot remove snapshot {key:?}: it has children"
                )));
            }
            table
                .remove(rk.as_str())
                .db(format!("remove snapshot {key:?} in namespace {ns}"))?;
            if let Some(p) = &record.parent {
                children
                    .remove(child_key(ns.as_str(), snapshotter, p, key).as_str())
                    .db("drop snapshot child")?;
            }
            if ctx.lease.is_some() {
                lease_resource(txn, ctx, snapshotter, key, false)?;
            }
            Ok(record.backend_key)
        })?;
        // The record is gone, so the snapshot is; what the backend cannot remove now is an
        // orphan for the next collection or cleanup, not the caller's problem.
        match backend.remove(&backend_key) {
            Ok(()) => {}
            Err(e) if e.is(ErrorKind::NotFound) => {}
            Err(e) => tracing::warn!(
                snapshotter,
                key = %backend_key,
                error = %e,
                "metadata: removing a snapshot from its backend; garbage collection will retry"
            ),
        }
        Ok(())
    }

    fn list(
        &self,
        ctx: &RequestContext,
        snapshotter: &str,
        filters: &Filters,
    ) -> Result<Vec<Info>> {
        self.backend(snapshotter)?;
        let records: Vec<(String, SnapshotRecord)> = self.read(|txn| {
            let table = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
            store::scan(&table, &[ctx.namespace.as_str(), snapshotter], "snapshot")
        })?;
        let mut out = Vec::with_capacity(records.len());
        for (name, record) in records {
            let info = record.info(&name)?;
            if filters.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn cleanup(&self, _ctx: &RequestContext, snapshotter: &str) -> Result<()> {
        let backend = self.backend(snapshotter)?;
        // Exclusive: no snapshot is between its backend creation and its record.
        let _exclusive = self.gc_lock.write().unwrap_or_else(PoisonError::into_inner);
        let recorded = self.recorded_backend_keys(snapshotter)?;
        let removed = Self::sweep_backend(snapshotter, &*backend, &recorded)?;
        if removed > 0 {
            tracing::info!(
                snapshotter,
                removed,
                "cleanup: removed snapshots no namespace records"
            );
        }
        backend
            .cleanup()
            .map_err(|e| e.context(format!("cleanup snapshotter {snapshotter}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_stay_out_of_errors() {
        let e = Error::not_found("snapshot \"default/7/k\" does not exist");
        let renamed = rename_backend_error(e, "default/7/k", "k");
        assert_eq!(renamed.kind(), ErrorKind::NotFound);
        assert_eq!(renamed.to_string(), "snapshot \"k\" does not exist");
        let other = rename_backend_error(Error::internal("disk on fire"), "default/7/k", "k");
        assert_eq!(other.to_string(), "disk on fire");
    }

    #[test]
    fn only_snapshot_labels_are_inherited() {
        let l = Labels::from([
            ("containerd.io/snapshot/remote".to_owned(), "1".to_owned()),
            ("containerd.io/gc.root".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(inherited(&l).len(), 1);
        assert!(inherited(&l).contains_key("containerd.io/snapshot/remote"));
    }

    #[test]
    fn record_kinds_round_trip() {
        let r = SnapshotRecord {
            backend_key: "ns/1/k".into(),
            kind: "committed".into(),
            parent: Some("p".into()),
            created_at: 1,
            updated_at: 2,
            labels: Labels::new(),
        };
        let info = r.info("k").unwrap();
        assert_eq!(info.kind, Kind::Committed);
        assert_eq!(info.parent.as_deref(), Some("p"));
        let bad = SnapshotRecord {
            kind: "weird".into(),
            ..r
        };
        assert_eq!(bad.info("k").unwrap_err().kind(), ErrorKind::DataLoss);
    }
}
