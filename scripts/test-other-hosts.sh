#!/usr/bin/env bash
# The test suite as if on other CPUs (issue 15): a test that holds only on the host it was written on fails
# here. The planner's view of a CPU is stated with VOXPLAN_CPU_L2 / VOXPLAN_CPU_THREADS (every `voxplan
# plan` and every in-process plan for the CPU, docs/planner.md "Planning for another CPU"); the threads that
# really compute are changed with RAYON_NUM_THREADS (the trainer, `calibrate` and `bench planner` plan for
# those). Each run reuses the test build: about half a minute on the project's 2-core machines.
set -euo pipefail
cd "$(dirname "$0")/.."
settings=(
  "VOXPLAN_CPU_L2=1MiB VOXPLAN_CPU_THREADS=2"
  "VOXPLAN_CPU_L2=2MiB VOXPLAN_CPU_THREADS=16"
  "RAYON_NUM_THREADS=1"
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for setting in "${settings[@]}"; do
  # shellcheck disable=SC2086 # the setting is a list of NAME=VALUE words on purpose
  if env $setting cargo test --workspace --no-fail-fast >"$log" 2>&1; then
    passed=$(grep -Eo "[0-9]+ passed" "$log" | awk '{s += $1} END {print s}')
    echo "as on another host ($setting): $passed tests passed" >&2
  else
    grep -E -A4 "^test .* FAILED|panicked at|^---- " "$log" >&2 || tail -n 40 "$log" >&2
    echo "FAILED as on another host: $setting" >&2
    exit 1
  fi
done
