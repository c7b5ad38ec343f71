#!/usr/bin/env bash
# What one request costs the server, counted by the kernel: syscalls (total and
# the ones that matter: io_uring_enter, membarrier, timerfd_settime, epoll_wait,
# socket I/O = read/write/recvfrom/sendto/writev/sendmsg, futex), io_uring submissions and completions, context switches and
# wake-ups issued, IPIs on the whole machine (function-call and reschedule
# interrupts), and CPU time — each divided by the requests served. corekv and
# redis-server are measured in the same run with the same client
# (`corekv bench`), so the two columns can be compared line by line.
#
# Usage: perf/request_cost.sh      Environment (defaults in brackets):
#   SHARDS ["1 2"]  OPS ["ping get set-async set-sync"]  CONNECTIONS ["1 50"]
#   DURATION [5] seconds per run  KEYS [10000]  SPIN [0] (corekv --spin-before-park-us)
#   PEER [1] (also measure redis-server)  IDLE [1] (idle CPU of a server with no clients)
#   COREKV_BIN [build target/release/corekv]  SMOKE [0]
# Shortest run (a smoke test, not a measurement; tests/scripts.rs runs it):
#   SMOKE=1 perf/request_cost.sh   (SHARDS=1 OPS=ping CONNECTIONS=1 DURATION=1 KEYS=1000
#   IDLE=0; prints "skipped: ..." and exits 0 without perf)
#
# Placement: with 1 shard the server (and redis-server) run on CPU 0 and the
# client on CPU 1; with 2 shards the client shares CPU 0 with shard 0, as in
# docs/benchmarks.md. Counting uses `perf stat -p` (in-kernel counters: the
# server runs at full speed); IPIs are counted machine-wide (`-a`), so anything
# else running on the machine adds to them: run it on a quiet machine.
# Every server binds 127.0.0.1 only and is stopped on exit (perf/lib.sh).
# Prints one markdown table; docs/performance.md explains each column.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SMOKE:-0}" = 1 ]; then
    : "${SHARDS:=1}" "${OPS:=ping}" "${CONNECTIONS:=1}" "${DURATION:=1}" "${KEYS:=1000}" "${IDLE:=0}"
fi
SHARDS=${SHARDS:-"1 2"}; OPS=${OPS:-"ping get set-async set-sync"}; CONNECTIONS=${CONNECTIONS:-"1 50"}
DURATION=${DURATION:-5}; KEYS=${KEYS:-10000}; SPIN=${SPIN:-0}; PEER=${PEER:-1}; IDLE=${IDLE:-1}

# shellcheck source=perf/lib.sh
. perf/lib.sh
need perf "apt-get install linux-perf"
if [ "$PEER" = 1 ]; then need redis-server "apt-get install redis-server"; fi
probe=$(perf stat -e raw_syscalls:sys_enter true 2>&1 || true)
if [[ "$probe" == *"not supported"* || "$probe" == *"No permission"* || "$probe" == *"Error"* ]]; then
    if [ "$SMOKE" = 1 ]; then echo "skipped: perf cannot count tracepoints here (needs root or perf_event_paranoid<=-1)"; exit 0; fi
    echo "perf cannot count tracepoints here: $probe" >&2
    exit 2
fi
corekv_binary release

per_process="task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter"
per_process+=",syscalls:sys_enter_membarrier,syscalls:sys_enter_timerfd_settime,syscalls:sys_enter_epoll_wait"
per_process+=",syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto"
per_process+=",syscalls:sys_enter_writev,syscalls:sys_enter_sendmsg,syscalls:sys_enter_futex"
per_process+=",io_uring:io_uring_submit_req,io_uring:io_uring_complete,sched:sched_wakeup"
machine="irq_vectors:call_function_entry,irq_vectors:call_function_single_entry,irq_vectors:reschedule_entry"

echo "| server | shards | op | conns | ops/s | p99 µs | CPU µs/op | syscalls/op | io_uring_enter/op | membarrier/op | timerfd_settime/op | epoll_wait/op | socket I/O/op | futex/op | sqe/op | cqe/op | ctx switches/op | wakeups/op | IPIs/op (machine) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

# measure LABEL SHARDS OP CONNS PID PORT PROTOCOL CLIENT_CORES: one timed run
# under perf stat; prints one table row.
measure() {
    local label=$1 shards=$2 op=$3 conns=$4 pid=$5 port=$6 protocol=$7 client_cores=$8
    local workload=(--workload custom --mix get=1)
    case "$op" in
        ping) workload=(--workload ping) ;;
        set-*) workload=(--workload custom --mix put=1) ;;
    esac
    spawn perf stat -x, -e "$per_process" -p "$pid" -o "$work/proc.csv"
    local proc=$spawned
    spawn perf stat -x, -a -e "$machine" -o "$work/machine.csv"
    local mach=$spawned
    sleep 0.3 # perf attaches before the run starts
    "$bin" bench --addr "127.0.0.1:$port" --protocol "$protocol" "${workload[@]}" --keys "$KEYS" \
        --connections "$conns" --pipeline 1 --duration "$DURATION" --warmup 0 --client-cores "$client_cores" \
        --quiet --json "$work/r.json" >/dev/null
    # perf stat prints its counts on SIGINT (SIGTERM would lose them).
    kill -INT "$proc" "$mach" 2>/dev/null || true
    reap_pid "$proc"
    reap_pid "$mach"
    python3 - "$label" "$shards" "$op" "$conns" "$work/r.json" "$work/proc.csv" "$work/machine.csv" <<'EOF'
