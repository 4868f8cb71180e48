"""`fleet compare`: one scenario under several variants, side by side.

A variant is a budget profile (`--profiles tight,starved`) or any scenario
value (`--vary federation.aggregation=mask-aware,fedavg`). Every variant runs
the same scenario, seed included, in one process, one after the other. With
`--seeds` every variant runs once per seed, and the table adds each variant's
median accuracy and its paired difference from the first variant, seed by seed:
one seed's final round moves by points on its own (issue 9's mixed fleet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from clients.errors import InputError, excerpt
from fleet.bench import paired
from fleet.report import RoundsCsv, prepare_output_dir
from fleet.scenario import Scenario, parse_yaml

COLUMNS = ["profile", "method", "kernels", "final_accuracy", "forgetting", "rounds_completed", "upload_bytes",
           "download_bytes", "train_flops", "wasted_train_flops", "sim_time_s", "energy_j", "wasted_energy_j",
           "dropped_updates", "declined", "adapted", "rejected_updates", "wall_s"]
MAX_VARIANTS = 100


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


def seeded(label: str, seed: int) -> str:
    """The label of one variant's run under one seed."""
    return f"{label} seed={seed}"


def over_seeds(chosen: dict[str, Scenario], seeds: Sequence[int]) -> dict[str, Scenario]:
    """Every variant once per seed, seed by seed (so an interrupted comparison has whole seeds)."""
    return {seeded(label, s): sc.with_overrides({"seed": s}) for s in seeds for label, sc in chosen.items()}


def paired_over_seeds(rows: Sequence[dict], labels: Sequence[str], seeds: Sequence[int]) -> list[dict]:
    """Per variant: median final accuracy and forgetting over the seeds, and the median, min and max of
    its accuracy minus the first variant's under the same seed."""
    by_label = {r["profile"]: r for r in rows}
    base = [float(by_label[seeded(labels[0], s)]["final_accuracy"]) for s in seeds]
    out = []
    for label in labels:
        runs = [by_label[seeded(label, s)] for s in seeds]
        accuracy = [float(r["final_accuracy"]) for r in runs]
        delta = paired([a - b for a, b in zip(accuracy, base)])
        out.append({"variant": label, "seeds": len(seeds), "median_accuracy": paired(accuracy)["median"],
                    "min_accuracy": min(accuracy), "max_accuracy": max(accuracy),
                    "median_forgetting": paired([float(r["forgetting"]) for r in runs])["median"],
                    "median_delta": delta["median"], "min_delta": delta["min"], "max_delta": delta["max"]})
    return out


def format_paired(summary: Sequence[dict]) -> str:
    base = summary[0]["variant"]
    head = f"{'variant':<26}{'seeds':>6}{'Class-IL':>9}{'[min, max]':>17}{'forget':>8}  vs {base} (paired)"
    lines = ["medians over seeds; the difference is taken seed by seed", head, "-" * len(head)]
    for r in summary:
        lines.append(f"{r['variant']:<26}{r['seeds']:>6}{r['median_accuracy']:>9.2f}"
                     f"   [{r['min_accuracy']:>6.2f}, {r['max_accuracy']:>6.2f}]{r['median_forgetting']:>8.2f}"
                     f"  {r['median_delta']:+.2f} [{r['min_delta']:+.2f}, {r['max_delta']:+.2f}]")
    return "\n".join(lines)


def _label(value) -> str:
    """A variant's value as its label shows it: YAML-like, one line, at most 40 characters."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return value if isinstance(value, str) and len(value) <= 40 else excerpt(value, 40)


def compare(scenario: Scenario, out_dir: Path, chosen: dict[str, Scenario],
            run: Callable[[Scenario, Path, str], dict], *, force: bool = False) -> list[dict]:
    """Run every variant into out_dir/<label>/ and write out_dir/comparison.csv (row by row).

    force: out_dir may already hold a comparison (its old files are replaced).
    """
    prepare_output_dir(out_dir, force=force)
    table = RoundsCsv(out_dir / "comparison.csv", COLUMNS)
    for label, variant in chosen.items():
        summary = run(variant, out_dir / safe_name(label), label)
        table.append({"profile": label, **{k: summary[k] for k in COLUMNS[1:]}, "curve": summary["curve"]})
    return table.rows


def variant_dirs(out_dir: Path, chosen: dict[str, Scenario]) -> list[Path]:
    """The folder each variant writes to."""
    return [out_dir / safe_name(label) for label in chosen]


def safe_name(label: str) -> str:
    """A label as one file-name component: letters, digits and -_. only, at most 100 characters, never . or .."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:100]
    return name if name.strip(".") else f"_{name}"


def format_table(rows: list[dict]) -> str:
    head = f"{'variant':<26}{'Class-IL':>9}{'forget':>8}{'upload MB':>10}{'GFLOPs':>9}{'sim s':>9}" \
           f"{'energy J':>10}{'dropped':>8}{'declined':>9}{'adapted':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['profile']:<26}{r['final_accuracy']:>9.2f}{r['forgetting']:>8.2f}"
                     f"{r['upload_bytes'] / 1e6:>10.2f}{r['train_flops'] / 1e9:>9.1f}{r['sim_time_s']:>9.1f}"
                     f"{r['energy_j']:>10.1f}{r['dropped_updates']:>8}{r['declined']:>9}{r['adapted']:>8}")
    return "\n".join(lines)
