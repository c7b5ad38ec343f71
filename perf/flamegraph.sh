#!/usr/bin/env bash
# Profile a corekv server under a bench workload and render an interactive SVG
# flamegraph (perf record + inferno).
#
# Usage: perf/flamegraph.sh [OUT.svg]
# Environment: WORKLOAD [A] (any `corekv bench --workload`), MIX [], SHARDS [1],
#   DURABILITY [sync], CONNECTIONS [50], PIPELINE [1], KEYS [100000], RUN_SECONDS [10],
#   FREQ [999] (samples/s), CLIENT_CORES [0], SERVER_CPUS [1]
#   COREKV_BIN [build target/profiling/corekv with frame pointers; a binary given
#   here without frame pointers gives shallower stacks], SMOKE [0]
# Needs: linux-perf (apt-get install linux-perf), inferno (cargo install inferno).
# Shortest run (a smoke test, not a measurement; tests/scripts.rs runs it):
#   SMOKE=1 perf/flamegraph.sh OUT.svg    (KEYS=1000 RUN_SECONDS=1 CONNECTIONS=4;
#   prints "skipped: ..." and exits 0 without perf or inferno)
# The server binds 127.0.0.1 only; it and the load are stopped on exit (perf/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SMOKE:-0}" = 1 ]; then : "${KEYS:=1000}" "${RUN_SECONDS:=1}" "${CONNECTIONS:=4}"; fi
out=${1:-perf/out/flamegraph.svg}
WORKLOAD=${WORKLOAD:-A}; MIX=${MIX:-}; SHARDS=${SHARDS:-1}; DURABILITY=${DURABILITY:-sync}
CONNECTIONS=${CONNECTIONS:-50}; PIPELINE=${PIPELINE:-1}; KEYS=${KEYS:-100000}; RUN_SECONDS=${RUN_SECONDS:-10}
FREQ=${FREQ:-999}; CLIENT_CORES=${CLIENT_CORES:-0}; SERVER_CPUS=${SERVER_CPUS:-1}
# shellcheck source=perf/lib.sh
. perf/lib.sh
need perf "apt-get install linux-perf"
need inferno-collapse-perf "cargo install inferno"
need inferno-flamegraph "cargo install inferno"
mkdir -p "$(dirname "$out")"

# Symbols and frame pointers make the stacks readable.
RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes" corekv_binary profiling
port=$(free_port)
spawn "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --admin-listen off --resp-listen off --shards "$SHARDS" \
    --cpus "$SERVER_CPUS" --durability "$DURABILITY" >"$work/out" 2>"$work/err"
server=$spawned
wait_port "$port"
mix=(); [ -n "$MIX" ] && mix=(--mix "$MIX")
"$bin" bench --addr "127.0.0.1:$port" --workload "$WORKLOAD" "${mix[@]}" --keys "$KEYS" --load-only --quiet
spawn "$bin" bench --addr "127.0.0.1:$port" --workload "$WORKLOAD" "${mix[@]}" --keys "$KEYS" --connections "$CONNECTIONS" \
    --pipeline "$PIPELINE" --client-cores "$CLIENT_CORES" --duration "$((RUN_SECONDS + 2))" --warmup 1 --quiet >"$work/bench"
bench=$spawned
sleep 1
perf record -F "$FREQ" -g -p "$server" -o "$work/perf.data" -- sleep "$RUN_SECONDS" 2>/dev/null
wait "$bench"
cat "$work/bench"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph --title "corekv $WORKLOAD ($DURABILITY, $SHARDS shard(s))" >"$out"
echo "flamegraph: $out (open it in a browser: click to zoom, search with Ctrl-F)"
