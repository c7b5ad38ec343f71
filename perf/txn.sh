#!/usr/bin/env bash
# Transaction throughput and latency against plain PUT, one server per run.
#
# Usage: perf/txn.sh
# Environment (defaults in brackets):
#   SHARDS [2]  CONNECTIONS [32]  KEYS [100000]  VALUE [256]  DURATION [8]
#   WARMUP [2]  REPEAT [3]  CLIENT_CORES [0]  DURABILITY [sync]
#   PARTS ["peak load get"]: which parts to run; without "peak", part 2 needs
#   PUT_PEAK TXN1_PEAK TXN2_PEAK and part 3 PUT_PEAK TXN2_PEAK (ops/s).
#   COREKV_BIN [build target/release/corekv]  SMOKE [0]
# Shortest run (a smoke test, not a measurement; tests/scripts.rs runs it):
#   SMOKE=1 perf/txn.sh    (PARTS=peak REPEAT=1 DURATION=1 WARMUP=0 KEYS=1000 CONNECTIONS=2)
# Servers bind 127.0.0.1 only; every server and load is stopped on exit (perf/lib.sh).
#
# 1. Peak (closed loop): put, txn1 (MPUT of two keys on one shard), txn2 (MPUT
#    of two keys on two shards), uniform keys, REPEAT interleaved runs each on a
#    fresh data directory; prints every run and the medians and ratios to put.
# 2. Latency at 50% of each op's median peak (open loop, coordinated-omission
#    corrected): p50/p99/p99.9 per op.
# 3. GET p99 at a fixed rate alone, next to a txn2 load on other keys, and next
#    to a PUT load writing as many keys per second (the control).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SMOKE:-0}" = 1 ]; then
    : "${PARTS:=peak}" "${REPEAT:=1}" "${DURATION:=1}" "${WARMUP:=0}" "${KEYS:=1000}" "${CONNECTIONS:=2}"
fi
SHARDS=${SHARDS:-2}; CONNECTIONS=${CONNECTIONS:-32}; KEYS=${KEYS:-100000}; VALUE=${VALUE:-256}
DURATION=${DURATION:-8}; WARMUP=${WARMUP:-2}; REPEAT=${REPEAT:-3}; CLIENT_CORES=${CLIENT_CORES:-0}
DURABILITY=${DURABILITY:-sync}
# shellcheck source=perf/lib.sh
. perf/lib.sh
corekv_binary release
server=""

start() {
    rm -rf "$work/data"; port=$(free_port); admin=$(free_port)
    spawn "$bin" serve --data-dir "$work/data" --shards "$SHARDS" --durability "$DURABILITY" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --resp-listen off >"$work/server.log" 2>&1
    server=$spawned
    wait_port "$port" || { echo "server did not start" >&2; cat "$work/server.log" >&2; exit 2; }
}
stop() { stop_pid "$server"; server=""; }
bench() { # mix, extra args... → prints "ops/s p50 p99 p99.9" of the op line
    local mix=$1; shift
    "$bin" bench --addr "127.0.0.1:$port" --workload custom --mix "$mix" --distribution uniform \
        --keys "$KEYS" --value-size "$VALUE" --connections "$CONNECTIONS" --client-cores "$CLIENT_CORES" \
        --warmup "${BENCH_WARMUP:-$WARMUP}" --duration "${BENCH_DURATION:-$DURATION}" --quiet "$@" >"$work/bench.out"
    awk -v op="${mix%%=*}" '$1==op || ($1=="update" && op=="put") || ($1=="read" && op=="get") {print $3, $5, $7, $8}' "$work/bench.out"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# $(date -u +%F) $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), kernel $(uname -r)"
echo "# shards=$SHARDS connections=$CONNECTIONS keys=$KEYS value=$VALUE durability=$DURABILITY"
PARTS=${PARTS:-"peak load get"}
med_put=${PUT_PEAK:-0}; med_txn1=${TXN1_PEAK:-0}; med_txn2=${TXN2_PEAK:-0}
if [[ $PARTS == *peak* ]]; then
echo "## peak (closed loop), ops/s p50 p99 p99.9 (µs)"
declare -A peaks
for r in $(seq "$REPEAT"); do
    for op in put txn1 txn2; do
        start; line=$(bench "$op=1"); stop
        echo "run $r $op $line"
        peaks[$op]+="$(echo "$line" | cut -d' ' -f1) "
    done
done
for op in put txn1 txn2; do
    m=$(echo ${peaks[$op]} | tr ' ' '\n' | median); eval "med_$op=$m"
done
echo "median peak: put $med_put, txn1 $med_txn1 ($(python3 -c "print(f'{$med_txn1/$med_put:.2f}')")x put), txn2 $med_txn2 ($(python3 -c "print(f'{$med_txn2/$med_put:.2f}')")x put)"
fi

if [[ $PARTS == *load* ]]; then
echo "## at 50% of each median peak (open loop), ops/s p50 p99 p99.9 (µs)"
# One server for all runs, first written to for 15 s: a fresh data directory
# spends its first seconds creating and zero-filling WAL segments.
start
BENCH_WARMUP=0 BENCH_DURATION=15 bench "put=1" --rate "$(python3 -c "print(int($med_put*0.5))")" >/dev/null
for r in $(seq "$REPEAT"); do
    for op in put txn1 txn2; do
        eval "peak=\$med_$op"; rate=$(python3 -c "print(int($peak*0.5))")
        echo "run $r $op @ $rate/s: $(bench "$op=1" --rate "$rate")"
    done
done
stop
fi
[[ $PARTS == *get* ]] || exit 0

echo "## GET p99 at a fixed rate, alone / next to txn2 / next to put writing as many keys"
get_rate=$(python3 -c "print(int($med_put*0.3))"); txn_rate=$(python3 -c "print(int($med_txn2*0.3))")
start
"$bin" bench --addr "127.0.0.1:$port" --workload custom --mix put=1 --keys "$KEYS" --connections 16 --load --load-only --quiet >/dev/null
# Let the load settle (flush, compaction, spare WAL segments) before measuring.
BENCH_WARMUP=0 BENCH_DURATION=15 bench "get=1" --rate "$get_rate" >/dev/null
side() { # mix rate → background load on keys above KEYS
    spawn "$bin" bench --addr "127.0.0.1:$port" --workload custom --mix "$1" --distribution uniform --keys "$KEYS" \
        --connections 8 --client-cores "$CLIENT_CORES" --warmup 0 --duration $((DURATION + WARMUP + 2)) \
        --rate "$2" --seed 99 --quiet >/dev/null
    side_pid=$spawned
}
for r in $(seq "$REPEAT"); do
for what in alone txn2 put; do
    case $what in
        alone) side_pid="";;
        txn2) side "txn2=1" "$txn_rate";;
        put) side "put=1" "$((txn_rate * 2))";;
    esac
    sleep 1
    echo "run $r get @ $get_rate/s, $what${side_pid:+ (side load)}: $(bench "get=1" --rate "$get_rate")"
    if [ -n "$side_pid" ]; then wait "$side_pid"; stop_pid "$side_pid"; fi
done
done
stop
