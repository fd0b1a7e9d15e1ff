//! Async client library for berthd.
