#!/usr/bin/env bash
# One stock Flower ClientApp among three SparCL devices against the all-SparCL fleet, on digits
# (scenarios/mixed_fleet.yaml), and the same with dense DER++ devices (what a fine-tuning client
# costs a fleet without SparCL). Writes results/mixed_fleet*/; about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh

run results/mixed_fleet compare scenarios/mixed_fleet.yaml --vary fleet.stock_clients=0,1
run results/mixed_fleet-dense compare scenarios/mixed_fleet.yaml --set sparcl.enabled=false \
  --vary fleet.stock_clients=0,1
