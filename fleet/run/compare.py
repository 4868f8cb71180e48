"""`fleet compare`: one scenario under several variants, side by side.

A variant is a budget profile (`--profiles tight,starved`) or any scenario
value (`--vary federation.aggregation=mask-aware,fedavg`). Every variant runs
the same scenario, seed included, in one process, one after the other. With
`--seeds` every variant runs once per seed, and the table adds each variant's
median and 95% bootstrap interval of each figure (fleet.stats), and its paired
difference from the first variant, seed by seed, marked where its sign holds on
every seed: one seed's final round moves by points on its own. tradeoff.png
sets each variant's final accuracy against its energy and simulated time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from clients.errors import InputError, excerpt
from fleet.outputs import RoundsCsv, plot_tradeoff, prepare_output_dir, write_csv
from fleet.config import Scenario, parse_scenario, parse_yaml
from fleet.stats import describe, paired_difference

COLUMNS = ["profile", "method", "kernels", "final_accuracy", "last_k_accuracy", "final_accuracy_task_il",
           "last_k_accuracy_task_il", "learning_accuracy", "forgetting", "forgetting_authors", "forgetting_task_il",
           "forgetting_authors_task_il", "rounds_completed", "upload_bytes", "download_bytes", "train_flops",
           "wasted_train_flops", "executed_flops", "wasted_executed_flops", "sim_time_s", "energy_j",
           "wasted_energy_j", "idle_energy_j", "dropped_updates", "declined", "adapted", "rejected_updates",
           "accepted_updates", "energy_per_update_j", "common_s", "class_il_at_common_s", "task_il_at_common_s",
           "time_to_reference_s", "wall_s"]
MAX_VARIANTS = 100
# what the seeds table describes: summary key -> label
SEED_METRICS = {
    "final_accuracy": "Class-IL, final %", "last_k_accuracy": "Class-IL, last-k mean %",
    "final_accuracy_task_il": "Task-IL, final %", "learning_accuracy": "learning accuracy %",
    "forgetting": "forgetting (ours)", "forgetting_authors": "forgetting (authors')",
    "forgetting_task_il": "Task-IL forgetting (ours)", "energy_j": "energy J",
    "idle_energy_j": "idle energy J", "sim_time_s": "simulated s",
    "class_il_at_common_s": "Class-IL at equal time %", "task_il_at_common_s": "Task-IL at equal time %",
    "energy_per_update_j": "energy J per update", "wasted_energy_j": "wasted energy J",
}


def parse_vary(text: str, flag: str = "--vary") -> tuple[str, list]:
    """`key=v1,v2` -> (key, [v1, v2]) with YAML typing of the values (true, 0.5, fedavg).

    The values are read as one YAML flow list, `[v1,v2]`, by the scenario
    loader (so with its bounds), which lets a value be a mapping with commas
    inside: `fleet.profiles={rpi4: 6, rpi5: 4},{rpi4: 10}`.
    """
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise InputError(f"{flag} must look like section.key=value1,value2, got {excerpt(text)}")
    parsed = parse_yaml(f"[{values}]", source=f"{flag} {excerpt(key, 40)}")
    if not isinstance(parsed, list) or not parsed:
        raise InputError(f"{flag} {excerpt(key, 40)}: the values {excerpt(values)} are not a comma-separated list")
    if len(parsed) > MAX_VARIANTS:
        raise InputError(f"{flag} {excerpt(key, 40)}: {len(parsed)} values, more than {MAX_VARIANTS}")
    return key, parsed


def parse_set(texts: list[str]) -> dict:
    """`--set key=value` options -> {key: value}, each value read as YAML like --vary's."""
    changes = {}
    for text in texts:
        key, values = parse_vary(text, "--set")
        if len(values) != 1:
            raise InputError(f"--set {excerpt(key, 40)} takes one value, got {len(values)}")
        changes[key] = values[0]
    return changes


def variants(scenario: Scenario, profiles: list[str] | None, vary: str | None) -> dict[str, Scenario]:
    """Label -> scenario; each is re-validated, so a bad value fails before anything runs."""
    if profiles and vary:
        raise InputError("give either --profiles or --vary, not both")
    if vary:
        key, values = parse_vary(vary)
        return {f"{key.split('.')[-1][:40]}={_label(v)}": scenario.with_overrides({key: v}) for v in values}
    names = profiles or (list(scenario.budgets) if scenario.budgets else ["generous", "tight", "starved"])
    return {name: scenario.with_overrides({"timing.budget": name}) for name in names}


