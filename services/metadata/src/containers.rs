//! [`ContainerStore`]: container records per namespace, each a garbage-collection root.
//!
//! `containers` maps `<ns>\0<id>` to a [`ContainerRecord`]. Ids are identifiers, so they never
//! contain NUL. Opaque payloads (spec, runtime options, extensions) are stored as their type URL
//! and base64 bytes, so a record stays one JSON object. The collector reads every record in its
//! own transaction ([`gc_roots`]): the container's snapshot and the references in its labels are
//! roots of the container's namespace.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use berth_core::containers::{self, Container, ContainerStore, RuntimeInfo};
use berth_core::filters::Filters;
use berth_core::labels::Labels;
use berth_core::{AnyValue, Error, Namespace, RequestContext, Result, ResultExt, identifiers};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Metadata;
use crate::store::{
    self, DbResultExt, encode, ensure_namespace, from_nanos, key, scan_all, to_nanos,
};

/// `<ns>\0<id>` → [`ContainerRecord`].
pub(crate) const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// The stored form of an [`AnyValue`]: the bytes in base64, which JSON holds compactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AnyRecord {
    type_url: String,
    #[serde(default)]
    value: String,
}

impl AnyRecord {
    fn new(any: &AnyValue) -> Self {
        Self {
            type_url: any.type_url.clone(),
            value: STANDARD.encode(&any.value),
        }
    }

