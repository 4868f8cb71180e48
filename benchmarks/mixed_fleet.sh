#!/usr/bin/env bash
# One stock Flower ClientApp among three SparCL devices against the all-SparCL fleet, on digits
# (scenarios/mixed_fleet.yaml), over 5 seeds with differences paired by seed; then the stock
# client's update counted for the share of its change the sparse model keeps (the default,
# federation.plain_weight: in-mask) against counted for its examples as FedAvg would.
# Writes results/mixed_fleet*/; about 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh

SEEDS=0,1,2,3,4
run results/mixed_fleet compare scenarios/mixed_fleet.yaml --vary fleet.stock_clients=0,1 --seeds $SEEDS
run results/mixed_fleet-weight compare scenarios/mixed_fleet.yaml --set fleet.stock_clients=1 \
  --vary federation.plain_weight=in-mask,examples --seeds $SEEDS
