#!/usr/bin/env bash
# The time model against this machine's clock (issue 8 evidence): `fleet calibrate` on the
# quickstart's model, then the quickstart on the calibrated profile, whose rounds.csv holds the
# modelled compute seconds of the ok devices next to the CPU seconds they measured.
# Writes results/calibrate/ (calibration.csv, profile.yaml, scenario.yaml, run/) and
# results/calibrate.txt. About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/common.sh
OUT=results/calibrate
run "$OUT" calibrate scenarios/quickstart.yaml --batches 8,32,128 --repeats 3
run "$OUT/run" run "$OUT/scenario.yaml"
.venv/bin/python - "$OUT/run/rounds.csv" <<'PY' | tee -a "$OUT.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("round  ok  modelled_s  measured_s  modelled/measured")
ratios = []
for r in rows:
    m, p = float(r["measured_compute_s"]), float(r["modelled_compute_s"])
    ratios.append(p / m)
    print(f"{r['round']:>5} {r['n_ok']:>3} {p:11.3f} {m:11.3f} {p / m:18.3f}")
print(f"modelled/measured per round: median {statistics.median(ratios):.3f}, "
      f"min {min(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} rounds")
PY