    fn value(self, what: &str) -> Result<AnyValue> {
        let value = STANDARD.decode(self.value.as_bytes()).map_err(|e| {
            Error::data_loss(format!("metadata: container {what} is not base64")).with_source(e)
        })?;
        Ok(AnyValue {
            type_url: self.type_url,
            value,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuntimeRecord {
    name: String,
    #[serde(default)]
    options: Option<AnyRecord>,
}

/// A namespace's record of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    image: String,
    runtime: RuntimeRecord,
    #[serde(default)]
    spec: Option<AnyRecord>,
    #[serde(default)]
    snapshotter: String,
    #[serde(default)]
    snapshot_key: String,
    created_at: u64,
    updated_at: u64,
    #[serde(default)]
    extensions: BTreeMap<String, AnyRecord>,
}

impl ContainerRecord {
    fn new(c: &Container, created_at: u64, updated_at: u64) -> Self {
        Self {
            labels: c.labels.clone(),
            image: c.image.clone(),
            runtime: RuntimeRecord {
                name: c.runtime.name.clone(),
                options: c.runtime.options.as_ref().map(AnyRecord::new),
            },
            spec: c.spec.as_ref().map(AnyRecord::new),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            created_at,
            updated_at,
            extensions: c
                .extensions
                .iter()
                .map(|(k, v)| (k.clone(), AnyRecord::new(v)))
                .collect(),
        }
    }

    fn container(self, id: &str) -> Result<Container> {
        let extensions = self
            .extensions
            .into_iter()
            .map(|(k, v)| {
                let v = v.value(&format!("{id:?} extension {k:?}"))?;
                Ok((k, v))
            })
            .collect::<Result<_>>()?;
        Ok(Container {
            id: id.to_owned(),
            labels: self.labels,
            image: self.image,
            runtime: RuntimeInfo {
                name: self.runtime.name,
                options: self
                    .runtime
                    .options
                    .map(|o| o.value(&format!("{id:?} runtime options")))
                    .transpose()?,
            },
            spec: self
                .spec
                .map(|s| s.value(&format!("{id:?} spec")))
                .transpose()?,
            snapshotter: self.snapshotter,
            snapshot_key: self.snapshot_key,
            created_at: from_nanos(self.created_at),
            updated_at: from_nanos(self.updated_at),
            extensions,
        })
    }

    /// The snapshot the container holds, if any.
    fn snapshot(&self) -> Option<(String, String)> {
        (!self.snapshotter.is_empty() && !self.snapshot_key.is_empty())
            .then(|| (self.snapshotter.clone(), self.snapshot_key.clone()))
    }
}

/// Creates the containers table, so read transactions can open it unconditionally.
pub(crate) fn create_tables(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write().db("begin container table creation")?;
    txn.open_table(CONTAINERS).db("create table containers")?;
    txn.commit().db("commit container table creation")
}

fn not_found(id: &str, ns: &Namespace) -> Error {
    Error::not_found(format!(
        "container {id:?} in namespace {:?}: not found",
        ns.as_str()
    ))
}

/// A GC root a container makes: its namespace, its snapshot (snapshotter, key) if it has one,
/// and its labels.
pub(crate) type ContainerRoot = (String, Option<(String, String)>, Labels);

/// Every container's roots, for the collector's mark phase.
pub(crate) fn gc_roots(txn: &WriteTransaction) -> Result<Vec<ContainerRoot>> {
    let table = txn.open_table(CONTAINERS).db("open table containers")?;
    let mut out = Vec::new();
    for (k, record) in scan_all::<_, ContainerRecord>(&table, "container")? {
        let Some((ns, _)) = k.split_once('\0') else {
            tracing::warn!(key = %k, "metadata: skipping malformed container key");
            continue;
        };
        out.push((ns.to_owned(), record.snapshot(), record.labels));
    }
    Ok(out)
}

/// Whether namespace `ns` holds any container (namespace deletes refuse it then).
pub(crate) fn any_in(txn: &WriteTransaction, ns: &Namespace) -> Result<bool> {
    let table = txn.open_table(CONTAINERS).db("open table containers")?;
    store::any_under(&table, &[ns.as_str()], "containers")
}

impl ContainerStore for Metadata {
    fn get(&self, ctx: &RequestContext, id: &str) -> Result<Container> {
        identifiers::validate("container id", id)?;
        let ns = &ctx.namespace;
        let record: ContainerRecord = self
            .read(|txn| {
                let table = txn.open_table(CONTAINERS).db("open table containers")?;
                store::get(&table, &key(&[ns.as_str(), id]), "container")
            })?
            .ok_or_else(|| not_found(id, ns))?;
        record.container(id)
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Container>> {
        let ns = &ctx.namespace;
        let records: Vec<(String, ContainerRecord)> = self.read(|txn| {
            let table = txn.open_table(CONTAINERS).db("open table containers")?;
            store::scan(&table, &[ns.as_str()], "container")
        })?;
        let mut out = Vec::with_capacity(records.len());
        for (id, record) in records {
            let container = record
                .container(&id)
                .with_context(|| format!("namespace {ns}"))?;
            if filters.matches(&container) {
                out.push(container);
            }
        }
        Ok(out)
    }

    fn create(&self, ctx: &RequestContext, container: Container) -> Result<Container> {
        containers::validate(&container)?;
        let ns = &ctx.namespace;
        let now = to_nanos(SystemTime::now());
        let record = ContainerRecord::new(&container, now, now);
        self.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(CONTAINERS).db("open table containers")?;
            let k = key(&[ns.as_str(), &container.id]);
            if table.get(k.as_str()).db("read container")?.is_some() {
                return Err(Error::already_exists(format!(
                    "container {:?}: already exists",
                    container.id
                )));
            }
            let value = encode(&record, "container")?;
            table.insert(k.as_str(), value.as_slice()).db(format!(
                "create container {:?} in namespace {ns}",
                container.id
            ))?;
            Ok(())
        })?;
        tracing::debug!(
            namespace = %ns,
            container = %container.id,
            runtime = %container.runtime.name,
            "metadata: created container"
        );
        record.container(&container.id)
    }

    fn update(
        &self,
        ctx: &RequestContext,
        container: Container,
        paths: &[String],
    ) -> Result<Container> {
        if container.id.is_empty() {
            return Err(Error::invalid_argument(
                "container id is required for update",
            ));
        }
        identifiers::validate("container id", &container.id)?;
        let ns = &ctx.namespace;
        let id = container.id.clone();
        let record = self.write(|txn| {
            let mut table = txn.open_table(CONTAINERS).db("open table containers")?;
            let k = key(&[ns.as_str(), &id]);
            let current: ContainerRecord =
                store::get(&table, &k, "container")?.ok_or_else(|| not_found(&id, ns))?;
            let created_at = current.created_at;
            let mut updated = current.container(&id)?;
            containers::apply_mask(&mut updated, &container, paths)?;
            containers::validate(&updated)?;
            let now = to_nanos(SystemTime::now());
            let record = ContainerRecord::new(&updated, created_at, now.max(created_at));
            let value = encode(&record, "container")?;
            table
                .insert(k.as_str(), value.as_slice())
                .db(format!("update container {id:?} in namespace {ns}"))?;
            Ok(record)
        })?;
        record.container(&id)
    }

    fn delete(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        identifiers::validate("container id", id)?;
        let ns = &ctx.namespace;
        self.write(|txn| {
            let mut table = txn.open_table(CONTAINERS).db("open table containers")?;
            let removed = table
                .remove(key(&[ns.as_str(), id]).as_str())
                .db(format!("delete container {id:?} in namespace {ns}"))?;
            if removed.is_none() {
                return Err(not_found(id, ns));
            }
            Ok(())
        })?;
        tracing::debug!(namespace = %ns, container = %id, "metadata: deleted container");
        // The container's snapshot may now be unreferenced, as containerd marks its store dirty.
        berth_core::gc::GarbageCollector::schedule(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_bad_payloads() {
        let mut c = Container::new(
            "web",
            "io.containerd.runc.v2",
            AnyValue::new(containers::RUNTIME_SPEC_TYPE_URL, br#"{"a":1}"#.to_vec()),
        );
        c.runtime.options = Some(AnyValue::new("containerd.runc.v1.Options", vec![0, 1, 255]));
        c.labels.insert("k".into(), "v".into());
        c.image = "busybox".into();
        c.snapshotter = "overlayfs".into();
        c.snapshot_key = "web".into();
        c.extensions
            .insert("x".into(), AnyValue::new("x.Y", vec![9; 10]));
        let record = ContainerRecord::new(&c, 5, 9);
        assert_eq!(record.snapshot(), Some(("overlayfs".into(), "web".into())));
        let json = serde_json::to_vec(&record).unwrap();
        let back: ContainerRecord = serde_json::from_slice(&json).unwrap();
        let got = back.container("web").unwrap();
        assert_eq!(got.created_at, from_nanos(5));
        assert_eq!(got.updated_at, from_nanos(9));
        c.created_at = got.created_at;
        c.updated_at = got.updated_at;
        assert_eq!(got, c);

        let mut bad = record;
        if let Some(spec) = bad.spec.as_mut() {
            spec.value = "not base64!".into();
        }
        assert_eq!(
            bad.container("web").unwrap_err().kind(),
            berth_core::ErrorKind::DataLoss
        );
    }
}
