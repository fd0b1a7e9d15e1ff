#!/usr/bin/env bash
# The benchmark suite, one command: Berth against containerd 1.6 + runc and crun, side by side.
#
#   bench/suite.sh                  # the full suite (RUNS=20 for the short measures)
#   QUICK=1 bench/suite.sh          # a smoke run: few runs, fewer containers, a smaller image
#   MEASURES="run runtime" RUNS=30 bench/suite.sh
#
# This wrapper installs what is missing (scripts/setup.sh, plus hyperfine), builds the release
# binaries and the big-image generator, then hands over to bench/suite.py, which starts private
# daemons and a loopback registry under one temporary directory, measures, prints one table,
# writes the raw runs as JSON and removes everything it started. See bench/README.md for the
# measures and every knob.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf 'suite: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it starts containers, mounts and cgroups)"
    exit 1
fi

# Debian's containerd, runc, crun, docker-registry, skopeo, busybox-static and jq come from the
# project's own setup; hyperfine is the suite's alone. The suite times commands itself, so Berth
# and the anchors can be interleaved run by run (hyperfine runs one command's series at a time);
# hyperfine is installed for quick one-off checks of a single command next to the suite.
scripts/setup.sh >&2
if ! command -v hyperfine >/dev/null 2>&1; then
    log "installing hyperfine"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hyperfine >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hyperfine >/dev/null; }
fi

# BUILD=0 measures the release binaries already in target/ (e.g. while the worktree does not
# build); the JSON records it.
if [ "${BUILD:-1}" = 1 ]; then
    log "building release binaries (berthd, berth-shim, berth-runc, berthctl, make_big_image)"
    cargo build --release -q -p berthd -p berth-runtime -p berthctl
    # The shim as shipped (static, hot code ordered), next to the release berthd.
    scripts/build-shim.sh
    cargo build --release -q -p berth-integration --example make_big_image
else
    log "BUILD=0: using the release binaries already built"
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

# The runtimes and containerd's shim live in /usr/sbin and /usr/bin; a login shell may lack them.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
exec python3 bench/suite.py --bin "$target_dir/release" "$@"
