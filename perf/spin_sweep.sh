#!/usr/bin/env bash
# The spin-before-park sweep: for each --spin-before-park-us value, unpipelined
# throughput, p99 and the server's CPU under load, and the CPU an idle server
# burns once its spin window has passed. The runs of all spin values are
# interleaved (round r runs every value once) and each figure is the median
# over rounds, so that machine noise hits every value alike.
#
# Usage: perf/spin_sweep.sh      Environment (defaults in brackets):
#   SPINS ["0 10 50 200 2000"]  SHARDS ["1 2"]  OPS ["ping get"]  CONNECTIONS ["1 50"]
#   DURATION [5] seconds per run  REPEAT [3] rounds  KEYS [10000]
#   COREKV_BIN [build target/release/corekv]  SMOKE [0]
# Shortest run (a smoke test, not a measurement; tests/scripts.rs runs it):
#   SMOKE=1 perf/spin_sweep.sh   (SPINS="0 50" SHARDS=1 OPS=ping CONNECTIONS=1
#   DURATION=1 REPEAT=1 KEYS=1000)
#
# Placement as perf/request_cost.sh: 1 shard on CPU 0 with the client on CPU 1;
# 2 shards on CPUs 0-1 with the client sharing CPU 0. Every server binds
# 127.0.0.1 only and is stopped on exit (perf/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SMOKE:-0}" = 1 ]; then
    : "${SPINS:=0 50}" "${SHARDS:=1}" "${OPS:=ping}" "${CONNECTIONS:=1}" "${DURATION:=1}" "${REPEAT:=1}" "${KEYS:=1000}"
fi
SPINS=${SPINS:-"0 10 50 200 2000"}; SHARDS=${SHARDS:-"1 2"}; OPS=${OPS:-"ping get"}
CONNECTIONS=${CONNECTIONS:-"1 50"}; DURATION=${DURATION:-5}; REPEAT=${REPEAT:-3}; KEYS=${KEYS:-10000}

# shellcheck source=perf/lib.sh
. perf/lib.sh
corekv_binary release
hz=$(getconf CLK_TCK)

# cpu_ticks PID: user+system clock ticks the process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for shards in $SHARDS; do
    if [ "$shards" = 1 ]; then cpus=0; client=1; else cpus=0,1; client=0; fi
    for round in $(seq "$REPEAT"); do
        for spin in $SPINS; do
            port=$(free_port)
            rm -rf "$work/data"
            spawn "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --admin-listen off --resp-listen off \
                --shards "$shards" --cpus "$cpus" --durability async --spin-before-park-us "$spin" \
                >"$work/out" 2>"$work/err"
            server=$spawned
            wait_port "$port"
            "$bin" bench --addr "127.0.0.1:$port" --keys "$KEYS" --load-only --quiet >/dev/null
            # Idle: past the spin window, no clients, 2 s.
            sleep 1
            t0=$(cpu_ticks "$server"); sleep 2; t1=$(cpu_ticks "$server")
            echo "$spin $shards idle - $(python3 -c "print(($t1 - $t0) / $hz / 2 / $shards * 100)")" >>"$work/idle"
            for op in $OPS; do
                workload=(--workload ping)
                if [ "$op" = get ]; then workload=(--workload custom --mix get=1); fi
                for conns in $CONNECTIONS; do
                    t0=$(cpu_ticks "$server")
                    "$bin" bench --addr "127.0.0.1:$port" "${workload[@]}" --keys "$KEYS" --connections "$conns" \
                        --pipeline 1 --duration "$DURATION" --warmup 1 --client-cores "$client" --quiet \
                        --json "$work/r.json" >/dev/null
                    t1=$(cpu_ticks "$server")
                    python3 - "$spin" "$shards" "$op" "$conns" "$work/r.json" "$((t1 - t0))" "$hz" "$DURATION" \
                        >>"$work/runs" <<'EOF'
import json, sys
spin, shards, op, conns, path, ticks, hz, secs = sys.argv[1:9]
r = json.load(open(path))["results"]
p99 = max(o.get("p99_us", 0) for o in r["ops"].values())
# Server CPU over the warm-up and the timed run, in % of one CPU.
cpu = int(ticks) / int(hz) / (float(secs) + 1) * 100
print(spin, shards, op, conns, r["throughput_ops_per_sec"], p99, cpu)
EOF
                done
            done
            stop_pid "$server"
        done
    done
done

python3 - "$work/runs" "$work/idle" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    spin, shards, op, conns, rate, p99, cpu = line.split()
    runs[(int(shards), op, int(conns), int(spin))].append((float(rate), float(p99), float(cpu)))
idle = defaultdict(list)
for line in open(sys.argv[2]):
    spin, shards, _, _, pct = line.split()
    idle[(int(shards), int(spin))].append(float(pct))
print("| shards | op | conns | spin µs | ops/s (median) | p99 µs (median) | server CPU % under load | idle CPU % per shard | runs |")
print("|---|---|---|---|---|---|---|---|---|")
for (shards, op, conns, spin), rs in sorted(runs.items()):
    med = lambda i: statistics.median(r[i] for r in rs)
    print(f"| {shards} | {op} | {conns} | {spin} | {med(0):,.0f} | {med(1):.0f} | {med(2):.0f} | "
          f"{statistics.median(idle[(shards, spin)]):.2f} | {len(rs)} |")
EOF
