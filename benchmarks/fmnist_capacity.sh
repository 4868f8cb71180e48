#!/usr/bin/env bash
# Issue 24: where SparCL pays on Split Fashion-MNIST. The capacity curve: widths 16, 32 and 64 (and 128
# with CUDA=1), sparsities 0.90 and 0.95, TDM alone and all three, 5 seeds, 20 epochs a task, each
# beside its standing controls (dense at that width, the static mask at that sparsity, and the dense
# network of equal training FLOPs, its width chosen by `fleet bench sparcl`).
#
# One arm = one `fleet bench sparcl` process for one width, sparsity and seed: dense, TDM alone, all
# three, the static mask and the equal-FLOPs dense network, trained one after the other on one stream,
# so every figure is paired inside the process (deltas, FLOPs and CPU-time ratios per seed). Each arm
# writes OUT/arms/w<W>_s<S>_seed<K>.json (with the machine that ran it) and .txt (the exact command
# first); an arm whose JSON is complete for these settings is skipped, so the script resumes where it
# stopped and arms can be split over machines (a GPU takes the wide ones: CUDA=1 WIDTHS="64 128").
# The settings of the project's recalibrated runs (results/fmnist/recal_*): 300 training examples a
# class, width as given, DER++ with a 200-example buffer, lr 0.1, norms recalibrated at each task's end.
# At the end benchmarks/capacity_table.py writes OUT/table.csv, points.csv and capacity.png.
#
# Environment overrides (defaults in brackets): WIDTHS ["16 32 64"; "16 32 64 128" with CUDA=1],
# SPARSITIES ["0.90 0.95"], SEEDS ["0 1 2 3 4"], EPOCHS [20], MAX_PER_CLASS [300; "all": no cap],
# DATASET [fashion-mnist], OUT [results/fmnist-capacity], CUDA [0; 1: --device cuda], EXTRA (more bench
# arguments, e.g. --authors-settings: use another OUT, arms are matched on the settings above only),
# FLEET [.venv/bin/fleet], PYTHON [.venv/bin/python], OMP_NUM_THREADS [1].
# Smoke test: DATASET=digits WIDTHS=4 SEEDS=0 EPOCHS=1 MAX_PER_CLASS=20 OUT=/tmp/cap benchmarks/fmnist_capacity.sh
# Size, from the runs' cpu_s in the arms' JSON (one core an arm): an arm (one seed, its 5 runs) takes
# about 14-15 CPU-minutes at width 16 and 33-40 at width 32 on an AMD EPYC, 9, 20 and 58 at widths 16,
# 32 and 64 on an Intel Xeon (a width-64 arm: 14 CPU-minutes for each of dense, TDM and the static mask,
# 12 for all three, 4 for the equal-FLOPs network; a whole 0.95 arm 62-64, three arms sharing 2 cores;
# evaluation adds about 8%); two copies with different SEEDS share the 2 cores (the
# last to finish writes the table complete). Width 128 (about 4 hours an arm on a CPU) is for a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET=${FLEET:-.venv/bin/fleet}
PYTHON=${PYTHON:-.venv/bin/python}
CUDA=${CUDA:-0}
if [[ "$CUDA" == 1 ]]; then
  WIDTHS=${WIDTHS:-16 32 64 128}
  DEVICE=cuda
else
  WIDTHS=${WIDTHS:-16 32 64}
  DEVICE=cpu
fi
SPARSITIES=${SPARSITIES:-0.90 0.95}
SEEDS=${SEEDS:-0 1 2 3 4}
EPOCHS=${EPOCHS:-20}
MAX_PER_CLASS=${MAX_PER_CLASS:-300}
DATASET=${DATASET:-fashion-mnist}
OUT=${OUT:-results/fmnist-capacity}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one arm on one core: two can share the 2 cores
ARMS="$OUT/arms"
mkdir -p "$ARMS"

CAP=(--max-per-class "$MAX_PER_CLASS")
CAP_JSON=$MAX_PER_CLASS
if [[ "$MAX_PER_CLASS" == all ]]; then CAP=(); CAP_JSON=null; fi

for width in $WIDTHS; do
  for sparsity in $SPARSITIES; do
    for seed in $SEEDS; do
      name="w${width}_s${sparsity}_seed${seed}"
      json="$ARMS/$name.json"
      status=0
      "$PYTHON" benchmarks/capacity_table.py --check "$json" --expect "dataset=$DATASET" --expect "width=$width" \
        --expect "sparsity=$sparsity" --expect "seeds=[$seed]" --expect "epochs=$EPOCHS" \
        --expect "max_per_class=$CAP_JSON" --expect "ablation=tdm,full" --expect "recalibrate_norms=true" \
        --expect "controls=true" || status=$?
      if [[ $status == 0 ]]; then
        echo "$name: complete, skipped"
        continue
      elif [[ $status != 1 ]]; then
        exit "$status"
      fi
      cmd=("$FLEET" bench sparcl --dataset "$DATASET" --width "$width" --sparsity "$sparsity" --seeds "$seed"
           --epochs "$EPOCHS" "${CAP[@]}" --ablation tdm,full --recalibrate-norms --no-equal-flops
           --device "$DEVICE" --quiet "${EXTRA_ARGS[@]}" --json "$json")
      start=$(date +%s)
      { echo "\$ ${cmd[*]}"; "${cmd[@]}"; } > "$ARMS/$name.txt"
      echo "$name: $(( $(date +%s) - start )) s"
    done
  done
done
"$PYTHON" benchmarks/capacity_table.py "$OUT" | tee "$OUT/table.txt"
