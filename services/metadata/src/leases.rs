//! [`LeaseManager`]: leases and the resources they keep alive.

use std::time::SystemTime;

use berth_core::filters::Filters;
use berth_core::labels::{self, Labels};
use berth_core::leases::{Lease, LeaseManager, Resource};
use berth_core::{Digest, Error, Namespace, RequestContext, Result};
use redb::{ReadableTable, WriteTransaction};

use crate::Metadata;
use crate::content::CONTENT_KIND;
use crate::store::{
    self, DbResultExt, LEASE_RESOURCES, LEASES, LeaseRecord, check_component, encode,
    ensure_namespace, from_nanos, key, to_nanos,
};

/// The lease resource kind of an ingest (id = the namespace's ref).
pub(crate) const INGESTS_KIND: &str = "ingests";
/// Snapshot resources are `snapshots/<snapshotter>` (id = the snapshot key).
pub(crate) const SNAPSHOTS_KIND_PREFIX: &str = "snapshots/";

/// The key of one resource of a lease.
pub(crate) fn resource_key(ns: &Namespace, lease: &str, kind: &str, id: &str) -> String {
    key(&[ns.as_str(), lease, kind, id])
}

/// Splits a resource key suffix (after `<ns>\0<lease>\0`) into its resource.
pub(crate) fn parse_resource(suffix: &str) -> Option<Resource> {
    let (kind, id) = suffix.split_once('\0')?;
    Some(Resource {
        id: id.to_owned(),
        kind: kind.to_owned(),
    })
}

fn lease_not_found(ns: &Namespace, id: &str) -> Error {
    Error::not_found(format!("lease {id} in namespace {ns}: not found"))
}

/// Fails with NotFound unless lease `id` exists in `ns`.
pub(crate) fn require_lease(txn: &WriteTransaction, ns: &Namespace, id: &str) -> Result<()> {
    let table = txn.open_table(LEASES).db("open table leases")?;
    if table
        .get(key(&[ns.as_str(), id]).as_str())
        .db("read lease")?
        .is_none()
    {
        return Err(lease_not_found(ns, id));
    }
    Ok(())
}

/// Checks a resource's kind and id.
fn validate_resource(resource: &Resource) -> Result<()> {
    match resource.kind.as_str() {
        CONTENT_KIND => {
            Digest::parse(&resource.id)?;
        }
        INGESTS_KIND => check_component("ingest ref", &resource.id)?,
        kind => match kind.strip_prefix(SNAPSHOTS_KIND_PREFIX) {
            Some(snapshotter) if !snapshotter.is_empty() && !snapshotter.contains('\0') => {
                check_component("snapshot key", &resource.id)?;
            }
            _ => {
                return Err(Error::invalid_argument(format!(
                    "unsupported lease resource type {kind:?}"
                )));
            }
        },
    }
    Ok(())
}

/// Removes every resource of lease `id` in `ns`.
pub(crate) fn remove_resources(txn: &WriteTransaction, ns: &str, id: &str) -> Result<()> {
    let mut table = txn
        .open_table(LEASE_RESOURCES)
        .db("open table lease_resources")?;
    let (start, end) = store::prefix_range(&[ns, id]);
    table
        .retain_in(start.as_str()..end.as_str(), |_, _| false)
        .db(format!("drop resources of lease {id} in namespace {ns}"))
}

impl Metadata {
    /// Whether lease `id` of namespace `ns` exists and has an expiry (a missing lease has
    /// none).
    pub(crate) fn lease_expires(&self, ns: &str, id: &str) -> Result<bool> {
        self.read(|txn| {
            let table = txn.open_table(LEASES).db("open table leases")?;
            let found: Option<LeaseRecord> = store::get(&table, &key(&[ns, id]), "lease")?;
            Ok(found.is_some_and(|l| l.labels.contains_key(berth_core::leases::EXPIRE_LABEL)))
        })
    }
}

