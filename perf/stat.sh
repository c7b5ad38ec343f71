#!/usr/bin/env bash
# Cycles and instructions per operation: perf stat around the server during a
# fixed-count run (the load phase inserting KEYS records, then a timed PING or
# GET run), divided by the operations served.
#
# Usage: perf/stat.sh      Environment: WORKLOAD [C], KEYS [200000], RUN_SECONDS [5], SHARDS [1]
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=${WORKLOAD:-C}; KEYS=${KEYS:-200000}; RUN_SECONDS=${RUN_SECONDS:-5}; SHARDS=${SHARDS:-1}
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 2; }
if perf stat -e instructions true 2>&1 | grep -q "not supported"; then
    echo "This machine does not expose hardware counters to perf (typical of VMs without a virtual PMU):"
    echo "cycles and instructions cannot be counted here. Use perf/flamegraph.sh (sampling on cpu-clock)"
    echo "or valgrind --tool=callgrind for instruction counts instead."
    exit 0
fi
cargo build --release --quiet
bin=target/release/corekv
work=$(mktemp -d /tmp/corekv-stat.XXXXXX)
trap 'kill $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --admin-listen off --shards "$SHARDS" >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 100); do grep -q "corekv serving" "$work/out" 2>/dev/null && break; sleep 0.1; done
"$bin" bench --addr "127.0.0.1:$port" --keys "$KEYS" --load-only --quiet
perf stat -e cycles,instructions -x, -o "$work/stat" -p "$server" -- sleep "$((RUN_SECONDS + 1))" &
stat=$!
"$bin" bench --addr "127.0.0.1:$port" --workload "$WORKLOAD" --keys "$KEYS" --duration "$RUN_SECONDS" --warmup 0 --quiet --json "$work/r.json" >/dev/null
wait $stat
ops=$(python3 -c "import json; print(sum(o['count'] for o in json.load(open('$work/r.json'))['results']['ops'].values()))")
cycles=$(awk -F, '$3=="cycles"{print $1}' "$work/stat"); instr=$(awk -F, '$3=="instructions"{print $1}' "$work/stat")
echo "workload $WORKLOAD: $ops ops; server: $cycles cycles, $instr instructions"
python3 -c "print(f'per op: {$cycles/$ops:.0f} cycles, {$instr/$ops:.0f} instructions, IPC {$instr/$cycles:.2f}')"
echo "(the window includes ~1 s idle around the run; idle costs little in a parked executor)"
