#!/usr/bin/env bash
# Measured speed for the time model (issue 10): `fleet bench kernels` on the quickstart's model times
# dense, weight-masked and channel-compacted training at densities 1, 0.5, 0.25, 0.1 and 0.05 on one
# thread, and writes results/kernels/ (kernels.csv, kernels.json, speedup.yaml: a `timing:` block
# with this machine's speed-ups for `kernels: sparse`) and results/kernels.txt.
# About a minute on 2 cores (11 variants x 5 repeats x 1 s).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
run results/kernels bench kernels scenarios/quickstart.yaml
