#!/usr/bin/env bash
# OCI runtime benchmark: `berth-runc run`, `runc run` and `crun run` of the same busybox bundle
# running /bin/true, interleaved in one run.
#
# Each runtime gets its own --root under a temporary directory; every run creates, starts, waits
# for and deletes one container (the whole `run` command is timed, wall clock). Prints median and
# minimum in milliseconds and each runtime's ratio to crun and runc, and writes the raw figures
# to bench/results/runtime-<date>.json.
#
# crun 1.8 refuses this machine's hybrid cgroup layout while a controller (hugetlb) is bound to
# the cgroup2 mount. For the duration of the run the script mounts hugetlb as a v1 hierarchy
# (which takes it off cgroup2) and afterwards unmounts it, once nothing uses it, which gives it
# back. With HUGETLB_DANCE=0 it leaves the host alone and crun is reported n/a.
#
# Environment: RUNS (default 30), WARMUP (5), RUNTIMES ("berth-runc runc crun"),
# BENCH_TMP (where the temporary directory goes; default $TMPDIR or /tmp).
set -euo pipefail

RUNS=${RUNS:-30}
WARMUP=${WARMUP:-5}
RUNTIMES=${RUNTIMES:-"berth-runc runc crun"}
HUGETLB_DANCE=${HUGETLB_DANCE:-1}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf 'bench: %s\n' "$*" >&2; }

scripts/setup.sh >&2
log "building berth-runc (release)"
cargo build --release -q -p berth-runtime --bin berth-runc
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

work=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/berth-bench-runtime.XXXXXX")
hugetlb_mount=""
cleanup() {
    set +e
    for rt in $RUNTIMES; do
        [ -d "$work/root-$rt" ] || continue
        for id in $(ls "$work/root-$rt" 2>/dev/null); do
            "$(bin_of "$rt")" --root "$work/root-$rt" delete --force "$id" >/dev/null 2>&1
        done
    done
    if [ -n "$hugetlb_mount" ]; then
        # The v1 hugetlb hierarchy only goes away (handing the controller back to cgroup2) once
        # no cgroup is left in it; an unmount before that leaves it alive and invisible.
        for _ in $(seq 100); do
            find "$hugetlb_mount" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null
            [ -z "$(find "$hugetlb_mount" -mindepth 1 -type d 2>/dev/null)" ] && break
            sleep 0.1
        done
        umount "$hugetlb_mount" 2>/dev/null
        rmdir "$hugetlb_mount" 2>/dev/null
        for _ in $(seq 100); do
            grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null && break
            sleep 0.1
        done
        if grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
            log "hugetlb handed back to cgroup2"
        else
            log "WARNING: hugetlb did not return to cgroup2 (see /proc/cgroups)"
        fi
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

bin_of() {
    case $1 in
        berth-runc) echo "$target_dir/release/berth-runc" ;;
        runc) command -v runc || echo /usr/sbin/runc ;;
        crun) command -v crun ;;
    esac
}

# The bundle: busybox-static, /bin/true, runc's default spec without a terminal.
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$bundle/rootfs/bin/$a"; done
(cd "$bundle" && runc spec)
python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"), indent=1)
PY

available=""
for rt in $RUNTIMES; do
    if [ "$rt" = crun ]; then
        if [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
            if [ "$HUGETLB_DANCE" = 1 ]; then
                hugetlb_mount=/sys/fs/cgroup/hugetlb
                mkdir -p "$hugetlb_mount"
                mount -t cgroup -o hugetlb cgroup "$hugetlb_mount"
                log "hugetlb moved to a v1 hierarchy for crun"
            else
                log "crun: n/a (hybrid cgroups with controllers on cgroup2; HUGETLB_DANCE=0)"
                continue
            fi
        fi
    fi
    mkdir -p "$work/root-$rt"
    available="$available $rt=$(bin_of "$rt")"
done

mkdir -p bench/results
out=bench/results/runtime-$(date -u +%Y%m%dT%H%M%SZ).json
python3 - "$bundle" "$work" "$RUNS" "$WARMUP" "$out" $available <<'PY'
import json, os, statistics, subprocess, sys, time
bundle, work, runs, warmup, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rts = [a.split("=", 1) for a in sys.argv[6:]]
times = {name: [] for name, _ in rts}
n = 0
def once(name, binary):
    global n
    n += 1
    cmd = [binary, "--root", os.path.join(work, "root-" + name), "run", "--bundle", bundle, f"b{n}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{name} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return dt
for i in range(warmup + runs):
    # Rotate the order each round so no runtime always follows another.
    order = rts[i % len(rts):] + rts[:i % len(rts)]
    for name, binary in order:
        dt = once(name, binary)
        if i >= warmup:
            times[name].append(dt)
ms = lambda v: v * 1000
print(f"\n`run` of a busybox bundle running /bin/true: {runs} runs each, interleaved, after {warmup} warm-up rounds\n")
ref = {k: statistics.median(v) for k, v in times.items()}
head = f"{'runtime':<12}{'median ms':>11}{'min ms':>9}{'p90 ms':>9}"
for anchor in ("runc", "crun"):
    if anchor in times:
        head += f"{'÷ ' + anchor:>10}"
print(head)
for name, v in times.items():
    v = sorted(v)
    line = f"{name:<12}{ms(statistics.median(v)):>11.1f}{ms(v[0]):>9.1f}{ms(v[int(len(v)*0.9)-1]):>9.1f}"
    for anchor in ("runc", "crun"):
        if anchor in times:
            line += f"{statistics.median(v) / ref[anchor]:>10.2f}"
    print(line)
json.dump({"measure": "oci runtime run /bin/true", "unit": "seconds", "runs": runs,
           "times": times}, open(out, "w"), indent=1)
print(f"\nraw figures: {out}")
PY
