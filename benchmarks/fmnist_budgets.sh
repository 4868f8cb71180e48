#!/usr/bin/env bash
# Budgets that bind: the fmnist_budgets scenario under its three budget profiles over 5 seeds
# (medians, 95% intervals, differences from generous paired by seed); the normalisation ablation
# under the generous budget (averaged BatchNorm statistics and GroupNorm, beside the flagship's
# recalibrated statistics, same seeds); then, under the tight profile, SparCL-DER++ with dense and
# with sparse kernels and with channel masks (compacted layers, timed by the measured compaction
# table), against dense DER++ (which has no masked layer, so the kernel model does not change it).
# Writes results/fmnist-budgets/, results/fmnist-budgets-norms/ and results/fmnist-tight-*/; each
# .txt starts with the exact command it ran. About 3 hours on 2 cores (25 fleet runs of 4-7 minutes).
# RESUME=1 keeps every finished run of the same scenario and only rewrites the tables and plots;
# --compare-only stops after the two comparisons, --kernels-only runs only the tight-budget runs.
# Needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
SCENARIO=scenarios/fmnist_budgets.yaml

SEEDS=0,1,2,3,4
AGAIN=()
[[ -n "${RESUME:-}" ]] && AGAIN=(--resume)

if [[ "${1:-}" != "--kernels-only" ]]; then
  run results/fmnist-budgets compare "$SCENARIO" --profiles generous,balanced,tight --seeds "$SEEDS" "${AGAIN[@]}"
  run results/fmnist-budgets-norms compare "$SCENARIO" --set timing.budget=generous \
    --set federation.norm_statistics=averaged --vary train.norm=batch,group --seeds "$SEEDS" "${AGAIN[@]}"
fi
[[ "${1:-}" == "--compare-only" ]] && exit 0
run results/fmnist-tight-sparcl-dense-kernels run "$SCENARIO" --set timing.budget=tight
run results/fmnist-tight-sparcl-sparse-kernels run "$SCENARIO" --set timing.budget=tight --set timing.kernels=sparse
run results/fmnist-tight-derpp run "$SCENARIO" --set timing.budget=tight --set sparcl.enabled=false
run results/fmnist-tight-sparcl-channel run "$SCENARIO" --set timing.budget=tight --set sparcl.granularity=channel
