#!/usr/bin/env bash
# Pull+unpack benchmark: Berth against containerd 1.6, from a private loopback registry.
#
# Builds a ~100 MB image of five incompressible layers, pushes it to a docker-registry on a free
# 127.0.0.1 port, then times, interleaved, RUNS pulls each of:
#   berth     `berthctl pull` into a fresh berthd (daemon-side pull + streaming unpack)
#   ctrd      `ctr images pull --plain-http` against a fresh private containerd 1.6
#   ctr-berth `ctr images pull --plain-http` against a fresh berthd (ctr's client-side pull)
# Every run gets a new daemon on a new root, so nothing is cached. Prints median and minimum
# (unpack-heavy timings are bimodal on the project's VMs: compare both), and writes the raw
# figures to bench/results/pull-<date>.json.
#
# Environment: RUNS (default 5), SIZE_MB (100), LAYERS (5), KINDS ("berth ctrd ctr-berth"),
# BENCH_TMP (where the temporary roots go; default $TMPDIR or /tmp).
set -euo pipefail

RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-100}
LAYERS=${LAYERS:-5}
KINDS=${KINDS:-"berth ctrd ctr-berth"}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf 'bench: %s\n' "$*" >&2; }

# --- setup (idempotent) ------------------------------------------------------------------------
scripts/setup.sh >&2
log "building release binaries"
cargo build --release -q -p berthd -p berthctl
cargo build --release -q -p berth-integration --example make_big_image
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
berthd_bin=$target_dir/release/berthd
berthctl_bin=$target_dir/release/berthctl
make_image=$target_dir/release/examples/make_big_image
ctr_bin=$(command -v ctr)
containerd_bin=$(command -v containerd)

work=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/berth-bench-pull.XXXXXX")
registry_pid=""
daemon_pid=""

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    stop_pid "$daemon_pid"
    stop_pid "$registry_pid"
    # A daemon killed mid-unpack may leave a mount under the work dir: never delete through one.
    if grep -q " $work/" /proc/self/mounts; then
        grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    log "no free port found"
    return 1
}

wait_for() { # wait_for SECONDS PID CMD...: until CMD succeeds, failing if PID exits
    local deadline=$((SECONDS + $1)) pid=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { log "process $pid exited early"; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || { log "timed out waiting for: $*"; return 1; }
        sleep 0.02
    done
}

now_ns() { date +%s%N; }

# --- the image and the registry ----------------------------------------------------------------
log "building a ${SIZE_MB} MiB ${LAYERS}-layer image"
summary=$("$make_image" "$work/layout" "$LAYERS" $((SIZE_MB << 20)))
compressed=$(jq -r .compressed_bytes <<<"$summary")
uncompressed=$(jq -r .uncompressed_bytes <<<"$summary")
manifest=$(jq -r .manifest <<<"$summary")

mkdir -p "$work/registry/storage"
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    cat >"$work/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: "$work/registry/storage"
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: berth-bench-$port
YAML
    docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
    registry_pid=$!
    if wait_for 20 "$registry_pid" curl -fsS "http://127.0.0.1:$port/v2/"; then
        break
    fi
    stop_pid "$registry_pid"
    registry_pid=""
    [ "$attempt" -lt 5 ] || { cat "$work/registry/log" >&2; exit 1; }
done
ref=127.0.0.1:$port/bench/big:latest
log "pushing to $ref"
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:latest" "docker://$ref" >&2
rm -rf "$work/layout" # only the registry's copy is needed now

# --- daemons -----------------------------------------------------------------------------------
start_berthd() { # start_berthd DIR
    local dir=$1
    mkdir -p "$dir"
    "$berthd_bin" --root "$dir/root" --state "$dir/state" --address "$dir/berthd.sock" \
        --log-level warn >"$dir/daemon.log" 2>&1 &
    daemon_pid=$!
    wait_for 20 "$daemon_pid" test -S "$dir/berthd.sock" || { cat "$dir/daemon.log" >&2; return 1; }
}

start_containerd() { # start_containerd DIR
    local dir=$1
    mkdir -p "$dir"
    # Only what a pull needs: no CRI, no snapshotters that probe for tools, no debug/metrics
    # listeners that could clash with a system containerd.
    cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
TOML
    "$containerd_bin" --config "$dir/config.toml" --root "$dir/root" --state "$dir/state" \
        --address "$dir/containerd.sock" --log-level warn >"$dir/daemon.log" 2>&1 &
    daemon_pid=$!
    wait_for 20 "$daemon_pid" "$ctr_bin" --address "$dir/containerd.sock" version ||
        { cat "$dir/daemon.log" >&2; return 1; }
}

# run_one KIND RUN: sets `elapsed` to the seconds one pull took. (Not a command substitution:
# the daemon's pid must stay visible to the cleanup trap.)
run_one() {
    local kind=$1 run=$2 dir="$work/$1-$2" start end status=0
    case $kind in
        berth | ctr-berth) start_berthd "$dir" ;;
        ctrd) start_containerd "$dir" ;;
        *) log "unknown kind $kind"; return 1 ;;
    esac
    sync
    start=$(now_ns)
    case $kind in
        berth) "$berthctl_bin" --address "$dir/berthd.sock" pull -q "$ref" >"$dir/pull.log" 2>&1 || status=$? ;;
        ctr-berth) "$ctr_bin" --address "$dir/berthd.sock" images pull --plain-http "$ref" >"$dir/pull.log" 2>&1 || status=$? ;;
        ctrd) "$ctr_bin" --address "$dir/containerd.sock" images pull --plain-http "$ref" >"$dir/pull.log" 2>&1 || status=$? ;;
    esac
    end=$(now_ns)
    if [ "$status" -ne 0 ]; then
        log "$kind run $run failed ($status):"
        cat "$dir/pull.log" "$dir/daemon.log" >&2
        stop_pid "$daemon_pid"; daemon_pid=""
        return 1
    fi
    stop_pid "$daemon_pid"
    daemon_pid=""
    rm -rf "$dir"
    elapsed=$(awk -v ns=$((end - start)) 'BEGIN { printf "%.4f", ns / 1e9 }')
}

