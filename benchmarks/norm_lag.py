"""Why SparCL runs "collapsed" on Fashion-MNIST: BatchNorm statistics that lag the weights.

After every epoch of the first tasks, each learner (dense DER++ and SparCL-DER++
at 0.90, the fmnist_sparcl.sh settings) is evaluated twice on every task seen:
with the running statistics that training left, as evaluation normally does,
and with statistics recomputed for the same weights (a copy of the learner runs
`Learner.recalibrate_norms`; training continues untouched). Where the two
differ, the weights are fine and only the statistics are stale.

    .venv/bin/python benchmarks/norm_lag.py [--seed 2] [--tasks 3]

Writes results/fmnist/norm_lag.csv and norm_lag.png; prints per learner the
largest gap and the epochs where Task-IL with the running statistics fell
below 60% (chance is 50).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.data import load_stream  # noqa: E402
from clients.experiment import evaluate_seen  # noqa: E402
from clients.metrics import average_accuracy  # noqa: E402
from clients.sparcl.config import SparCLConfig
from clients.sparcl.learner import Learner
from fleet.bench import BenchConfig, learner_config, sparcl_variants
from fleet.outputs import save_figure, write_csv

OUT = Path(__file__).resolve().parent.parent / "results" / "fmnist"


def seen_accuracy(learner: Learner, stream, upto: int) -> tuple[float, float]:
    """Mean Class-IL and Task-IL over tasks 0..upto, in evaluation mode."""
    class_il, task_il = evaluate_seen(learner, stream, upto)
    return average_accuracy(class_il), average_accuracy(task_il)


def trace(name: str, learner: Learner, stream, tasks: int) -> list[dict]:
    rows, epoch = [], 0
    for task in stream.tasks[:tasks]:
        learner.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
        while not learner.task_done:
            learner.train_epoch()
            epoch += 1
            fresh = copy.deepcopy(learner)
            fresh.recalibrate_norms()
            (c_run, t_run), (c_new, t_new) = (seen_accuracy(x, stream, task.task_id) for x in (learner, fresh))
            rows.append({"learner": name, "epoch": epoch, "task": task.task_id, "class_il_running": c_run,
                         "task_il_running": t_run, "class_il_recomputed": c_new, "task_il_recomputed": t_new})
            print(f"{name:<13} epoch {epoch:3d} task {task.task_id}  Task-IL running {t_run:5.1f} "
                  f"recomputed {t_new:5.1f}   Class-IL running {c_run:5.1f} recomputed {c_new:5.1f}", flush=True)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, colour in (("SparCL-DER++", "tab:blue"), ("DER++", "tab:gray")):
        mine = [r for r in rows if r["learner"] == name]
        epochs = [r["epoch"] for r in mine]
        ax.plot(epochs, [r["task_il_running"] for r in mine], color=colour, label=f"{name}, running statistics")
        ax.plot(epochs, [r["task_il_recomputed"] for r in mine], color=colour, ls="--",
                label=f"{name}, statistics recomputed")
    ax.axhline(50, color="tab:red", lw=0.8, ls=":")
    ax.set_xlabel("epoch (10 per task)")
    ax.set_ylabel("Task-IL % over the tasks seen")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = BenchConfig(dataset="fashion-mnist", width=32, max_per_class=300, epochs=10, sparsity=0.9)
    stream = load_stream("fashion-mnist", seed=args.seed, max_per_class=300)
    rows = []
    for name, sparcl in (("SparCL-DER++", sparcl_variants(config)["full"]), ("DER++", SparCLConfig.dense())):
        learner = Learner(learner_config(config, sparcl, args.seed), stream.input_shape, stream.num_classes)
        rows += trace(name, learner, stream, args.tasks)
    OUT.mkdir(parents=True, exist_ok=True)
    write_csv(OUT / "norm_lag.csv", rows, list(rows[0]))
    plot(rows, OUT / "norm_lag.png", f"Split Fashion-MNIST, seed {args.seed}, width 32, sparsity 0.90:\n"
                                     "the same weights evaluated with the running or recomputed BatchNorm statistics")
    for name in ("SparCL-DER++", "DER++"):
        mine = [r for r in rows if r["learner"] == name]
        worst = max(mine, key=lambda r: r["task_il_recomputed"] - r["task_il_running"])
        low = [r["epoch"] for r in mine if r["task_il_running"] < 60]
        print(f"{name}: largest gap at epoch {worst['epoch']}: Task-IL {worst['task_il_running']:.1f} with the "
              f"running statistics, {worst['task_il_recomputed']:.1f} recomputed; epochs below 60%: {low or 'none'}")
    print(f"wrote {OUT / 'norm_lag.csv'} and {OUT / 'norm_lag.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
