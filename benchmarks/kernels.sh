#!/usr/bin/env bash
# Measured speed for the time model (issue 10): `fleet bench kernels` times dense, weight-masked
# (PyTorch's dense kernels; and SparseProp's sparse kernels where that extra is installed) and
# channel-compacted training at densities 1, 0.5, 0.25, 0.1 and 0.05 on one thread, on the
# quickstart's model (digits, 8x8) and on the Fashion-MNIST budget scenario's (28x28; no data
# needed). Writes results/kernels*/ (kernels.csv, kernels.json, speedup.yaml: the `timing:` tables
# for channel masks and, with SparseProp, for `kernels: sparse`) and results/kernels*.txt.
# About 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
run results/kernels bench kernels scenarios/quickstart.yaml
run results/kernels-fmnist bench kernels scenarios/fmnist_budgets.yaml
