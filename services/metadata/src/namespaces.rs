//! [`NamespaceStore`]: namespace records and the "must be empty" rule for deletes.

use berth_core::filters::Filters;
use berth_core::labels::{self, Labels};
use berth_core::namespaces::{NamespaceInfo, NamespaceStore};
use berth_core::{Error, Namespace, Result};
use redb::ReadableTable;

use crate::Metadata;
use crate::store::{
    self, CONTENT, DbResultExt, LEASES, NAMESPACES, NamespaceRecord, encode, scan_all,
};

impl NamespaceStore for Metadata {
    fn create(&self, name: &Namespace, labels: Labels) -> Result<NamespaceInfo> {
        labels::validate(&labels)?;
        self.write(|txn| {
            let mut table = txn.open_table(NAMESPACES).db("open table namespaces")?;
            if table.get(name.as_str()).db("read namespace")?.is_some() {
                return Err(Error::already_exists(format!(
                    "namespace {name}: already exists"
                )));
            }
            let value = encode(
                &NamespaceRecord {
                    labels: labels.clone(),
                },
                "namespace",
            )?;
            table
                .insert(name.as_str(), value.as_slice())
                .db(format!("create namespace {name}"))?;
            Ok(NamespaceInfo {
                name: name.clone(),
                labels,
            })
        })
    }

    fn get(&self, name: &Namespace) -> Result<NamespaceInfo> {
        self.read(|txn| {
            let table = txn.open_table(NAMESPACES).db("open table namespaces")?;
            let record: NamespaceRecord = store::get(&table, name.as_str(), "namespace")?
                .ok_or_else(|| Error::not_found(format!("namespace {name}: not found")))?;
            Ok(NamespaceInfo {
                name: name.clone(),
                labels: record.labels,
            })
        })
    }

    fn list(&self, filters: &Filters) -> Result<Vec<NamespaceInfo>> {
        let records: Vec<(String, NamespaceRecord)> = self.read(|txn| {
            let table = txn.open_table(NAMESPACES).db("open table namespaces")?;
            scan_all(&table, "namespace")
        })?;
        let mut out = Vec::with_capacity(records.len());
        for (name, record) in records {
            let Ok(name) = Namespace::new(&name) else {
                tracing::warn!(namespace = %name, "metadata: skipping invalid namespace record");
                continue;
            };
            let info = NamespaceInfo {
                name,
                labels: record.labels,
            };
            if filters.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn update(&self, info: NamespaceInfo, paths: &[String]) -> Result<NamespaceInfo> {
        let name = info.name.clone();
        self.write(|txn| {
            let mut table = txn.open_table(NAMESPACES).db("open table namespaces")?;
            // An update is a write, and writes create their namespace.
            let mut record: NamespaceRecord =
                store::get(&table, name.as_str(), "namespace")?.unwrap_or_default();
            let others = labels::apply_mask(&mut record.labels, &info.labels, paths);
            if let Some(path) = others.first() {
                return Err(Error::invalid_argument(format!(
                    "cannot update {path:?} field on namespace {name}"
                )));
            }
            labels::validate(&record.labels)?;
            let value = encode(&record, "namespace")?;
            table
                .insert(name.as_str(), value.as_slice())
                .db(format!("update namespace {name}"))?;
            Ok(NamespaceInfo {
                name: name.clone(),
                labels: record.labels,
            })
        })
    }

    fn delete(&self, name: &Namespace) -> Result<()> {
        // Ingests live in the raw store; a writer opened after this check would recreate the
        // namespace record, which is what containerd does too.
        let prefix = crate::backend_ref(name, "");
        let has_ingests = self
            .blobs
            .list_statuses()?
            .iter()
            .any(|s| s.reference.starts_with(&prefix));
        self.write(|txn| {
            let mut table = txn.open_table(NAMESPACES).db("open table namespaces")?;
            if table.get(name.as_str()).db("read namespace")?.is_none() {
                return Err(Error::not_found(format!("namespace {name}: not found")));
            }
            let mut still = Vec::new();
            let content = txn.open_table(CONTENT).db("open table content")?;
            if store::any_under(&content, &[name.as_str()], "content")? {
                still.push("content");
            }
            if has_ingests {
                still.push("ingests");
            }
            let snapshots = txn
                .open_table(crate::snapshots::SNAPSHOTS)
                .db("open table snapshots")?;
            if store::any_under(&snapshots, &[name.as_str()], "snapshots")? {
                still.push("snapshots");
            }
            if crate::images::any_in(txn, name)? {
                still.push("images");
            }
            if crate::containers::any_in(txn, name)? {
                still.push("containers");
            }
            let leases = txn.open_table(LEASES).db("open table leases")?;
            if store::any_under(&leases, &[name.as_str()], "leases")? {
                still.push("leases");
            }
            if !still.is_empty() {
                return Err(Error::failed_precondition(format!(
                    "namespace {name} must be empty, but it still has {}",
                    still.join(", ")
                )));
            }
            table
                .remove(name.as_str())
                .db(format!("delete namespace {name}"))?;
            Ok(())
        })
    }
}
