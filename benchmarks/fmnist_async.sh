#!/usr/bin/env bash
# Stragglers that still count (issue 26): the flagship fleet (scenarios/fmnist_async.yaml, tasks on the
# simulated clock) under each budget, paired by seed, in three modes:
#   sync      every online, free device each round; the round waits for the deadline or the last one;
#   over      three devices a round over-selected 1.3x: four sampled, the round closes at the third arrival;
#   async     FedBuff: devices train whenever free (all four at once), a version every K = 2 updates,
#             updates more than 4 versions old dropped, weighted 1/sqrt(1 + staleness).
# K = 2 is half of the four devices (each version averages two updates; K = 1 would apply every update
# alone, K = 4 would wait for the slowest as a synchronous round does); the bound of 4 versions is two
# passes of the whole fleet, so only an update from a device that fell far behind is dropped. async runs
# 34 versions, about 125 simulated s under tight (the dry run), past sync's 15 rounds of 8 s, so the runs
# compare at the time every run of a seed reached (comparison.csv's *_at_common_s, paired.csv).
# A task lasts three deadlines: 24 s under tight, 90 s under balanced (56 versions for async, about 460 s
# against sync's 414 s in the dry run).
# Writes results/fmnist-async-<budget>/ and .txt (the exact command first). BUDGETS="tight balanced",
# SEEDS=0,1,2,3,4, RESUME=1 keeps every finished run. About 2-3 minutes a run on 2 cores.
# Needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
AGAIN=()
[[ -n "${RESUME:-}" ]] && AGAIN=(--resume)
COMMON="norm_statistics: recalibrated"
for budget in ${BUDGETS:-tight balanced}; do
  case $budget in
    tight) task_s=24; versions=34 ;;
    balanced) task_s=90; versions=56 ;;
    *) echo "fmnist_async.sh: unknown budget $budget (tight or balanced)" >&2; exit 2 ;;
  esac
  run "results/fmnist-async-$budget" compare scenarios/fmnist_async.yaml --seeds "${SEEDS:-0,1,2,3,4}" \
    --set "timing.budget=$budget" --set "stream.task_every_s=$task_s" \
    --vary "federation={devices_per_round: 4, $COMMON},{devices_per_round: 3, over_select: 1.3, $COMMON},{mode: async, rounds: $versions, buffer_size: 2, max_staleness: 4, $COMMON}" \
    --labels sync,over,async \
    "${AGAIN[@]}"
done
