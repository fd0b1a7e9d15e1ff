//! [`ImageStore`]: image records per namespace, each a garbage-collection root.
//!
//! `images` maps `<ns>\0<name>` to an [`ImageRecord`]. Names are any non-empty string without
//! NUL (references such as `docker.io/library/busybox:latest` contain `/`, `:` and `@`). The
//! collector reads every record in its own transaction ([`gc_roots`]): the target digest and the
//! references in the image's labels are roots of the image's namespace.

use std::time::SystemTime;

use berth_core::diff::Descriptor;
use berth_core::filters::Filters;
use berth_core::images::{self, Image, ImageStore};
use berth_core::labels::Labels;
use berth_core::{Digest, Error, Namespace, RequestContext, Result, ResultExt};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Metadata;
use crate::store::{
    self, DbResultExt, check_component, encode, ensure_namespace, from_nanos, key, scan_all,
    to_nanos,
};

/// `<ns>\0<name>` → [`ImageRecord`].
pub(crate) const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

/// The stored form of an image's target descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TargetRecord {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Labels,
}

/// A namespace's record of one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    target: TargetRecord,
    created_at: u64,
    updated_at: u64,
    #[serde(default)]
    labels: Labels,
}

impl ImageRecord {
    fn new(image: &Image, created_at: u64, updated_at: u64) -> Self {
        Self {
            target: TargetRecord {
                media_type: image.target.media_type.clone(),
                digest: image.target.digest.to_string(),
                size: image.target.size,
                annotations: image.target.annotations.clone(),
            },
            created_at,
            updated_at,
            labels: image.labels.clone(),
        }
    }

    fn digest(&self, name: &str) -> Result<Digest> {
        Digest::parse(&self.target.digest).map_err(|e| {
            Error::data_loss(format!("metadata: image record {name:?} has a bad target"))
                .with_source(e)
        })
    }

    fn image(self, name: &str) -> Result<Image> {
        let digest = self.digest(name)?;
        Ok(Image {
            name: name.to_owned(),
            target: Descriptor {
                media_type: self.target.media_type,
                digest,
                size: self.target.size,
                annotations: self.target.annotations,
            },
            labels: self.labels,
            created_at: from_nanos(self.created_at),
            updated_at: from_nanos(self.updated_at),
        })
    }
}

/// Creates the images table, so read transactions can open it unconditionally.
pub(crate) fn create_tables(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write().db("begin image table creation")?;
    txn.open_table(IMAGES).db("create table images")?;
    txn.commit().db("commit image table creation")
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("image {name:?}: not found"))
}

/// Every image's namespace, target digest and labels, for the collector's mark phase. A record
/// whose target cannot be read is an error: collecting without it could delete the image's
/// content.
pub(crate) fn gc_roots(txn: &WriteTransaction) -> Result<Vec<(String, Digest, Labels)>> {
    let table = txn.open_table(IMAGES).db("open table images")?;
    let mut out = Vec::new();
    for (k, record) in scan_all::<_, ImageRecord>(&table, "image")? {
        let Some((ns, name)) = k.split_once('\0') else {
            tracing::warn!(key = %k, "metadata: skipping malformed image key");
            continue;
        };
        let digest = record
            .digest(name)
            .with_context(|| format!("gc: image in namespace {ns}"))?;
        out.push((ns.to_owned(), digest, record.labels));
    }
    Ok(out)
}

