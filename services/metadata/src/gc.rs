//! [`GarbageCollector`]: containerd's mark and sweep, per namespace, and the debounced
//! background collector.
//!
//! Roots: every lease that has not expired (label `containerd.io/gc.expire`, RFC 3339, in the
//! past means expired) with all its resources; every content record and snapshot labelled
//! `containerd.io/gc.root`; every image (its target digest and the references in its own labels);
//! every container (its snapshot `<snapshotter>/<snapshot_key>` and the references in its own
//! labels); whatever the registered [`RootSource`]s name. Edges, all within one
//! namespace: `containerd.io/gc.ref.content*` labels (on content or snapshots) name content;
//! `containerd.io/gc.ref.snapshot.<snapshotter>[/…]` labels name that snapshotter's snapshot by
//! key; a snapshot references its parent. Snapshots that a lease labelled `containerd.io/gc.flat`
//! holds keep their parents but their labels are not followed.
//!
//! Sweep: unreached content and snapshot records go; then every blob no namespace records leaves
//! the raw store; then every ingest whose namespace ref no live lease holds (and no writer has
//! open); expired leases themselves; and last every backend snapshot no namespace records,
//! children first, followed by the backend's own cleanup.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{PoisonError, Weak};
use std::time::{Duration, Instant};

use berth_core::gc::{GarbageCollector, GcStats, REF_SNAPSHOT_PREFIX, ROOT_LABEL};
use berth_core::labels::Labels;
use berth_core::leases::{EXPIRE_LABEL, FLAT_LABEL};
use berth_core::{Digest, ErrorKind, Namespace, Result};
use chrono::{DateTime, Utc};
use redb::ReadableTable;

use crate::content::CONTENT_KIND;
use crate::leases::{INGESTS_KIND, SNAPSHOTS_KIND_PREFIX, remove_resources};
use crate::snapshots::{SNAPSHOT_CHILDREN, SNAPSHOTS, SnapshotRecord};
use crate::store::{
    CONTENT, ContentRecord, DbResultExt, LEASE_RESOURCES, LEASES, LeaseRecord, key, scan_all,
};
use crate::{Metadata, content_refs};

/// A source of GC roots for one namespace: the digests it returns are kept, with everything
/// they reference. See [`Metadata::add_root_source`].
pub type RootSource = Box<dyn Fn(&Namespace) -> Result<Vec<Digest>> + Send + Sync>;

/// What the mark phase decided, for the sweep of the raw store.
struct Marked {
    /// Every digest some namespace still records.
    held: HashSet<Digest>,
    /// Raw ingest refs held by a live lease.
    live_ingests: HashSet<String>,
}

/// A node of one namespace's reference graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Content(Digest),
    /// A snapshot: (snapshotter, key).
    Snapshot(String, String),
}

/// One namespace's content and snapshot records and its roots; a root's flag says whether its
/// label references are followed (not for snapshots of a flat lease).
#[derive(Default)]
struct NsGraph {
    records: HashMap<Digest, Labels>,
    snapshots: HashMap<(String, String), SnapshotRecord>,
    roots: Vec<(Node, bool)>,
}

/// The snapshots `labels` reference: `containerd.io/gc.ref.snapshot.<snapshotter>[/…]=<key>`.
fn snapshot_refs(labels: &Labels) -> impl Iterator<Item = (String, String)> + '_ {
    labels.iter().filter_map(|(k, v)| {
        let rest = k.strip_prefix(REF_SNAPSHOT_PREFIX)?;
        let snapshotter = rest.split('/').next()?;
        (!snapshotter.is_empty() && !v.is_empty()).then(|| (snapshotter.to_owned(), v.clone()))
    })
}

/// The nodes `labels` reference.
fn label_refs(labels: &Labels) -> impl Iterator<Item = (Node, bool)> + '_ {
    content_refs(labels)
        .map(|d| (Node::Content(d), true))
        .chain(snapshot_refs(labels).map(|(s, k)| (Node::Snapshot(s, k), true)))
}

