//! Namespaced metadata in redb: namespaces, content records, leases and garbage collection.
//!
//! [`Metadata`] is the one object: it implements berth-core's
//! [`NamespaceStore`](berth_core::namespaces::NamespaceStore),
//! [`ContentStore`](berth_core::content::ContentStore) (the namespaced view over a raw
//! [`BlobStore`]), [`SnapshotStore`](berth_core::snapshots::SnapshotStore) (the namespaced view
//! over the snapshotters registered with [`Metadata::add_snapshotter`]),
//! [`ImageStore`](berth_core::images::ImageStore),
//! [`ContainerStore`](berth_core::containers::ContainerStore),
//! [`LeaseManager`](berth_core::leases::LeaseManager) and
//! [`GarbageCollector`](berth_core::gc::GarbageCollector). Nothing outside this crate knows the
//! database is redb.
//!
//! Layout of the crate:
//! - `store`: table definitions, key and value encoding, transaction helpers.
//! - `namespaces`, `content`, `snapshots`, `images`, `containers`, `leases`: one trait
//!   implementation each.
//! - `gc`: mark and sweep, the debounced background collector and [`RootSource`] hooks.
//!
//! # Database layout
//!
//! Every key is a string whose components are joined with `\0` (no component may contain NUL;
//! namespaces, lease ids and digests cannot, refs and resource ids are checked), so all records
//! of one namespace (or one lease) form a contiguous key range. Values are JSON (serde_json) so
//! fields can be added without a migration; times are unix nanoseconds (`u64`).
//!
//! | table             | key                                   | value                               |
//! |-------------------|---------------------------------------|-------------------------------------|
//! | `meta`            | `"schema"`, `"snapshot_seq"`          | `u64` schema version (1), counter   |
//! | `namespaces`      | `<ns>`                                | `{labels}`                          |
//! | `content`         | `<ns>\0<digest>`                      | `{created_at, updated_at, labels}`  |
//! | `leases`          | `<ns>\0<lease id>`                    | `{created_at, labels}`              |
//! | `lease_resources` | `<ns>\0<lease id>\0<kind>\0<id>`      | `()`                                |
//! | `snapshots`       | `<ns>\0<snapshotter>\0<key>`          | `{backend_key, kind, parent, …}`    |
//! | `snapshot_children` | `<ns>\0<snapshotter>\0<parent>\0<child>` | `()`                         |
//! | `images`          | `<ns>\0<name>`                        | `{target, created_at, updated_at, labels}` |
//! | `containers`      | `<ns>\0<id>`                          | `{runtime, spec, snapshotter, snapshot_key, …}` |
//!
//! Ingests are not in the database: the raw store's ingest `"<ns>/<ref>"` is namespace `ns`'s
//! ingest `ref`, so the raw store stays the single truth about what is being written. A
//! namespace's snapshot `key` is the backend's snapshot `<ns>/<seq>/<key>` (see `snapshots`).
//!
//! # Concurrency
//!
//! redb serialises write transactions and gives readers snapshots. On top of that one
//! [`std::sync::RwLock`] keeps commits and GC sweeps apart: a content commit (raw commit plus record
//! insert), opening a writer and every snapshot change hold it shared, a collection (and a
//! snapshot cleanup) holds it exclusively, so a sweep never deletes a blob that a commit is about
//! to record, an ingest that is being opened, nor a backend snapshot whose record is not yet
//! committed.

mod containers;
mod content;
mod gc;
mod images;
mod leases;
mod namespaces;
mod snapshots;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_core::content::BlobStore;
use berth_core::snapshots::Snapshotter;
use berth_core::{Digest, Error, Namespace, Result};

pub use gc::RootSource;

/// Garbage-collection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// How long [`schedule`](berth_core::gc::GarbageCollector::schedule) waits after the first
    /// request before collecting, so a burst of deletes costs one collection.
    pub debounce: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
        }
    }
}

