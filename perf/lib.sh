# Shared by the perf/ scripts (sourced, not run): a private work directory, the
# corekv binary, free loopback ports, the shortest mode, and cleanup of every
# process a script starts.
#
# Every background process must go through `spawn`, called directly (never
# inside `$(...)`: a command substitution is a subshell, and a PID recorded there
# is lost to the EXIT trap; that is how compare.sh used to leak a redis-server on
# every run). The EXIT trap stops them all, waits for them and removes the work
# directory; INT and TERM exit through it too.
#
# Environment:
#   COREKV_BIN  use this corekv binary instead of building one (tests/scripts.rs
#               passes the binary Cargo built for the tests; nothing compiles)
#   SMOKE=1     the shortest run: seconds, a thousand keys, one repeat. It checks
#               that the script works, it measures nothing. A tool the script
#               needs and the host lacks (perf, inferno, redis-server) makes it
#               print "skipped: ..." and exit 0 in this mode only; otherwise that
#               is exit 2.
#   TMPDIR      where the work directory goes [/tmp]

# shellcheck shell=bash
SMOKE=${SMOKE:-0}

# need TOOL HINT: exit unless TOOL is on PATH (see SMOKE above).
need() {
    command -v "$1" >/dev/null && return 0
    if [ "$SMOKE" = 1 ]; then
        echo "skipped: $1 not found ($2); SMOKE=1 exits 0 without running"
        exit 0
    fi
    echo "$1 not found: $2" >&2
    exit 2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/corekv-perf.XXXXXX")
pids=()

cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn CMD ARGS...: start CMD in the background; its PID goes to $spawned and
# to the list the EXIT trap stops.
spawn() {
    "$@" &
    spawned=$!
    pids+=("$spawned")
}

# stop_pid PID: SIGTERM one spawned process, wait for it, forget it.
stop_pid() {
    kill "$1" 2>/dev/null || true
    reap_pid "$1"
}

# reap_pid PID: wait for one spawned process to end by itself (or after a
# signal the caller sent, e.g. SIGINT to perf stat so it prints), forget it.
reap_pid() {
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# corekv_binary PROFILE: sets $bin to COREKV_BIN, or builds PROFILE.
corekv_binary() {
    if [ -n "${COREKV_BIN:-}" ]; then
        bin=$COREKV_BIN
        # Not exported further: corekv warns about every COREKV_* variable that
        # is not one of its settings.
        export -n COREKV_BIN
    else
        cargo build --profile "$1" --quiet
        bin=target/$1/corekv
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: until something accepts on 127.0.0.1:PORT (60 s: a debug
# build on a loaded machine starts slowly).
wait_port() {
    for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "port $1 never opened" >&2
    return 1
}
