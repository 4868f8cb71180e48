#!/usr/bin/env bash
# Issue 24: which component moves a capacity arm. Runs DDR and DGM each beside TDM (ABLATION, default
# tdm+ddr,tdm+dgm, with dense to pair them) at one width, sparsity and seed, with the capacity arms'
# settings, into OUT/diagnosis/w<W>_s<S>_seed<K>_<TAG>.json (TAG default ddr_dgm; .txt: the exact command
# first). Training is deterministic per seed on one machine, so these runs sit beside the arm's TDM-only
# and all-three runs of the same seed (benchmarks/tables.py seed_components checks that the dense runs
# agree); on another CPU they are not the same runs (tables.py machine_repeat shows by how much).
# The measured one (seed 1 at width 32, 0.90, balanced batches; about 25 CPU-minutes on one core):
#   EXTRA="--batches balanced" OUT=results/fmnist-capacity-balanced WIDTH=32 SPARSITY=0.90 SEED=1 \
#     benchmarks/fmnist_components.sh
# The machine check (an arm's dense and static-mask runs repeated on another CPU; about 4 CPU-minutes):
#   ABLATION=static TAG=static_repeat WIDTH=16 SPARSITY=0.90 SEED=0 benchmarks/fmnist_components.sh
# Smoke test: DATASET=digits WIDTH=4 EPOCHS=1 MAX_PER_CLASS=20 OUT=/tmp/components benchmarks/fmnist_components.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET=${FLEET:-.venv/bin/fleet}
WIDTH=${WIDTH:-32}
SPARSITY=${SPARSITY:-0.90}
SEED=${SEED:-1}
OUT=${OUT:-results/fmnist-capacity}
DATASET=${DATASET:-fashion-mnist}
EPOCHS=${EPOCHS:-20}
MAX_PER_CLASS=${MAX_PER_CLASS:-300}
ABLATION=${ABLATION:-tdm+ddr,tdm+dgm}
TAG=${TAG:-ddr_dgm}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT/diagnosis"
name="$OUT/diagnosis/w${WIDTH}_s${SPARSITY}_seed${SEED}_${TAG}"
cmd=("$FLEET" bench sparcl --dataset "$DATASET" --width "$WIDTH" --sparsity "$SPARSITY" --seeds "$SEED"
     --epochs "$EPOCHS" --max-per-class "$MAX_PER_CLASS" --ablation "$ABLATION" --recalibrate-norms --no-equal-flops
     --no-controls --device cpu --quiet "${EXTRA_ARGS[@]}" --json "$name.json")
{ echo "\$ ${cmd[*]}"; "${cmd[@]}"; } > "$name.txt"
cat "$name.txt"
