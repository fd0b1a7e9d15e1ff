//! The content store: immutable blobs addressed by sha256, written through resumable ingests.
//!
//! Two layers share one [`Writer`] contract:
//! - [`BlobStore`] is the raw store on disk. It knows nothing of namespaces or labels.
//! - [`ContentStore`] is the namespaced view clients see: a blob exists in a namespace only when
//!   that namespace holds a record of it, records carry labels, and ingests are per namespace.
//!
//! Ingest protocol: a writer is opened on a client-chosen `ref`; only one writer may hold a ref at
//! a time (others get [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)). Bytes written
//! survive the writer being dropped, a client disconnect and a daemon restart, so a later writer on
//! the same ref resumes at [`IngestStatus::offset`]. Commit checks the size and the expected
//! digest and only then makes the blob visible, atomically.

use std::time::SystemTime;

use crate::filters::{Adaptor, label_field};
use crate::labels::Labels;
use crate::{Digest, RequestContext, Result};

/// A blob as the raw store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed.
    pub created_at: SystemTime,
}

/// A blob as a namespace sees it: the raw facts plus the namespace's own record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When the namespace's record was created.
    pub created_at: SystemTime,
    /// When the record was last changed.
    pub updated_at: SystemTime,
    /// The record's labels (GC references, distribution sources, roots).
    pub labels: Labels,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "digest" if path.len() == 1 => Some(self.digest.to_string()),
            "size" if path.len() == 1 => Some(self.size.to_string()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// The state of an ingest in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The client's name for the ingest.
    pub reference: String,
    /// Bytes written so far.
    pub offset: u64,
    /// The size the client announced, 0 if unknown.
    pub total: u64,
    /// The digest the client expects, if it said.
    pub expected: Option<Digest>,
    /// When the ingest began.
    pub started_at: SystemTime,
    /// When it last received data.
    pub updated_at: SystemTime,
}

impl Adaptor for IngestStatus {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path.first().map(String::as_str)?, path.len()) {
            ("ref", 1) => Some(self.reference.clone()),
            ("expected", 1) => self.expected.as_ref().map(Digest::to_string),
            _ => None,
        }
    }
}

/// Random-access reads of one committed blob.
pub trait ReaderAt: Send + Sync {
    /// The blob's size.
    fn size(&self) -> u64;
    /// Reads into `buf` from `offset`; returns the bytes read, 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
}

/// An open ingest. Dropping it releases the ref's lock and keeps the bytes for a later resume.
pub trait Writer: Send {
    /// The ingest's current status.
    fn status(&self) -> Result<IngestStatus>;
    /// The digest of the bytes written so far.
    fn digest(&self) -> Digest;
    /// Records the announced size and/or expected digest (the latest values win).
    fn set_expectations(&mut self, total: Option<u64>, expected: Option<Digest>) -> Result<()>;
    /// Discards everything written, to restart the ingest from offset 0.
    fn truncate(&mut self) -> Result<()>;
    /// Appends `data` at the current offset.
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Verifies `size` (when non-zero) and `expected` (when given) against what was written and
    /// makes the blob visible with `labels`. Fails with FailedPrecondition on a mismatch, leaving
    /// nothing stored, and with AlreadyExists when the blob already exists.
    fn commit(
        self: Box<Self>,
        size: u64,
        expected: Option<Digest>,
        labels: Labels,
    ) -> Result<Digest>;
}

/// The raw content-addressed store, shared by all namespaces.
pub trait BlobStore: Send + Sync {
    /// Facts about a committed blob; NotFound when absent.
    fn info(&self, digest: &Digest) -> Result<BlobInfo>;
    /// Opens a committed blob for reading.
    fn reader(&self, digest: &Digest) -> Result<Box<dyn ReaderAt>>;
    /// Removes a committed blob; NotFound when absent.
    fn delete(&self, digest: &Digest) -> Result<()>;
    /// Every committed blob.
    fn list(&self) -> Result<Vec<BlobInfo>>;
    /// The status of ingest `reference`; NotFound when there is none.
    fn status(&self, reference: &str) -> Result<IngestStatus>;
    /// Every ingest in progress.
    fn list_statuses(&self) -> Result<Vec<IngestStatus>>;
    /// Drops ingest `reference` and its bytes; NotFound when there is none.
    fn abort(&self, reference: &str) -> Result<()>;
    /// Opens (or resumes) ingest `reference`; Unavailable while another writer holds it.
    fn writer(
        &self,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn Writer>>;
}

/// The namespaced content store behind the Content service.
pub trait ContentStore: Send + Sync {
    /// The namespace's record of a blob; NotFound when the namespace has none.
    fn info(&self, ctx: &RequestContext, digest: &Digest) -> Result<Info>;
    /// Updates a record's labels under a field mask (`labels`, `labels.<key>`; empty = all).
    fn update(&self, ctx: &RequestContext, info: Info, paths: &[String]) -> Result<Info>;
    /// The namespace's records that match `filters`.
    fn list(&self, ctx: &RequestContext, filters: &crate::filters::Filters) -> Result<Vec<Info>>;
    /// Removes the namespace's record (and the blob once no namespace holds it).
    fn delete(&self, ctx: &RequestContext, digest: &Digest) -> Result<()>;
    /// Opens a blob the namespace holds.
    fn reader(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn ReaderAt>>;
    /// The status of one of the namespace's ingests.
    fn status(&self, ctx: &RequestContext, reference: &str) -> Result<IngestStatus>;
    /// The namespace's ingests that match `filters`.
    fn list_statuses(
        &self,
        ctx: &RequestContext,
        filters: &crate::filters::Filters,
    ) -> Result<Vec<IngestStatus>>;
    /// Aborts one of the namespace's ingests.
    fn abort(&self, ctx: &RequestContext, reference: &str) -> Result<()>;
    /// Opens or resumes an ingest in the namespace; AlreadyExists when `expected` is already
    /// held by the namespace. The ingest (and the committed blob) join `ctx.lease`.
    fn writer(
        &self,
        ctx: &RequestContext,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn Writer>>;
}
