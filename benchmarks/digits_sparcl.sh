#!/usr/bin/env bash
# SparCL on one device on the embedded digits (saturated: it cannot resolve a point of
# accuracy; claims are made on Fashion-MNIST, benchmarks/fmnist_sparcl.sh). Writes
# results/digits/*.json and *.txt. About 35 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET=${FLEET:-.venv/bin/fleet}
OUT=results/digits
mkdir -p "$OUT"

run() {  # name, extra arguments...
  local name=$1; shift
  local cmd=("$FLEET" bench sparcl --quiet "$@" --json "$OUT/$name.json")
  { echo "\$ ${cmd[*]}"; "${cmd[@]}"; } > "$OUT/$name.txt"
  cat "$OUT/$name.txt"
}

run derpp_s090 --ablation all
run derpp_s095 --sparsity 0.95
run er_s090 --method er
