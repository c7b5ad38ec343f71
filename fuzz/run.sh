#!/usr/bin/env bash
# Run every fuzz target for SECONDS_PER_TARGET (default 30) on the stable
# toolchain (libFuzzer without sanitizers), then copy any crash into
# fuzz/regressions/<target>/ so that `cargo test` replays it forever.
#
#   cargo install cargo-fuzz      # once
#   fuzz/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")"
per_target="${1:-30}"
status=0
for t in frames wal table recovery; do
  mkdir -p "corpus/$t" "regressions/$t"
  echo "== $t (${per_target}s)"
  if ! cargo fuzz run --sanitizer none "$t" "corpus/$t" -- \
      -max_total_time="$per_target" -max_len=65536 -print_final_stats=1 2>&1 | tee "/tmp/corekv-fuzz-$t.log" | grep -E "stat::number_of_executed_units|ERROR|panicked|crash-"; then
    :
  fi
  for crash in artifacts/"$t"/crash-* artifacts/"$t"/oom-* artifacts/"$t"/timeout-*; do
    [ -e "$crash" ] || continue
    cp "$crash" "regressions/$t/"
    echo "kept $crash in regressions/$t/ (replayed by tests/fuzz_replay.rs)"
    status=1
  done
done
exit $status
