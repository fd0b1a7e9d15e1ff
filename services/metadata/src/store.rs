//! Tables, key and value encoding, and transaction helpers (see the crate docs for the layout).

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::labels::Labels;
use berth_core::{Error, Namespace, Result};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Metadata;

/// The schema this build reads and writes.
const SCHEMA_VERSION: u64 = 1;
const SCHEMA_KEY: &str = "schema";

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
pub(crate) const CONTENT: TableDefinition<&str, &[u8]> = TableDefinition::new("content");
pub(crate) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
pub(crate) const LEASE_RESOURCES: TableDefinition<&str, ()> =
    TableDefinition::new("lease_resources");

/// A namespace's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct NamespaceRecord {
    #[serde(default)]
    pub labels: Labels,
}

/// A namespace's record of a blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContentRecord {
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub labels: Labels,
}

/// A lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub created_at: u64,
    #[serde(default)]
    pub labels: Labels,
}

/// Converts a redb result into ours, naming the step that failed.
pub(crate) trait DbResultExt<T> {
    /// Wraps the error as Internal "metadata: <what>".
    fn db(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<redb::Error>> DbResultExt<T> for std::result::Result<T, E> {
    fn db(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::internal(format!("metadata: {what}")).with_source(e.into()))
    }
}

/// Opens or creates the database and its tables, checking the schema version.
pub(crate) fn open_database(path: &Path) -> Result<redb::Database> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::io(
                format!("metadata: create directory {}", parent.display()),
                e,
            )
        })?;
    }
    let db = redb::Database::create(path).db(format!("open database {}", path.display()))?;
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
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(Error::failed_precondition(format!(
                    "metadata: database {} has schema version {other}, this build reads {SCHEMA_VERSION}",
                    path.display()
                )));
            }
        }
        // Creating every table up front lets read transactions open them unconditionally.
        txn.open_table(NAMESPACES).db("create table namespaces")?;
        txn.open_table(CONTENT).db("create table content")?;
        txn.open_table(LEASES).db("create table leases")?;
        txn.open_table(LEASE_RESOURCES)
            .db("create table lease_resources")?;
    }
    txn.commit().db("commit initial transaction")?;
    Ok(db)
}

impl Metadata {
    /// Runs `f` in a read transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().db("begin read transaction")?;
        f(&txn)
    }

    /// Runs `f` in a write transaction, committing when it succeeds and rolling back otherwise.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        self.write_with(redb::Durability::Immediate, f)
    }

    /// [`Metadata::write`] whose commit is not flushed to disk by itself: the next durable
    /// commit carries it, and a crash before that loses it. Only for changes that are harmless
    /// to lose (see the lease manager), since it saves an fdatasync.
    pub(crate) fn write_lazily<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        self.write_with(redb::Durability::None, f)
    }

    /// [`Metadata::write_lazily`] when `lazily`, else [`Metadata::write`].
    pub(crate) fn write_lazily_if<T>(
        &self,
        lazily: bool,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let durability = if lazily {
            redb::Durability::None
        } else {
            redb::Durability::Immediate
        };
        self.write_with(durability, f)
    }

    /// [`Metadata::write`] for a pass that usually changes nothing (a collection): `f` says
    /// whether it changed anything, and only then is the transaction committed and flushed. An
    /// unchanged one is rolled back, which costs no fdatasync.
    pub(crate) fn write_if_changed<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, bool)>,
    ) -> Result<T> {
        let txn = self.db.begin_write().db("begin write transaction")?;
        let outcome = f(&txn);
        if let Ok((value, true)) = outcome {
            txn.commit().db("commit write transaction")?;
            return Ok(value);
        }
        if let Err(abort) = txn.abort() {
            tracing::warn!(error = %abort, "metadata: rolling back a write transaction");
        }
        outcome.map(|(value, _)| value)
    }

    fn write_with<T>(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let mut txn = self.db.begin_write().db("begin write transaction")?;
        txn.set_durability(durability)
            .map_err(|e| Error::internal(format!("metadata: set commit durability: {e}")))?;
        match f(&txn) {
            Ok(value) => {
                txn.commit().db("commit write transaction")?;
                Ok(value)
            }
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!(error = %abort, "metadata: rolling back a write transaction");
                }
                Err(e)
            }
        }
    }
}

/// Joins key components with NUL.
pub(crate) fn key(parts: &[&str]) -> String {
    parts.join("\0")
}

/// The half-open key range of every key that starts with the components `parts`.
pub(crate) fn prefix_range(parts: &[&str]) -> (String, String) {
    let mut start = key(parts);
    start.push('\0');
    let mut end = key(parts);
    end.push('\u{1}');
    (start, end)
}

