//! The bookkeeping Berth's snapshotters share: a metastore of snapshot records in a redb file
//! inside each snapshotter's root (`<root>/metadata.redb`, as containerd keeps one bolt file per
//! snapshotter), and the directory discipline around it ([`dirs`]).
//!
//! Every snapshot gets a numeric id from a counter that only grows; the snapshotter names the
//! snapshot's directory after it (`<root>/snapshots/<id>`), so keys never appear in paths and a
//! committed snapshot keeps its directory under its new name. Committed snapshots record their
//! [`Usage`] at commit time.
//!
//! Tables:
//! - `meta`: `schema` (the layout version) and `next_id`.
//! - `snapshots`: key or name → a JSON record (id, kind, parent name, times, labels,
//!   usage).
//! - `ids`: id → the current key or name, so directory scans can tell live from orphaned.
//! - `children`: `(parent id, child id)` → (), so "has children" is one range probe and commits
//!   (which keep the id) need no relinking.
//!
//! All changes happen in one redb write transaction each ([`MetaStore::write`]); a crash leaves
//! either the old or the new state, never half of one.

pub mod dirs;
mod usage;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::filters::Filters;
use berth_core::labels::{self, Labels};
use berth_core::snapshots::{Info, Kind, Usage, check_key};
use berth_core::{Error, Result};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

pub use usage::disk_usage;

/// The layout this build reads and writes.
const SCHEMA_VERSION: u64 = 1;
const SCHEMA_KEY: &str = "schema";
const NEXT_ID_KEY: &str = "next_id";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const IDS: TableDefinition<u64, &str> = TableDefinition::new("ids");
const CHILDREN: TableDefinition<(u64, u64), ()> = TableDefinition::new("children");

/// What a snapshotter needs to build mounts: the snapshot's id and kind and the ids of its
/// committed ancestors, **nearest parent first** (overlay's lowerdir order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's id, which names its directory.
    pub id: u64,
    /// Active or view (committed snapshots have no mounts).
    pub kind: Kind,
    /// The ancestors' ids, the immediate parent first, the base layer last.
    pub parent_ids: Vec<u64>,
}

/// A snapshot's full record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The snapshot's id.
    pub id: u64,
    /// Its public description.
    pub info: Info,
    /// The usage recorded at commit (zero for active and view snapshots).
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: String,
    #[serde(default)]
    parent: Option<String>,
    created_at: u64,
    updated_at: u64,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    inodes: u64,
}

impl Record {
    fn kind(&self) -> Result<Kind> {
        self.kind.parse().map_err(|e: Error| {
            Error::data_loss(format!(
                "snapshot metadata: record {} has a bad kind",
                self.id
            ))
            .with_source(e)
        })
    }

    fn entry(&self, name: &str) -> Result<Entry> {
        Ok(Entry {
            id: self.id,
            info: Info {
                name: name.to_owned(),
                parent: self.parent.clone(),
                kind: self.kind()?,
                created_at: from_nanos(self.created_at),
                updated_at: from_nanos(self.updated_at),
                labels: self.labels.clone(),
            },
            usage: Usage {
                size: self.size,
                inodes: self.inodes,
            },
        })
    }
}

