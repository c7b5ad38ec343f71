#!/usr/bin/env bash
# Long tier (issue 18), for a nightly CI job: the complete suite (README's
# `cargo test --no-fail-fast`) with every soak knob turned up. About 1–2 hours
# on 2 cores; run it on its own machine, not beside other builds. Each knob can
# be overridden from the environment; docs/testing.md ("Longer runs") says
# what each one does, "Test tiers" how this fits with the other tiers.
#
#   scripts/test-long.sh                    # everything
#   scripts/test-long.sh --test integration simulation::  # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."

export COREKV_SIM_SEEDS="${COREKV_SIM_SEEDS:-100000}"         # default 10,000
export COREKV_TXN_SIM_SEEDS="${COREKV_TXN_SIM_SEEDS:-100000}" # default 10,000
export COREKV_POWER_SEEDS="${COREKV_POWER_SEEDS:-1000}"       # default 112 per cut point
export COREKV_CRASH_CYCLES="${COREKV_CRASH_CYCLES:-100}"      # default 20 and 12 SIGKILL cycles
export COREKV_RESTART_CYCLES="${COREKV_RESTART_CYCLES:-150}"  # default 20 SIGTERM + 20 SIGKILL
export COREKV_MUTATIONS="${COREKV_MUTATIONS:-30000}"          # default 3,000 per seed
export COREKV_MODEL_CASES="${COREKV_MODEL_CASES:-240}"        # default 24
export PROPTEST_CASES="${PROPTEST_CASES:-2560}"               # default 256

echo "long tier: SIM_SEEDS=$COREKV_SIM_SEEDS TXN_SIM_SEEDS=$COREKV_TXN_SIM_SEEDS" \
     "POWER_SEEDS=$COREKV_POWER_SEEDS CRASH_CYCLES=$COREKV_CRASH_CYCLES" \
     "RESTART_CYCLES=$COREKV_RESTART_CYCLES MUTATIONS=$COREKV_MUTATIONS" \
     "MODEL_CASES=$COREKV_MODEL_CASES PROPTEST_CASES=$PROPTEST_CASES"
exec cargo test --no-fail-fast "$@"
