#!/usr/bin/env bash
# Profile a corekv server under a bench workload and render an interactive SVG
# flamegraph (perf record + inferno).
#
# Usage: perf/flamegraph.sh [OUT.svg]
# Environment: WORKLOAD [A] (any `corekv bench --workload`), MIX [], SHARDS [1],
#   DURABILITY [sync], CONNECTIONS [50], PIPELINE [1], KEYS [100000], RUN_SECONDS [10],
#   FREQ [999] (samples/s), CLIENT_CORES [0], SERVER_CPUS [1]
# Needs: linux-perf (apt-get install linux-perf), inferno (cargo install inferno).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-perf/out/flamegraph.svg}
WORKLOAD=${WORKLOAD:-A}; MIX=${MIX:-}; SHARDS=${SHARDS:-1}; DURABILITY=${DURABILITY:-sync}
CONNECTIONS=${CONNECTIONS:-50}; PIPELINE=${PIPELINE:-1}; KEYS=${KEYS:-100000}; RUN_SECONDS=${RUN_SECONDS:-10}
FREQ=${FREQ:-999}; CLIENT_CORES=${CLIENT_CORES:-0}; SERVER_CPUS=${SERVER_CPUS:-1}
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 2; }
command -v inferno-collapse-perf >/dev/null || { echo "inferno not found: cargo install inferno" >&2; exit 2; }
mkdir -p "$(dirname "$out")"

# Symbols and frame pointers make the stacks readable.
RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes" cargo build --profile profiling --quiet
bin=target/profiling/corekv
work=$(mktemp -d /tmp/corekv-flame.XXXXXX)
trap 'kill $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --admin-listen off --shards "$SHARDS" \
    --cpus "$SERVER_CPUS" --durability "$DURABILITY" >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 100); do grep -q "corekv serving" "$work/out" 2>/dev/null && break; sleep 0.1; done
mix=(); [ -n "$MIX" ] && mix=(--mix "$MIX")
"$bin" bench --addr "127.0.0.1:$port" --workload "$WORKLOAD" "${mix[@]}" --keys "$KEYS" --load-only --quiet
"$bin" bench --addr "127.0.0.1:$port" --workload "$WORKLOAD" "${mix[@]}" --keys "$KEYS" --connections "$CONNECTIONS" \
    --pipeline "$PIPELINE" --client-cores "$CLIENT_CORES" --duration "$((RUN_SECONDS + 2))" --warmup 1 --quiet >"$work/bench" &
bench=$!
sleep 1
perf record -F "$FREQ" -g -p "$server" -o "$work/perf.data" -- sleep "$RUN_SECONDS" 2>/dev/null
wait $bench
cat "$work/bench"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph --title "corekv $WORKLOAD ($DURABILITY, $SHARDS shard(s))" >"$out"
echo "flamegraph: $out (open it in a browser: click to zoom, search with Ctrl-F)"
