#!/usr/bin/env bash
# Budgets that bind (issue 7 evidence): the fmnist_budgets scenario under its three budget
# profiles, then, under the tight profile, SparCL-DER++ with dense and with sparse kernels and
# with channel masks (compacted layers, timed by the measured compaction table), against dense
# DER++ (which has no masked layer, so the kernel model does not change it).
# Writes results/fmnist-budgets/ and results/fmnist-tight-*/; each .txt starts with the exact
# command it ran. About 45 minutes on 2 cores.
# Needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
SCENARIO=scenarios/fmnist_budgets.yaml

if [[ "${1:-}" != "--kernels-only" ]]; then
  run results/fmnist-budgets compare "$SCENARIO" --profiles generous,balanced,tight
fi
run results/fmnist-tight-sparcl-dense-kernels run "$SCENARIO" --set timing.budget=tight
run results/fmnist-tight-sparcl-sparse-kernels run "$SCENARIO" --set timing.budget=tight --set timing.kernels=sparse
run results/fmnist-tight-derpp run "$SCENARIO" --set timing.budget=tight --set sparcl.enabled=false
run results/fmnist-tight-sparcl-channel run "$SCENARIO" --set timing.budget=tight --set sparcl.granularity=channel
