//! Berth's command-line client.

fn main() {}
