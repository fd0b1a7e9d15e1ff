#!/usr/bin/env bash
# Installs everything building and testing Berth needs, idempotently: Debian packages (protoc for
# the API code generation, containerd for the `ctr` interop tests; for the image tests: a static
# busybox to build test images from, a local OCI registry, skopeo to push to it and htpasswd for
# its auth; libseccomp-dev for the runtime) and the Rust components.
set -euo pipefail

want=()
command -v protoc >/dev/null 2>&1 || want+=(protobuf-compiler)
command -v ctr >/dev/null 2>&1 || want+=(containerd)
# Test images copy /bin/busybox into a rootfs, so it must be the static build, not `busybox`.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || want+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || want+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || want+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || want+=(apache2-utils)
# bench/ scripts read cargo metadata with jq.
command -v jq >/dev/null 2>&1 || want+=(jq)
# The runtime compiles seccomp profiles with libseccomp (linked by the libseccomp crate).
dpkg-query -W -f='${Status}' libseccomp-dev 2>/dev/null | grep -q 'ok installed' || want+=(libseccomp-dev)
# The runtime conformance and differential tests run real containers under Debian's runc (the
# reference berth-runc is compared with); bench/ times crun too. Both live in /usr/sbin or
# /usr/bin, which a non-root PATH may lack, so ask dpkg rather than `command -v`.
for pkg in runc crun; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || want+=("$pkg")
done

if ((${#want[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${want[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${want[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The containerd and docker-registry packages may try to start their services; there is no
    # init system to do so here, and the tests never use the system daemons (they run their own
    # on temporary roots and ports), so a failed start is harmless.
    apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$component" ||
            rustup component add "$component"
    done
fi
echo "setup: ok (protoc $(protoc --version | awk '{print $2}'), $(ctr --version | awk '{print $3}' | sed 's/^/ctr /'), $(skopeo --version))"
