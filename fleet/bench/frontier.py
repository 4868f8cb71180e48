"""The accuracy-against-speed frontier of `fleet bench sparcl` reports, as a table and a plot.

Each report's SparCL variants become points: CPU-time speed-up over dense (the
median of per-seed ratios, measured in the same run) against Class-IL minus
dense (the median of per-seed differences, with their min and max). The
equal-FLOPs baseline (dense, fewer epochs) is the point any sparse method must
beat: training less is the cheapest way to be faster.

    fleet bench frontier results/fmnist/*.json --out results/fmnist/frontier
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from clients.errors import InputError, excerpt
from fleet.outputs import save_figure, subplots, write_csv

COLUMNS = ("label", "granularity", "sparsity", "seeds", "cpu_speedup", "flops_ratio", "delta", "delta_min",
           "delta_max", "source")


def frontier_points(report: dict, source: str) -> list[dict]:
    """One row per non-dense variant of a bench report."""
    cfg = report["config"]
    rows = []
    for name, v in report["variants"].items():
        if name == "dense":
            continue
        equal = name in ("dense-equal-flops", "dense-narrow")  # the dense baselines that train less
        epochs = f"{v['epochs']:g} epoch" + ("" if v["epochs"] == 1 else "s")
        if name == "dense-narrow":
            label = f"dense, width {cfg['narrow_width']}"
        elif equal:
            label = f"dense, {epochs}/task"
        else:
            label = f"{cfg.get('granularity', 'weight')} {cfg['sparsity']:g}" + ("" if name == "full" else f" ({name})")
        rows.append({"label": label, "granularity": "dense" if equal else cfg.get("granularity", "weight"),
                     "sparsity": 0.0 if equal else cfg["sparsity"], "seeds": len(cfg["seeds"]),
                     "cpu_speedup": v["cpu_ratio"], "flops_ratio": v["flops_ratio"], "delta": v["acc_delta"],
                     "delta_min": v["acc_delta_min"], "delta_max": v["acc_delta_max"], "source": source})
    return rows


def comparable(reports: Sequence[tuple[str, dict]]) -> None:
    """Points share one axis only if they ran the same data, model and schedule."""
    keys = ("dataset", "width", "max_per_class", "epochs", "method", "lr", "buffer_size", "recalibrate_norms",
            "mask_other_classes", "batches")
    # what reports from before a key ran
    absent = {"recalibrate_norms": False, "mask_other_classes": True, "batches": "loader"}
    first_name, first = reports[0]
    for name, report in reports[1:]:
        for key in keys:
            mine, theirs = (r["config"].get(key, absent.get(key)) for r in (report, first))
            if mine != theirs:
                raise InputError(f"{name}: {key} is {mine!r} but {first_name} has {theirs!r}: not one frontier")


def label_lines(rows: Sequence[dict], x_near: float = 0.6, y_near: float = 0.04) -> list[int]:
    """Per row, how many lines below its point its label goes, so that the labels of points close together
    (within `x_near` in speed-up and `y_near` of the plot's accuracy range) do not print over each other."""
    deltas = [r["delta"] for r in rows]
    span = (max(deltas) - min(deltas) if deltas else 0.0) or 1.0
    placed: list[tuple[float, float, int]] = []
    for r in rows:
        near = {line for x, y, line in placed
                if abs(r["cpu_speedup"] - x) < x_near and abs(r["delta"] - y) < y_near * span}
        line = next(i for i in range(len(placed) + 1) if i not in near)
        placed.append((r["cpu_speedup"], r["delta"], line))
    return [line for _, _, line in placed]


def plot_frontier(rows: Sequence[dict], path: Path, title: str, target: tuple[float, float] | None) -> None:
    """Class-IL minus dense against CPU speed-up, with the spread over seeds as error bars."""
    colours = {"weight": "tab:blue", "channel": "tab:orange", "dense": "tab:gray"}
    fig, ax = subplots(figsize=(7, 4.5))
    for r, line in zip(rows, label_lines(rows)):
        err = [[r["delta"] - r["delta_min"]], [r["delta_max"] - r["delta"]]]
        ax.errorbar(r["cpu_speedup"], r["delta"], yerr=err, fmt="o", capsize=3,
                    color=colours.get(r["granularity"], "tab:green"))
        ax.annotate(r["label"], (r["cpu_speedup"], r["delta"]), textcoords="offset points",
                    xytext=(6, 4 - 10 * line), fontsize=8)
    if target:
        ax.axhline(-target[1], color="tab:red", lw=0.8, ls="--")
        ax.axvline(target[0], color="tab:red", lw=0.8, ls="--")
        ax.annotate(f"target: at least {target[0]:g}x, at most {target[1]:g} points below", (1, -target[1]),
                    xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(-4, -10), ha="right",
                    fontsize=8, color="tab:red")  # at the right end, clear of the points near the corner
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("CPU-time speed-up over dense DER++ (median of per-seed ratios)")
    ax.set_ylabel("Class-IL minus dense (points; median, [min, max])")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def parse_target(text: str) -> tuple[float, float]:
    """--target as (speed-up, points below dense)."""
    try:
        target = tuple(float(x) for x in text.split(","))
    except ValueError:
        target = ()
    if len(target) != 2:
        raise InputError(f"--target must be speed-up,points (e.g. 2.3,2), got {excerpt(text)}")
    return target


def read_reports(paths: Sequence[str]) -> list[tuple[str, dict]]:
    """The `fleet bench sparcl --json` reports at `paths`; one line naming the file if one is not."""
    reports = []
    for name in paths:
        try:
            report = json.loads(Path(name).read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{name}: cannot be read as a JSON report: {getattr(err, 'strerror', None) or err}") \
                from None
        if not isinstance(report, dict) or "config" not in report or "variants" not in report:
            raise InputError(f"{name}: not a `fleet bench sparcl --json` report")
        reports.append((name, report))
    comparable(reports)
    return reports


def write_frontier(reports: Sequence[tuple[str, dict]], out: Path, target: tuple[float, float]) -> list[dict]:
    """Write OUT.csv and OUT.png from comparable reports; returns the points, each dense baseline once."""
    rows = [row for name, report in reports for row in frontier_points(report, Path(name).name)]
    seen, unique = set(), []
    for row in rows:  # a dense baseline may come with several reports: keep it once per label
        key = (row["label"], row["seeds"])
        if row["granularity"] != "dense" or key not in seen:
            seen.add(key)
            unique.append(row)
    cfg = reports[0][1]["config"]
    write_csv(out.with_suffix(".csv"), unique, COLUMNS)
    plot_frontier(unique, out.with_suffix(".png"),
                  f"SparCL-DER++ on {cfg['dataset']}, width {cfg['width']}, {cfg['max_per_class']}/class, "
                  f"{cfg['epochs']} epochs/task" + (", norms recalibrated" if cfg.get("recalibrate_norms") else "")
                  + ("" if cfg.get("mask_other_classes", True) else ", unmasked loss"),
                  target)
    return unique


def format_points(rows: Sequence[dict]) -> str:
    return "\n".join(f"{r['label']:<28} {r['seeds']} seeds  CPU {r['cpu_speedup']:5.2f}x  FLOPs "
                     f"{r['flops_ratio']:6.1f}x  Class-IL {r['delta']:+7.2f} [{r['delta_min']:+.2f}, "
                     f"{r['delta_max']:+.2f}]" for r in sorted(rows, key=lambda r: r["cpu_speedup"]))