/// Converts a redb result into ours, naming the step that failed.
trait DbResultExt<T> {
    fn db(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<redb::Error>> DbResultExt<T> for std::result::Result<T, E> {
    fn db(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| {
            Error::internal(format!("snapshot metadata: {what}")).with_source(e.into())
        })
    }
}

/// The metastore of one snapshotter.
#[derive(Debug)]
pub struct MetaStore {
    db: redb::Database,
    path: PathBuf,
}

impl MetaStore {
    /// Opens (or creates) the metastore at `path`, creating its tables and checking the layout
    /// version. Only one process can hold it open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = redb::Database::create(&path).db(format!("open database {}", path.display()))?;
        let txn = db.begin_write().db("begin initial transaction")?;
        {
            let mut meta = txn.open_table(META).db("open table meta")?;
            let version = meta
                .get(SCHEMA_KEY)
                .db("read schema version")?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
                        .db("write schema version")?;
                    meta.insert(NEXT_ID_KEY, 1).db("write first id")?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(Error::failed_precondition(format!(
                        "snapshot metadata {} has schema version {other}, this build reads {SCHEMA_VERSION}",
                        path.display()
                    )));
                }
            }
            // Created up front so read transactions can open every table unconditionally.
            txn.open_table(SNAPSHOTS).db("create table snapshots")?;
            txn.open_table(IDS).db("create table ids")?;
            txn.open_table(CHILDREN).db("create table children")?;
        }
        txn.commit().db("commit initial transaction")?;
        Ok(Self { db, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a consistent snapshot of the store; never blocks writers.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().db("begin read transaction")?;
        f(&ReadTx { txn })
    }

    /// Runs `f` in a write transaction, committing when it returns `Ok` and rolling back
    /// otherwise. Write transactions run one at a time, so `f` may also do the filesystem work
    /// that must not interleave with another writer's (renaming a snapshot directory into
    /// place, scanning for orphans).
    pub fn write<T>(&self, f: impl FnOnce(&WriteTx) -> Result<T>) -> Result<T> {
        self.write_with(redb::Durability::Immediate, f)
    }

    /// [`MetaStore::write`] whose commit is not flushed to disk by itself: the next durable
    /// commit carries it, and a crash before that undoes it. Only for changes that something
    /// else redoes when they are lost (see [`remove`]); it saves an fdatasync.
    pub fn write_lazily<T>(&self, f: impl FnOnce(&WriteTx) -> Result<T>) -> Result<T> {
        self.write_with(redb::Durability::None, f)
    }

    fn write_with<T>(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&WriteTx) -> Result<T>,
    ) -> Result<T> {
        let mut txn = self.db.begin_write().db("begin write transaction")?;
        txn.set_durability(durability).map_err(|e| {
            Error::internal(format!("snapshot metadata: set commit durability: {e}"))
        })?;
        let tx = WriteTx { txn };
        match f(&tx) {
            Ok(value) => {
                tx.txn.commit().db("commit write transaction")?;
                Ok(value)
            }
            Err(e) => {
                if let Err(abort) = tx.txn.abort() {
                    tracing::warn!(error = %abort, "snapshot metadata: rolling back a write transaction");
                }
                Err(e)
            }
        }
    }
}

/// A read transaction.
pub struct ReadTx {
    txn: ReadTransaction,
}

impl ReadTx {
    /// The record of key or name `key`; NotFound when absent.
    pub fn get(&self, key: &str) -> Result<Entry> {
        let snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        get_entry(&snaps, key)
    }

    /// The mount-relevant facts of the active or view snapshot `key`; FailedPrecondition for a
    /// committed one.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        let snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        get_snapshot(&snaps, key)
    }

    /// Every snapshot matching `filters`, ordered by key.
    pub fn list(&self, filters: &Filters) -> Result<Vec<Info>> {
        let snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        list(&snaps, filters)
    }

    /// The ids of every snapshot the store knows.
    pub fn ids(&self) -> Result<BTreeSet<u64>> {
        let ids = self.txn.open_table(IDS).db("open table ids")?;
        all_ids(&ids)
    }
}

/// A write transaction; reads see its own changes.
pub struct WriteTx {
    txn: WriteTransaction,
}

impl WriteTx {
    /// The record of key or name `key`; NotFound when absent.
    pub fn get(&self, key: &str) -> Result<Entry> {
        let snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        get_entry(&snaps, key)
    }