/// Refuses a key component that would break the NUL-joined encoding.
pub(crate) fn check_component(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_argument(format!("{what} must not be empty")));
    }
    if value.contains('\0') {
        return Err(Error::invalid_argument(format!(
            "{what} {value:?} must not contain NUL"
        )));
    }
    Ok(())
}

/// Every `(key suffix after the prefix, value)` under the components `parts`.
pub(crate) fn scan<T, V>(table: &T, parts: &[&str], what: &str) -> Result<Vec<(String, V)>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
    V: DeserializeOwned,
{
    let (start, end) = prefix_range(parts);
    let mut out = Vec::new();
    for entry in table
        .range(start.as_str()..end.as_str())
        .db(format!("scan {what}"))?
    {
        let (k, v) = entry.db(format!("scan {what}"))?;
        let full = k.value();
        let suffix = full.get(start.len()..).unwrap_or_default().to_owned();
        out.push((suffix, decode(v.value(), what, full)?));
    }
    Ok(out)
}

/// Every `(key, value)` of a whole table.
pub(crate) fn scan_all<T, V>(table: &T, what: &str) -> Result<Vec<(String, V)>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
    V: DeserializeOwned,
{
    let mut out = Vec::new();
    for entry in table.iter().db(format!("scan {what}"))? {
        let (k, v) = entry.db(format!("scan {what}"))?;
        out.push((k.value().to_owned(), decode(v.value(), what, k.value())?));
    }
    Ok(out)
}

/// The keys of a key-only table under the components `parts`, as suffixes after the prefix.
pub(crate) fn scan_keys<T>(table: &T, parts: &[&str], what: &str) -> Result<Vec<String>>
where
    T: ReadableTable<&'static str, ()>,
{
    let (start, end) = prefix_range(parts);
    let mut out = Vec::new();
    for entry in table
        .range(start.as_str()..end.as_str())
        .db(format!("scan {what}"))?
    {
        let (k, _) = entry.db(format!("scan {what}"))?;
        out.push(k.value().get(start.len()..).unwrap_or_default().to_owned());
    }
    Ok(out)
}

/// The decoded value at `key`, if any.
pub(crate) fn get<T, V>(table: &T, key: &str, what: &str) -> Result<Option<V>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
    V: DeserializeOwned,
{
    match table.get(key).db(format!("read {what}"))? {
        Some(v) => Ok(Some(decode(v.value(), what, key)?)),
        None => Ok(None),
    }
}

/// Whether any key starts with the components `parts`.
pub(crate) fn any_under<T, V>(table: &T, parts: &[&str], what: &str) -> Result<bool>
where
    T: ReadableTable<&'static str, V>,
    V: redb::Value + 'static,
{
    let (start, end) = prefix_range(parts);
    let mut range = table
        .range(start.as_str()..end.as_str())
        .db(format!("scan {what}"))?;
    Ok(range.next().is_some())
}

fn decode<V: DeserializeOwned>(bytes: &[u8], what: &str, key: &str) -> Result<V> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!("metadata: decode {what} record {key:?}")).with_source(e)
    })
}

/// The JSON encoding of a record.
pub(crate) fn encode<V: Serialize>(value: &V, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| Error::internal(format!("metadata: encode {what} record")).with_source(e))
}

/// Creates `ns`'s record unless it exists: every write makes its namespace exist.
pub(crate) fn ensure_namespace(txn: &WriteTransaction, ns: &Namespace) -> Result<()> {
    let mut table = txn.open_table(NAMESPACES).db("open table namespaces")?;
    if table.get(ns.as_str()).db("read namespace")?.is_none() {
        let value = encode(&NamespaceRecord::default(), "namespace")?;
        table
            .insert(ns.as_str(), value.as_slice())
            .db(format!("create namespace {ns}"))?;
    }
    Ok(())
}

/// Unix nanoseconds of `t` (0 before the epoch).
pub(crate) fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time `nanos` after the unix epoch.
pub(crate) fn from_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_brackets_only_its_keys() {
        let (start, end) = prefix_range(&["ns"]);
        let inside = key(&["ns", "sha256:00"]);
        let sibling = key(&["ns-2", "sha256:00"]);
        let longer = key(&["nsx", "a"]);
        assert!(start.as_str() <= inside.as_str() && inside.as_str() < end.as_str());
        assert!(!(start.as_str() <= sibling.as_str() && sibling.as_str() < end.as_str()));
        assert!(!(start.as_str() <= longer.as_str() && longer.as_str() < end.as_str()));
    }

    #[test]
    fn nanos_round_trip() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(from_nanos(to_nanos(t)), t);
    }
}