def named(chosen: dict[str, Scenario], labels: str | None) -> dict[str, Scenario]:
    """The variants under the user's names (`--labels a,b,c`, one per variant, in order; distinct as folder
    names too)."""
    if labels is None:
        return chosen
    names = [n.strip() for n in labels.split(",")]
    if len(names) != len(chosen) or not all(names) or len({safe_name(n) for n in names}) != len(names):
        raise InputError(f"--labels: {len(chosen)} distinct names needed, one per variant, got {excerpt(labels)}")
    if any(len(n) > 40 or " seed=" in n for n in names):
        raise InputError(f"--labels: a name is at most 40 characters and holds no ' seed=', got {excerpt(labels)}")
    return dict(zip(names, chosen.values()))


def seeded(label: str, seed: int) -> str:
    """The label of one variant's run under one seed."""
    return f"{label} seed={seed}"


def over_seeds(chosen: dict[str, Scenario], seeds: Sequence[int]) -> dict[str, Scenario]:
    """Every variant once per seed, seed by seed (so an interrupted comparison has whole seeds)."""
    return {seeded(label, s): sc.with_overrides({"seed": s}) for s in seeds for label, sc in chosen.items()}


PAIRED_ORDER = ["variant", "metric", "seeds", "median", "ci_low", "ci_high", "min", "max", "delta_median",
                "delta_ci_low", "delta_ci_high", "delta_min", "delta_max", "delta_same_sign"]


def variant_of(label: str, seed: int) -> str:
    """The variant a run's label names (`seeded`'s inverse); a label without its seed is a variant itself."""
    suffix = f" seed={seed}"
    return label[: -len(suffix)] if label.endswith(suffix) else label


def tradeoff_points(rows: Sequence[dict], chosen: dict[str, Scenario]) -> dict[str, list[dict]]:
    """The comparison's rows (one per run, labelled as in `chosen`) grouped by variant, in `chosen`'s order."""
    by_label = {r["profile"]: r for r in rows}
    out: dict[str, list[dict]] = {}
    for label, sc in chosen.items():
        if label in by_label:
            out.setdefault(variant_of(label, sc.seed), []).append(by_label[label])
    return out


def value_at(curve: Sequence[Sequence], time_s: float, column: int) -> float | None:
    """A run's accuracy (curve column 1: Class-IL, 2: Task-IL) at its last evaluation at or before `time_s`."""
    before = [point[column] for point in curve if point[0] <= time_s * (1 + 1e-12) and point[column] is not None]
    return float(before[-1]) if before else None


def first_time(curve: Sequence[Sequence], target: float) -> float | None:
    """The simulated time of a run's first evaluation whose Class-IL reaches `target` (None: never)."""
    return next((float(point[0]) for point in curve if point[1] is not None and point[1] >= target), None)


