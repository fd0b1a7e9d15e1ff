//! [`GarbageCollector`]: containerd's mark and sweep, per namespace, and the debounced
//! background collector.
//!
//! Roots: every lease that has not expired (label `containerd.io/gc.expire`, RFC 3339, in the
//! past means expired) with all its resources; every content record labelled
//! `containerd.io/gc.root`; whatever the registered [`RootSource`]s name. Edges: a content
//! record's `containerd.io/gc.ref.content*` labels name other content of the same namespace.
//!
//! Sweep: unreached content records go; then every blob no namespace records leaves the raw
//! store; then every ingest whose namespace ref no live lease holds (and no writer has open);
//! and expired leases themselves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{PoisonError, Weak};
use std::time::{Duration, Instant};

use berth_core::gc::{GarbageCollector, GcStats, ROOT_LABEL};
use berth_core::labels::Labels;
use berth_core::leases::EXPIRE_LABEL;
use berth_core::{Digest, ErrorKind, Namespace, Result};
use chrono::{DateTime, Utc};
use redb::ReadableTable;

use crate::content::CONTENT_KIND;
use crate::leases::{INGESTS_KIND, remove_resources};
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

/// One namespace's content records and roots.
#[derive(Default)]
struct NsContent {
    records: HashMap<Digest, Labels>,
    roots: Vec<Digest>,
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
        self.write(|txn| {
            let mut by_ns: BTreeMap<String, NsContent> = BTreeMap::new();
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

            let mut live = HashSet::new();
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
                        live.insert((ns.to_owned(), id.to_owned()));
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
                    if !live.contains(&(ns.to_owned(), lease.to_owned())) {
                        continue;
                    }
                    match kind {
                        CONTENT_KIND => {
                            if let Ok(digest) = Digest::parse(id) {
                                by_ns.entry(ns.to_owned()).or_default().roots.push(digest);
                            }
                        }
                        INGESTS_KIND => {
                            live_ingests.insert(format!("{ns}/{id}"));
                        }
                        _ => {}
                    }
                }
            }

            let mut held = HashSet::new();
            for (ns, state) in &mut by_ns {
                for (digest, labels) in &state.records {
                    if labels.contains_key(ROOT_LABEL) {
                        state.roots.push(digest.clone());
                    }
                }
                if !state.records.is_empty() && !sources.is_empty() {
                    let namespace = Namespace::new(ns.as_str())?;
                    for source in sources.iter() {
                        let roots = source(&namespace).map_err(|e| {
                            e.context(format!("gc: root source for namespace {ns}"))
                        })?;
                        state.roots.extend(roots);
                    }
                }
                let mut reached = HashSet::new();
                let mut pending = std::mem::take(&mut state.roots);
                while let Some(digest) = pending.pop() {
                    if let Some(labels) = state.records.get(&digest)
                        && reached.insert(digest)
                    {
                        pending.extend(content_refs(labels));
                    }
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
                    tracing::debug!(namespace = %ns, %digest, "gc: removed content record");
                }
            }
            drop(content);

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
            Ok(Marked { held, live_ingests })
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
        stats.duration = started.elapsed();
        tracing::debug!(
            records = stats.records_removed,
            blobs = stats.blobs_removed,
            bytes = stats.bytes_removed,
            ingests = stats.ingests_removed,
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