/// Berth's metadata store. Cheap to share: [`Metadata::open`] hands out an `Arc`.
pub struct Metadata {
    /// Lets `&self` methods hand an owning handle to writers that outlive the call.
    this: Weak<Metadata>,
    db: redb::Database,
    blobs: Arc<dyn BlobStore>,
    /// Shared by commits and writer opens, exclusive for a collection.
    gc_lock: RwLock<()>,
    /// Raw ingest refs with an open writer: the sweep never aborts these.
    active_ingests: Mutex<HashMap<String, usize>>,
    root_sources: RwLock<Vec<RootSource>>,
    /// The snapshotter backends by name (see [`Metadata::add_snapshotter`]).
    snapshotters: RwLock<BTreeMap<String, Arc<dyn Snapshotter>>>,
    /// Wakes the background collector; dropped (taken) on drop to stop it.
    gc_tx: Option<Sender<()>>,
    gc_thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata").finish_non_exhaustive()
    }
}

impl Metadata {
    /// Opens (creating) the database at `path` over the raw blob store `blobs`, and starts the
    /// background collector, which stops when the last `Arc` is dropped.
    pub fn open(path: &Path, blobs: Arc<dyn BlobStore>, options: GcOptions) -> Result<Arc<Self>> {
        let db = store::open_database(path)?;
        snapshots::create_tables(&db)?;
        images::create_tables(&db)?;
        containers::create_tables(&db)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let md = Arc::new_cyclic(|this| Metadata {
            this: this.clone(),
            db,
            blobs,
            gc_lock: RwLock::new(()),
            active_ingests: Mutex::new(HashMap::new()),
            root_sources: RwLock::new(Vec::new()),
            snapshotters: RwLock::new(BTreeMap::new()),
            gc_tx: Some(tx),
            gc_thread: Mutex::new(None),
        });
        let weak = Arc::downgrade(&md);
        let debounce = options.debounce;
        let handle = std::thread::Builder::new()
            .name("berth-metadata-gc".into())
            .spawn(move || gc::run_background(weak, rx, debounce))
            .map_err(|e| Error::io("metadata: spawn the garbage-collection thread", e))?;
        *md.gc_thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
        Ok(md)
    }

    /// Adds a source of GC roots, consulted for every namespace holding content at each
    /// collection: the digests it returns (and everything they reference through
    /// `containerd.io/gc.ref.content*` labels) are kept. Subsystems outside this crate
    /// register here. An error from a source aborts the collection before anything is removed.
    ///
    /// Sources run while the collector holds the database's write transaction: they may read
    /// (through their own read transactions or these traits' read methods) but must not write to
    /// this database, or the collection deadlocks.
    pub fn add_root_source(&self, source: RootSource) {
        self.root_sources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(source);
    }

    /// An owning handle on `self`; always present while a method runs on a live `Arc`.
    fn arc(&self) -> Result<Arc<Metadata>> {
        self.this
            .upgrade()
            .ok_or_else(|| Error::internal("metadata: store is shutting down"))
    }
}

impl Drop for Metadata {
    fn drop(&mut self) {
        // Closing the channel wakes the collector, which sees it disconnected and exits.
        self.gc_tx.take();
        let handle = self
            .gc_thread
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // The collector itself may hold the last reference; it cannot join itself.
            if handle.thread().id() != std::thread::current().id() && handle.join().is_err() {
                tracing::error!("metadata: garbage-collection thread panicked");
            }
        }
    }
}

/// Whether `digest` is named by `key` as a content reference (`containerd.io/gc.ref.content`,
/// `…content.<x>`, `…content/<x>`).
fn is_content_ref_label(key: &str) -> bool {
    match key.strip_prefix(berth_core::gc::REF_CONTENT_PREFIX) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('/'),
        None => false,
    }
}

/// The digests `labels` reference, ignoring values that are not digests.
fn content_refs<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> impl Iterator<Item = Digest> {
    labels
        .into_iter()
        .filter(|(k, _)| is_content_ref_label(k))
        .filter_map(|(_, v)| Digest::parse(v).ok())
}

/// The raw store's ingest ref for namespace `ns`'s ingest `reference`.
fn backend_ref(ns: &Namespace, reference: &str) -> String {
    format!("{ns}/{reference}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ref_labels() {
        for yes in [
            "containerd.io/gc.ref.content",
            "containerd.io/gc.ref.content.m.0",
            "containerd.io/gc.ref.content.config",
            "containerd.io/gc.ref.content/x",
        ] {
            assert!(is_content_ref_label(yes), "{yes}");
        }
        for no in [
            "containerd.io/gc.ref.contentx",
            "containerd.io/gc.ref.snapshot.overlayfs",
            "containerd.io/gc.root",
        ] {
            assert!(!is_content_ref_label(no), "{no}");
        }
    }
}