impl ImageStore for Metadata {
    fn get(&self, ctx: &RequestContext, name: &str) -> Result<Image> {
        check_component("image name", name)?;
        let ns = &ctx.namespace;
        let record: ImageRecord = self
            .read(|txn| {
                let table = txn.open_table(IMAGES).db("open table images")?;
                store::get(&table, &key(&[ns.as_str(), name]), "image")
            })?
            .ok_or_else(|| not_found(name))?;
        record.image(name)
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Image>> {
        let ns = &ctx.namespace;
        let records: Vec<(String, ImageRecord)> = self.read(|txn| {
            let table = txn.open_table(IMAGES).db("open table images")?;
            store::scan(&table, &[ns.as_str()], "image")
        })?;
        let mut out = Vec::with_capacity(records.len());
        for (name, record) in records {
            let image = record
                .image(&name)
                .with_context(|| format!("namespace {ns}"))?;
            if filters.matches(&image) {
                out.push(image);
            }
        }
        Ok(out)
    }

    fn create(&self, ctx: &RequestContext, image: Image) -> Result<Image> {
        images::validate(&image)?;
        check_component("image name", &image.name)?;
        let ns = &ctx.namespace;
        let now = to_nanos(SystemTime::now());
        let record = ImageRecord::new(&image, now, now);
        self.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(IMAGES).db("open table images")?;
            let k = key(&[ns.as_str(), &image.name]);
            if table.get(k.as_str()).db("read image")?.is_some() {
                return Err(Error::already_exists(format!(
                    "image {:?}: already exists",
                    image.name
                )));
            }
            let value = encode(&record, "image")?;
            table
                .insert(k.as_str(), value.as_slice())
                .db(format!("create image {:?} in namespace {ns}", image.name))?;
            Ok(())
        })?;
        tracing::debug!(
            namespace = %ns,
            image = %image.name,
            target = %image.target.digest,
            "metadata: created image"
        );
        record.image(&image.name)
    }

    fn update(&self, ctx: &RequestContext, image: Image, paths: &[String]) -> Result<Image> {
        if image.name.is_empty() {
            return Err(Error::invalid_argument("image name is required for update"));
        }
        check_component("image name", &image.name)?;
        let ns = &ctx.namespace;
        let name = image.name.clone();
        let record = self.write(|txn| {
            let mut table = txn.open_table(IMAGES).db("open table images")?;
            let k = key(&[ns.as_str(), &name]);
            let current: ImageRecord =
                store::get(&table, &k, "image")?.ok_or_else(|| not_found(&name))?;
            let created_at = current.created_at;
            let mut updated = current.image(&name)?;
            images::apply_mask(&mut updated, &image, paths)?;
            images::validate(&updated)?;
            let now = to_nanos(SystemTime::now());
            let record = ImageRecord::new(&updated, created_at, now.max(created_at));
            let value = encode(&record, "image")?;
            table
                .insert(k.as_str(), value.as_slice())
                .db(format!("update image {name:?} in namespace {ns}"))?;
            Ok(record)
        })?;
        record.image(&name)
    }

    fn delete(&self, ctx: &RequestContext, name: &str, sync: bool) -> Result<()> {
        check_component("image name", name)?;
        let ns = &ctx.namespace;
        self.write(|txn| {
            let mut table = txn.open_table(IMAGES).db("open table images")?;
            let removed = table
                .remove(key(&[ns.as_str(), name]).as_str())
                .db(format!("delete image {name:?} in namespace {ns}"))?;
            if removed.is_none() {
                return Err(not_found(name));
            }
            Ok(())
        })?;
        tracing::debug!(namespace = %ns, image = %name, sync, "metadata: deleted image");
        if sync {
            berth_core::gc::GarbageCollector::collect(self)
                .map(drop)
                .map_err(|e| e.context(format!("collect garbage after deleting image {name:?}")))
        } else {
            berth_core::gc::GarbageCollector::schedule(self);
            Ok(())
        }
    }
}

/// Whether namespace `ns` holds any image (namespace deletes refuse it then).
pub(crate) fn any_in(txn: &WriteTransaction, ns: &Namespace) -> Result<bool> {
    let table = txn.open_table(IMAGES).db("open table images")?;
    store::any_under(&table, &[ns.as_str()], "images")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_bad_targets() {
        let mut img = Image::new(
            "docker.io/library/busybox:latest",
            Descriptor::new(images::MEDIA_TYPE_OCI_INDEX, Digest::of(b"index"), 321),
        );
        img.labels.insert("a".into(), "b".into());
        img.target.annotations.insert("x".into(), "y".into());
        let record = ImageRecord::new(&img, 5, 9);
        let json = serde_json::to_vec(&record).unwrap();
        let back: ImageRecord = serde_json::from_slice(&json).unwrap();
        let got = back.image(&img.name).unwrap();
        assert_eq!(got.target, img.target);
        assert_eq!(got.labels, img.labels);
        assert_eq!(got.created_at, from_nanos(5));
        assert_eq!(got.updated_at, from_nanos(9));

        let mut bad = record;
        bad.target.digest = "sha256:nope".into();
        assert_eq!(
            bad.image("x").unwrap_err().kind(),
            berth_core::ErrorKind::DataLoss
        );
    }
}
