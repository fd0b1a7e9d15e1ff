//! The content-store conformance suite over the real stack berthd wires together: the on-disk
//! LocalStore under the redb Metadata view.

// Test setup reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use berth_core::content::ContentStore;
use berth_metadata::{GcOptions, Metadata};

struct Stack {
    metadata: Arc<Metadata>,
    _dir: tempfile::TempDir,
}

impl Deref for Stack {
    type Target = dyn ContentStore;
    fn deref(&self) -> &Self::Target {
        self.metadata.as_ref()
    }
}

fn stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let blobs = berth_content::LocalStore::open(dir.path().join("content")).unwrap();
    let metadata = Metadata::open(
        &dir.path().join("metadata.redb"),
        Arc::new(blobs),
        GcOptions {
            debounce: Duration::from_millis(0),
        },
    )
    .unwrap();
    Stack {
        metadata,
        _dir: dir,
    }
}

#[test]
fn content_store_conformance_on_disk() {
    berth_core::testsuite::content_store_suite(&stack);
}
