#!/usr/bin/env bash
# Budgets that bind (issue 7 evidence): the fmnist_budgets scenario under its three budget
# profiles, then SparCL-DER++ against dense DER++ under the tight profile with dense and with
# sparse kernels. Writes results/fmnist-budgets/ and results/fmnist-kernels-{dense,sparse}/;
# each .txt starts with the exact command it ran. About 20 minutes on 2 cores.
# Needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET=${FLEET:-.venv/bin/fleet}
SCENARIO=scenarios/fmnist_budgets.yaml

run() {  # output folder, fleet arguments...
  local out=$1; shift
  local cmd=("$FLEET" "$@" --out "$out" --force --quiet)
  mkdir -p "$out"
  { echo "\$ ${cmd[*]}"; "${cmd[@]}"; } > "$out.txt"
  cat "$out.txt"
}

run results/fmnist-budgets compare "$SCENARIO" --profiles generous,balanced,tight
for kernels in dense sparse; do
  run "results/fmnist-kernels-$kernels" compare "$SCENARIO" --vary sparcl.enabled=true,false \
      --set timing.budget=tight --set "timing.kernels=$kernels"
done
