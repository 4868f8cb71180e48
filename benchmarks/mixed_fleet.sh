#!/usr/bin/env bash
# One stock Flower ClientApp among three SparCL devices against the all-SparCL fleet, on digits
# (scenarios/mixed_fleet.yaml), over 5 seeds with differences paired by seed; then the stock
# client's update counted for the share of its change the sparse model keeps (the default,
# federation.plain_weight: in-mask) against counted for its examples as FedAvg would.
# Then the floor: device 3 present but never training. Writes results/mixed_fleet*/; about 35 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh

SEEDS=0,1,2,3,4
run results/mixed_fleet compare scenarios/mixed_fleet.yaml --vary fleet.stock_clients=0,1 --seeds $SEEDS
run results/mixed_fleet-weight compare scenarios/mixed_fleet.yaml --set fleet.stock_clients=1 \
  --vary federation.plain_weight=in-mask,examples --seeds $SEEDS
# What the fleet loses when device 3 is there but never trains (a profile that is never online in a
# run): the floor for a device whose own data the fleet cannot learn from through rehearsal.
run results/mixed_fleet-absent compare scenarios/mixed_fleet.yaml --set fleet.stock_clients=0 \
  --set 'profiles={never-online: {base: rpi5, availability: 0.000001, availability_model: bernoulli, sources: {availability: "assumption: a device that is never online in a run"}}}' \
  --vary 'fleet.profiles={rpi4: 3, rpi5: 1},{rpi4: 3, never-online: 1}' --seeds $SEEDS
