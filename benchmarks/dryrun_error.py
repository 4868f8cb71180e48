"""How far `fleet run --dry-run` is from the real run of the same scenario: the measured error band.

For each real run folder (scenario.yaml, rounds.csv and summary.json as `fleet
run` writes them) the dry run of that folder's resolved scenario runs into a
temporary folder, and the two rounds.csv are compared round by round:

- counted training FLOPs (train_flops + wasted_train_flops: every device-round
  that trained, on time or not),
- executed FLOPs (executed_flops + wasted_executed_flops: what the kernels ran),
- simulated time (each round's length; in total, the clock at the end),
- energy (energy_j).

Relative error = (dry - real) / real. Per scenario and figure it prints the
median and the largest absolute per-round error (and its round) and the error
of the total, and whether each round's devices met the same fates.

    .venv/bin/python benchmarks/dryrun_error.py RUN_DIR [RUN_DIR ...] --out results/dryrun-error/

Writes OUT/dryrun_error.csv and OUT/dryrun_error.json (the band), and
OUT/<run>_rounds.csv (real and dry figures of every round). The dry run is
today's code; the real folder is whatever code produced it, so a folder older
than a world-model change measures that change too (its summary says when).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.errors import InputError  # noqa: E402
from fleet.run import dry_run
from fleet.outputs import write_csv, write_json
from fleet.config import load_scenario

# figure -> how a rounds.csv row gives it
FIGURES = {
    "counted_flops": lambda r: num(r, "train_flops") + num(r, "wasted_train_flops"),
    "executed_flops": lambda r: num(r, "executed_flops") + num(r, "wasted_executed_flops"),
    "time_s": lambda r: num(r, "sim_time_s") - num(r, "sim_start_s"),
    "energy_j": lambda r: num(r, "energy_j"),
}
BAND_COLUMNS = ["run", "figure", "median_abs_round_error", "max_abs_round_error", "worst_round", "worst_round_error",
                "real_total", "dry_total", "total_error", "rounds"]


def num(row: dict, key: str) -> float:
    if key not in row:
        raise InputError(f"rounds.csv has no {key} column (a run folder from an older fleet run)")
    return float(row[key] or 0.0)


def relative_error(dry: float, real: float) -> float | None:
    """(dry - real) / real; 0 where both are 0; None where only the real figure is 0 (no ratio)."""
    if real == 0:
        return 0.0 if dry == 0 else None
    return (dry - real) / real


def read_rounds(folder: Path) -> list[dict]:
    path = folder / "rounds.csv"
    if not path.is_file():
        raise InputError(f"{folder}: no rounds.csv (not a fleet run folder)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def band(real_rows: list[dict], dry_rows: list[dict]) -> tuple[dict[str, dict], list[dict]]:
    """Per figure the per-round error band and the total's error; and the table of every round."""
    if len(real_rows) != len(dry_rows):
        raise InputError(f"the real run has {len(real_rows)} rounds, the dry run {len(dry_rows)}")
    table, result = [], {}
    for real, dry in zip(real_rows, dry_rows):
        row = {"round": int(real["round"]), "same_fates": real.get("statuses") == dry.get("statuses")}
        for name, get in FIGURES.items():
            row[f"real_{name}"], row[f"dry_{name}"] = get(real), get(dry)
            row[f"error_{name}"] = relative_error(get(dry), get(real))
        table.append(row)
    for name in FIGURES:
        errors = [(r["round"], r[f"error_{name}"]) for r in table if r[f"error_{name}"] is not None]
        real_total = math.fsum(r[f"real_{name}"] for r in table)
        dry_total = math.fsum(r[f"dry_{name}"] for r in table)
        worst = max(errors, key=lambda e: abs(e[1]), default=(None, None))
        result[name] = {
            "median_abs_round_error": statistics.median(abs(e) for _, e in errors) if errors else None,
            "max_abs_round_error": None if worst[1] is None else abs(worst[1]),
            "worst_round": worst[0], "worst_round_error": worst[1],
            "real_total": real_total, "dry_total": dry_total,
            "total_error": relative_error(dry_total, real_total), "rounds": len(errors),
        }
    return result, table


def measure(folder: Path, scratch: Path) -> tuple[dict, list[dict]]:
    """The dry run of `folder`'s scenario, against the folder's rounds."""
    spec = folder / "scenario.yaml"
    if not spec.is_file():
        raise InputError(f"{folder}: no scenario.yaml (not a fleet run folder)")
    real_rows = read_rounds(folder)
    dry_summary = dry_run(load_scenario(spec, simulate=False), scratch / folder.name, force=True)
    figures, table = band(real_rows, read_rounds(scratch / folder.name))
    return {"figures": figures, "rounds": len(table), "same_fates": sum(r["same_fates"] for r in table),
            "estimate": dry_summary.get("estimate")}, table


def labels(folders: list[Path]) -> list[str]:
    """A name per folder: its own, or with its parent's where two share one."""
    names = [f.name for f in folders]
    return [f"{f.parent.name}_{f.name}" if names.count(f.name) > 1 or f.parent.name.startswith("fmnist") else f.name
            for f in folders]


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.3f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="real run folders (fleet run's output)")
    parser.add_argument("--out", type=Path, default=Path("results/dryrun-error"), help="where the band is written")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        folders = [f.resolve() for f in args.runs]
        report, band_rows = {}, []
        with tempfile.TemporaryDirectory(prefix="dryrun-error-") as tmp:
            for label, folder, given in zip(labels(folders), folders, args.runs):
                result, table = measure(folder, Path(tmp) / label)
                report[label] = {"run": str(given), **result}
                write_csv(args.out / f"{label}_rounds.csv", table, list(table[0]) if table else ["round"])
                print(f"{label}: {result['rounds']} rounds, same fates in {result['same_fates']}; "
                      f"dry run: {result['estimate'] or 'no estimate stated'}")
                print(f"  {'figure':<15} {'median |round|':>14} {'worst round':>12} {'(round)':>7} {'total':>9}")
                for name, fig in result["figures"].items():
                    band_rows.append({"run": label, "figure": name, **fig})
                    median = fig["median_abs_round_error"]
                    print(f"  {name:<15} {pct(median):>14} {pct(fig['worst_round_error']):>12} "
                          f"{str(fig['worst_round']):>7} {pct(fig['total_error']):>9}")
    except InputError as err:
        print(f"dryrun_error: error: {err}", file=sys.stderr)
        return 2
    write_csv(args.out / "dryrun_error.csv", band_rows, BAND_COLUMNS)
    write_json(args.out / "dryrun_error.json", report)
    print(f"wrote {args.out}/dryrun_error.csv, dryrun_error.json and a *_rounds.csv per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
