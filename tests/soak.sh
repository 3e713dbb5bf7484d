#!/usr/bin/env bash
# The long torture runs with their full counts (CI, through tests/run-all.sh, runs the same
# tests with reduced counts). Prints every FIGURES line at the end; docs/RELIABILITY.md quotes
# them. Needs what tests/run-all.sh installs (mosquitto, mosquitto-clients, cc).
#   EDGECAP_KILLS      daemon SIGKILLs in the kill storm            (soak 1000, CI 100)
#   EDGECAP_OUTAGES    broker outages and half-open episodes        (soak 100,  CI 10)
#   EDGECAP_POWER_CUTS simulated power cuts of the storage library  (soak 1000000, CI 100000)
#   EDGECAP_MODEL_RUNS model-based runs of the storage library      (soak 2000)
#   EDGECAP_KILL_ROUNDS real SIGKILLs of a storage writer process   (soak 200)
#   EDGECAP_CUTS       power cuts of a real VM, per sync mode       (soak 100,  CI 10)
#   EDGECAP_FUZZ_RUNS  fuzz executions per target                   (soak 10000000, CI 15 s each)
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGECAP_KILLS=${EDGECAP_KILLS:-1000}
export EDGECAP_OUTAGES=${EDGECAP_OUTAGES:-100}
export EDGECAP_POWER_CUTS=${EDGECAP_POWER_CUTS:-1000000}
export EDGECAP_MODEL_RUNS=${EDGECAP_MODEL_RUNS:-2000}
export EDGECAP_KILL_ROUNDS=${EDGECAP_KILL_ROUNDS:-200}
export EDGECAP_CUTS=${EDGECAP_CUTS:-100}
export EDGECAP_FUZZ_RUNS=${EDGECAP_FUZZ_RUNS:-10000000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$SECONDS
echo "== soak: kills=$EDGECAP_KILLS outages=$EDGECAP_OUTAGES power_cuts=$EDGECAP_POWER_CUTS model_runs=$EDGECAP_MODEL_RUNS kill_rounds=$EDGECAP_KILL_ROUNDS vm_cuts=$EDGECAP_CUTS fuzz_runs=$EDGECAP_FUZZ_RUNS"
cargo test --release -p edgecap --test it torture:: -- --nocapture --test-threads 1 2>&1 | tee -a "$log"
cargo test --release -p edgecap-storage --test it -- power_cut:: model:: process_kill:: 2>&1 | tee -a "$log"
bash tests/powercut-vm.sh 2>&1 | tee -a "$log"
bash tests/fuzz.sh 2>&1 | tee -a "$log"
echo "== soak figures ($(date -u +%F), $(nproc) cores, $((SECONDS - started)) s)"
grep '^FIGURES' "$log" || true
