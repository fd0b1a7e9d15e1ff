//! [`ContentStore`]: the namespaced view over the raw [`BlobStore`](berth_core::content::BlobStore).
//!
//! A blob is visible in a namespace only while the namespace holds a record of it. Ingests are
//! the raw store's ingests named `"<ns>/<ref>"`, shown to the namespace as `ref`.

use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use berth_core::content::{ContentStore, Info, IngestStatus, ReaderAt, Writer};
use berth_core::filters::Filters;
use berth_core::labels::{self, Labels};
use berth_core::{Digest, Error, ErrorKind, Namespace, RequestContext, Result, ResultExt};
use redb::ReadableTable;

use crate::leases::{INGESTS_KIND, require_lease, resource_key};
use crate::store::{
    self, CONTENT, ContentRecord, DbResultExt, LEASE_RESOURCES, check_component, encode,
    ensure_namespace, from_nanos, key, to_nanos,
};
use crate::{Metadata, backend_ref};

/// The lease resource kind of committed content.
pub(crate) const CONTENT_KIND: &str = "content";

fn not_found(digest: &Digest) -> Error {
    Error::not_found(format!("content digest {digest}: not found"))
}

fn already_exists(digest: &Digest) -> Error {
    Error::already_exists(format!("content {digest}: already exists"))
}

fn make_info(digest: Digest, size: u64, record: ContentRecord) -> Info {
    Info {
        digest,
        size,
        created_at: from_nanos(record.created_at),
        updated_at: from_nanos(record.updated_at),
        labels: record.labels,
    }
}

impl Metadata {
    /// The namespace's record of `digest`, if any.
    fn content_record(&self, ns: &Namespace, digest: &Digest) -> Result<Option<ContentRecord>> {
        self.read(|txn| {
            let table = txn.open_table(CONTENT).db("open table content")?;
            store::get(&table, &key(&[ns.as_str(), digest.as_str()]), "content")
        })
    }

    /// The raw size of `digest`, which a namespace record says exists.
    fn blob_size(&self, ns: &Namespace, digest: &Digest) -> Result<u64> {
        Ok(self
            .blobs
            .info(digest)
            .with_context(|| format!("content {digest} recorded in namespace {ns}"))?
            .size)
    }
}

impl ContentStore for Metadata {
    fn info(&self, ctx: &RequestContext, digest: &Digest) -> Result<Info> {
        let record = self
            .content_record(&ctx.namespace, digest)?
            .ok_or_else(|| not_found(digest))?;
        let size = self.blob_size(&ctx.namespace, digest)?;
        Ok(make_info(digest.clone(), size, record))
    }

    fn update(&self, ctx: &RequestContext, info: Info, paths: &[String]) -> Result<Info> {
        let ns = &ctx.namespace;
        let digest = info.digest.clone();
        let record = self.write(|txn| {
            let mut table = txn.open_table(CONTENT).db("open table content")?;
            let k = key(&[ns.as_str(), digest.as_str()]);
            let mut record: ContentRecord =
                store::get(&table, &k, "content")?.ok_or_else(|| not_found(&digest))?;
            let others = labels::apply_mask(&mut record.labels, &info.labels, paths);
            if let Some(path) = others.first() {
                return Err(Error::invalid_argument(format!(
                    "cannot update {path:?} field on content info {digest}"
                )));
            }
            labels::validate(&record.labels)?;
            record.updated_at = to_nanos(SystemTime::now()).max(record.updated_at);
            let value = encode(&record, "content")?;
            table
                .insert(k.as_str(), value.as_slice())
                .db(format!("update content {digest} in namespace {ns}"))?;
            Ok(record)
        })?;
        let size = self.blob_size(ns, &digest)?;
        Ok(make_info(digest, size, record))
    }