# --- the runs ----------------------------------------------------------------------------------
read -r -a kinds <<<"$KINDS"
declare -A times
for ((run = 1; run <= RUNS; run++)); do
    # Rotate the order so no implementation always goes first after the previous one's cleanup.
    order=()
    for ((k = 0; k < ${#kinds[@]}; k++)); do
        order+=("${kinds[$(((k + run - 1) % ${#kinds[@]}))]}")
    done
    for kind in "${order[@]}"; do
        run_one "$kind" "$run"
        log "run $run/$RUNS $kind ${elapsed}s"
        times[$kind]="${times[$kind]:-} $elapsed"
    done
done

# --- report ------------------------------------------------------------------------------------
mkdir -p bench/results
out="bench/results/pull-$(date -u +%Y%m%dT%H%M%SZ).json"
{
    for kind in "${kinds[@]}"; do
        jq -n --arg kind "$kind" --arg t "${times[$kind]}" \
            '{($kind): ($t | split(" ") | map(select(. != "") | tonumber))}'
    done
} | jq -s \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg host "$(uname -n)" --arg kernel "$(uname -r)" \
    --arg containerd "$("$containerd_bin" --version | awk '{print $3}')" \
    --arg berth_commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --argjson compressed "$compressed" --argjson uncompressed "$uncompressed" \
    --arg manifest "$manifest" --argjson layers "$LAYERS" --argjson runs "$RUNS" \
    '{date: $date, host: $host, kernel: $kernel, containerd: $containerd,
      berth_commit: $berth_commit, runs: $runs,
      image: {layers: $layers, manifest: $manifest, compressed_bytes: $compressed,
              uncompressed_bytes: $uncompressed},
      seconds: add}' >"$out"

jq -r '"image: \(.image.layers) layers, \(.image.compressed_bytes / 1e6 | floor) MB compressed (MB = 10^6 bytes), \(.runs) runs each"' "$out"
jq -r '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                     else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def f(n): (n * 1000 | round) / 1000 | tostring;
  .image.compressed_bytes as $bytes
  | (.seconds | to_entries | map({kind: .key, median: (.value | median), min: (.value | min)})) as $rows
  | ($rows | map(select(.kind == "ctrd")) | first) as $anchor
  | "kind\tmedian s\tmin s\tMB/s (median)\tMB/s (min)\tmedian/ctrd\tmin/ctrd",
    ($rows[] | [.kind, f(.median), f(.min), f($bytes / 1e6 / .median), f($bytes / 1e6 / .min),
                (if $anchor then f(.median / $anchor.median) else "-" end),
                (if $anchor then f(.min / $anchor.min) else "-" end)] | join("\t"))
' "$out" | column -t -s $'\t'
log "raw results: $out"
