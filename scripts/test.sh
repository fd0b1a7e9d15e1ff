#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, formatting, lints, every crate's unit tests and the
# end-to-end tests against real berthd processes (and the real `ctr`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== build binaries (the end-to-end tests run them)"
cargo build --workspace --bins

echo "== the shim as shipped (static, hot code ordered; tests/shim_shipped.rs runs it)"
INSTALL=0 scripts/build-shim.sh

echo "== cargo test"
cargo test --workspace --all-features