impl LeaseManager for Metadata {
    fn create(&self, ctx: &RequestContext, id: &str, labels: Labels) -> Result<Lease> {
        // containerd accepts any non-empty lease id: its own generated ids end in base64url
        // characters such as "-" or "_", which the identifier rule would refuse.
        check_component("lease id", id)?;
        labels::validate(&labels)?;
        let ns = &ctx.namespace;
        // Not flushed on its own: a lease only matters once something durable refers to it
        // (a snapshot, content), and that commit flushes this one too. A crash before then
        // loses a lease that protected nothing yet.
        self.write_lazily(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(LEASES).db("open table leases")?;
            let k = key(&[ns.as_str(), id]);
            if table.get(k.as_str()).db("read lease")?.is_some() {
                return Err(Error::already_exists(format!(
                    "lease {id} in namespace {ns}: already exists"
                )));
            }
            let record = LeaseRecord {
                created_at: to_nanos(SystemTime::now()),
                labels,
            };
            let value = encode(&record, "lease")?;
            table
                .insert(k.as_str(), value.as_slice())
                .db(format!("create lease {id} in namespace {ns}"))?;
            Ok(Lease {
                id: id.to_owned(),
                created_at: from_nanos(record.created_at),
                labels: record.labels,
            })
        })
    }

    fn delete(&self, ctx: &RequestContext, id: &str, sync: bool) -> Result<()> {
        let ns = &ctx.namespace;
        // A lease that expires may come back after a crash (its delete not yet flushed by a
        // later commit): it then protects its resources until it expires, as it would have
        // anyway. One without an expiry could hold them forever, so its delete is flushed.
        let expires = self.lease_expires(ns.as_str(), id)?;
        let delete = |txn: &redb::WriteTransaction| {
            let mut table = txn.open_table(LEASES).db("open table leases")?;
            let removed = table
                .remove(key(&[ns.as_str(), id]).as_str())
                .db(format!("delete lease {id} in namespace {ns}"))?;
            if removed.is_none() {
                return Err(lease_not_found(ns, id));
            }
            drop(removed);
            remove_resources(txn, ns.as_str(), id)
        };
        if expires {
            self.write_lazily(delete)?;
        } else {
            self.write(delete)?;
        }
        if sync {
            berth_core::gc::GarbageCollector::collect(self)
                .map(drop)
                .map_err(|e| e.context(format!("collect garbage after deleting lease {id}")))
        } else {
            berth_core::gc::GarbageCollector::schedule(self);
            Ok(())
        }
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Lease>> {
        let ns = &ctx.namespace;
        let records: Vec<(String, LeaseRecord)> = self.read(|txn| {
            let table = txn.open_table(LEASES).db("open table leases")?;
            store::scan(&table, &[ns.as_str()], "lease")
        })?;
        Ok(records
            .into_iter()
            .map(|(id, record)| Lease {
                id,
                created_at: from_nanos(record.created_at),
                labels: record.labels,
            })
            .filter(|lease| filters.matches(lease))
            .collect())
    }

    fn add_resource(&self, ctx: &RequestContext, id: &str, resource: Resource) -> Result<()> {
        validate_resource(&resource)?;
        let ns = &ctx.namespace;
        self.write(|txn| {
            require_lease(txn, ns, id)?;
            let mut table = txn
                .open_table(LEASE_RESOURCES)
                .db("open table lease_resources")?;
            table
                .insert(
                    resource_key(ns, id, &resource.kind, &resource.id).as_str(),
                    (),
                )
                .db(format!("add resource to lease {id} in namespace {ns}"))?;
            Ok(())
        })
    }

    fn delete_resource(&self, ctx: &RequestContext, id: &str, resource: Resource) -> Result<()> {
        validate_resource(&resource)?;
        let ns = &ctx.namespace;
        self.write(|txn| {
            require_lease(txn, ns, id)?;
            let mut table = txn
                .open_table(LEASE_RESOURCES)
                .db("open table lease_resources")?;
            table
                .remove(resource_key(ns, id, &resource.kind, &resource.id).as_str())
                .db(format!("delete resource from lease {id} in namespace {ns}"))?;
            Ok(())
        })?;
        // Whatever only this resource kept alive is now garbage.
        berth_core::gc::GarbageCollector::schedule(self);
        Ok(())
    }

    fn list_resources(&self, ctx: &RequestContext, id: &str) -> Result<Vec<Resource>> {
        let ns = &ctx.namespace;
        self.read(|txn| {
            let leases = txn.open_table(LEASES).db("open table leases")?;
            if leases
                .get(key(&[ns.as_str(), id]).as_str())
                .db("read lease")?
                .is_none()
            {
                return Err(lease_not_found(ns, id));
            }
            let table = txn
                .open_table(LEASE_RESOURCES)
                .db("open table lease_resources")?;
            Ok(
                store::scan_keys(&table, &[ns.as_str(), id], "lease resources")?
                    .iter()
                    .filter_map(|suffix| parse_resource(suffix))
                    .collect(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: &str, id: &str) -> Resource {
        Resource {
            id: id.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn resource_kinds() {
        let digest = Digest::of(b"x").to_string();
        validate_resource(&r("content", &digest)).unwrap();
        validate_resource(&r("ingests", "layer-1")).unwrap();
        validate_resource(&r("snapshots/overlayfs", "k")).unwrap();
        for bad in [
            r("content", "nope"),
            r("ingests", ""),
            r("snapshots/", "k"),
            r("snapshots", "k"),
            r("images", "x"),
        ] {
            let err = validate_resource(&bad).unwrap_err();
            assert_eq!(
                err.kind(),
                berth_core::ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn resource_keys_round_trip() {
        let ns = Namespace::new("default").unwrap();
        let k = resource_key(&ns, "l1", "snapshots/overlayfs", "a/b");
        let (start, _) = store::prefix_range(&["default", "l1"]);
        let suffix = k.strip_prefix(&start).unwrap();
        assert_eq!(
            parse_resource(suffix),
            Some(r("snapshots/overlayfs", "a/b"))
        );
    }
}
