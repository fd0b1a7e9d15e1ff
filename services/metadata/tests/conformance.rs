//! berth-core's content-store conformance suite over `Metadata` and a directory blob store.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail by panicking"
)]

mod common;

use std::time::Duration;

use berth_core::testsuite::{CONTENT_STORE_CASES, content_store_suite};
use common::Env;

#[test]
fn content_store_conformance() {
    content_store_suite(&Env::new);
}

/// The same cases with the collector running almost at once after every delete, so a sweep
/// overlaps the next steps of a case.
#[test]
fn content_store_conformance_with_eager_gc() {
    for (name, case) in CONTENT_STORE_CASES {
        let env = Env::with_debounce(Duration::ZERO);
        eprintln!("case {name}");
        case(&*env);
    }
}