impl NsGraph {
    /// Marks everything reachable from the roots: the content digests and, per snapshot, whether
    /// its labels were followed.
    fn mark(&mut self) -> (HashSet<Digest>, HashMap<(String, String), bool>) {
        let mut content = HashSet::new();
        let mut snapshots: HashMap<(String, String), bool> = HashMap::new();
        let mut pending = std::mem::take(&mut self.roots);
        while let Some((node, follow)) = pending.pop() {
            match node {
                Node::Content(digest) => {
                    if let Some(labels) = self.records.get(&digest)
                        && content.insert(digest)
                    {
                        pending.extend(label_refs(labels));
                    }
                }
                Node::Snapshot(snapshotter, key) => {
                    let id = (snapshotter, key);
                    let Some(record) = self.snapshots.get(&id) else {
                        continue;
                    };
                    match snapshots.get(&id) {
                        Some(true) => continue,
                        Some(false) if !follow => continue,
                        _ => {}
                    }
                    if let Some(parent) = &record.parent {
                        pending.push((Node::Snapshot(id.0.clone(), parent.clone()), follow));
                    }
                    if follow {
                        pending.extend(label_refs(&record.labels));
                    }
                    snapshots.insert(id, follow);
                }
            }
        }
        (content, snapshots)
    }
}

/// Whether a lease's `containerd.io/gc.expire` label lies before `now`.
fn is_expired(id: &str, labels: &Labels, now: DateTime<Utc>) -> bool {
    let Some(value) = labels.get(EXPIRE_LABEL) else {
        return false;
    };
    match DateTime::parse_from_rfc3339(value) {
        Ok(expire) => expire < now,
        Err(e) => {
            // containerd keeps a lease whose expiry it cannot read.
            tracing::warn!(lease = id, value, error = %e, "metadata: unreadable lease expiry");
            false
        }
    }
}

