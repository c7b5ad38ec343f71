#!/usr/bin/env bash
# Side by side: corekv and redis-server on loopback, same workloads, one run.
#
# Usage: perf/compare.sh [sync|async|memory]   (default: sync)
#   sync:   corekv --durability sync   vs redis appendonly yes, appendfsync always
#   async:  corekv --durability async  vs redis appendfsync everysec, and no persistence
#   memory: corekv --durability async  vs redis with no persistence at all
# Environment (defaults in brackets):
#   SHARDS [2]  CONNECTIONS [50]  PIPELINE [1]  WORKLOADS ["C custom:get=0,put=1"]
#   KEYS [1000000]  VALUE [256]  DURATION [10]  WARMUP [2]  REPEAT [3]
#   CLIENT_CORES [0]  SERVER_CPUS [] (e.g. 0: corekv's shards get --cpus 0 and
#   redis-server runs under taskset -c 0; for "1 shard, client on the other core").
#   Unset with fewer shards than CPUs: the first SHARDS CPUs the client does not
#   use, for both servers (a shard would otherwise share CPU 0 with the client
#   while redis-server took a free CPU)
#   OUT [perf/out]  RATE [] (open loop ops/s)
#   COREKV_BIN [build target/release/corekv]  SMOKE [0]
#   BENCH_ARGS [] extra `corekv bench` flags for every run (e.g. --shard-aware)
#   Any COREKV_* setting in the environment reaches corekv's server, e.g.
#   COREKV_CONNECTION_SHARDS=1 (only shard 1 accepts connections: docs/tuning.md)
# Shortest run (a smoke test, not a measurement; tests/scripts.rs runs it):
#   SMOKE=1 perf/compare.sh sync    (KEYS=1000 DURATION=1 WARMUP=0 REPEAT=1
#   WORKLOADS=C CONNECTIONS=4; prints "skipped: ..." and exits 0 without redis-server)
# Every server binds 127.0.0.1 only and is stopped on exit (perf/lib.sh). Exit 1
# when a bench run failed, 2 when the script could not start.
# Prints, per workload, each target's median-run table and the ratio table
# (target / redis), and writes OUT/<mode>-<workload>.svg comparing them.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-sync}
if [ "${SMOKE:-0}" = 1 ]; then
    : "${KEYS:=1000}" "${DURATION:=1}" "${WARMUP:=0}" "${REPEAT:=1}" "${WORKLOADS:=C}" "${CONNECTIONS:=4}"
fi
SHARDS=${SHARDS:-2}; CONNECTIONS=${CONNECTIONS:-50}; PIPELINE=${PIPELINE:-1}
WORKLOADS=${WORKLOADS:-"C custom:get=0,put=1"}
KEYS=${KEYS:-1000000}; VALUE=${VALUE:-256}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-3}; CLIENT_CORES=${CLIENT_CORES:-0}; OUT=${OUT:-perf/out}; RATE=${RATE:-}
SERVER_CPUS=${SERVER_CPUS:-}
# Fewer shards than CPUs and no SERVER_CPUS: a shard would be pinned to CPU 0,
# where the client runs by default, while an unpinned redis-server takes a free
# CPU. Give both servers the same CPUs, those the client does not use.
if [ -z "$SERVER_CPUS" ] && [ "$SHARDS" -lt "$(nproc)" ]; then
    free_cpus=()
    for ((c = 0; c < $(nproc); c++)); do
        case ",$CLIENT_CORES," in *",$c,"*) ;; *) free_cpus+=("$c") ;; esac
    done
    if [ "${#free_cpus[@]}" -ge "$SHARDS" ]; then
        SERVER_CPUS=$(IFS=,; echo "${free_cpus[*]:0:$SHARDS}")
        echo "# SERVER_CPUS not set: corekv's $SHARDS shard(s) and redis-server both on CPU(s) $SERVER_CPUS, away from the client's ($CLIENT_CORES)"
    fi
