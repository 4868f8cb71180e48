"""Run outputs: rounds.csv (appended and flushed each round), devices.csv, summary.json, PNG plots."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


class RoundsCsv:
    """rounds.csv written one row at a time, so an interrupted run keeps every finished round."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = list(columns)
        self.rows: list[dict] = []
        with path.open("w", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writeheader()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)
            f.flush()
            os.fsync(f.fileno())


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A whole table at once, atomically (temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_json(path: Path, payload: dict) -> None:
    """Atomic: write a temporary file, then rename it over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)


def plot_accuracy(rows: Sequence[dict], n_tasks: int, path: Path, title: str) -> None:
    """Class-IL accuracy of the global model on each task's test set, round by round."""
    fig, ax = plt.subplots(figsize=(7, 4))
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bytes(rows: Sequence[dict], path: Path, title: str) -> None:
    """Bytes that travelled each round, up and down."""
    fig, ax = plt.subplots(figsize=(7, 4))
    rounds = [r["round"] for r in rows]
    width = 0.4
    ax.bar([x - width / 2 for x in rounds], [r["upload_bytes"] / 1e6 for r in rows], width, label="upload")
    ax.bar([x + width / 2 for x in rounds], [r["download_bytes"] / 1e6 for r in rows], width, label="download")
    ax.set(xlabel="round", ylabel="MB", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


STATUS_COLOURS = {"ok": "tab:green", "late": "tab:orange", "failed": "tab:red", "oom": "tab:purple",
                  "declined": "tab:gray"}


def plot_timeline(outcomes: Sequence, start_s: float, close_s: float, deadline_s: float | None,
                  path: Path, title: str, labels: dict[int, str] | None = None) -> None:
    """A Gantt chart of one round: download, compute, upload per device; close and deadline marked."""
    outcomes = sorted(outcomes, key=lambda d: d.device_id)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(outcomes) + 1.6))
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
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_time(curves: dict[str, Sequence[tuple[float, float]]], path: Path, title: str) -> None:
    """Class-IL accuracy against simulated time, one line per run (a profile, a variant)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        if points:
            ax.plot(*zip(*points), marker=".", label=name)
    ax.set(xlabel="simulated time (s)", ylabel="Class-IL accuracy (%)", title=title, ylim=(0, 101))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_comparison(rows: Sequence[dict], path: Path, title: str) -> None:
    """One bar group per profile: final accuracy, and uploaded MB and simulated time."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