impl Metadata {
    /// Marks in one write transaction and removes unreached records and expired leases there.
    fn mark_and_sweep_records(&self, stats: &mut GcStats) -> Result<Marked> {
        let sources = self
            .root_sources
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Utc::now();
        self.write_if_changed(|txn| {
            // Most collections find nothing: their transaction is then rolled back unflushed.
            let mut changed = false;
            let mut by_ns: BTreeMap<String, NsGraph> = BTreeMap::new();
            let mut content = txn.open_table(CONTENT).db("open table content")?;
            for (k, record) in scan_all::<_, ContentRecord>(&content, "content")? {
                let parsed = k
                    .split_once('\0')
                    .and_then(|(ns, d)| Some((ns, Digest::parse(d).ok()?)));
                let Some((ns, digest)) = parsed else {
                    tracing::warn!(key = %k, "metadata: skipping malformed content record");
                    continue;
                };
                by_ns
                    .entry(ns.to_owned())
                    .or_default()
                    .records
                    .insert(digest, record.labels);
            }

            let mut snapshots = txn.open_table(SNAPSHOTS).db("open table snapshots")?;
            let mut children = txn
                .open_table(SNAPSHOT_CHILDREN)
                .db("open table snapshot_children")?;
            for (k, record) in scan_all::<_, SnapshotRecord>(&snapshots, "snapshot")? {
                let mut parts = k.splitn(3, '\0');
                let (Some(ns), Some(snapshotter), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    tracing::warn!(key = %k, "metadata: skipping malformed snapshot record");
                    continue;
                };
                by_ns
                    .entry(ns.to_owned())
                    .or_default()
                    .snapshots
                    .insert((snapshotter.to_owned(), name.to_owned()), record);
            }

            // Live leases, with whether they are flat.
            let mut live = HashMap::new();
            let mut expired = Vec::new();
            {
                let leases = txn.open_table(LEASES).db("open table leases")?;
                for (k, record) in scan_all::<_, LeaseRecord>(&leases, "lease")? {
                    let Some((ns, id)) = k.split_once('\0') else {
                        continue;
                    };
                    if is_expired(id, &record.labels, now) {
                        expired.push((ns.to_owned(), id.to_owned()));
                    } else {
                        let flat = record.labels.contains_key(FLAT_LABEL);
                        live.insert((ns.to_owned(), id.to_owned()), flat);
                    }
                }
            }

            let mut live_ingests = HashSet::new();
            {
                let resources = txn
                    .open_table(LEASE_RESOURCES)
                    .db("open table lease_resources")?;
                for entry in resources.iter().db("scan lease resources")? {
                    let (k, _) = entry.db("scan lease resources")?;
                    let mut parts = k.value().splitn(4, '\0');
                    let (Some(ns), Some(lease), Some(kind), Some(id)) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let Some(&flat) = live.get(&(ns.to_owned(), lease.to_owned())) else {
                        continue;
                    };
                    match kind {
                        CONTENT_KIND => {
                            if let Ok(digest) = Digest::parse(id) {
                                by_ns
                                    .entry(ns.to_owned())
                                    .or_default()
                                    .roots
                                    .push((Node::Content(digest), true));
                            }
                        }
                        INGESTS_KIND => {
                            live_ingests.insert(format!("{ns}/{id}"));
                        }
                        _ => {
                            if let Some(snapshotter) = kind.strip_prefix(SNAPSHOTS_KIND_PREFIX) {
                                let node = Node::Snapshot(snapshotter.to_owned(), id.to_owned());
                                by_ns
                                    .entry(ns.to_owned())
                                    .or_default()
                                    .roots
                                    .push((node, !flat));
                            }
                        }
                    }
                }
            }

            for (ns, target, labels) in crate::images::gc_roots(txn)? {
                let roots = &mut by_ns.entry(ns).or_default().roots;
                roots.push((Node::Content(target), true));
                roots.extend(label_refs(&labels));
            }

            for (ns, snapshot, labels) in crate::containers::gc_roots(txn)? {
                let roots = &mut by_ns.entry(ns).or_default().roots;
                if let Some((snapshotter, key)) = snapshot {
                    roots.push((Node::Snapshot(snapshotter, key), true));
                }
                roots.extend(label_refs(&labels));
            }

            let mut held = HashSet::new();
            for (ns, state) in &mut by_ns {
                for (digest, labels) in &state.records {
                    if labels.contains_key(ROOT_LABEL) {
                        state.roots.push((Node::Content(digest.clone()), true));
                    }
                }
                for ((snapshotter, name), record) in &state.snapshots {
                    if record.labels.contains_key(ROOT_LABEL) {
                        let node = Node::Snapshot(snapshotter.clone(), name.clone());
                        state.roots.push((node, true));
                    }
                }
                if !state.records.is_empty() && !sources.is_empty() {
                    let namespace = Namespace::new(ns.as_str())?;
                    for source in sources.iter() {
                        let roots = source(&namespace).map_err(|e| {
                            e.context(format!("gc: root source for namespace {ns}"))
                        })?;
                        state
                            .roots
                            .extend(roots.into_iter().map(|d| (Node::Content(d), true)));
                    }
                }
                let (reached, reached_snapshots) = state.mark();
                for ((snapshotter, name), record) in &state.snapshots {
                    if reached_snapshots.contains_key(&(snapshotter.clone(), name.clone())) {
                        continue;
                    }
                    snapshots
                        .remove(key(&[ns, snapshotter, name]).as_str())
                        .db(format!("gc: remove snapshot {name:?} in namespace {ns}"))?;
                    changed = true;
                    if let Some(parent) = &record.parent {
                        children
                            .remove(key(&[ns, snapshotter, parent, name]).as_str())
                            .db(format!("gc: drop snapshot child {name:?} in namespace {ns}"))?;
                    }
                    tracing::debug!(namespace = %ns, snapshotter, snapshot = %name, "gc: removed snapshot record");
                }
                for digest in state.records.keys() {
                    if reached.contains(digest) {
                        held.insert(digest.clone());
                        continue;
                    }
                    content
                        .remove(key(&[ns, digest.as_str()]).as_str())
                        .db(format!("gc: remove content {digest} in namespace {ns}"))?;
                    stats.records_removed += 1;
                    changed = true;
                    tracing::debug!(namespace = %ns, %digest, "gc: removed content record");
                }
            }
            drop(content);
            drop(snapshots);
            drop(children);

            {
                let mut leases = txn.open_table(LEASES).db("open table leases")?;
                for (ns, id) in &expired {
                    leases
                        .remove(key(&[ns, id]).as_str())
                        .db(format!("gc: remove expired lease {id} in namespace {ns}"))?;
                    tracing::debug!(namespace = %ns, lease = %id, "gc: removed expired lease");
                }
            }
            for (ns, id) in &expired {
                remove_resources(txn, ns, id)?;
            }
            changed |= !expired.is_empty();
            Ok((Marked { held, live_ingests }, changed))
        })
    }