fi
pin=(); cpus_flag=()
if [ -n "$SERVER_CPUS" ]; then pin=(taskset -c "$SERVER_CPUS"); cpus_flag=(--cpus "$SERVER_CPUS"); fi
mkdir -p "$OUT"

# shellcheck source=perf/lib.sh
. perf/lib.sh
need redis-server "apt-get install redis-server"
corekv_binary release

# start_redis NAME ARGS...: a redis-server on a free loopback port; sets
# $started_port. Called directly, not in $(...), so that its PID reaches the
# cleanup trap.
start_redis() {
    local name=$1; shift
    started_port=$(free_port)
    mkdir -p "$work/$name"
    spawn "${pin[@]}" redis-server --bind 127.0.0.1 --protected-mode yes --port "$started_port" --dir "$work/$name" \
        --save '' "$@" >"$work/$name.log" 2>&1
    wait_port "$started_port"
}

corekv_durability=sync
case "$mode" in
    sync)   redis_targets=("redis-always:--appendonly yes --appendfsync always") ;;
    async)  corekv_durability=async
            redis_targets=("redis-everysec:--appendonly yes --appendfsync everysec" "redis-nopersist:--appendonly no") ;;
    memory) corekv_durability=async; redis_targets=("redis-nopersist:--appendonly no") ;;
    *) echo "unknown mode $mode (sync, async, memory)" >&2; exit 2 ;;
esac

targets=()
for spec in "${redis_targets[@]}"; do
    name=${spec%%:*}; args=${spec#*:}
    # shellcheck disable=SC2086
    start_redis "$name" $args
    targets+=(--target "$name=resp@127.0.0.1:$started_port")
done
kport=$(free_port)
spawn "$bin" serve --data-dir "$work/corekv" --listen "127.0.0.1:$kport" --admin-listen off --resp-listen off \
    --shards "$SHARDS" "${cpus_flag[@]}" --durability "$corekv_durability" >"$work/corekv.out" 2>"$work/corekv.err"
wait_port "$kport"
targets+=(--target "corekv-$corekv_durability=native@127.0.0.1:$kport")

echo "# $(date -u +%FT%TZ) mode=$mode shards=$SHARDS server_cpus=${SERVER_CPUS:-all} client_cores=$CLIENT_CORES connections=$CONNECTIONS pipeline=$PIPELINE keys=$KEYS value=$VALUE${COREKV_CONNECTION_SHARDS:+ connection_shards=$COREKV_CONNECTION_SHARDS}"
echo "# machine: nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" kernel=$(uname -r) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
echo "# redis: $(redis-server --version | head -1)"
loaded=0; failed=0
for wl in $WORKLOADS; do
    name=${wl%%:*}; mix=""
    if [[ "$wl" == custom:* ]]; then mix="--mix ${wl#custom:}"; name=custom; fi
    load_flag=""; if [ $loaded -eq 0 ]; then load_flag="--load"; loaded=1; fi
    rate_flag=""; if [ -n "$RATE" ]; then rate_flag="--rate $RATE"; fi
    tag=$(echo "$wl" | tr ':,=' '___')
    echo; echo "## workload $wl"
    # shellcheck disable=SC2086
    if ! "$bin" bench "${targets[@]}" --workload "$name" $mix $load_flag $rate_flag \
        --keys "$KEYS" --value-size "$VALUE" --connections "$CONNECTIONS" --pipeline "$PIPELINE" \
        --client-cores "$CLIENT_CORES" --duration "$DURATION" --warmup "$WARMUP" --repeat "$REPEAT" \
        --quiet --plot "$OUT/$mode-$tag.svg" --json "$OUT/$mode-$tag.json" ${BENCH_ARGS:-}; then
        echo "bench failed; server logs:" >&2
        for f in "$work"/*.log "$work"/corekv.err; do echo "== $f" >&2; tail -20 "$f" >&2; done
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || echo "process $p is gone" >&2; done
        failed=1
    fi
done
exit "$failed"
