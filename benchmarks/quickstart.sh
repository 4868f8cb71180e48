#!/usr/bin/env bash
# The quickstart on the embedded digits data, and the two comparisons the results pages quote
# (SparCL against dense DER++; mask-aware against zero-filled FedAvg) and the quickstart with the
# current-task loss masked (method.mask_other_classes). Writes results/quickstart*/;
# each .txt starts with the exact command it ran. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh

run results/quickstart run scenarios/quickstart.yaml
if [[ "${1:-}" == "--all" ]]; then
  run results/quickstart-dense-vs-sparse compare scenarios/quickstart.yaml --vary sparcl.enabled=true,false
  run results/quickstart-aggregation compare scenarios/quickstart.yaml --vary federation.aggregation=mask-aware,fedavg
  run results/quickstart-masked run scenarios/quickstart.yaml --set method.mask_other_classes=true
fi
