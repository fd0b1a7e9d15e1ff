#!/usr/bin/env bash
# Memory of berth-shim per running container, and of berthd: starts a private berthd (release
# build, its own root, state and socket under a temporary directory), runs N containers
# (`sleep`) through `ctr run -d`, and reports each shim's RSS and PSS (from smaps_rollup) and
# berthd's RSS idle and with the containers running. Stops and removes everything it started.
#
# Environment: N (default 10), BENCH_TMP (where the temporary directory goes).
set -euo pipefail

N=${N:-10}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf 'bench: %s\n' "$*" >&2; }

scripts/setup.sh >&2
log "building berthd (release) and the shim as shipped (scripts/build-shim.sh)"
cargo build --release -q -p berthd
scripts/build-shim.sh
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
bin=$target_dir/release

work=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/berth-bench-shim.XXXXXX")
sock=$work/berthd.sock
ns=bench
daemon=""
cleanup() {
    set +e
    if [ -S "$sock" ]; then
        for i in $(seq "$N"); do
            ctr -a "$sock" -n "$ns" tasks kill -s SIGKILL "mem-$i" >/dev/null 2>&1
        done
        sleep 0.5
        for i in $(seq "$N"); do
            ctr -a "$sock" -n "$ns" tasks rm "mem-$i" >/dev/null 2>&1
            ctr -a "$sock" -n "$ns" containers rm "mem-$i" >/dev/null 2>&1
        done
    fi
    [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    grep -F "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin/berthd" --root "$work/root" --state "$work/state" --address "$sock" >"$work/berthd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/berthd.log"; exit 1; }

scripts/make-busybox-image.sh "$work/image.tar" bench.local/busybox:latest
ctr -a "$sock" -n "$ns" images import "$work/image.tar" >/dev/null
sleep 1
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
idle=$(rss_kb "$daemon")

for i in $(seq "$N"); do
    ctr -a "$sock" -n "$ns" run -d bench.local/busybox:latest "mem-$i" sleep 100000 >/dev/null
done
sleep 1

python3 - "$work/state" "$daemon" "$idle" "$N" <<'PY'
import glob, os, statistics, sys
state, daemon, idle, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def field(path, name):
    for line in open(path):
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0
rss, pss, anon = [], [], []
for pidfile in glob.glob(f"{state}/tasks/*/*/shim.pid"):
    pid = open(pidfile).read().strip()
    rss.append(field(f"/proc/{pid}/status", "VmRSS"))
    anon.append(field(f"/proc/{pid}/status", "RssAnon"))
    pss.append(field(f"/proc/{pid}/smaps_rollup", "Pss"))
if len(rss) != n:
    sys.exit(f"expected {n} shims, found {len(rss)}")
mb = lambda kb: kb / 1024
busy = field(f"/proc/{daemon}/status", "VmRSS")
print(f"\nberth-shim, {n} containers running `sleep` (release build)\n")
print(f"{'measure':<32}{'median MB':>11}{'max MB':>9}")
print(f"{'shim RSS':<32}{mb(statistics.median(rss)):>11.2f}{mb(max(rss)):>9.2f}")
print(f"{'shim RSS, anonymous part':<32}{mb(statistics.median(anon)):>11.2f}{mb(max(anon)):>9.2f}")
print(f"{'shim PSS':<32}{mb(statistics.median(pss)):>11.2f}{mb(max(pss)):>9.2f}")
print(f"{'berthd RSS idle':<32}{mb(idle):>11.2f}")
print(f"{'berthd RSS with the containers':<32}{mb(busy):>11.2f}")
print("\ntarget: shim RSS <= 2 MB per running container (containerd-shim-runc-v2: 13.3 MB RSS, 3.5 MB PSS)")
PY
