#!/usr/bin/env bash
# The main job: set up, build, start berthd with its built-in default configuration, and show it
# working end to end through berthctl and containerd's own `ctr`, up to running a container from a
# busybox image the script builds itself. Stops the daemon on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# berthd starts berth-shim from its own directory; scripts/build-shim.sh puts the shim as
# shipped (static, hot code ordered) there.
cargo build --release -p berthd -p berthctl
scripts/build-shim.sh
bin=${CARGO_TARGET_DIR:-$PWD/target}/release

sock=$("$bin/berthd" config dump | sed -n 's/^address = "\(.*\)"/\1/p')
log=$(mktemp /tmp/berthd-demo.XXXXXX.log)
"$bin/berthd" >"$log" 2>&1 &
daemon=$!
cleanup() {
    kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    echo "== berthd stopped (log: $log)"
}
trap cleanup EXIT

for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$log"; echo "berthd did not start" >&2; exit 1; }

run() { echo "\$ $*"; "$@"; echo; }
# The default root persists between runs: a namespace of its own keeps each run independent.
ns=demo-$(date +%s)
ctl="$bin/berthctl --address $sock"
run $ctl version
run $ctl info
run $ctl namespace create "$ns" --label purpose=demo
run $ctl namespace ls
head -c 4M /dev/urandom >"$log.blob"
run $ctl -n "$ns" lease create --id demo-lease --expires-in 1h
run $ctl -n "$ns" content ingest demo-blob "$log.blob"
run $ctl -n "$ns" content ls
run ctr --address "$sock" -n "$ns" content ls
run $ctl -n "$ns" lease rm demo-lease --sync
run $ctl -n "$ns" content ls
run $ctl -n "$ns" gc

# A one-layer busybox image, as an OCI archive made here (no registry, no internet needed).
img=$(mktemp -d /tmp/berth-demo-image.XXXXXX)
scripts/make-busybox-image.sh "$img/image.tar" demo.local/busybox:latest
run ctr --address "$sock" -n "$ns" images import "$img/image.tar"
run $ctl -n "$ns" images
echo "\$ ctr run --rm demo.local/busybox:latest hello sh -c 'echo hello from a Berth container, pid \$\$; exit 3'"
set +e
ctr --address "$sock" -n "$ns" run --rm demo.local/busybox:latest hello \
    sh -c 'echo hello from a Berth container, pid $$; exit 3'
code=$?
set -e
echo "(exit code $code: the container's)"
[ "$code" = 3 ] || { echo "expected exit code 3" >&2; exit 1; }
echo
# The same with berthctl, Docker's way: a detached container, its logs, exec, stop, rm.
echo "\$ berthctl run --rm demo.local/busybox:latest sh -c 'id; hostname; exit 4'"
set +e
$ctl -n "$ns" run --rm demo.local/busybox:latest sh -c 'id; hostname; exit 4'
code=$?
set -e
echo "(exit code $code: the container's)"
[ "$code" = 4 ] || { echo "expected exit code 4" >&2; exit 1; }
echo
run $ctl -n "$ns" run -d --name ticker demo.local/busybox:latest \
    sh -c 'i=0; while [ $i -lt 3 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done; sleep 1000'
run $ctl -n "$ns" ps
run $ctl -n "$ns" exec ticker cat /etc/hostname
sleep 1
run $ctl -n "$ns" logs -t ticker
run $ctl -n "$ns" stop -t 1 ticker
run $ctl -n "$ns" rm ticker
run ctr --address "$sock" -n "$ns" images rm --sync demo.local/busybox:latest
rm -rf "$img"
run $ctl namespace rm "$ns"
run ctr --address "$sock" version
rm -f "$log.blob"