    /// Removes every raw blob no namespace records.
    fn sweep_blobs(&self, marked: &Marked, stats: &mut GcStats) -> Result<()> {
        for blob in self.blobs.list()? {
            if marked.held.contains(&blob.digest) {
                continue;
            }
            match self.blobs.delete(&blob.digest) {
                Ok(()) => {
                    stats.blobs_removed += 1;
                    stats.bytes_removed += blob.size;
                    tracing::debug!(digest = %blob.digest, size = blob.size, "gc: removed blob");
                }
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e.context(format!("gc: remove blob {}", blob.digest))),
            }
        }
        Ok(())
    }

    /// Removes from every backend the snapshots no namespace records (what was just swept, and
    /// what a crash left), then runs the backend's cleanup. Tries every backend and returns the
    /// number removed, or the first failure.
    fn sweep_snapshots(&self) -> Result<u64> {
        let mut removed = 0;
        let mut first_error = None;
        for (name, backend) in self.backends() {
            let swept = self
                .recorded_backend_keys(&name)
                .and_then(|recorded| Self::sweep_backend(&name, &*backend, &recorded))
                .and_then(|n| {
                    backend
                        .cleanup()
                        .map(|()| n)
                        .map_err(|e| e.context(format!("gc: clean up snapshotter {name}")))
                });
            match swept {
                Ok(n) => removed += n,
                Err(e) => {
                    tracing::warn!(snapshotter = %name, error = %e, "gc: sweeping snapshots");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    /// Aborts every namespaced ingest that no live lease holds and no writer has open.
    fn sweep_ingests(&self, marked: &Marked, stats: &mut GcStats) -> Result<()> {
        let active: HashSet<String> = self
            .active_ingests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for status in self.blobs.list_statuses()? {
            let raw = &status.reference;
            // Ingests not named "<ns>/<ref>" were not made through a namespace: not ours.
            let ours = raw
                .split_once('/')
                .is_some_and(|(ns, r)| !r.is_empty() && Namespace::new(ns).is_ok());
            if !ours || marked.live_ingests.contains(raw) || active.contains(raw) {
                continue;
            }
            match self.blobs.abort(raw) {
                Ok(()) => {
                    stats.ingests_removed += 1;
                    tracing::debug!(reference = %raw, "gc: removed ingest");
                }
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e.context(format!("gc: remove ingest {raw:?}"))),
            }
        }
        Ok(())
    }
}

impl GarbageCollector for Metadata {
    fn collect(&self) -> Result<GcStats> {
        let started = Instant::now();
        // Exclusive: no commit or writer open runs while records, blobs and ingests are swept.
        let _exclusive = self.gc_lock.write().unwrap_or_else(PoisonError::into_inner);
        let mut stats = GcStats::default();
        let marked = self.mark_and_sweep_records(&mut stats)?;
        self.sweep_blobs(&marked, &mut stats)?;
        self.sweep_ingests(&marked, &mut stats)?;
        stats.snapshots_removed = self.sweep_snapshots()?;
        stats.duration = started.elapsed();
        tracing::debug!(
            records = stats.records_removed,
            blobs = stats.blobs_removed,
            bytes = stats.bytes_removed,
            ingests = stats.ingests_removed,
            snapshots = stats.snapshots_removed,
            duration = ?stats.duration,
            "gc: collection done"
        );
        Ok(stats)
    }

    fn schedule(&self) {
        if let Some(tx) = &self.gc_tx {
            // A closed channel means the collector has stopped: nothing left to schedule.
            let _ = tx.send(());
        }
    }
}

/// The background collector: waits for a request, lets further requests pile up for `debounce`,
/// then collects once. Holds only a weak reference, and exits when the store is dropped (its
/// sender closes) or gone.
pub(crate) fn run_background(md: Weak<Metadata>, requests: Receiver<()>, debounce: Duration) {
    while requests.recv().is_ok() {
        let deadline = Instant::now() + debounce;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match requests.recv_timeout(left) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(md) = md.upgrade() else {
            return;
        };
        if let Err(e) = md.collect() {
            tracing::error!(error = %e, "metadata: background garbage collection failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let l = |v: &str| Labels::from([(EXPIRE_LABEL.to_owned(), v.to_owned())]);
        assert!(is_expired("a", &l("2024-05-01T11:59:59Z"), now));
        assert!(is_expired("a", &l("2024-05-01T13:00:00+02:00"), now));
        assert!(!is_expired("a", &l("2024-05-01T12:00:01Z"), now));
        assert!(!is_expired("a", &l("tomorrow"), now));
        assert!(!is_expired("a", &Labels::new(), now));
    }
}
