//! The raw sha256 content-addressed blob store on disk, with resumable ingests.
//!
//! [`LocalStore`] implements berth-core's [`BlobStore`](berth_core::content::BlobStore). Layout
//! under its root:
//!
//! ```text
//! blobs/sha256/<hex>                 committed blobs, read-only (0444)
//! ingest/<sha256 of ref>/ref         the ingest's ref, verbatim
//! ingest/<sha256 of ref>/meta.json   started-at, announced total, expected digest
//! ingest/<sha256 of ref>/data        the bytes written so far
//! tmp/                               ingest directories being assembled
//! ```
//!
//! Ingest directories are named by a hash of the ref so that no ref, however hostile, can name a
//! path. They are assembled under `tmp/` and renamed into place, so an ingest is either whole or
//! absent. A commit moves `data` into `blobs/` with a rename on the same filesystem, so a blob is
//! never visible half-written.

mod ingest;
mod store;

#[cfg(test)]
mod tests;

pub use store::LocalStore;
