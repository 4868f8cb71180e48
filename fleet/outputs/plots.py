"""The PNG plots of runs and comparisons.

Every figure is a matplotlib `Figure` of its own, drawn with the Agg canvas and
never registered with pyplot, so plotting holds no global state: figures from
threads or long sessions are freed with their last reference, and nothing here
changes the backend of a program that imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fleet.outputs.files import replacing


def subplots(*, figsize: tuple[float, float], **options: Any) -> tuple[Figure, Axes]:
    """A new figure and its one axes (as pyplot.subplots, without pyplot's registry of open figures)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(**options)


def subplot_row(n: int, *, figsize: tuple[float, float], **options: Any) -> tuple[Figure, list[Axes]]:
    """A new figure and a row of `n` axes, left to right (a list even where n is 1)."""
    fig = Figure(figsize=figsize)
    return fig, list(fig.subplots(1, n, squeeze=False, **options)[0])


def save_figure(fig: Figure, path: Path) -> None:
    """fig as a PNG at `path`, atomically and never through a symlink."""
    with replacing(path) as f:
        fig.savefig(f, format="png", dpi=120)


def plot_accuracy(rows: Sequence[dict], n_tasks: int, path: Path, title: str) -> None:
    """Class-IL accuracy of the global model on each task's test set, round by round."""
    fig, ax = subplots(figsize=(7, 4))
    rounds = [r["round"] for r in rows]
    for t in range(n_tasks):
        ys = [r.get(f"acc_task_{t}") for r in rows]
        pts = [(x, y) for x, y in zip(rounds, ys) if y not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=f"task {t}")
    ax.plot(rounds, [r["class_il_accuracy"] for r in rows], color="black", lw=2, label="average (seen tasks)")
    ax.set(xlabel="round", ylabel="Class-IL accuracy (%)", title=title, ylim=(0, 101))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def plot_bytes(rows: Sequence[dict], path: Path, title: str) -> None:
    """Bytes that travelled each round, up and down."""
    fig, ax = subplots(figsize=(7, 4))
    rounds = [r["round"] for r in rows]
    width = 0.4
    ax.bar([x - width / 2 for x in rounds], [r["upload_bytes"] / 1e6 for r in rows], width, label="upload")
    ax.bar([x + width / 2 for x in rounds], [r["download_bytes"] / 1e6 for r in rows], width, label="download")
    ax.set(xlabel="round", ylabel="MB", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


STATUS_COLOURS = {"ok": "tab:green", "late": "tab:orange", "failed": "tab:red", "oom": "tab:purple",
                  "declined": "tab:gray"}


TIMELINE_ROWS = 40


def timeline_rows(outcomes: Sequence, limit: int = TIMELINE_ROWS) -> list:
    """At most `limit` outcomes in device order: each status in proportion to its share, at least one each."""
    outcomes = sorted(outcomes, key=lambda d: d.device_id)
    if len(outcomes) <= limit:
        return outcomes
    by_status: dict[str, list] = {}
    for d in outcomes:
        by_status.setdefault(d.status, []).append(d)
    quota = {k: max(1, round(limit * len(v) / len(outcomes))) for k, v in by_status.items()}
    while sum(quota.values()) > limit:  # the rounding and the floors of one may overshoot
        quota[max(quota, key=lambda k: quota[k])] -= 1
    chosen = [group[int(i)] for k, group in by_status.items()
              for i in np.linspace(0, len(group) - 1, quota[k])]
    return sorted(chosen, key=lambda d: d.device_id)


def plot_timeline(outcomes: Sequence, start_s: float, close_s: float, deadline_s: float | None,
                  path: Path, title: str, labels: dict[int, str] | None = None) -> None:
    """A Gantt chart of one round: download, compute, upload per device; close and deadline marked.

    A large round shows TIMELINE_ROWS devices, every kind of outcome among them (see timeline_rows).
    """
    total = len(outcomes)
    outcomes = timeline_rows(outcomes)
    if len(outcomes) < total:
        title = f"{title}\n{len(outcomes)} of its {total} devices, every outcome shown"
    fig, ax = subplots(figsize=(9, 0.35 * len(outcomes) + 1.8))
    phases = (("download_s", "tab:blue", "download"), ("compute_s", "tab:olive", "compute"),
              ("upload_s", "tab:cyan", "upload"))
    for row, d in enumerate(outcomes):
        at = d.start_s - start_s
        for key, colour, name in phases:
            width = getattr(d, key)
            ax.barh(row, width, left=at, color=colour, label=name if row == 0 else None,
                    edgecolor=STATUS_COLOURS.get(d.status, "black"), linewidth=1.5)
            at += width
        ax.text(at, row, f" {d.status}", va="center", fontsize=7, color=STATUS_COLOURS.get(d.status, "black"))
    ax.axvline(close_s - start_s, color="black", lw=1, label="round closed")
    if deadline_s is not None:
        ax.axvline(deadline_s, color="tab:red", ls="--", lw=1, label="deadline")
    names = labels or {}
    ax.set_yticks(range(len(outcomes)), [f"{d.device_id} {names.get(d.device_id, '')}" for d in outcomes],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="simulated seconds since the round started", title=title)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    fig.tight_layout()
    save_figure(fig, path)


# what the multi-round timeline draws: kind -> (colour, bar height, legend label); drawn in this order
TIMELINE_KINDS = {
    "offline": ("0.85", 0.9, "offline at the round's start"),
    "busy": ("moccasin", 0.9, "busy at the round's start (finishing a late round)"),
    "download": ("tab:blue", 0.55, "download"),
    "compute": ("tab:olive", 0.55, "compute"),
    "upload": ("tab:cyan", 0.55, "upload (own uplink)"),
    "link wait": ("tab:pink", 0.55, "upload waiting on the shared server link"),
    "idle": ("0.55", 0.2, "idle until the round closed"),
    "late": ("tab:orange", 0.55, "work past the round's close"),
}
TIMELINE_MARKS = {"failed": ("x", "tab:red"), "declined": ("|", "tab:gray"), "oom": ("s", "tab:purple")}


def timeline_bars(rounds: Sequence) -> tuple[dict[str, list[tuple[int, float, float]]],
                                             dict[str, list[tuple[int, float]]]]:
    """What the multi-round timeline draws, from fleet.world.ledger.RoundTrace records: per kind of stretch
    (TIMELINE_KINDS) its bars as (device, left, width) in simulated seconds, and per status in
    TIMELINE_MARKS a mark (device, where its work stopped).

    A sampled device's download, compute and upload follow each other from the round's start; the
    upload is its own uplink's time, then the seconds the shared server link added (`link_wait_s`);
    whatever of them falls after the round's close is "late" (the device stays busy: the next round
    shows it so), and an accepted device idles from its arrival to the close, an out-of-memory one
    from the start. An offline or busy device is shaded for the whole round: that is what the server
    saw when it sampled.
    """
    bars: dict[str, list[tuple[int, float, float]]] = {k: [] for k in TIMELINE_KINDS}
    marks: dict[str, list[tuple[int, float]]] = {k: [] for k in TIMELINE_MARKS}

    def add(kind: str, device: int, left: float, right: float) -> None:
        if right > left:
            bars[kind].append((device, left, right - left))

    for r in rounds:
        for d in r.offline:
            add("offline", d, r.start_s, r.close_s)
        for d in r.busy:
            add("busy", d, r.start_s, r.close_s)
        for o in r.devices:
            at = o.start_s
            wait = o.link_wait_s
            for kind, width in (("download", o.download_s), ("compute", o.compute_s),
                                ("upload", o.upload_s - wait), ("link wait", wait)):
                add(kind, o.device_id, at, min(at + width, r.close_s))
                at += width
            add("late", o.device_id, max(o.start_s, r.close_s), at)
            if o.status == "ok":
                add("idle", o.device_id, at, r.close_s)
            elif o.status == "oom":
                add("idle", o.device_id, o.start_s, r.close_s)
            if o.status in marks:
                marks[o.status].append((o.device_id, at))
    return bars, marks


def plot_timeline_rounds(rounds: Sequence, devices: Sequence[int], path: Path, title: str,
                         labels: dict[int, str] | None = None, *, fleet: int | None = None,
                         deadline_s: float | None = None) -> None:
    """A Gantt chart of every round (fleet.world.ledger.RoundTrace records) on the simulated clock, a row per
    device in `devices` (the ledger's tracked devices: all of a small fleet); see timeline_bars.

    `fleet`: the fleet's size, said in the title where fewer devices are shown.
    """
    bars, marks = timeline_bars(rounds)
    row = {d: i for i, d in enumerate(devices)}
    if fleet is not None and len(devices) < fleet:
        title = f"{title}\n{len(devices)} of its {fleet} devices shown, each profile in proportion"
    fig, ax = subplots(figsize=(11, 0.32 * len(devices) + 2.4))
    for kind, (colour, height, name) in TIMELINE_KINDS.items():
        shown = [b for b in bars[kind] if b[0] in row]
        if shown:
            ax.barh([row[d] for d, _, _ in shown], [w for _, _, w in shown], left=[x for _, x, _ in shown],
                    height=height, color=colour, label=name, linewidth=0)
    for status, (marker, colour) in TIMELINE_MARKS.items():
        hits = [m for m in marks[status] if m[0] in row]
        if hits:
            ax.scatter([x for _, x in hits], [row[d] for d, _ in hits], marker=marker, color=colour, s=30,
                       zorder=3, label=status)
    for r in rounds:
        ax.axvline(r.start_s, color="black", lw=0.4, alpha=0.3)
        if deadline_s is not None:
            ax.plot([r.start_s + deadline_s] * 2, [-0.5, len(devices) - 0.5], color="tab:red", ls=":", lw=0.6)
    if rounds:
        ax.axvline(rounds[-1].close_s, color="black", lw=0.4, alpha=0.3)
        step = max(1, math.ceil(len(rounds) / 25))  # at most 25 round numbers along the top
        top = ax.secondary_xaxis("top")
        shown_rounds = rounds[::step]
        top.set_xticks([(r.start_s + r.close_s) / 2 for r in shown_rounds], [str(r.round) for r in shown_rounds],
                       fontsize=7)
        top.set_xlabel("round", fontsize=8)
    names = labels or {}
    ax.set_yticks(range(len(devices)), [f"{d} {names.get(d, '')}" for d in devices], fontsize=7)
    ax.set_ylim(len(devices) - 0.5, -0.5)
    ax.set(xlabel="simulated time (s)", title=title)
    ax.grid(alpha=0.3, axis="x")
    if ax.get_legend_handles_labels()[0]:  # a fleet that never came online draws no bar
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    fig.tight_layout()
    save_figure(fig, path)


ACCURACY_PANELS = ((1, "Class-IL accuracy (%)"), (2, "Task-IL accuracy (%)"))


def _accuracy(point: Sequence, column: int) -> float:
    """A curve point's accuracy in `column` (1: Class-IL, 2: Task-IL), NaN where it has none (a dry run)."""
    value = point[column] if len(point) > column else None
    return np.nan if value is None else float(value)


def _accuracy_panels(path: Path, title: str, draw: Callable[[Axes, int], None]) -> None:
    """Two panels against simulated time, Class-IL and Task-IL: `draw(ax, column)` puts the lines of one
    (column 1 or 2 of the curve points) on its axes."""
    fig, axes = subplot_row(2, figsize=(12, 4), sharex=True)
    for ax, (column, label) in zip(axes, ACCURACY_PANELS):
        draw(ax, column)
        ax.set(xlabel="simulated time (s)", ylabel=label, ylim=(0, 101))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_accuracy_time(curves: dict[str, Sequence[Sequence[float]]], path: Path, title: str) -> None:
    """Class-IL and Task-IL accuracy against simulated time, one line per run (a profile, a variant); curve
    points are [time, Class-IL, Task-IL]."""
    def draw(ax: Axes, column: int) -> None:
        for name, points in curves.items():
            if points:
                ax.plot([p[0] for p in points], [_accuracy(p, column) for p in points], marker=".", label=name)

    _accuracy_panels(path, title, draw)


def plot_staleness(arrivals: Sequence[dict], path: Path, title: str, max_staleness: int | None = None) -> None:
    """An asynchronous run's arrivals (arrivals.csv rows): how many versions and seconds old each update
    was, applied ones apart from those dropped as too stale, and the share trained on a task the stream
    had left by then."""
    fig, axes = subplot_row(2, figsize=(12, 3.8))
    by_status = {status: [r for r in arrivals if r["status"] == status] for status in ("ok", "late")}
    versions = [int(r["staleness"]) for r in arrivals if r["status"] in by_status]
    # a list of edges: Axes.hist takes an array too, but matplotlib's stubs type bins as a Sequence
    bins = np.arange(-0.5, (max(versions) if versions else 0) + 1.5).tolist()
    for status, color, label in (("ok", "tab:blue", "applied"), ("late", "tab:red", "dropped: too stale")):
        rows = by_status[status]
        if rows:
            axes[0].hist([int(r["staleness"]) for r in rows], bins=bins, color=color, alpha=0.7, label=label)
            axes[1].hist([float(r["staleness_s"]) for r in rows], bins=20, color=color, alpha=0.7, label=label)
    if max_staleness is not None:
        axes[0].axvline(max_staleness + 0.5, color="k", ls="--", lw=1, label=f"bound ({max_staleness})")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set(xlabel="staleness (global versions since the device started)", ylabel="arrivals")
    axes[1].set(xlabel="staleness (simulated s from start to arrival)", ylabel="arrivals")
    known = [r for r in by_status["ok"] if r.get("task_current") not in (None, "")]
    off = sum(1 for r in known if not int(r["task_current"]))
    axes[1].set_title(f"{off} of {len(known)} applied updates trained on a task the stream had left", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
        if ax.get_legend_handles_labels()[0]:  # nothing arrived applied or too stale: no legend to draw
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


SEED_PANELS = (("final_accuracy", "Class-IL, final (%)"), ("final_accuracy_task_il", "Task-IL, final (%)"),
               ("forgetting", "forgetting (points)"), ("energy_j", "energy (J)"), ("sim_time_s", "simulated time (s)"))


def plot_seed_comparison(summary: Sequence[dict], path: Path, title: str) -> None:
    """Per figure, each variant's median over seeds with its 95% interval (fleet.run.compare.paired_over_seeds
    rows): readable at any number of seeds, where a bar per seed is not."""
    fig, axes = subplot_row(len(SEED_PANELS), figsize=(3.2 * len(SEED_PANELS), 3.6))
    for ax, (metric, label) in zip(axes, SEED_PANELS):
        rows = [r for r in summary if r["metric"] == metric and "median" in r]
        xs = range(len(rows))
        medians = [r["median"] for r in rows]
        errors = [[r["median"] - r["ci_low"] for r in rows], [r["ci_high"] - r["median"] for r in rows]]
        ax.errorbar(xs, medians, yerr=errors, fmt="o", color="tab:blue", capsize=4)
        ax.set_xticks(list(xs), [r["variant"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_accuracy_bands(curves: dict[str, Sequence[Sequence[Sequence[float]]]], path: Path, title: str) -> None:
    """Class-IL and Task-IL against simulated time per variant over seeds: at each round (or version) the
    median time and accuracy as a line, the lowest and highest seed's accuracy as a band. `curves`:
    variant -> one curve per seed."""
    def draw(ax: Axes, column: int) -> None:
        for name, runs in curves.items():
            rounds = min((len(c) for c in runs), default=0)
            if not rounds:
                continue
            t = np.median(np.array([[p[0] for p in c[:rounds]] for c in runs], dtype=np.float64), axis=0)
            acc = np.array([[_accuracy(p, column) for p in c[:rounds]] for c in runs], dtype=np.float64)
            (line,) = ax.plot(t, np.median(acc, axis=0), marker=".", label=name)
            ax.fill_between(t, acc.min(axis=0), acc.max(axis=0), color=line.get_color(), alpha=0.2, lw=0)

    _accuracy_panels(path, title, draw)


def plot_comparison(rows: Sequence[dict], path: Path, title: str) -> None:
    """One bar group per profile: final accuracy, and uploaded MB and simulated time."""
    fig, axes = subplot_row(3, figsize=(11, 3.6))
    names = [r["profile"] for r in rows]
    for ax, key, label in zip(axes, ("final_accuracy", "upload_bytes", "sim_time_s"),
                              ("final Class-IL accuracy (%)", "upload (MB)", "simulated time (s)")):
        values = [r[key] / (1e6 if key == "upload_bytes" else 1) for r in rows]
        ax.bar(names, values, color="tab:blue")
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


TRADEOFF_AXES = (("energy_j", "total energy (J)"), ("sim_time_s", "simulated time (s)"))


def tradeoff_stats(points: Mapping[str, Sequence[dict]]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per variant and figure (final Class-IL and each of TRADEOFF_AXES): (median, min, max) over its runs
    (one per seed); a run without a final accuracy (nothing trained) is left out, a variant with none too."""
    keys = ("final_accuracy", *(k for k, _ in TRADEOFF_AXES))
    out = {}
    for variant, runs in points.items():
        runs = [r for r in runs if r.get("final_accuracy") is not None]
        if runs:
            out[variant] = {k: (float(np.median(v)), float(min(v)), float(max(v)))
                            for k in keys for v in [[float(r[k]) for r in runs]]}
    return out


def plot_tradeoff(points: Mapping[str, Sequence[dict]], path: Path, title: str) -> None:
    """Final Class-IL accuracy against total energy and against simulated time, a point per variant at
    its median over seeds; with several seeds, each seed as a small dot and min-max whiskers both ways.
    `points`: variant -> its runs' summaries (final_accuracy, energy_j, sim_time_s)."""
    stats = tradeoff_stats(points)
    if any(len(runs) > 1 for runs in points.values()):
        title = f"{title}\nmedian over seeds, whiskers from the lowest to the highest seed, a dot per seed"
    fig, axes = subplot_row(len(TRADEOFF_AXES), figsize=(5.2 * len(TRADEOFF_AXES), 4.2), sharey=True)
    for i, (variant, figures) in enumerate(stats.items()):
        colour = f"C{i % 10}"
        acc = figures["final_accuracy"]
        runs = [r for r in points[variant] if r.get("final_accuracy") is not None]
        for ax, (key, _) in zip(axes, TRADEOFF_AXES):
            x = figures[key]
            if len(runs) > 1:
                ax.scatter([float(r[key]) for r in runs], [float(r["final_accuracy"]) for r in runs], s=10,
                           color=colour, alpha=0.45, lw=0)
            ax.errorbar([x[0]], [acc[0]], xerr=[[x[0] - x[1]], [x[2] - x[0]]],
                        yerr=[[acc[0] - acc[1]], [acc[2] - acc[0]]], fmt="o", color=colour, capsize=3,
                        label=f"{variant} ({len(runs)} seed{'s' if len(runs) > 1 else ''})" if ax is axes[0] else None)
            ax.annotate(variant, (x[0], acc[0]), xytext=(4, 4), textcoords="offset points", fontsize=7, color=colour)
    for ax, (_, label) in zip(axes, TRADEOFF_AXES):
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final Class-IL accuracy (%)")
    if 0 < len(stats) <= 12:  # more would cover the points: the labels beside them name the variants
        axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
