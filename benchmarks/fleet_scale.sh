#!/usr/bin/env bash
# Fleets at scale (issue 8 evidence). Writes results/fleet-scale/:
#   machine.json  the machine that ran them (CPU, cores, torch)
#   world.txt     the world's round planning alone for 1,000 / 10,000 / 100,000 devices
#   dry-1k.txt    `fleet run --dry-run` of fleet_1k stretched to 100 rounds (1,000 devices, 100 a round)
#   dry-10k.txt   `fleet run --dry-run` of fleet_10k (10,000 devices, 1,000 a round, 100 rounds)
#   fleet-1k.txt  the real fleet_1k run (Flower, Ray, PyTorch; 1,000 devices, 100 a round, 10 rounds),
#                 whose summary.json says where its wall time went (wall_breakdown_s)
# Each .txt starts with the exact command; timed ones end with /usr/bin/time's figures.
# About 3 minutes on 2 cores, on an idle machine (it reports wall times). Needs Debian's dataset-fashion-mnist package.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
OUT=results/fleet-scale
mkdir -p "$OUT"

timed() {  # timed FILE command...: the command, its output, then wall and CPU seconds and peak memory
  local file=$1; shift
  { echo "\$ $*"; /usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" "$@" 2>&1; } > "$file"
  cat "$file"
}

# the machine every figure below comes from (wall times are this CPU's)
.venv/bin/python -c "import json; from fleet.bench.sparcl import machine_info; print(json.dumps(machine_info('cpu')))" \
  > "$OUT/machine.json"
timed "$OUT/world.txt" .venv/bin/python benchmarks/world_planning.py 1000 10000 100000
timed "$OUT/dry-1k.txt" "$FLEET" run scenarios/fleet_1k.yaml --dry-run --set federation.rounds=100 \
  --set stream.rounds_per_task=20 --out "$OUT/dry-1k" --force --quiet
timed "$OUT/dry-10k.txt" "$FLEET" run scenarios/fleet_10k.yaml --dry-run --out "$OUT/dry-10k" --force --quiet
timed "$OUT/fleet-1k.txt" "$FLEET" run scenarios/fleet_1k.yaml --out "$OUT/fleet-1k" --force --quiet
.venv/bin/python -c "import json; print('wall_breakdown_s', json.load(open('$OUT/fleet-1k/summary.json'))['wall_breakdown_s'])" \
  | tee -a "$OUT/fleet-1k.txt"