    /// The mount-relevant facts of the active or view snapshot `key`; FailedPrecondition for a
    /// committed one.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        let snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        get_snapshot(&snaps, key)
    }

    /// Every snapshot matching `filters`, ordered by key.
    pub fn list(&self, filters: &Filters) -> Result<Vec<Info>> {
        let snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        list(&snaps, filters)
    }

    /// The ids of every snapshot the store knows.
    pub fn ids(&self) -> Result<BTreeSet<u64>> {
        let ids = self.txn.open_table(IDS).db("open table ids")?;
        all_ids(&ids)
    }

    /// Records a new active or view snapshot `key` on `parent` with a fresh id.
    ///
    /// InvalidArgument for an empty key or bad labels, NotFound for a missing parent,
    /// FailedPrecondition for a parent that is not committed, AlreadyExists for a taken key.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Snapshot> {
        check_key("key", key)?;
        if kind == Kind::Committed {
            return Err(Error::invalid_argument(format!(
                "snapshot {key:?}: only active and view snapshots can be created; commit makes committed ones"
            )));
        }
        labels::validate(&labels)?;
        let parent = parent.filter(|p| !p.is_empty());

        let mut snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        let mut parent_ids = Vec::new();
        if let Some(name) = parent {
            let record = lookup(&snaps, name)?.ok_or_else(|| {
                Error::not_found(format!("parent snapshot {name:?} does not exist"))
            })?;
            let parent_kind = record.kind()?;
            if parent_kind != Kind::Committed {
                return Err(Error::failed_precondition(format!(
                    "parent snapshot {name:?} is {}, not committed",
                    parent_kind.as_str()
                )));
            }
            parent_ids.push(record.id);
            parent_ids.extend(ancestors(&snaps, record.parent.as_deref())?);
        }
        if lookup(&snaps, key)?.is_some() {
            return Err(Error::already_exists(format!(
                "snapshot {key:?} already exists"
            )));
        }

        let id = {
            let mut meta = self.txn.open_table(META).db("open table meta")?;
            let id = meta
                .get(NEXT_ID_KEY)
                .db("read next id")?
                .map(|v| v.value())
                .unwrap_or(1);
            meta.insert(NEXT_ID_KEY, id.saturating_add(1))
                .db("advance next id")?;
            id
        };
        let now = to_nanos(SystemTime::now());
        let record = Record {
            id,
            kind: kind.as_str().to_owned(),
            parent: parent.map(str::to_owned),
            created_at: now,
            updated_at: now,
            labels,
            size: 0,
            inodes: 0,
        };
        snaps
            .insert(key, encode(&record)?.as_slice())
            .db(format!("write snapshot {key:?}"))?;
        self.txn
            .open_table(IDS)
            .db("open table ids")?
            .insert(id, key)
            .db(format!("write id {id}"))?;
        if let Some(&pid) = parent_ids.first() {
            self.txn
                .open_table(CHILDREN)
                .db("open table children")?
                .insert((pid, id), ())
                .db(format!("link snapshot {key:?} to its parent"))?;
        }
        Ok(Snapshot {
            id,
            kind,
            parent_ids,
        })
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`, keeping its id and
    /// parent, replacing its labels with `labels` and recording `usage`. Returns the id.
    ///
    /// AlreadyExists when `name` is taken, NotFound when `key` is missing, FailedPrecondition
    /// when `key` is not active.
    pub fn commit(&self, key: &str, name: &str, usage: Usage, labels: Labels) -> Result<u64> {
        check_key("name", name)?;
        check_key("key", key)?;
        labels::validate(&labels)?;
        let mut snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        if lookup(&snaps, name)?.is_some() {
            return Err(Error::already_exists(format!(
                "snapshot {name:?} already exists"
            )));
        }
        let record = lookup(&snaps, key)?
            .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))?;
        let kind = record.kind()?;
        if kind != Kind::Active {
            return Err(Error::failed_precondition(format!(
                "snapshot {key:?} is {}: only active snapshots can be committed",
                kind.as_str()
            )));
        }
        let now = to_nanos(SystemTime::now());
        let committed = Record {
            kind: Kind::Committed.as_str().to_owned(),
            created_at: now,
            updated_at: now,
            labels,
            size: usage.size,
            inodes: usage.inodes,
            ..record
        };
        snaps
            .remove(key)
            .db(format!("remove active snapshot {key:?}"))?;
        snaps
            .insert(name, encode(&committed)?.as_slice())
            .db(format!("write committed snapshot {name:?}"))?;
        self.txn
            .open_table(IDS)
            .db("open table ids")?
            .insert(committed.id, name)
            .db(format!("rename id {}", committed.id))?;
        Ok(committed.id)
    }

    /// Deletes the record of `key`, returning its id (for the caller to delete the directory)
    /// and kind. NotFound when missing, FailedPrecondition while it has children.
    pub fn remove(&self, key: &str) -> Result<(u64, Kind)> {
        check_key("key", key)?;
        let mut snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        let record = lookup(&snaps, key)?
            .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))?;
        let kind = record.kind()?;
        let mut children = self.txn.open_table(CHILDREN).db("open table children")?;
        let child = children
            .range((record.id, 0)..=(record.id, u64::MAX))
            .db(format!("scan children of {key:?}"))?
            .next()
            .transpose()
            .db(format!("scan children of {key:?}"))?
            .map(|(k, _)| k.value().1);
        if let Some(child) = child {
            let ids = self.txn.open_table(IDS).db("open table ids")?;
            let child_name = ids
                .get(child)
                .db("read child name")?
                .map(|v| v.value().to_owned())
                .unwrap_or_else(|| child.to_string());
            return Err(Error::failed_precondition(format!(
                "cannot remove snapshot {key:?}: snapshot {child_name:?} is its child"
            )));
        }
        if let Some(parent) = &record.parent {
            let parent_record = lookup(&snaps, parent)?.ok_or_else(|| {
                Error::data_loss(format!(
                    "snapshot {key:?}: parent {parent:?} is missing from the metadata"
                ))
            })?;
            children
                .remove((parent_record.id, record.id))
                .db(format!("unlink snapshot {key:?} from its parent"))?;
        }
        snaps.remove(key).db(format!("remove snapshot {key:?}"))?;
        self.txn
            .open_table(IDS)
            .db("open table ids")?
            .remove(record.id)
            .db(format!("remove id {}", record.id))?;
        Ok((record.id, kind))
    }

    /// Updates the labels of snapshot `info.name` under a field mask
    /// ([`labels::apply_mask`]); any other path is InvalidArgument. Returns the new record.
    pub fn update(&self, info: &Info, paths: &[String]) -> Result<Info> {
        check_key("name", &info.name)?;
        let mut snaps = self.txn.open_table(SNAPSHOTS).db("open table snapshots")?;
        let mut record = lookup(&snaps, &info.name)?
            .ok_or_else(|| Error::not_found(format!("snapshot {:?} does not exist", info.name)))?;
        let others = labels::apply_mask(&mut record.labels, &info.labels, paths);
        if let Some(path) = others.first() {
            return Err(Error::invalid_argument(format!(
                "cannot update {path:?} field on snapshot {:?}: only labels can change",
                info.name
            )));
        }
        labels::validate(&record.labels)?;
        record.updated_at = to_nanos(SystemTime::now()).max(record.created_at);
        snaps
            .insert(info.name.as_str(), encode(&record)?.as_slice())
            .db(format!("write snapshot {:?}", info.name))?;
        Ok(record.entry(&info.name)?.info)
    }
}

/// Commits active snapshot `key` as `name`, recording the disk its own layer takes. The layer
/// (`layer_dir(id)`) is measured inside the transaction so the usage belongs to the id
/// committed; a missing or non-active key is left for the store to report in its usual order.
pub fn commit(
    store: &MetaStore,
    key: &str,
    name: &str,
    labels: Labels,
    layer_dir: impl Fn(u64) -> PathBuf,
) -> Result<()> {
    store
        .write(|tx| {
            let usage = match tx.get(key) {
                Ok(e) if e.info.kind == Kind::Active => disk_usage(&layer_dir(e.id))?,
                Ok(_) => Usage::default(),
                Err(e) if e.is(berth_core::ErrorKind::NotFound) => Usage::default(),
                Err(e) => return Err(e),
            };
            tx.commit(key, name, usage, labels)
        })
        .map(|_| ())
        .map_err(|e| e.context(format!("commit snapshot {key:?} as {name:?}")))
}

/// Removes snapshot `key`: its record in one transaction, then its directory, renamed aside and
/// deleted in the background ([`dirs::SnapshotDirs::discard`]). Once the record is gone the
/// snapshot is gone, so files that resist deletion are logged and left as an orphan for
/// [`cleanup`] rather than reported to a caller who could do nothing about them.
///
/// The record's removal is committed lazily ([`MetaStore::write_lazily`]). Berth removes a
/// backend snapshot only after the metadata store has durably forgotten it, and garbage
/// collection removes every backend snapshot the metadata does not record; so if a crash
/// brings the record back (its directory gone or set aside), nothing refers to it and the next
/// sweep removes it again. A removal that is not flushed by itself saves an fdatasync on every
/// `run --rm`.
pub fn remove(store: &MetaStore, dirs: &dirs::SnapshotDirs, key: &str) -> Result<()> {
    let (id, _) = store.write_lazily(|tx| tx.remove(key))?;
    if let Err(e) = dirs.discard(&dirs.path(id)) {
        tracing::warn!(error = %e, key, id, "removing a snapshot directory; cleanup will retry");
    }
    Ok(())
}

/// Deletes every orphan in the snapshots directory (see [`dirs::SnapshotDirs::orphans`]),
/// holding the write transaction so no create installs a directory meanwhile. Tries them all,
/// then reports the first failure. The transaction changes no record, so its commit is not
/// flushed: garbage collection runs this after every lease deletion.
pub fn cleanup(store: &MetaStore, dirs: &dirs::SnapshotDirs) -> Result<()> {
    store.write_lazily(|tx| {
        let known = tx.ids()?;
        let mut first_error = None;
        for orphan in dirs.orphans(&known)? {
            tracing::info!(path = %orphan.display(), "cleanup: removing what no snapshot owns");
            if let Err(e) = dirs.delete(&orphan) {
                tracing::warn!(error = %e, "cleanup");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

fn lookup<T>(snaps: &T, key: &str) -> Result<Option<Record>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    match snaps.get(key).db(format!("read snapshot {key:?}"))? {
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| {
            Error::data_loss(format!("snapshot metadata: decode record {key:?}")).with_source(e)
        }),
        None => Ok(None),
    }
}

fn get_entry<T>(snaps: &T, key: &str) -> Result<Entry>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    check_key("key", key)?;
    lookup(snaps, key)?
        .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))?
        .entry(key)
}

fn get_snapshot<T>(snaps: &T, key: &str) -> Result<Snapshot>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    check_key("key", key)?;
    let record = lookup(snaps, key)?
        .ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))?;
    let kind = record.kind()?;
    if kind == Kind::Committed {
        return Err(Error::failed_precondition(format!(
            "snapshot {key:?} is committed and has no mounts of its own; take a view of it"
        )));
    }
    Ok(Snapshot {
        id: record.id,
        kind,
        parent_ids: ancestors(snaps, record.parent.as_deref())?,
    })
}

/// The ids of `parent` and its ancestors, nearest first.
fn ancestors<T>(snaps: &T, parent: Option<&str>) -> Result<Vec<u64>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut ids = Vec::new();
    let mut next = parent.map(str::to_owned);
    while let Some(name) = next {
        let record = lookup(snaps, &name)?.ok_or_else(|| {
            Error::data_loss(format!("snapshot metadata: ancestor {name:?} is missing"))
        })?;
        if ids.contains(&record.id) {
            return Err(Error::data_loss(format!(
                "snapshot metadata: the parent chain loops at {name:?}"
            )));
        }
        ids.push(record.id);
        next = record.parent;
    }
    Ok(ids)
}

fn list<T>(snaps: &T, filters: &Filters) -> Result<Vec<Info>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut out = Vec::new();
    for entry in snaps.iter().db("scan snapshots")? {
        let (k, v) = entry.db("scan snapshots")?;
        let key = k.value();
        let record: Record = serde_json::from_slice(v.value()).map_err(|e| {
            Error::data_loss(format!("snapshot metadata: decode record {key:?}")).with_source(e)
        })?;
        let info = record.entry(key)?.info;
        if filters.matches(&info) {
            out.push(info);
        }
    }
    Ok(out)
}

fn all_ids<T>(ids: &T) -> Result<BTreeSet<u64>>
where
    T: ReadableTable<u64, &'static str>,
{
    let mut out = BTreeSet::new();
    for entry in ids.iter().db("scan ids")? {
        let (k, _) = entry.db("scan ids")?;
        out.insert(k.value());
    }
    Ok(out)
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| {
        Error::internal(format!("snapshot metadata: encode record {}", record.id)).with_source(e)
    })
}

fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests;
