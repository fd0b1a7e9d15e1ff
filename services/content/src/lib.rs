//! The raw sha256 content-addressed blob store on disk, with resumable ingests.
