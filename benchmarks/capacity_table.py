"""The capacity curve's table and plot from the arm reports benchmarks/fmnist_capacity.sh wrote.

    .venv/bin/python benchmarks/capacity_table.py [results/fmnist-capacity]

Reads every arm (OUT/arms/*.json: one `fleet bench sparcl` report per width,
sparsity and seed, each with its standing controls) and writes:

- OUT/table.csv: per width, sparsity and SparCL arm (all three; TDM alone),
  against each control (dense at that width, the static mask, the dense network of
  equal training FLOPs): the paired Class-IL difference over seeds, median [min,
  max], and the control's training FLOPs and time over the arm's (medians of
  per-seed ratios: CPU time where the arm trained on a CPU, wall clock on a GPU),
  with the machines that ran it;
- OUT/points.csv and OUT/capacity.png: Class-IL against training FLOPs and against
  live weights (the masked 3x3 convolutions' weights alive at the stream's end),
  one line per method (SparCL at each sparsity, TDM alone, the static mask, and
  dense at every width it ran: the full widths and the equal-FLOPs ones), medians
  over seeds with their per-seed range;
- OUT/choice.csv: the answer to "at my budget, which network?": per budget (training
  FLOPs counted, and CPU seconds on dense kernels, one budget per machine: a point's
  CPU time counts only where all its runs came from one machine) the networks on the
  Pareto front of Class-IL against cost, each from the cost at which it becomes the
  best measured choice; only networks measured on 5 seeds (the target's count) compete.

It prints the table (markdown) and, per width, whether SparCL-DER++ 0.90 meets
the issue's target: within 1 point of dense (paired median, no seed below -3) at
10x fewer training FLOPs, above both the static mask and the equal-FLOPs network on every seed.

`--baseline DIR` (repeatable) also pairs every variant with the same variant of another capacity
folder's arms (the same arms under other settings, e.g. --authors-settings) run on the same machine,
and writes OUT/vs_baseline.csv.

`--check ARM.json key=value ...` (used by the script to resume) exits 0 when the
arm is complete and ran those settings, 1 when it is absent or incomplete (run
it), 2 when it ran other settings (move it away first).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet.stats import consistent_sign, median, paired  # noqa: E402

ARMS = ("full", "tdm", "static")  # the masked arms, as fleet bench names them: SparCL's two, and the static mask
CONTROLS = ("dense", "static", "dense-narrow")         # dense at the width, static mask, equal FLOPs
NEEDED = ("dense", "tdm", "full", "static")            # what a complete arm report holds (+ the narrow one)
ARM_LABELS = {"full": "SparCL-DER++", "tdm": "TDM only", "static": "static mask"}
CONTROL_LABELS = {"dense": "dense", "static": "static mask", "dense-narrow": "equal-FLOPs dense"}
TABLE_COLUMNS = ("width", "sparsity", "arm", "control", "control_width", "seeds", "delta_median", "delta_min",
                 "delta_max", "flops_ratio", "time_ratio", "time", "arm_class_il", "control_class_il",
                 "arm_live_weights", "control_live_weights", "machines")
POINT_COLUMNS = ("method", "sparsity", "width", "seeds", "class_il", "class_il_min", "class_il_max",
                 "train_flops", "cpu_s", "live_weights", "machines", "cpu")
CHOICE_COLUMNS = ("budget", "from", "method", "sparsity", "width", "class_il", "class_il_min", "class_il_max",
                  "gain_median", "gain_min", "gain_max", "gain_seeds", "gain_holds",
                  "train_flops", "cpu_s", "live_weights", "seeds", "machines", "cpu")
BUDGETS = {"train_flops": "training FLOPs counted (what sparse kernels would execute)",
           "cpu_s": "CPU seconds on dense kernels (zeros multiplied)"}  # one budget per machine


# -- reading arms --------------------------------------------------------------------------------


def machine_name(report: dict) -> str:
    m = report.get("machine") or {}
    where = m.get("gpu") or m.get("cpu") or "unknown machine"
    return f"{m.get('host', '?')}: {where}, torch {m.get('torch', '?')}"


def flatten(report: dict) -> list[dict]:
    """One row per run of an arm report: its width as run, its figures, and the machine."""
    cfg = report["config"]
    machine, cpu = machine_name(report), (report.get("machine") or {}).get("cpu", "unknown CPU")
    rows = []
    for run in report["runs"]:
        name = run["variant"]
        rows.append({
            "variant": name, "seed": run["seed"], "sparsity": cfg["sparsity"], "base_width": cfg["width"],
            "width": cfg["narrow_width"] if name == "dense-narrow" else cfg["width"],
            "class_il": run["class_il"], "train_flops": run["train_flops"], "live_weights": run.get("live_weights"),
            "cpu_s": run["cpu_s"], "wall_s": run["wall_s"], "device": cfg.get("device", "cpu"),
            "machine": machine, "cpu": cpu,
            "dataset": cfg.get("dataset", "?"),
        })
    return rows


def load_rows(arms_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(arms_dir.glob("*.json")):
        rows.extend(flatten(json.loads(path.read_text())))
    return rows


def as_value(text: str):
    """A JSON value (4, 0.9, [0], null, true), else the text itself (a name such as fashion-mnist)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def check_arm(path: Path, expect: dict[str, str]) -> int:
    """0: complete with the expected settings; 1: absent or incomplete; 2: it ran other settings."""
    try:
        report = json.loads(path.read_text())
        cfg, runs = report["config"], report["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return 1
    for key, value in expect.items():
        if cfg.get(key) != as_value(value):
            print(f"{path}: {key} is {cfg.get(key)!r}, not {value} as this run asks: move it away or "
                  "choose another OUT", file=sys.stderr)
            return 2
    ran = defaultdict(set)
    for run in runs:
        ran[run["variant"]].add(run["seed"])
    seeds = set(cfg["seeds"])
    needed = [*NEEDED, *(["dense-narrow"] if cfg["width"] > 1 else [])]
    return 0 if all(ran[name] == seeds for name in needed) else 1


# -- the paired table ----------------------------------------------------------------------------


def by_seed(rows: list[dict]) -> dict[tuple, dict[str, dict[int, dict]]]:
    """(width, sparsity) -> variant -> seed -> run, from the arms' rows (each arm: one width and sparsity)."""
    groups: dict[tuple, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        groups[(r["base_width"], r["sparsity"])][r["variant"]][r["seed"]] = r
    return groups


def compare(arm: dict[int, dict], control: dict[int, dict]) -> dict:
    """Arm against control over the seeds both ran: Class-IL difference (arm minus control) paired per seed,
    the control's FLOPs and time over the arm's; time is CPU time unless the arm trained on a GPU."""
    seeds = sorted(set(arm) & set(control))
    pairs = [(arm[s], control[s]) for s in seeds]
    on_cpu = all(a["device"] == "cpu" for a, _ in pairs)
    key = "cpu_s" if on_cpu else "wall_s"
    delta = paired([a["class_il"] - c["class_il"] for a, c in pairs])
    return {"seeds": " ".join(str(s) for s in seeds), "delta_median": delta["median"], "delta_min": delta["min"],
            "delta_max": delta["max"], "flops_ratio": median([c["train_flops"] / a["train_flops"] for a, c in pairs]),
            "time_ratio": median([c[key] / a[key] for a, c in pairs]), "time": "cpu" if on_cpu else "wall",
            "arm_class_il": median([a["class_il"] for a, _ in pairs]),
            "control_class_il": median([c["class_il"] for _, c in pairs]),
            "arm_live_weights": median([a["live_weights"] for a, _ in pairs]),
            "control_live_weights": median([c["live_weights"] for _, c in pairs]),
            "control_width": "/".join(sorted({str(c["width"]) for _, c in pairs}, key=int)),
            "machines": "; ".join(sorted({a["machine"] for a, _ in pairs})), "n": len(pairs)}


def table_rows(rows: list[dict]) -> list[dict]:
    out = []
    for (width, sparsity), variants in sorted(by_seed(rows).items()):
        for arm in ARMS:
            if arm not in variants:
                continue
            for control in CONTROLS:
                if control != arm and control in variants and set(variants[arm]) & set(variants[control]):
                    out.append({"width": width, "sparsity": sparsity, "arm": arm, "control": control,
                                **compare(variants[arm], variants[control])})
    return out


TARGET_SEEDS = 5  # the target is judged over 5 seeds


def meets_target(rows: list[dict], width: int, sparsity: float = 0.9) -> str:
    """The issue's target for SparCL-DER++ at `sparsity` and `width`, with what misses."""
    got = {r["control"]: r for r in rows if (r["width"], r["sparsity"], r["arm"]) == (width, sparsity, "full")}
    if set(got) != set(CONTROLS):
        return "not all controls ran"
    dense, static, narrow = (got[c] for c in CONTROLS)
    misses = []
    if dense["delta_median"] < -1:
        misses.append(f"median {dense['delta_median']:+.2f} vs dense (target >= -1)")
    if dense["delta_min"] < -3:
        misses.append(f"a seed at {dense['delta_min']:+.2f} vs dense (target >= -3)")
    if dense["flops_ratio"] < 10:
        misses.append(f"FLOPs {dense['flops_ratio']:.1f}x fewer (target 10x)")
    for control, name in ((static, "the static mask"), (narrow, "equal-FLOPs dense")):
        misses.extend(control_misses(control, name))
    seeds = len(dense["seeds"].split())
    if seeds < TARGET_SEEDS:  # a median of fewer is no finding, whatever it says
        misses.append(f"{seeds} seed{'s' if seeds > 1 else ''} (target {TARGET_SEEDS})")
    return "met" if not misses else "missed: " + "; ".join(misses)


def control_misses(control: dict, name: str) -> list[str]:
    """What keeps SparCL-DER++ from beating a control: a paired median at or below it, or a seed at or
    below it (a median above whose sign changes across seeds is no finding)."""
    if control["delta_median"] <= 0:
        return [f"{control['delta_median']:+.2f} vs {name}"]
    if control["delta_min"] <= 0:
        return [f"{control['delta_median']:+.2f} vs {name}, a seed at {control['delta_min']:+.2f}"]
    return []


def format_table(rows: list[dict]) -> str:
    """Markdown: per width and SparCL arm, the paired difference against each control with its ratios."""
    head = ("| width | arm | Class-IL | vs dense [min, max] | FLOPs, time dense/arm | vs static mask [min, max] "
            "| vs equal-FLOPs dense (width) [min, max] | FLOPs, time that/arm | seeds |")
    lines = [head, "|" + "---|" * 9]
    keyed = {(r["width"], r["sparsity"], r["arm"], r["control"]): r for r in rows}
    for width, sparsity, arm in sorted({(r["width"], r["sparsity"], r["arm"]) for r in rows},
                                       key=lambda k: (k[0], k[1], ARMS.index(k[2]))):
        cells = []
        for control in CONTROLS:
            r = keyed.get((width, sparsity, arm, control))
            if r is None:
                cells.append("")
                continue
            where = f" (w{r['control_width']})" if control == "dense-narrow" else ""
            cells.append(f"{r['delta_median']:+.2f} [{r['delta_min']:+.2f}, {r['delta_max']:+.2f}]{where}")
        ratios = {c: keyed.get((width, sparsity, arm, c)) for c in ("dense", "dense-narrow")}
        ratio = {c: (f"{r['flops_ratio']:.2f}x, {r['time_ratio']:.2f}x {r['time']}" if r else "")
                 for c, r in ratios.items()}
        any_row = next(r for r in rows if (r["width"], r["sparsity"], r["arm"]) == (width, sparsity, arm))
        lines.append(f"| {width} | {ARM_LABELS[arm]} {sparsity:g} | {any_row['arm_class_il']:.2f} | {cells[0]} | "
                     f"{ratio['dense']} | {cells[1]} | {cells[2]} | {ratio['dense-narrow']} | {any_row['seeds']} |")
    return "\n".join(lines)


def settings_rows(rows: list[dict], baseline: list[dict]) -> list[dict]:
    """Each variant of these arms against the same variant of `baseline`'s arms (other settings: e.g.
    --authors-settings against the project's), paired by width, sparsity, seed and machine: on another
    CPU a seed's run is another run (float rounding moved a dense run 3.1 points and a collapse away
    altogether: tables.machine_repeat), so pairs across machines are left out."""
    base = {(r["base_width"], r["sparsity"], r["variant"], r["seed"], r["machine"]): r for r in baseline}
    out = []
    for (width, sparsity), variants in sorted(by_seed(rows).items()):
        for variant, runs in sorted(variants.items()):
            other = {seed: base[key] for seed, run in runs.items()
                     if (key := (width, sparsity, variant, seed, run["machine"])) in base}
            if other:
                out.append({"width": width, "sparsity": sparsity, "variant": variant, **compare(runs, other)})
    return out


def format_settings(rows: list[dict], label: str) -> str:
    lines = [f"| width | sparsity | variant | Class-IL, {label} | Class-IL, baseline | {label} minus baseline "
             "[min, max] | seeds |", "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['width']} | {r['sparsity']:g} | {r['variant']} | {r['arm_class_il']:.2f} | "
                     f"{r['control_class_il']:.2f} | {r['delta_median']:+.2f} [{r['delta_min']:+.2f}, "
                     f"{r['delta_max']:+.2f}] | {r['seeds']} |")
    return "\n".join(lines)


# -- the curve -----------------------------------------------------------------------------------


def curve_points(rows: list[dict]) -> list[dict]:
    """Medians over seeds per method and width. Dense runs at one width (the full widths, repeated in each
    sparsity's arm, and the equal-FLOPs widths) are one method: the first run of a seed at a width counts."""
    groups: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        if r["variant"] in ("dense", "dense-narrow"):
            key = ("dense", 0.0, r["width"])
        elif r["variant"] in ("full", "tdm", "static"):
            key = (r["variant"], r["sparsity"], r["width"])
        else:
            continue
        groups[key].setdefault(r["seed"], r)
    points = []
    for (method, sparsity, width), seeds in sorted(groups.items()):
        runs = list(seeds.values())
        acc = [r["class_il"] for r in runs]
        points.append({"method": method, "sparsity": sparsity, "width": width,
                       "seeds": " ".join(str(s) for s in sorted(seeds)), "class_il": median(acc),
                       "class_il_min": min(acc), "class_il_max": max(acc),
                       "train_flops": median([r["train_flops"] for r in runs]),
                       "cpu_s": median([r["cpu_s"] for r in runs]) if one_cpu(runs) else None,
                       "live_weights": median([r["live_weights"] for r in runs]),
                       "machines": "; ".join(sorted({r["machine"] for r in runs})),
                       "cpu": runs[0]["cpu"] if one_cpu(runs) else "",  # what its CPU seconds are of
                       # to pair with other points: a seed's run on another machine is another run
                       "by_seed": {(seed, r["machine"]): r["class_il"] for seed, r in seeds.items()}})
    return points


def one_cpu(runs: list[dict]) -> bool:
    """Whether runs' CPU seconds can be pooled: all trained on a CPU, and on the same machine."""
    return all(r["device"] == "cpu" for r in runs) and len({r["machine"] for r in runs}) == 1


def frontier(points: list[dict], cost: str) -> list[dict]:
    """The networks worth training as a budget of `cost` grows: from the cheapest point up, each one whose
    median Class-IL beats every cheaper one (the Pareto front of Class-IL against cost). Points without
    that cost (CPU time of GPU runs) are left out."""
    front, best = [], float("-inf")
    for p in sorted((p for p in points if p[cost] is not None), key=lambda p: (p[cost], -p["class_il"])):
        if p["class_il"] > best:
            front.append(p)
            best = p["class_il"]
    return front


def network_name(point: dict) -> str:
    if point["method"] == "dense":
        return f"dense DER++, width {point['width']}"
    label = {"full": "SparCL-DER++", "tdm": "TDM only", "static": "static mask"}[point["method"]]
    return f"{label} {point['sparsity']:g}, width {point['width']}"


def choice_rows(points: list[dict], min_seeds: int = TARGET_SEEDS) -> list[dict]:
    """For each budget (counted FLOPs, CPU seconds): from which cost each network on the front is the best
    measured choice. Only networks measured on at least `min_seeds` seeds compete: a median of fewer is no
    answer to give a user (a width still being measured stays out until its seeds are in)."""
    points = [p for p in points if len(p["seeds"].split()) >= min_seeds]
    fronts = [("train_flops", frontier(points, "train_flops"))]
    for machine in sorted({p["machines"] for p in points if p["cpu_s"] is not None}):  # CPU time is per machine
        fronts.append(("cpu_s", frontier([p for p in points if p["machines"] == machine], "cpu_s")))
    return [{"budget": cost, "from": p[cost], **{k: p[k] for k in CHOICE_COLUMNS if k in p},
             **gain_over(p, front[i - 1] if i else None)}
            for cost, front in fronts for i, p in enumerate(front)]


def gain_over(point: dict, before: dict | None) -> dict:
    """What a step up the front buys: Class-IL over the pick before it, paired by seed on one machine (every
    network of a seed learned the same stream; on another CPU a seed's run is another run), median [min,
    max], and whether its sign holds on every pair (two at least). Where it changes, the gain is not shown."""
    none = {"gain_median": None, "gain_min": None, "gain_max": None, "gain_seeds": None, "gain_holds": None}
    if before is None:  # the cheapest pick: nothing before it
        return none
    gains = [point["by_seed"][k] - before["by_seed"][k] for k in sorted(set(point["by_seed"]) & set(before["by_seed"]))]
    if not gains:
        return {**none, "gain_seeds": 0}
    g = paired(gains)
    return {"gain_median": g["median"], "gain_min": g["min"], "gain_max": g["max"], "gain_seeds": len(gains),
            "gain_holds": len(gains) >= 2 and consistent_sign(gains)}


def gain_text(row: dict) -> str:
    """A pick's paired gain as the tables print it: '+0.41 [-1.20, +2.00], sign changes' where it does, the
    number of pairs where fewer than its seeds; nothing for the cheapest pick."""
    if row["gain_seeds"] in (None, ""):
        return ""
    if int(row["gain_seeds"]) == 0:
        return "not paired: its seeds ran on another machine"
    seeds = len(str(row["seeds"]).split())
    low, high = float(row["gain_min"]), float(row["gain_max"])
    n = int(row["gain_seeds"])
    verdict = "" if str(row["gain_holds"]) == "True" else ", sign changes" if low <= 0 <= high else ", too few pairs"
    count = f", {n} of {seeds} seeds paired" if n < seeds else ""
    return f"{float(row['gain_median']):+.2f} [{low:+.2f}, {high:+.2f}]{verdict}{count}"


def format_choice(rows: list[dict]) -> str:
    """Markdown: at a budget, which network to train (the best measured Class-IL within it)."""
    lines = []
    budgets: dict[tuple[str, str], list[dict]] = defaultdict(list)  # a CPU budget per machine
    for r in rows:
        budgets[(r["budget"], r["machines"] if r["budget"] == "cpu_s" else "")].append(r)
    for (cost, machine), picks in budgets.items():
        unit = (lambda v: f"{v / 1e12:.2f} TFLOPs") if cost == "train_flops" else (lambda v: f"{v / 60:.1f} CPU min")
        label = BUDGETS[cost] + (f", {machine}" if machine else "")
        lines += ["", f"Budget: {label}", "",
                  "| budget from | train | Class-IL % [min, max] | over the pick before, paired [min, max] "
                  "| live weights | seeds |", "|---|---|---|---|---|---|"]
        for r in picks:
            lines.append(f"| {unit(r['from'])} | {network_name(r)} | {r['class_il']:.2f} [{r['class_il_min']:.2f}, "
                         f"{r['class_il_max']:.2f}] | {gain_text(r)} | {r['live_weights']:,.0f} | {r['seeds']} |")
    return "\n".join(lines[1:])


def plot(points: list[dict], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from fleet.outputs import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        lines[(p["method"], p["sparsity"])].append(p)
    names = {"dense": "dense DER++ (every width)", "full": "SparCL-DER++", "tdm": "TDM only", "static": "static mask"}
    styles = {"dense": "k-o", "full": "-s", "tdm": "--^", "static": ":v"}
    for ax, x, label in ((axes[0], "train_flops", "training FLOPs (whole stream)"),
                         (axes[1], "live_weights", "live weights (masked 3x3 convolutions)")):
        for (method, sparsity), pts in sorted(lines.items()):
            pts = sorted(pts, key=lambda p: p[x])
            xs = [p[x] for p in pts]
            ys = [p["class_il"] for p in pts]
            err = [[p["class_il"] - p["class_il_min"] for p in pts], [p["class_il_max"] - p["class_il"] for p in pts]]
            name = names[method] + ("" if method == "dense" else f" {sparsity:g}")
            ax.errorbar(xs, ys, yerr=err, fmt=styles[method], capsize=3, label=name, alpha=0.85)
            for p in pts:
                ax.annotate(f"w{p['width']}", (p[x], p["class_il"]), textcoords="offset points", xytext=(4, -10),
                            fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks of a short log range overlap
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final Class-IL % (median, bars: min-max over seeds)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Split {dataset}: final Class-IL against training FLOPs and live weights")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="results/fmnist-capacity",
                        help="the capacity folder (its arms/ holds the arm reports)")
    parser.add_argument("--baseline", metavar="DIR", action="append", default=[],
                        help="pair every variant of OUT's arms with the same variant of DIR's (a capacity folder "
                        "run with other settings), run on the same machine, and print the differences; "
                        "repeatable (the baseline's arms on each machine)")
    parser.add_argument("--min-seeds", type=int, default=TARGET_SEEDS, metavar="N",
                        help=f"networks in the budget choice need N seeds or more (default {TARGET_SEEDS})")
    parser.add_argument("--check", metavar="ARM_JSON", help="is this arm complete? (see the module's doc)")
    parser.add_argument("--expect", action="append", default=[], metavar="KEY=VALUE",
                        help="with --check: a setting the arm's config must hold (a JSON value, else a string)")
    args = parser.parse_args(argv)
    if args.check:
        expect = {}
        for item in args.expect:
            key, _, value = item.partition("=")
            expect[key] = value
        return check_arm(Path(args.check), expect)
    from fleet.outputs import write_csv

    out = Path(args.out)
    rows = load_rows(out / "arms")
    if not rows:
        print(f"{out / 'arms'}: no arm reports", file=sys.stderr)
        return 1
    table = table_rows(rows)
    points = curve_points(rows)
    write_csv(out / "table.csv", table, TABLE_COLUMNS)
    write_csv(out / "points.csv", points, POINT_COLUMNS)
    choice = choice_rows(points, args.min_seeds)
    write_csv(out / "choice.csv", choice, CHOICE_COLUMNS)
    plot(points, out / "capacity.png", ", ".join(sorted({r["dataset"] for r in rows})))
    if args.baseline:
        settings = settings_rows(rows, [r for d in args.baseline for r in load_rows(Path(d) / "arms")])
        write_csv(out / "vs_baseline.csv", settings, ("width", "sparsity", "variant", *TABLE_COLUMNS[5:]))
        print(format_settings(settings, out.name))
        print()
    print(format_table(table))
    for width in sorted({r["width"] for r in table if r["sparsity"] == 0.9}):
        print(f"target at width {width} (SparCL-DER++ 0.90): {meets_target(table, width)}")
    print()
    print(format_choice(choice))
    print("machines: " + "; ".join(sorted({r["machine"] for r in rows})))
    print(f"wrote {out / 'table.csv'}, {out / 'points.csv'}, {out / 'choice.csv'}, {out / 'capacity.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