    fn list(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<Info>> {
        let ns = &ctx.namespace;
        let records: Vec<(String, ContentRecord)> = self.read(|txn| {
            let table = txn.open_table(CONTENT).db("open table content")?;
            store::scan(&table, &[ns.as_str()], "content")
        })?;
        let mut out = Vec::with_capacity(records.len());
        for (digest, record) in records {
            let digest = Digest::parse(&digest)
                .with_context(|| format!("metadata: content record in namespace {ns}"))?;
            let size = match self.blobs.info(&digest) {
                Ok(blob) => blob.size,
                // A record whose blob vanished is not listable; info() reports the error.
                Err(e) if e.is(ErrorKind::NotFound) => {
                    tracing::warn!(namespace = %ns, %digest, "metadata: content record without a blob");
                    continue;
                }
                Err(e) => return Err(e.context(format!("content {digest} in namespace {ns}"))),
            };
            let info = make_info(digest, size, record);
            if filters.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn delete(&self, ctx: &RequestContext, digest: &Digest) -> Result<()> {
        let ns = &ctx.namespace;
        self.write(|txn| {
            let mut table = txn.open_table(CONTENT).db("open table content")?;
            let removed = table
                .remove(key(&[ns.as_str(), digest.as_str()]).as_str())
                .db(format!("delete content {digest} in namespace {ns}"))?;
            if removed.is_none() {
                return Err(not_found(digest));
            }
            Ok(())
        })?;
        berth_core::gc::GarbageCollector::schedule(self);
        Ok(())
    }

    fn reader(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn ReaderAt>> {
        if self.content_record(&ctx.namespace, digest)?.is_none() {
            return Err(not_found(digest));
        }
        self.blobs
            .reader(digest)
            .with_context(|| format!("content {digest} in namespace {}", ctx.namespace))
    }

    fn status(&self, ctx: &RequestContext, reference: &str) -> Result<IngestStatus> {
        check_component("ingest ref", reference)?;
        let mut status = self
            .blobs
            .status(&backend_ref(&ctx.namespace, reference))
            .map_err(|e| rename_ref_error(e, &ctx.namespace, reference))?;
        status.reference = reference.to_owned();
        Ok(status)
    }

    fn list_statuses(&self, ctx: &RequestContext, filters: &Filters) -> Result<Vec<IngestStatus>> {
        let prefix = backend_ref(&ctx.namespace, "");
        Ok(self
            .blobs
            .list_statuses()?
            .into_iter()
            .filter_map(|mut status| {
                status.reference = status.reference.strip_prefix(&prefix)?.to_owned();
                filters.matches(&status).then_some(status)
            })
            .collect())
    }

    fn abort(&self, ctx: &RequestContext, reference: &str) -> Result<()> {
        check_component("ingest ref", reference)?;
        self.blobs
            .abort(&backend_ref(&ctx.namespace, reference))
            .map_err(|e| rename_ref_error(e, &ctx.namespace, reference))
    }

    fn writer(
        &self,
        ctx: &RequestContext,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn Writer>> {
        check_component("ingest ref", reference)?;
        let md = self.arc()?;
        let ns = &ctx.namespace;
        // Shared with commits: the sweep cannot abort this ingest between its open and its
        // registration as active.
        let _shared = self.gc_lock.read().unwrap_or_else(PoisonError::into_inner);
        let held = self.write(|txn| {
            ensure_namespace(txn, ns)?;
            if let Some(lease) = &ctx.lease {
                require_lease(txn, ns, lease)?;
            }
            let mut resources = txn
                .open_table(LEASE_RESOURCES)
                .db("open table lease_resources")?;
            if let Some(expected) = &expected {
                let table = txn.open_table(CONTENT).db("open table content")?;
                if table
                    .get(key(&[ns.as_str(), expected.as_str()]).as_str())
                    .db("read content")?
                    .is_some()
                {
                    // As containerd does, the caller's lease still takes the blob it already
                    // has: a pull that skips it must not see GC take it before the image lands.
                    if let Some(lease) = &ctx.lease {
                        resources
                            .insert(
                                resource_key(ns, lease, CONTENT_KIND, expected.as_str()).as_str(),
                                (),
                            )
                            .db(format!("add {expected} to lease {lease}"))?;
                    }
                    return Ok(true);
                }
            }
            if let Some(lease) = &ctx.lease {
                resources
                    .insert(
                        resource_key(ns, lease, INGESTS_KIND, reference).as_str(),
                        (),
                    )
                    .db(format!("add ingest {reference:?} to lease {lease}"))?;
            }
            Ok(false)
        })?;
        if let (true, Some(expected)) = (held, &expected) {
            return Err(already_exists(expected));
        }
        let raw_ref = backend_ref(ns, reference);
        let inner = self
            .blobs
            .writer(&raw_ref, total, expected)
            .map_err(|e| rename_ref_error(e, ns, reference))?;
        Ok(Box::new(NsWriter {
            active: ActiveIngest::register(md, raw_ref),
            namespace: ns.clone(),
            reference: reference.to_owned(),
            lease: ctx.lease.clone(),
            inner,
        }))
    }
}

/// Keeps the raw store's name for an ingest out of errors the namespace sees.
fn rename_ref_error(err: Error, ns: &Namespace, reference: &str) -> Error {
    let raw = backend_ref(ns, reference);
    if err.message().contains(&raw) {
        // The rewritten message says everything the original did, so it is not kept as a
        // source (which would print it twice).
        Error::new(err.kind(), err.message().replace(&raw, reference))
    } else {
        err
    }
}

/// Marks a raw ingest ref as held by an open writer while it lives.
struct ActiveIngest {
    md: Arc<Metadata>,
    raw_ref: String,
}

impl ActiveIngest {
    fn register(md: Arc<Metadata>, raw_ref: String) -> Self {
        *md.active_ingests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(raw_ref.clone())
            .or_default() += 1;
        Self { md, raw_ref }
    }
}

impl Drop for ActiveIngest {
    fn drop(&mut self) {
        let mut active = self
            .md
            .active_ingests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = active.get_mut(&self.raw_ref) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                active.remove(&self.raw_ref);
            }
        }
    }
}

/// A raw writer seen through a namespace: reports the namespace's ref and records the blob on
/// commit.
struct NsWriter {
    active: ActiveIngest,
    namespace: Namespace,
    reference: String,
    lease: Option<String>,
    inner: Box<dyn Writer>,
}

impl Writer for NsWriter {
    fn status(&self) -> Result<IngestStatus> {
        let mut status = self
            .inner
            .status()
            .map_err(|e| rename_ref_error(e, &self.namespace, &self.reference))?;
        status.reference = self.reference.clone();
        Ok(status)
    }

    fn digest(&self) -> Digest {
        self.inner.digest()
    }

    fn set_expectations(&mut self, total: Option<u64>, expected: Option<Digest>) -> Result<()> {
        self.inner.set_expectations(total, expected)
    }

    fn truncate(&mut self) -> Result<()> {
        self.inner.truncate()
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.inner.write(data)
    }

    fn commit(
        self: Box<Self>,
        size: u64,
        expected: Option<Digest>,
        labels: Labels,
    ) -> Result<Digest> {
        labels::validate(&labels)?;
        let NsWriter {
            active,
            namespace: ns,
            reference,
            lease,
            inner,
        } = *self;
        let md = Arc::clone(&active.md);
        let what = || format!("commit ingest {reference:?} in namespace {ns}");
        // Shared with other commits, exclusive with a sweep: the blob cannot be collected
        // between the raw commit and the record that keeps it.
        let _shared = md.gc_lock.read().unwrap_or_else(PoisonError::into_inner);
        let written = inner.digest();
        let digest = match inner.commit(size, expected.clone(), Labels::new()) {
            Ok(digest) => digest,
            // Another namespace holds the same bytes: fine, as long as they are what was asked.
            Err(e) if e.is(ErrorKind::AlreadyExists) => {
                if let Some(expected) = &expected
                    && *expected != written
                {
                    return Err(Error::failed_precondition(format!(
                        "unexpected commit digest {written}, expected {expected}"
                    ))
                    .context(what()));
                }
                let blob = md.blobs.info(&written).with_context(what)?;
                if size != 0 && blob.size != size {
                    return Err(Error::failed_precondition(format!(
                        "unexpected commit size {}, expected {size}",
                        blob.size
                    ))
                    .context(what()));
                }
                match md.blobs.abort(&active.raw_ref) {
                    Ok(()) => {}
                    Err(e) if e.is(ErrorKind::NotFound) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        reference = %active.raw_ref,
                        "metadata: dropping the ingest of a blob that already exists"
                    ),
                }
                written
            }
            Err(e) => return Err(rename_ref_error(e, &ns, &reference).context(what())),
        };
        md.write(|txn| {
            ensure_namespace(txn, &ns)?;
            let mut table = txn.open_table(CONTENT).db("open table content")?;
            let k = key(&[ns.as_str(), digest.as_str()]);
            if table.get(k.as_str()).db("read content")?.is_some() {
                return Err(already_exists(&digest));
            }
            if let Some(lease) = &lease {
                require_lease(txn, &ns, lease).with_context(what)?;
                let mut resources = txn
                    .open_table(LEASE_RESOURCES)
                    .db("open table lease_resources")?;
                resources
                    .insert(
                        resource_key(&ns, lease, CONTENT_KIND, digest.as_str()).as_str(),
                        (),
                    )
                    .db(format!("add content {digest} to lease {lease}"))?;
                resources
                    .remove(resource_key(&ns, lease, INGESTS_KIND, &reference).as_str())
                    .db(format!("drop ingest {reference:?} from lease {lease}"))?;
            }
            let now = to_nanos(SystemTime::now());
            let record = ContentRecord {
                created_at: now,
                updated_at: now,
                labels,
            };
            let value = encode(&record, "content")?;
            table
                .insert(k.as_str(), value.as_slice())
                .db(format!("record content {digest} in namespace {ns}"))?;
            Ok(())
        })?;
        Ok(digest)
    }
}
