#!/usr/bin/env bash
# Installs everything building and testing Berth needs, idempotently: Debian packages (protoc for
# the API code generation, containerd for the `ctr` interop tests) and the Rust components.
set -euo pipefail

want=()
command -v protoc >/dev/null 2>&1 || want+=(protobuf-compiler)
command -v ctr >/dev/null 2>&1 || want+=(containerd)

if ((${#want[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${want[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${want[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The containerd package may try to start its service; there is no init system to do so
    # here, and Berth never uses the system daemon, so a failed start is harmless.
    apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$component" ||
            rustup component add "$component"
    done
fi
echo "setup: ok (protoc $(protoc --version | awk '{print $2}'), $(ctr --version | awk '{print $3}' | sed 's/^/ctr /'))"