import json, sys
label, shards, op, conns, result, proc, machine = sys.argv[1:8]
doc = json.load(open(result))
ops = sum(o["count"] for o in doc["results"]["ops"].values())
def read(path):
    c = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 3 or line.startswith("#"):
            continue
        try:
            c[f[2]] = float(f[0])
        except ValueError:
            c[f[2]] = float("nan")
    return c
p, m = read(proc), read(machine)
per = lambda k: p.get(k, float("nan")) / ops if ops else float("nan")
ipis = sum(m.get(k, 0) for k in ("irq_vectors:call_function_entry", "irq_vectors:call_function_single_entry", "irq_vectors:reschedule_entry"))
rate = doc["results"]["throughput_ops_per_sec"]
p99 = max(o.get("p99_us", 0) for o in doc["results"]["ops"].values())
cols = [label, shards, op, conns, f"{rate:,.0f}", f"{p99:.0f}", f"{p.get('task-clock', 0) * 1000 / ops:.1f}" if ops else "nan",
        f"{per('raw_syscalls:sys_enter'):.2f}", f"{per('syscalls:sys_enter_io_uring_enter'):.2f}",
        f"{per('syscalls:sys_enter_membarrier'):.2f}", f"{per('syscalls:sys_enter_timerfd_settime'):.2f}",
        f"{per('syscalls:sys_enter_epoll_wait'):.2f}",
        f"{sum(per('syscalls:sys_enter_' + k) for k in ('read', 'write', 'recvfrom', 'sendto', 'writev', 'sendmsg')):.2f}",
        f"{per('syscalls:sys_enter_futex'):.2f}", f"{per('io_uring:io_uring_submit_req'):.2f}",
        f"{per('io_uring:io_uring_complete'):.2f}", f"{per('context-switches'):.2f}",
        f"{per('sched:sched_wakeup'):.2f}", f"{ipis / ops:.2f}" if ops else "nan"]
print("| " + " | ".join(cols) + " |")
EOF
}

# idle LABEL PID SHARDS: CPU used by a server with no clients over 3 s, after
# its spin window, per shard.
idle() {
    sleep 1
    spawn perf stat -x, -e task-clock -p "$2" -o "$work/idle.csv" -- sleep 3
    local s=$spawned
    wait "$s" 2>/dev/null || true
    python3 -c "
import sys
ms = [float(l.split(',')[0]) for l in open('$work/idle.csv') if 'task-clock' in l][0]
print(f'idle: $1 with $3 shard(s), no clients: {ms / 3000 / $3 * 100:.2f} % CPU per shard')
" >>"$work/idle.txt"
}

for shards in $SHARDS; do
    if [ "$shards" = 1 ]; then cpus=0; client=1; else cpus=0,1; client=0; fi
    for op in $OPS; do
        durability=async; redis_fsync=everysec
        if [ "$op" = set-sync ]; then durability=sync; redis_fsync=always; fi
        port=$(free_port)
        rm -rf "$work/data"
        spawn "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --admin-listen off --resp-listen off \
            --shards "$shards" --cpus "$cpus" --durability "$durability" --spin-before-park-us "$SPIN" \
            >"$work/out" 2>"$work/err"
        server=$spawned
        wait_port "$port"
        if [ "$op" = get ]; then "$bin" bench --addr "127.0.0.1:$port" --keys "$KEYS" --load-only --quiet >/dev/null; fi
        if [ "$IDLE" = 1 ] && [ "$op" = ping ]; then idle "corekv (spin ${SPIN} µs)" "$server" "$shards"; fi
        for conns in $CONNECTIONS; do
            measure "corekv" "$shards" "$op" "$conns" "$server" "$port" native "$client"
        done
        stop_pid "$server"
        if [ "$PEER" = 1 ]; then
            rport=$(free_port)
            rm -rf "$work/redis"; mkdir -p "$work/redis"
            spawn taskset -c 0 redis-server --bind 127.0.0.1 --protected-mode yes --port "$rport" \
                --dir "$work/redis" --save '' --appendonly yes --appendfsync "$redis_fsync" >"$work/redis.log" 2>&1
            redis=$spawned
            wait_port "$rport"
            if [ "$op" = get ]; then "$bin" bench --addr "127.0.0.1:$rport" --protocol resp --keys "$KEYS" --load-only --quiet >/dev/null; fi
            if [ "$IDLE" = 1 ] && [ "$op" = ping ] && [ "$shards" = 1 ]; then idle "redis-server" "$redis" 1; fi
            for conns in $CONNECTIONS; do
                measure "redis ($redis_fsync)" "$shards" "$op" "$conns" "$redis" "$rport" resp "$client"
            done
            stop_pid "$redis"
        fi
    done
done
if [ -f "$work/idle.txt" ]; then echo; cat "$work/idle.txt"; fi
