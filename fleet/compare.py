"""`fleet compare`: one scenario under several variants, side by side.

A variant is a budget profile (`--profiles tight,starved`) or any scenario
value (`--vary federation.aggregation=mask-aware,fedavg`). Every variant runs
the same scenario, seed included, in one process, one after the other.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import yaml

from clients.errors import InputError
from fleet.scenario import Scenario

COLUMNS = ["profile", "method", "kernels", "final_accuracy", "forgetting", "rounds_completed", "upload_bytes",
           "download_bytes", "train_flops", "wasted_train_flops", "sim_time_s", "energy_j", "wasted_energy_j",
           "dropped_updates", "declined", "adapted", "rejected_updates", "wall_s"]


def parse_vary(text: str) -> tuple[str, list]:
    """`key=v1,v2` -> (key, [v1, v2]) with YAML typing of the values (true, 0.5, fedavg)."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise InputError(f"--vary must look like section.key=value1,value2, got {text!r}")
    return key.strip(), [yaml.safe_load(v) for v in values.split(",")]


def variants(scenario: Scenario, profiles: list[str] | None, vary: str | None) -> dict[str, Scenario]:
    """Label -> scenario; each is re-validated, so a bad value fails before anything runs."""
    if profiles and vary:
        raise InputError("give either --profiles or --vary, not both")
    if vary:
        key, values = parse_vary(vary)
        return {f"{key.split('.')[-1]}={v}": scenario.with_overrides({key: v}) for v in values}
    names = profiles or (list(scenario.budgets) if scenario.budgets else ["generous", "tight", "starved"])
    return {name: scenario.with_overrides({"timing.budget": name}) for name in names}


def compare(scenario: Scenario, out_dir: Path, chosen: dict[str, Scenario],
            run: Callable[[Scenario, Path, str], dict]) -> list[dict]:
    """Run every variant into out_dir/<label>/ and write out_dir/comparison.csv (row by row)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "comparison.csv"
    with path.open("w", newline="") as f:
        csv.DictWriter(f, fieldnames=COLUMNS).writeheader()
    rows = []
    for label, variant in chosen.items():
        summary = run(variant, out_dir / safe_name(label), label)
        row = {"profile": label, **{k: summary[k] for k in COLUMNS[1:]}}
        rows.append({**row, "curve": summary["curve"]})
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore").writerow(row)
    return rows


def safe_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def format_table(rows: list[dict]) -> str:
    head = f"{'variant':<26}{'Class-IL':>9}{'forget':>8}{'upload MB':>10}{'GFLOPs':>9}{'sim s':>9}" \
           f"{'energy J':>10}{'dropped':>8}{'declined':>9}{'adapted':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['profile']:<26}{r['final_accuracy']:>9.2f}{r['forgetting']:>8.2f}"
                     f"{r['upload_bytes'] / 1e6:>10.2f}{r['train_flops'] / 1e9:>9.1f}{r['sim_time_s']:>9.1f}"
                     f"{r['energy_j']:>10.1f}{r['dropped_updates']:>8}{r['declined']:>9}{r['adapted']:>8}")
    return "\n".join(lines)
