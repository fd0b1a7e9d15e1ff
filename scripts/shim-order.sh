#!/usr/bin/env bash
# Regenerates shim/hot-symbols.txt: the functions and data the long-lived shim process touches
# over a container's life, which scripts/build-shim.sh asks the linker to place together.
#
# Why: the kernel maps file pages 64 KiB around each page a process faults in ("fault-around"),
# so a shim whose hot code is scattered over its 3 MB of text keeps most of it resident. To see
# the pages really touched, this script turns fault-around's feed off for one run: the shim
# binary is dropped from the page cache and the disk's read-ahead is set to 0, so every fault
# reads and maps exactly one page. It then reads which of the binary's pages the shim has
# mapped (/proc/PID/pagemap) after create, start, exec, metrics, pause, resume, ps and kill,
# and lists the symbols on them.
#
# Needs root. It changes /sys/block/<disk>/queue/read_ahead_kb for about a second and puts it
# back (also on failure). Run it after dependency or toolchain updates (symbol names change);
# scripts/build-shim.sh prints how many of the listed symbols it still found.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
log() { printf 'shim-order: %s\n' "$*" >&2; }

cargo build --release -q -p berthd
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-shim-order.XXXXXX")
sock=$work/berthd.sock
ns=order
daemon=""
ra_file=""
ra_saved=""
cleanup() {
    set +e
    [ -n "$ra_file" ] && echo "$ra_saved" >"$ra_file"
    if [ -S "$sock" ]; then
        for id in $(ctr -a "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
            ctr -a "$sock" -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1
        done
        sleep 0.3
        for id in $(ctr -a "$sock" -n "$ns" containers ls -q 2>/dev/null); do
            ctr -a "$sock" -n "$ns" tasks rm "$id" >/dev/null 2>&1
            ctr -a "$sock" -n "$ns" containers rm "$id" >/dev/null 2>&1
        done
    fi
    [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    grep -F "$work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# berthd runs the shim next to its own executable: a copy of both, so each shim is a fresh
# file that can be dropped from the page cache.
mkdir -p "$work/bin"
cp "$target_dir/release/berthd" "$work/bin/"
shim=$work/bin/berth-shim
# berthd settles on its shim's path at start; each pass puts a new file there.
: >"$shim"

"$work/bin/berthd" --root "$work/root" --state "$work/state" --address "$sock" >"$work/berthd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/berthd.log"; exit 1; }
scripts/make-busybox-image.sh "$work/image.tar" order.local/busybox:latest >/dev/null
ctr -a "$sock" -n "$ns" images import "$work/image.tar" >/dev/null

# The disk holding the binaries, and its read-ahead.
dev=$(stat -c %d "$work/bin/berthd")
disk=$(basename "$(readlink -f "/sys/dev/block/$((dev >> 8)):$((dev & 255))")")
[ -e "/sys/block/$disk" ] || disk=$(basename "$(dirname "$(readlink -f "/sys/class/block/$disk")")")
[ -w "/sys/block/$disk/queue/read_ahead_kb" ] || { log "cannot set read-ahead of $disk"; exit 1; }

c() { ctr -a "$sock" -n "$ns" "$@"; }

# Lists the symbols of $shim that the shim of container $1 faulted on. With the file out of the
# page cache and read-ahead off, each first touch of a page is one fault at the exact address
# touched (the instruction for code): the symbol there was used. Other symbols used later on
# the same page make no fault; they surface in a later pass, once the ordering has moved the
# page's first-touched symbol away.
profile() {
    local id=$1 pid perf_pid
    sync
    python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$shim"
    perf record -q -e exceptions:page_fault_user -a -o "$work/faults.data" 2>/dev/null &
    perf_pid=$!
    sleep 0.5
    ra_file=/sys/block/$disk/queue/read_ahead_kb
    ra_saved=$(cat "$ra_file")
    echo 0 >"$ra_file"
    c run -d order.local/busybox:latest "$id" sleep 100000 >/dev/null
    pid=$(pgrep -f -- "$shim --id $id " | head -1)
    c tasks exec --exec-id e1 "$id" true
    c tasks metrics "$id" >/dev/null
    c tasks pause "$id"
    c tasks resume "$id"
    c tasks ps "$id" >/dev/null
    c tasks kill -s SIGKILL "$id"
    sleep 0.5
    echo "$ra_saved" >"$ra_file"
    ra_file=""
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf script -i "$work/faults.data" -F pid,trace 2>/dev/null |
        awk -v p="$pid" '$1 == p { for (i = 2; i <= NF; i++) if ($i ~ /^address=/) print substr($i, 9) }' >"$work/addresses"
    python3 - "$shim" "$work/addresses" <<'PY'
import bisect, subprocess, sys
exe, addresses = sys.argv[1], sys.argv[2]
nm = subprocess.run(["nm", "-S", "--defined-only", "-n", exe], capture_output=True, text=True, check=True)
syms = []
for line in nm.stdout.splitlines():
    f = line.split()
    if len(f) == 4 and f[2] in "tTrRdDbBwW":
        syms.append((int(f[0], 16), int(f[1], 16), f[3]))
starts = [s[0] for s in syms]
hit = set()
for line in open(addresses):
    addr = int(line, 16)
    i = bisect.bisect_right(starts, addr) - 1
    # The last symbol starting at or before addr that covers it (aliases share an address).
    while i >= 0 and starts[i] + max(syms[i][1], 1) <= addr and starts[i] > addr - 65536:
        i -= 1
    if i >= 0 and starts[i] <= addr < starts[i] + max(syms[i][1], 1):
        hit.add(syms[i][2])
for name in sorted(hit):
    print(name)
print(f"shim-order: {len(hit)} symbols faulted on", file=sys.stderr)
PY
    c tasks rm "$id" >/dev/null
    c containers rm "$id" >/dev/null
}

# Each pass links with the list so far, which grows by what the pass saw, until a pass adds
# nothing (or PASSES runs out). The list is in first-seen order: what the shim touches first comes first.
# The committed list seeds the first pass; names that no longer exist do no harm.
list=$work/list
grep -sv '^#' shim/hot-symbols.txt >"$list" || true
for pass in $(seq "${PASSES:-8}"); do
    if [ -s "$list" ]; then
        ORDER_FILE=$list INSTALL=0 scripts/build-shim.sh >&2
    else
        NO_ORDER=1 INSTALL=0 scripts/build-shim.sh >&2
    fi
    cp --remove-destination "$target_dir/shim/berth-shim" "$shim"
    profile "hot$pass" >"$work/seen"
    before=$(wc -l <"$list")
    grep -vxF -f "$list" "$work/seen" >>"$list" || true
    after=$(wc -l <"$list")
    log "pass $pass: $after symbols (+$((after - before)))"
    [ "$after" = "$before" ] && break
done

{
    echo "# Symbols the long-lived berth-shim touches, hottest layout first; generated by"
    echo "# scripts/shim-order.sh (which says why), read by scripts/build-shim.sh."
    cat "$list"
} >shim/hot-symbols.txt
log "wrote shim/hot-symbols.txt ($(wc -l <"$list") symbols)"
