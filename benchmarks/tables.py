"""Print the results pages' tables (markdown, docs/studies) from what the benchmarks wrote in results/.

    .venv/bin/python benchmarks/tables.py

Nothing here measures: it reads results/fmnist/*.json (fleet bench), the fleet runs'
summary.json and comparison.csv files, and formats them. A file that is missing is skipped.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.metrics import forgetting, learning_accuracy  # noqa: E402
from fleet.run import safe_name, seeded
from fleet.stats import describe, median, paired, paired_difference  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "results"
LABELS = {"dense": "DER++ (dense)", "full": "SparCL-DER++, all three", "tdm": "SparCL-DER++, TDM only",
          "static": "static mask (the initial one, never changed)",
          "tdm+ddr": "SparCL-DER++, TDM+DDR", "tdm+dgm": "SparCL-DER++, TDM+DGM",
          "dense-equal-flops": "DER++ at SparCL's FLOPs", "dense-narrow": "DER++ at the narrow width"}


def authors_forgetting(report: dict, variant: str) -> float:
    """The variant's median forgetting under the authors' (and mammoth's) definition, from each run's
    accuracy matrix: reports written before the bench recorded it hold the matrix too."""
    return median([forgetting(r["class_il_matrix"], authors=True) for r in report["runs"] if r["variant"] == variant])


def _spread(v: dict) -> str:
    """A variant's paired Class-IL difference from dense: median [min, max]."""
    return f"{v['acc_delta']:+.2f} [{v['acc_delta_min']:+.2f}, {v['acc_delta_max']:+.2f}]"


def bench_table(path: Path) -> str:
    report = json.loads(path.read_text())
    cfg = report["config"]
    lines = [f"`{path.relative_to(RESULTS.parent)}`: sparsity {cfg['sparsity']}, seeds {cfg['seeds']}",
             "",
             "| run | epochs/task | Class-IL % (median) | paired delta vs dense [min, max] | Task-IL % | forgetting "
             "(ours, authors') | FLOPs dense/run | CPU time dense/run |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        delta = "" if name == "dense" else _spread(v)
        lines.append(f"| {LABELS.get(name, name)} | {v['epochs']:.0f} | {v['class_il']:.2f} | {delta} | "
                     f"{v['task_il']:.2f} | {v['forgetting']:.2f}, {authors_forgetting(report, name):.2f} | "
                     f"{v['flops_ratio']:.1f}x | {v['cpu_ratio']:.2f}x |")
    if "vs_equal_flops" in report:
        e = report["vs_equal_flops"]
        lines.append("")
        lines.append(f"SparCL minus dense at equal FLOPs, paired: {e['median']:+.2f} points [{e['min']:+.2f}, "
                     f"{e['max']:+.2f}].")
    if "vs_narrow" in report:
        e = report["vs_narrow"]
        lines.append("")
        lines.append(f"SparCL minus dense at width {cfg['narrow_width']}, paired: {e['median']:+.2f} points "
                     f"[{e['min']:+.2f}, {e['max']:+.2f}].")
    return "\n".join(lines)


def per_seed(path: Path) -> str:
    report = json.loads(path.read_text())
    runs: dict[str, dict[int, float]] = {}
    for run in report["runs"]:
        runs.setdefault(run["variant"], {})[run["seed"]] = run["class_il"]
    seeds = sorted(next(iter(runs.values())))
    lines = ["| Class-IL % | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for name, by_seed in runs.items():
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(f"{by_seed[s]:.1f}" for s in seeds) + " |")
    return "\n".join(lines)


def seed_figures(path: Path, variant: str) -> dict[int, dict]:
    """Per seed, one variant's Class-IL, learning accuracy, forgetting (ours and the authors') and newest task,
    from its accuracy matrix
    (reports written before the bench printed learning accuracy hold the matrix too)."""
    runs = [r for r in json.loads(path.read_text())["runs"] if r["variant"] == variant]
    return {r["seed"]: {"class_il": r["class_il"], "learning": learning_accuracy(r["class_il_matrix"]),
                        "forgetting": r["forgetting"], "newest": r["class_il_matrix"][-1][-1],
                        "forgetting_authors": forgetting(r["class_il_matrix"], authors=True)} for r in runs}


def paired_text(a: dict[int, dict], b: dict[int, dict], key: str) -> str:
    p = paired([a[s][key] - b[s][key] for s in sorted(a)])
    return f"{p['median']:+.2f} [{p['min']:+.2f}, {p['max']:+.2f}]"


def ddr_tables() -> str:
    """What DDR costs at 0.90 (the SparCL study, "What DDR costs at 10 epochs a task"): the recalibrated runs' learning
    accuracy and newest task, and the paired differences between reports of the same seeds."""
    fm = RESULTS / "fmnist"
    files = {"ranked": fm / "recal_weight_s090.json", "tdm": fm / "recal_tdm_s090.json",
             "random": fm / "recal_weight_s090_ddr_random.json", "ranked20": fm / "recal_weight_s090_e20.json",
             "tdm20": fm / "recal_weight_s090_e20_tdm.json"}
    if not all(p.exists() for p in files.values()):
        return ""
    dense = seed_figures(files["ranked"], "dense")
    arms = {"ranked": seed_figures(files["ranked"], "full"), "tdm": seed_figures(files["tdm"], "tdm"),
            "random": seed_figures(files["random"], "full"),
            "ranked20": seed_figures(files["ranked20"], "full"), "tdm20": seed_figures(files["tdm20"], "tdm")}
    lines = ["| run | Class-IL delta vs dense [min, max] | learning accuracy | forgetting (ours) "
             "| forgetting (authors') | newest task, Class-IL |", "|---|---|---|---|---|---|"]
    for label, runs in (("DER++ (dense)", dense), (LABELS["tdm"], arms["tdm"]), (LABELS["full"], arms["ranked"]),
                        ("the same, DDR removing at random (`--ddr-rank random`)", arms["random"])):
        delta = "" if runs is dense else paired_text(runs, dense, "class_il")
        lines.append(f"| {label} | {delta} | " + " | ".join(
            f"{median([f[k] for f in runs.values()]):.1f}" for k in ("learning", "forgetting", "forgetting_authors",
                                                                       "newest")) + " |")
    lines += ["",
              f"All three minus TDM only, learning accuracy: {paired_text(arms['ranked'], arms['tdm'], 'learning')}",
              f"All three minus TDM only, Class-IL: {paired_text(arms['ranked'], arms['tdm'], 'class_il')}",
              f"Ranked minus random removal, Class-IL: {paired_text(arms['ranked'], arms['random'], 'class_il')}",
              f"20 epochs a task, all three minus TDM only, Class-IL: "
              f"{paired_text(arms['ranked20'], arms['tdm20'], 'class_il')}"]
    full95, tdm95 = fm / "recal_weight_s095.json", fm / "recal_weight_s095_tdm.json"
    if full95.exists() and tdm95.exists():  # at 0.95 DGM keeps every live gradient: full is TDM+DDR
        full, tdm = seed_figures(full95, "full"), seed_figures(tdm95, "tdm")
        lines += [f"0.95, TDM only minus dense, Class-IL: {paired_text(tdm, seed_figures(tdm95, 'dense'), 'class_il')}",
                  f"0.95, all three minus TDM only, Class-IL: {paired_text(full, tdm, 'class_il')}; "
                  f"learning accuracy: {paired_text(full, tdm, 'learning')}"]
    return "\n".join(lines)


def ddr_wait_table() -> str:
    """DDR's removals judged on one epoch of statistics or on two (the SparCL study, "DDR that waits for its
    statistics"): every arm at 0.90, recalibrated, seeds 0-4, paired against one dense arm."""
    fm = RESULTS / "fmnist"
    arms = (  # key, label, report, variant
        ("tdm", LABELS["tdm"], "recal_tdm_s090", "tdm"),
        ("ref", "all three, removals at epochs 1-4 (the reference's points)", "recal_weight_s090", "full"),
        ("ref_random", "the same, removing at random", "recal_weight_s090_ddr_random", "full"),
        ("wait", "all three, removals at epochs 2, 4, 6, 8 (`--ddr-presentations 2`)",
         "recal_weight_s090_ddr_wait2", "full"),
        ("wait_random", "the same, removing at random", "recal_weight_s090_ddr_wait2_random", "full"),
    )
    if not all((fm / f"{name}.json").exists() for _, _, name, _ in arms):
        return ""
    dense = seed_figures(fm / "recal_tdm_s090.json", "dense")
    lines = ["| run | Class-IL delta vs dense [min, max] | learning accuracy | newest task, Class-IL "
             "| examples trained, vs TDM only | FLOPs dense/run |", "|---|---|---|---|---|---|"]
    runs, examples = {}, {}
    for key, label, name, variant in arms:
        report = json.loads((fm / f"{name}.json").read_text())
        runs[key] = seed_figures(fm / f"{name}.json", variant)
        examples[key] = median([r["examples"] for r in report["runs"] if r["variant"] == variant])
        lines.append(f"| {label} | {paired_text(runs[key], dense, 'class_il')} | "
                     f"{median([f['learning'] for f in runs[key].values()]):.1f} | "
                     f"{median([f['newest'] for f in runs[key].values()]):.1f} | "
                     f"{examples[key] / examples['tdm']:.1%} | {report['variants'][variant]['flops_ratio']:.1f}x |")
    lines += ["",
              f"Waiting for two epochs minus the reference's points, Class-IL: "
              f"{paired_text(runs['wait'], runs['ref'], 'class_il')}; newest task: "
              f"{paired_text(runs['wait'], runs['ref'], 'newest')}",
              f"Ranked minus random removal, Class-IL, on two epochs of statistics: "
              f"{paired_text(runs['wait'], runs['wait_random'], 'class_il')}; on one: "
              f"{paired_text(runs['ref'], runs['ref_random'], 'class_il')}",
              f"All three, removals waiting for two epochs, minus TDM only: Class-IL "
              f"{paired_text(runs['wait'], runs['tdm'], 'class_il')}; learning accuracy "
              f"{paired_text(runs['wait'], runs['tdm'], 'learning')}"]
    return "\n".join(lines)


def epochs_table() -> str:
    """All three components at 10 and 20 epochs a task, at each sparsity (the SparCL study, "Twice the epochs"):
    each report paired against its own dense arm."""
    fm = RESULTS / "fmnist"
    rows = [(sparsity, epochs, fm / f"{name}.json") for sparsity, epochs, name in (
        (0.75, 10, "recal_weight_s075_ablation"), (0.75, 20, "recal_weight_s075_e20"),
        (0.90, 10, "recal_weight_s090"), (0.90, 20, "recal_weight_s090_e20"),
        (0.95, 10, "recal_weight_s095"), (0.95, 20, "recal_weight_s095_e20"))]
    if not all(path.exists() for *_, path in rows):
        return ""
    lines = ["| sparsity | epochs/task | dense Class-IL | Class-IL delta vs dense [min, max] | learning accuracy "
             "| newest task, Class-IL | Task-IL | FLOPs dense/run | CPU time dense/run |", "|---" * 9 + "|"]
    for sparsity, epochs, path in rows:
        report = json.loads(path.read_text())
        full, dense = seed_figures(path, "full"), seed_figures(path, "dense")
        v = report["variants"]
        lines.append(f"| {sparsity:.2f} | {epochs} | {v['dense']['class_il']:.2f} | "
                     f"{paired_text(full, dense, 'class_il')} | {median([f['learning'] for f in full.values()]):.1f} | "
                     f"{median([f['newest'] for f in full.values()]):.1f} | {v['full']['task_il']:.2f} | "
                     f"{v['full']['flops_ratio']:.1f}x | {v['full']['cpu_ratio']:.2f}x |")
    # the dense method at about SparCL's FLOPs for the 20-epoch runs: 2 epochs a task at 0.90 (its own
    # run), 1 at 0.95 (the 10-epoch report's equal-FLOPs arm); dense arms reproduce across reports
    two = fm / "recal_weight_e02_dense.json"
    if two.exists():
        lines.append("")
        for sparsity, path, baseline in ((0.90, rows[3][2], seed_figures(two, "dense")),
                                         (0.95, rows[5][2], seed_figures(rows[4][2], "dense-equal-flops"))):
            full = seed_figures(path, "full")
            lines.append(f"{sparsity:.2f}, 20 epochs, SparCL minus dense at its FLOPs, paired: "
                         f"{paired_text(full, baseline, 'class_il')} (dense at its FLOPs: "
                         f"{median([f['class_il'] for f in baseline.values()]):.2f}%)")
    return "\n".join(lines)


def ablation_figures() -> str:
    """What each component costs at 0.75, paired by seed within one report."""
    path = RESULTS / "fmnist" / "recal_weight_s075_ablation.json"
    if not path.exists():
        return ""
    arm = {name: seed_figures(path, name) for name in ("dense", "tdm", "tdm+ddr", "tdm+dgm", "full")}
    pairs = (("TDM only minus dense", "tdm", "dense"), ("DDR's cost (TDM+DDR minus TDM)", "tdm+ddr", "tdm"),
             ("DGM's cost (TDM+DGM minus TDM)", "tdm+dgm", "tdm"),
             ("DGM on top of DDR (all three minus TDM+DDR)", "full", "tdm+ddr"))
    lines = ["| at 0.75, paired by seed | Class-IL | learning accuracy | newest task, Class-IL |", "|---|---|---|---|"]
    for label, a, b in pairs:
        lines.append(f"| {label} | " + " | ".join(paired_text(arm[a], arm[b], k)
                                                   for k in ("class_il", "learning", "newest")) + " |")
    return "\n".join(lines)


def seed_components(seed: int, *reports: str) -> str:
    """One seed's runs gathered from several reports under results/ (an arm and a later ablation of the
    same seed and settings): what each variant learns and keeps. Training is deterministic per seed on
    one machine, so a variant that two reports both ran (dense, at least) must agree: a report that
    differs (from another machine, say: machine_repeat) is refused."""
    runs: dict[str, dict] = {}
    for path in (RESULTS / r for r in reports):
        for run in json.loads(path.read_text())["runs"]:
            if run["seed"] != seed:
                continue
            if run["variant"] in runs and runs[run["variant"]]["class_il"] != run["class_il"]:
                raise ValueError(f"{path}: {run['variant']} seed {seed} differs from an earlier report's run")
            runs[run["variant"]] = run
    dense = runs["dense"]["class_il"]
    lines = [f"| seed {seed} | Class-IL | vs dense | learning accuracy | forgetting (ours, authors') | Task-IL |",
             "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        m = run["class_il_matrix"]
        lines.append(f"| {LABELS.get(name, name)} | {run['class_il']:.2f} | {run['class_il'] - dense:+.2f} | "
                     f"{learning_accuracy(m):.2f} | {forgetting(m):.2f}, {forgetting(m, authors=True):.2f} | "
                     f"{run['task_il']:.2f} |")
    return "\n".join(lines)


def processor(report: dict) -> str:
    """What a `fleet bench` report's runs computed on: its GPU, else its CPU."""
    return report["machine"].get("gpu") or report["machine"]["cpu"]


def machine_repeat(arm: str, repeat: str) -> str:
    """The same runs (variant and seed, same settings) made on two machines, reports under results/: how
    far a CPU's own float rounding moves a figure that training, deterministic on one machine, repeats
    exactly there. It bounds what a pairing across machines can resolve."""
    reports = [json.loads((RESULTS / r).read_text()) for r in (arm, repeat)]
    cpus = [processor(r) for r in reports]
    if cpus[0] == cpus[1]:
        raise ValueError(f"{repeat}: ran on the arm's own machine ({cpus[0]}), not a repeat elsewhere")
    runs = [{(run["variant"], run["seed"]): run for run in r["runs"]} for r in reports]
    lines = [f"| run | Class-IL, {cpus[0]} | Class-IL, {cpus[1]} | difference | Task-IL, {cpus[0]} | "
             f"Task-IL, {cpus[1]} |", "|---|---|---|---|---|---|"]
    for key in (k for k in runs[1] if k in runs[0]):
        a, b = runs[0][key], runs[1][key]
        lines.append(f"| {LABELS.get(key[0], key[0])}, seed {key[1]} | {a['class_il']:.2f} | {b['class_il']:.2f} | "
                     f"{b['class_il'] - a['class_il']:+.2f} | {a['task_il']:.2f} | {b['task_il']:.2f} |")
    return "\n".join(lines)


def machine_spread(folder: str, repeat: str) -> str:
    """A capacity folder's arms beside the same arms (file by file) in another folder, run on another
    machine: per variant, the repeat minus the original over seeds, median [min, max], and the median
    size of the change, next to the spread of the original's own seeds around their median."""
    moved: dict[str, list[float]] = {}     # per variant: the repeat minus the original, run by run
    original: dict[str, list[float]] = {}  # per variant: the original runs' Class-IL
    cpus = set()
    for path in sorted((RESULTS / repeat / "arms").glob("*.json")):
        there = json.loads(path.read_text())
        here = json.loads((RESULTS / folder / "arms" / path.name).read_text())
        cpus.add((processor(here), processor(there)))
        runs = {(r["variant"], r["seed"]): r["class_il"] for r in here["runs"]}
        for r in there["runs"]:
            before = runs[(r["variant"], r["seed"])]
            moved.setdefault(r["variant"], []).append(r["class_il"] - before)
            original.setdefault(r["variant"], []).append(before)
    if len(cpus) != 1 or len({c for pair in cpus for c in pair}) != 2:
        raise ValueError(f"{repeat}: not one repeat of {folder} on one other machine: {sorted(cpus)}")
    (cpu_a, cpu_b), = cpus
    lines = [f"| variant | {cpu_b} minus {cpu_a}, Class-IL [min, max] | median size of the change | "
             f"seeds' spread around their median, {cpu_a} | runs |", "|---|---|---|---|---|"]
    for variant, diffs in moved.items():
        d, centre = paired(diffs), median(original[variant])
        spread = median([abs(x - centre) for x in original[variant]])
        lines.append(f"| {LABELS.get(variant, variant)} | {d['median']:+.2f} [{d['min']:+.2f}, {d['max']:+.2f}] | "
                     f"{median([abs(x) for x in diffs]):.2f} | {spread:.2f} | {len(diffs)} |")
    return "\n".join(lines)


UNLEARNED_BELOW = 90.0  # Task-IL % on a 2-class task right after training it; chance is 50


def unlearned(run: dict) -> bool:
    """Whether a run leaves some task below UNLEARNED_BELOW Task-IL right after training it (its
    accuracy matrix's diagonal): the collapse a tiny last batch caused, apart from later forgetting."""
    matrix = run["task_il_matrix"]
    return any(row[i] < UNLEARNED_BELOW for i, row in enumerate(matrix))


def unlearned_table() -> str:
    """Every `fleet bench` run recorded under results/, by arm and by how epochs were cut into batches:
    how many leave a task unlearned (the diagonal of its Task-IL matrix below UNLEARNED_BELOW)."""
    counts: dict[tuple[str, str, str], list[int]] = {}
    for path in sorted(RESULTS.rglob("*.json")):
        report = json.loads(path.read_text())
        if not isinstance(report, dict) or "runs" not in report or "config" not in report:
            continue
        cfg = report["config"]
        for run in report["runs"]:
            if "task_il_matrix" in run:
                tally = counts.setdefault((cfg["dataset"], run["variant"], cfg.get("batches", "loader")), [0, 0])
                tally[0] += unlearned(run)
                tally[1] += 1
    lines = [f"| dataset | arm | epochs cut as | runs leaving a task below {UNLEARNED_BELOW:.0f}% Task-IL | runs |",
             "|---|---|---|---|---|"]
    for (dataset, variant, batches), (bad, total) in sorted(counts.items()):
        arm = LABELS.get(variant, variant)
        lines.append(f"| {dataset} | {arm} | {batches} | {bad} ({bad / total:.0%}) | {total} |")
    return "\n".join(lines)


def fleet_row(label: str, summary: dict) -> str:
    st = summary["statuses"]
    return (f"| {label} | {summary['final_accuracy']:.2f} | {summary['forgetting']:.2f} | "
            f"{summary['train_flops'] / 1e9:,.0f} | {summary['wasted_train_flops'] / 1e9:,.0f} | "
            f"{gflops(summary, 'executed_flops')} | {gflops(summary, 'wasted_executed_flops')} | "
            f"{summary['sim_time_s']:,.0f} | {summary['energy_j']:,.0f} | {st['ok']} | {st['late']} | "
            f"{st['failed']} | {st['declined']} | {st['adapted']} | {st['offline']} |")


FLEET_HEAD = ("| run | final Class-IL % | forgetting | useful GFLOPs counted | wasted GFLOPs counted "
              "| useful GFLOPs executed | wasted GFLOPs executed | simulated s | energy J "
              "| ok | late | failed | declined | adapted | offline |\n|---" + "|---" * 14 + "|")


def gflops(summary: dict, key: str) -> str:
    """FLOPs in GFLOPs; '-' for a run made before they were recorded."""
    return "-" if summary.get(key) is None else f"{summary[key] / 1e9:,.0f}"


SEED_TABLE = (("final_accuracy", "Class-IL %"), ("final_accuracy_task_il", "Task-IL %"),
              ("last_k_accuracy", "Class-IL, last 3 rounds %"), ("learning_accuracy", "learning acc. %"),
              ("forgetting", "forgetting (ours)"), ("forgetting_authors", "forgetting (authors')"),
              ("energy_j", "energy J"), ("idle_energy_j", "idle energy J (online devices, outside energy J)"),
              ("sim_time_s", "simulated s"))


def interval(r: dict, prefix: str = "") -> str:
    """median [95% interval]; a difference (prefix delta_, or one from paired_difference) with its sign."""
    f = "+,.2f" if prefix or "same_sign" in r else ",.2f"
    return f"{r[prefix + 'median']:{f}} [{r[prefix + 'ci_low']:{f}}, {r[prefix + 'ci_high']:{f}}]"


ASYNC_TABLE = (("final_accuracy", "Class-IL, final %"), ("class_il_at_common_s", "Class-IL at equal time %"),
               ("task_il_at_common_s", "Task-IL at equal time %"), ("learning_accuracy", "learning accuracy %"),
               ("forgetting", "forgetting (ours)"), ("forgetting_authors", "forgetting (authors')"),
               ("energy_j", "energy J"), ("energy_per_update_j", "energy J per accepted update"),
               ("wasted_energy_j", "wasted energy J"), ("sim_time_s", "simulated s"))


def delta_table(paired_csv: Path, figures=ASYNC_TABLE) -> str:
    """paired.csv as markdown, differences first: per figure, the first variant's median and each other
    variant's paired difference from it, median [95% interval], bold and starred where every seed agrees
    on the sign."""
    rows = list(csv.DictReader(paired_csv.open()))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    seeds = rows[0]["seeds"]
    lines = [f"| figure ({seeds} seeds) | {variants[0]} | " + " | ".join(f"{v} minus {variants[0]}"
                                                                      for v in variants[1:]) + " |",
             "|---" * len(variants) + "|---|"]
    for metric, label in figures:
        got = {r["variant"]: r for r in rows if r["metric"] == metric}
        if variants[0] not in got:
            continue
        cells = [f"{float(got[variants[0]]['median']):,.2f}"]
        for v in variants[1:]:
            r = {k: float(x) for k, x in got[v].items() if k.startswith("delta_") and k != "delta_same_sign"}
            d = f"{r['delta_median']:+,.2f} [{r['delta_ci_low']:+,.2f}, {r['delta_ci_high']:+,.2f}]"
            cells.append(f"**{d}***" if got[v]["delta_same_sign"] == "True" else d)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_paired(paired_csv: Path) -> list[dict]:
    """fleet compare's paired.csv, a row per variant and figure, its figures as floats (the variant, the
    metric and whether the sign holds stay text)."""
    rows = list(csv.DictReader(paired_csv.open()))
    for r in rows:
        for k, v in r.items():
            if k not in ("variant", "metric", "delta_same_sign") and v not in ("", None):
                r[k] = float(v)
    return rows


def seeds_table(paired_csv: Path) -> str:
    """fleet compare --seeds's paired.csv as markdown: per figure, each variant's median [95% interval], and
    its paired difference from the first variant (bold where every seed agrees on the sign)."""
    rows = read_paired(paired_csv)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    head = "| figure | " + " | ".join(variants) + " | " + " | ".join(f"{v} minus {variants[0]}" for v in variants[1:])
    lines = [head + " |", "|---" * (2 * len(variants)) + "|"]
    for metric, label in SEED_TABLE:
        got = {r["variant"]: r for r in rows if r["metric"] == metric}
        cells = [interval(got[v]) for v in variants]
        for v in variants[1:]:
            d = interval(got[v], "delta_")
            cells.append(f"**{d}**" if got[v]["delta_same_sign"] == "True" else d)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def norm_ablation() -> str:
    """The normalisation ablation, paired by seed: averaged BatchNorm statistics (the old default), the
    devices' recalibrated statistics pooled per batch (the flagship's generous runs) and GroupNorm."""
    norms, budgets = RESULTS / "fmnist-budgets-norms", RESULTS / "fmnist-budgets"
    arms = {"BatchNorm, averaged statistics": (norms, "norm=batch"),
            "BatchNorm, recalibrated and pooled": (budgets, "generous"),
            "GroupNorm": (norms, "norm=group")}
    table: dict[str, dict[int, dict]] = {}
    for label, (folder, variant) in arms.items():  # complete runs only, by seed
        table[label] = {}
        for seed in range(100):
            path = folder / safe_name(seeded(variant, seed)) / "summary.json"
            if path.exists() and json.loads(path.read_text()).get("status") == "complete":
                table[label][seed] = json.loads(path.read_text())
    if not all(table.values()):
        return ""
    seeds = sorted(set.intersection(*(set(r) for r in table.values())))
    base = table["BatchNorm, averaged statistics"]
    lines = [f"seeds {', '.join(map(str, seeds))}; median [95% bootstrap interval]; paired minus averaged BatchNorm, "
             "bold where every seed agrees on the sign",
             "", "| normalisation | Class-IL % | minus averaged | Task-IL % | minus averaged | forgetting (ours) "
             "| forgetting (authors') |", "|---|---|---|---|---|---|---|"]
    for label, runs in table.items():
        cells = []
        for key in ("final_accuracy", "final_accuracy_task_il"):
            values = [float(runs[s][key]) for s in seeds]
            cells.append(interval(describe(values)))
            if label == "BatchNorm, averaged statistics":
                cells.append("")
                continue
            d = paired_difference(values, [float(base[s][key]) for s in seeds])
            cells.append(f"**{interval(d)}**" if d["same_sign"] else interval(d))
        for key in ("forgetting", "forgetting_authors"):
            cells.append(interval(describe([float(runs[s][key]) for s in seeds])))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "`results/fmnist-budgets-norms/` and the generous runs of `results/fmnist-budgets/`\n\n" + "\n".join(lines)


def fleet_tables() -> str:
    out = []
    budgets = RESULTS / "fmnist-budgets"
    if (budgets / "paired.csv").exists():
        out.append("`results/fmnist-budgets/paired.csv` (SparCL-DER++, dense kernels, 5 seeds)\n\n"
                   + seeds_table(budgets / "paired.csv"))
    ablation = norm_ablation()
    if ablation:
        out.append(ablation)
    tight = [(name, RESULTS / name / "summary.json") for name in
             ("fmnist-tight-sparcl-dense-kernels", "fmnist-tight-sparcl-sparse-kernels", "fmnist-tight-sparcl-channel",
              "fmnist-tight-derpp")]
    if any(p.exists() for _, p in tight):
        rows = [FLEET_HEAD]
        for name, path in tight:
            if path.exists():
                s = json.loads(path.read_text())
                masks = ", channel masks (compacted)" if name.endswith("channel") else ""
                rows.append(fleet_row(f"{s['method']}, {s['kernels']} kernels{masks}", s))
        out.append("`results/fmnist-tight-*/` (budget tight)\n\n" + "\n".join(rows))
    quick = RESULTS / "quickstart" / "summary.json"
    if quick.exists():
        row = fleet_row("quickstart", json.loads(quick.read_text()))
        out.append("`results/quickstart/`\n\n" + FLEET_HEAD + "\n" + row)
    return "\n\n".join(out)


def timed_figures(path: Path) -> str:
    """The line of a timed .txt that /usr/bin/time wrote (wall, CPU and memory)."""
    if not path.exists():
        return "(not run)"
    return next(line for line in path.read_text().splitlines() if line.startswith("wall "))


def scale_tables() -> str:
    scale = RESULTS / "fleet-scale"
    if not scale.exists():
        return ""
    out = [f"`results/fleet-scale/world.txt`\n\n```\n{(scale / 'world.txt').read_text().split(chr(10), 1)[1]}```"]
    machine = json.loads((scale / "machine.json").read_text()) if (scale / "machine.json").exists() else {}
    where = f"{machine['cpu']}, {machine['cpus']} cores" if machine else "this machine"
    lines = [f"| run | devices | rounds | {where} |", "|---|---|---|---|"]
    for name, devices, rounds in (("dry-1k", "1,000", 100), ("dry-10k", "10,000", 100), ("fleet-1k", "1,000", 10)):
        lines.append(f"| `{name}` | {devices} | {rounds} | {timed_figures(scale / (name + '.txt'))} |")
    out.append("\n".join(lines))
    summary = scale / "fleet-1k" / "summary.json"
    if summary.exists():
        b = json.loads(summary.read_text()).get("wall_breakdown_s") or {"(run not complete)": 0}
        out.append("Where the real 1,000-device run's wall time went (s): " +
                   ", ".join(f"{k} {v:,.1f}" for k, v in b.items()))
    return "\n\n".join(out)


def calibration_table() -> str:
    path = RESULTS / "calibrate.txt"
    if not path.exists():
        return ""
    text = path.read_text()
    rates = text.split("\n", 1)[1].split("wrote ", 1)[0]
    summary = [line for line in text.splitlines() if line.startswith("modelled/measured per round")]
    return f"`results/calibrate.txt`\n\n```\n{rates}```\n\n" + "\n".join(summary)


# --------------------------------------------------------------------------- the other studies' tables


def _bench(name: str) -> dict:
    return json.loads((RESULTS / "fmnist" / f"{name}.json").read_text())


def arms_table(arms: tuple[tuple[str, str, str], ...], head: str = "SparCL-DER++") -> str:
    """One row per arm (label, report in results/fmnist, variant): its Class-IL paired with the report's own
    dense DER++ by seed, its FLOPs and CPU-time ratios, and the report's SparCL minus dense at equal FLOPs."""
    lines = [f"| {head} | Class-IL delta vs DER++ (median [min, max]) | FLOPs ratio | CPU-time ratio "
             "| vs dense at equal FLOPs |", "|---|---|---|---|---|"]
    for label, name, variant in arms:
        report = _bench(name)
        v = report["variants"][variant]
        equal = report.get("vs_equal_flops") if variant not in ("dense-narrow", "dense-equal-flops") else None
        lines.append(f"| {label} | {_spread(v)} | {v['flops_ratio']:.1f}x | {v['cpu_ratio']:.2f}x | "
                     + (f"{equal['median']:+.2f} |" if equal else " |"))
    return "\n".join(lines)


def learning_table(arms: tuple[tuple[str, str, str], ...]) -> str:
    """One row per arm (label, report in results/fmnist, variant): Class-IL, its paired delta from the
    report's dense DER++, learning accuracy, forgetting under both definitions, FLOPs and CPU-time ratios."""
    lines = ["| arm | Class-IL % | delta vs dense [min, max] | learning accuracy | forgetting (ours, authors') "
             "| FLOPs dense/arm | CPU time dense/arm |", "|---|---|---|---|---|---|---|"]
    for label, name, variant in arms:
        report = _bench(name)
        v = report["variants"][variant]
        lines.append(f"| {label} | {v['class_il']:.2f} | {'' if variant == 'dense' else _spread(v)} | "
                     f"{v['learning_acc']:.2f} | {v['forgetting']:.2f}, {authors_forgetting(report, variant):.2f} | "
                     f"{v['flops_ratio']:.1f}x | {v['cpu_ratio']:.2f}x |")
    return "\n".join(lines)


def kernels_table() -> str:
    """`fleet bench kernels` on both models (results/kernels*/kernels.csv): speed-up over dense per density, each
    kernel measured in one run."""
    lines = ["| model | density | FLOPs ratio | weight masks, dense kernels | weight masks, SparseProp "
             "| channels compacted (FLOPs ratio) |", "|---|---|---|---|---|---|"]
    for model, folder in (("quickstart", "kernels"), ("Fashion-MNIST", "kernels-fmnist")):
        measured = csv.DictReader((RESULTS / folder / "kernels.csv").open())
        rows = {(r["variant"], float(r["density"])): r for r in measured}
        for density in sorted({d for _, d in rows if d < 1}, reverse=True):
            masked = rows[("weight-masked", density)]
            sparse = rows.get(("weight-sparse-kernels", density))
            channel = rows[("channel-compacted", density)]
            sparse_cell = f"{float(sparse['speedup']):.2f}" if sparse else "-"  # SparseProp was not installed
            lines.append(f"| {model} | {density:.2f} | {float(masked['flops_ratio']):.2f} | "
                         f"{float(masked['speedup']):.2f} | {sparse_cell} | "
                         f"{float(channel['speedup']):.2f} ({float(channel['flops_ratio']):.2f}) |")
    return "\n".join(lines)


DRY_RUN_LABELS = {"quickstart-real": "quickstart (digits, 10 devices, 20 rounds)",
                  "fmnist-budgets_tight_seed_0": "flagship tight, seed 0",
                  "fmnist-budgets_balanced_seed_0": "flagship balanced, seed 0",
                  "fmnist-budgets_generous_seed_0": "flagship generous, seed 0"}


def _error(x: float) -> str:
    """A relative error as a percentage, or as a power of ten where float rounding is all there is."""
    return "0" if x == 0 else f"{x:+.2%}" if abs(x) >= 5e-5 else f"{x:+.0e}"


def dryrun_table() -> str:
    """benchmarks/dryrun_error.py's JSON: per real run, (dry - real) / real round by round and in total."""
    report = json.loads((RESULTS / "dryrun-error" / "dryrun_error.json").read_text())
    lines = ["Each cell: (dry - real) / real in the median round / the worst round / the total.", "",
             "| real run | rounds with the same fates | counted FLOPs | executed FLOPs | simulated time | energy |",
             "|---|---|---|---|---|---|"]
    for name, run in report.items():
        cells = [" / ".join(_error(f[k]) for k in ("median_abs_round_error", "worst_round_error", "total_error"))
                 for f in (run["figures"][k] for k in ("counted_flops", "executed_flops", "time_s", "energy_j"))]
        lines.append(f"| {DRY_RUN_LABELS.get(name, name)} | {run['same_fates']} of {run['rounds']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


MIXED_FLEET = (("4 SparCL-DER++ devices", "mixed_fleet", "stock_clients=0", ""),
               ("3 SparCL-DER++ + 1 stock client, weighted by its in-mask share (default)", "mixed_fleet",
                "stock_clients=1", "vs all-SparCL"),
               ("the same, its update counted by its examples (FedAvg)", "mixed_fleet-weight",
                "plain_weight=examples", "vs the row above"),
               ("3 SparCL-DER++ + device 3 never online", "mixed_fleet-absent",
                "profiles={'never-online': 1, 'rpi4': 3}", "vs all-SparCL"))


def mixed_fleet_table() -> str:
    """The three mixed-fleet comparisons (results/mixed_fleet*/paired.csv and comparison.csv): Class-IL over
    5 seeds, and each variant's difference from its comparison's first variant, paired by seed."""
    lines = ["| fleet | Class-IL [min, max] | paired difference [min, max] | Task-IL | forgetting (ours) "
             "| forgetting (authors') | upload MB (seed 0) |", "|---|---|---|---|---|---|---|"]
    for label, folder, variant, versus in MIXED_FLEET:
        got = {r["metric"]: r for r in read_paired(RESULTS / folder / "paired.csv") if r["variant"] == variant}
        acc = got["final_accuracy"]
        runs = csv.DictReader((RESULTS / folder / "comparison.csv").open())
        upload = next(float(c["upload_bytes"]) for c in runs if c["profile"] == f"{variant} seed=0")
        delta = (f"{acc['delta_median']:+.2f} [{acc['delta_min']:+.2f}, {acc['delta_max']:+.2f}] {versus}"
                 if versus else "")
        lines.append(f"| {label} | {acc['median']:.2f} [{acc['min']:.2f}, {acc['max']:.2f}] | {delta} | "
                     f"{got['final_accuracy_task_il']['median']:.2f} | {got['forgetting']['median']:.2f} | "
                     f"{got['forgetting_authors']['median']:.2f} | {upload / 1e6:.2f} |")
    return "\n".join(lines)


def main() -> int:
    for path in sorted((RESULTS / "fmnist").glob("*.json")):
        print(bench_table(path), end="\n\n")
        print(per_seed(path), end="\n\n")
    print(ddr_tables(), end="\n\n")
    print(ddr_wait_table(), end="\n\n")
    print(epochs_table(), end="\n\n")
    print(ablation_figures(), end="\n\n")
    print(unlearned_table(), end="\n\n")
    print(fleet_tables(), end="\n\n")
    print(scale_tables(), end="\n\n")
    print(calibration_table(), end="\n\n")
    print(kernels_table(), end="\n\n")
    print(dryrun_table(), end="\n\n")
    print(mixed_fleet_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
