#!/usr/bin/env bash
# Apply corekv's host recommendations (see `corekv tune check` and docs/tuning.md).
#
# Dry run by default: prints each change it would make. Pass --apply to make them.
# Idempotent: a setting already at its recommended value is left alone. Changes
# made here do not survive a reboot; docs/tuning.md says how to make each one
# permanent (udev rule, kernel command line, sysctl.d, systemd unit).
#
# Usage: tuning/apply.sh [--apply] [--data-dir DIR] [--shard-cpus LIST] [--irq-cpus LIST]
#   --data-dir DIR      corekv's data directory (its block device gets tuned)
#   --shard-cpus LIST   CPUs the shards run on, e.g. 2-9 (kept free of IRQs)
#   --irq-cpus LIST     CPUs that should take NIC and NVMe interrupts, e.g. 0-1
set -euo pipefail

apply=0
data_dir=./corekv-data
shard_cpus=""
irq_cpus=""
while [ $# -gt 0 ]; do
    case "$1" in
        --apply) apply=1 ;;
        --data-dir) data_dir="$2"; shift ;;
        --shard-cpus) shard_cpus="$2"; shift ;;
        --irq-cpus) irq_cpus="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

changed=0
# set_value FILE VALUE WHY: write VALUE to a sysfs/procfs FILE unless it already holds it.
set_value() {
    local file="$1" want="$2" why="$3" have
    if [ ! -w "$file" ] && [ $apply -eq 1 ]; then
        echo "skip  $file: not writable here ($why)"
        return
    fi
    if [ ! -e "$file" ]; then
        echo "skip  $file: not available on this host"
        return
    fi
    have=$(cat "$file" 2>/dev/null || true)
    # Scheduler-style files show the active choice in brackets.
    if [[ "$have" == "$want" || "$have" == *"[$want]"* ]]; then
        echo "ok    $file = $want"
        return
    fi
    changed=$((changed + 1))
    if [ $apply -eq 1 ]; then
        echo "$want" > "$file" && echo "set   $file = $want   ($why)" || echo "FAIL  $file = $want"
    else
        echo "would set $file: '$have' -> '$want'   ($why)"
    fi
}

# The whole-disk sysfs directory of the device holding the data directory.
probe="$data_dir"
while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
devnum=$(stat -c '%d' "$probe")
major=$((devnum >> 8)); minor=$((devnum & 0xff))
sys=$(readlink -f "/sys/dev/block/$major:$minor" || true)
if [ -n "$sys" ] && [ -e "$sys/partition" ]; then sys=$(dirname "$sys"); fi

if [ -n "$sys" ] && [ -d "$sys/queue" ]; then
    echo "# data device: $(basename "$sys") (for $data_dir)"
    set_value "$sys/queue/scheduler" none "NVMe needs no I/O scheduler"
    set_value "$sys/queue/read_ahead_kb" 0 "O_DIRECT data files need no read-ahead"
    set_value "$sys/queue/nr_requests" 1023 "deep device queues for many shards"
else
    echo "skip  data device: cannot map $data_dir to a block device"
fi

echo "# memory"
set_value /sys/kernel/mm/transparent_hugepage/enabled madvise "avoid khugepaged stalls"
set_value /proc/sys/vm/swappiness 1 "keep shard memory resident"

echo "# CPUs"
for gov in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
    [ -e "$gov" ] || { echo "skip  CPU governor: no cpufreq driver on this host"; break; }
    set_value "$gov" performance "no frequency ramp-up on the request path"
done

if [ -n "$irq_cpus" ]; then
    echo "# IRQs of NVMe and NIC queues -> CPUs $irq_cpus (keeping shard CPUs ${shard_cpus:-?} quiet)"
    # Not `grep | while`: that loop would run in a subshell and its changes
    # would be lost from the count (the dry run said "4" while listing 6).
    while read -r line; do
        irq=${line%%:*}; irq=${irq// /}
        [[ "$irq" =~ ^[0-9]+$ ]] || continue
        f=/proc/irq/$irq/smp_affinity_list
        # Managed IRQs (NVMe per-CPU queues) refuse changes; that is fine: they are
        # already one per CPU.
        set_value "$f" "$irq_cpus" "IRQ $(echo "$line" | awk '{print $NF}') off the shard CPUs" || true
    done < <(grep -Ei 'nvme|eth|mlx|ens|enp|virtio.*input' /proc/interrupts || true)
else
    echo "skip  IRQ affinity: pass --irq-cpus LIST (and run shards with --cpus on the others)"
fi

echo "# limits (not changed here: set them in the service unit, see tuning/corekv.service)"
echo "      memlock: $(ulimit -l)   open files: $(ulimit -n)"

if [ $apply -eq 0 ]; then
    echo "dry run: $changed change(s) would be made; rerun with --apply"
else
    echo "$changed change(s) attempted"
fi