def full_stream_curve(folder: Path) -> list[list[float]]:
    """[time, Class-IL] of a run's evaluations over the whole stream it reached (rounds.csv rows with its final
    tasks_reached): early rounds score high over the few tasks seen by then, so a time to an accuracy is
    only read where every task counts."""
    try:
        with open(folder / "rounds.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("class_il_accuracy") not in (None, "")]
    except OSError:
        return []
    last = max((int(r["tasks_reached"]) for r in rows), default=0)
    return [[float(r["sim_time_s"]), float(r["class_il_accuracy"])] for r in rows if int(r["tasks_reached"]) == last]


def common_time_figures(rows: Sequence[dict], chosen: dict[str, Scenario]) -> None:
    """Add to each run, against the runs of its seed: the accuracy at the time every one of them reached
    (the earliest of their final simulated times: modes that cover the clock differently compare at equal
    time), and the time it took to reach the final Class-IL of the seed's first variant over the whole
    stream (`full_curve`, from full_stream_curve; the whole curve where a row has none)."""
    by_seed: dict[int, list[dict]] = {}
    by_label = {r["profile"]: r for r in rows}
    for label, sc in chosen.items():
        if label in by_label:
            by_seed.setdefault(sc.seed, []).append(by_label[label])
    for runs in by_seed.values():
        common = min(float(r["sim_time_s"]) for r in runs)
        reference = runs[0].get("final_accuracy")
        for r in runs:
            curve = r.get("curve") or []
            r.update(common_s=common, class_il_at_common_s=value_at(curve, common, 1),
                     task_il_at_common_s=value_at(curve, common, 2),
                     time_to_reference_s=None if reference is None
                     else first_time(r.get("full_curve", curve), float(reference)))


def paired_over_seeds(rows: Sequence[dict], labels: Sequence[str], seeds: Sequence[int]) -> list[dict]:
    """Per variant and figure (SEED_METRICS): median, 95% bootstrap interval and range over the seeds, and
    the same of its difference from the first variant under the same seed, with whether that sign holds
    on every seed."""
    by_label = {r["profile"]: r for r in rows}
    bases = [by_label[seeded(labels[0], s)] for s in seeds]
    out = []
    for label in labels:
        runs = [by_label[seeded(label, s)] for s in seeds]
        for metric in SEED_METRICS:
            if any(r.get(metric) in (None, "") for r in (*runs, *bases)):  # a dry run's accuracy, no update
                continue
            values = [float(r[metric]) for r in runs]
            delta = paired_difference(values, [float(b[metric]) for b in bases])
            out.append({"variant": label, "metric": metric, "seeds": len(seeds), **describe(values),
                        **{f"delta_{k}": v for k, v in delta.items()}})
    return out


def format_paired(summary: Sequence[dict]) -> str:
    """The seeds table: a block per figure, a line per variant."""
    base = summary[0]["variant"]
    head = f"{'':<28}{'variant':<22}{'median':>10}{'95% interval':>22}   {'minus ' + base + ', paired':<30}"
    lines = [f"medians over seeds with 95% bootstrap intervals; differences from {base} taken seed by seed, "
             "* where every seed agrees on the sign", head, "-" * len(head)]
    for metric, label in SEED_METRICS.items():
        for i, r in enumerate(x for x in summary if x["metric"] == metric):
            name = label if i == 0 else ""
            text = f"{name:<28}{r['variant']:<22}{r['median']:>10.2f}   [{r['ci_low']:>8.2f}, {r['ci_high']:>8.2f}]"
            if r["variant"] != base:
                text += (f"   {r['delta_median']:+.2f} [{r['delta_ci_low']:+.2f}, {r['delta_ci_high']:+.2f}]"
                         f"{'*' if r['delta_same_sign'] else ''}")
            lines.append(text)
    return "\n".join(lines)


def _label(value) -> str:
    """A variant's value as its label shows it: YAML-like, one line, at most 40 characters."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return value if isinstance(value, str) and len(value) <= 40 else excerpt(value, 40)


def completed_summary(folder: Path, scenario: Scenario) -> dict | None:
    """The summary of a complete run of exactly `scenario` in `folder`, or None (absent, stopped, another
    scenario): what `fleet compare --resume` keeps instead of running the variant again."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        ran = parse_scenario(yaml.safe_load((folder / "scenario.yaml").read_text()), source=str(folder))
    except (OSError, ValueError, yaml.YAMLError, InputError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "complete":
        return None
    return summary if ran == scenario else None


def run_comparison(scenario: Scenario, out_dir: Path, chosen: dict[str, Scenario],
            run: Callable[[Scenario, Path, str], dict], *, force: bool = False, resume: bool = False) -> list[dict]:
    """Run every variant into out_dir/<label>/ and write out_dir/comparison.csv (row by row), then
    tradeoff.png (plot_tradeoff: each variant's median over its seeds).

    force: out_dir may already hold a comparison (its old files are replaced).
    resume: a variant whose folder holds its complete run is read, not run again.
    """
    prepare_output_dir(out_dir, force=force)
    table = RoundsCsv(out_dir / "comparison.csv", COLUMNS)
    for label, variant in chosen.items():
        folder = out_dir / safe_name(label)
        summary = (completed_summary(folder, variant) if resume else None) or run(variant, folder, label)
        table.append({"profile": label, **{k: summary.get(k) for k in COLUMNS[1:]}, "curve": summary["curve"],
                      "full_curve": full_stream_curve(folder)})
    common_time_figures(table.rows, chosen)
    write_csv(out_dir / "comparison.csv", table.rows, COLUMNS)  # the figures across runs, once all have run
    plot_tradeoff(tradeoff_points(table.rows, chosen), out_dir / "tradeoff.png",
                  f"{scenario.name}: final accuracy against energy and time")
    return table.rows


def variant_dirs(out_dir: Path, chosen: dict[str, Scenario]) -> list[Path]:
    """The folder each variant writes to."""
    return [out_dir / safe_name(label) for label in chosen]


def safe_name(label: str) -> str:
    """A label as one file-name component: letters, digits and -_. only, at most 100 characters, never . or .."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:100]
    return name if name.strip(".") else f"_{name}"


def format_table(rows: list[dict]) -> str:
    head = f"{'variant':<26}{'Class-IL':>9}{'Task-IL':>8}{'forget':>8}{'upload MB':>10}{'GF count':>9}{'GF exec':>9}" \
           f"{'sim s':>9}" \
           f"{'energy J':>10}{'dropped':>8}{'declined':>9}{'adapted':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        til = r.get("final_accuracy_task_il")
        lines.append(f"{r['profile']:<26}{r['final_accuracy']:>9.2f}{'-' if til is None else format(til, '.2f'):>8}"
                     f"{r['forgetting']:>8.2f}"
                     f"{r['upload_bytes'] / 1e6:>10.2f}{r['train_flops'] / 1e9:>9.1f}"
                     f"{'-' if r.get('executed_flops') is None else format(r['executed_flops'] / 1e9, '.1f'):>9}"
                     f"{r['sim_time_s']:>9.1f}"
                     f"{r['energy_j']:>10.1f}{r['dropped_updates']:>8}{r['declined']:>9}{r['adapted']:>8}")
    return "\n".join(lines)
