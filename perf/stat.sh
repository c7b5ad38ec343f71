#!/usr/bin/env bash
# Cycles and instructions per operation: perf stat around the server during a
# fixed-count run (the load phase inserting KEYS records, then a timed PING or
# GET run), divided by the operations served.
#
# Usage: perf/stat.sh      Environment: WORKLOAD [C], KEYS [200000], RUN_SECONDS [5], SHARDS [1],
#   COREKV_BIN [build target/release/corekv], SMOKE [0]
# Shortest run (a smoke test, not a measurement; tests/scripts.rs runs it):
#   SMOKE=1 perf/stat.sh     (KEYS=1000 RUN_SECONDS=1; prints "skipped: ..." and
#   exits 0 without perf)
# The server binds 127.0.0.1 only and is stopped on exit (perf/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SMOKE:-0}" = 1 ]; then : "${KEYS:=1000}" "${RUN_SECONDS:=1}"; fi
WORKLOAD=${WORKLOAD:-C}; KEYS=${KEYS:-200000}; RUN_SECONDS=${RUN_SECONDS:-5}; SHARDS=${SHARDS:-1}
# shellcheck source=perf/lib.sh
. perf/lib.sh
need perf "apt-get install linux-perf"
# Captured, not piped into `grep -q`: grep exits at its first match, perf then
# dies of SIGPIPE and, under pipefail, the test came out false at random.
probe=$(perf stat -e cycles,instructions true 2>&1 || true)
if [[ "$probe" == *"not supported"* || "$probe" == *"not counted"* ]]; then
    echo "This machine does not expose hardware counters to perf (typical of VMs without a virtual PMU):"
    echo "cycles and instructions cannot be counted here. Use perf/flamegraph.sh (sampling on cpu-clock)"
    echo "or valgrind --tool=callgrind for instruction counts instead."
    exit 0
fi
corekv_binary release
port=$(free_port)
spawn "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --admin-listen off --resp-listen off --shards "$SHARDS" \
    >"$work/out" 2>"$work/err"
server=$spawned
wait_port "$port"
"$bin" bench --addr "127.0.0.1:$port" --keys "$KEYS" --load-only --quiet
spawn perf stat -e cycles,instructions -x, -o "$work/stat" -p "$server" -- sleep "$((RUN_SECONDS + 1))"
stat=$spawned
"$bin" bench --addr "127.0.0.1:$port" --workload "$WORKLOAD" --keys "$KEYS" --duration "$RUN_SECONDS" --warmup 0 \
    --quiet --json "$work/r.json" >/dev/null
wait "$stat"
ops=$(python3 -c "import json; print(sum(o['count'] for o in json.load(open('$work/r.json'))['results']['ops'].values()))")
cycles=$(awk -F, '$3=="cycles"{print $1}' "$work/stat"); instr=$(awk -F, '$3=="instructions"{print $1}' "$work/stat")
if ! [[ "$cycles" =~ ^[0-9]+$ && "$instr" =~ ^[0-9]+$ ]]; then
    echo "workload $WORKLOAD: $ops ops; perf could not count cycles/instructions here ($cycles, $instr): no hardware counters"
    exit 0
fi
echo "workload $WORKLOAD: $ops ops; server: $cycles cycles, $instr instructions"
python3 -c "print(f'per op: {$cycles/$ops:.0f} cycles, {$instr/$ops:.0f} instructions, IPC {$instr/$cycles:.2f}')"
echo "(the window includes ~1 s idle around the run; idle costs little in a parked executor)"
