#!/usr/bin/env bash
# Memory that binds: scenarios/fmnist_memory.yaml (the flagship's fleet and learner, a 500-example
# buffer) under its balanced budget and on boards shared with other services (5% of the memory left
# after the runtime), paired by seed. Writes results/fmnist-memory/ and results/fmnist-memory.txt (which
# starts with the exact command); each run's device_rounds.csv shows the batch, buffer draw and buffer
# every device chose. SEEDS=0,1,2 for more seeds (about 4 minutes a run on 2 cores); RESUME=1 keeps every
# finished run of the same scenario.
# Needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
AGAIN=()
[[ -n "${RESUME:-}" ]] && AGAIN=(--resume)
run results/fmnist-memory compare scenarios/fmnist_memory.yaml --profiles balanced,shared-board \
  --seeds "${SEEDS:-0}" "${AGAIN[@]}"
.venv/bin/python - <<'PY'
import csv, glob, statistics
for folder in sorted(glob.glob("results/fmnist-memory/*_seed_*")):
    rows = list(csv.DictReader(open(f"{folder}/device_rounds.csv")))
    ok = [r for r in rows if r["status"] == "ok"]
    by = {}
    for r in ok:
        by.setdefault(r["client"] + ":" + r["device"], []).append(r)
    print(folder.split("/")[-1])
    for key, rs in sorted(by.items(), key=lambda kv: int(kv[0].split(":")[1])):
        pick = lambda f: statistics.median(float(r[f]) for r in rs)
        print(f"  device {key.split(':')[1]}: {len(rs)} rounds ok; median batch {pick('batch'):.0f}, "
              f"buffer draw {pick('buffer_draw'):.0f}, buffer {pick('buffer_size'):.0f}, "
              f"estimated peak {pick('estimated_peak_memory_bytes') / 2**20:.1f} MiB")
PY
