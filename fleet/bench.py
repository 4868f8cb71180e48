"""`fleet bench sparcl`: a dense rehearsal method against its SparCL version.

Every configuration trains on the same task stream with the same seed, one
after the other in one process, so FLOPs, accuracy and wall-clock are measured
side by side. Per-seed ratios are taken first, then their median.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

from clients.cl.methods import MethodConfig
from clients.data import TaskStream, load_stream
from clients.errors import InputError
from clients.experiment import StreamResult, run_stream
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.learner import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.tdm import TDMConfig

ABLATIONS = ("full", "tdm", "tdm+ddr", "tdm+dgm", "all")


@dataclass(frozen=True)
class BenchConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    method: str = "derpp"
    sparsity: float = 0.9
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 50
    lr: float = 0.1          # SGD without momentum; the reference's 0.03 is for 50 CIFAR epochs
    buffer_size: int = 200
    width: int | None = None
    ablation: str = "full"
    dgm_keep: float = 0.2
    mask_other_classes: bool = True
    max_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise InputError(f"ablation {self.ablation!r} is unknown (choose from: {', '.join(ABLATIONS)})")
        if not self.seeds:
            raise InputError("seeds must name at least one seed")


def sparcl_variants(config: BenchConfig) -> dict[str, SparCLConfig]:
    """The SparCL configurations an ablation setting asks for, by component label."""
    tdm = TDMConfig(sparsity=config.sparsity)
    ddr, dgm = DDRConfig(), DGMConfig(keep=config.dgm_keep)
    variants = {
        "tdm": SparCLConfig(tdm=tdm, ddr=None, dgm=None),
        "tdm+ddr": SparCLConfig(tdm=tdm, ddr=ddr, dgm=None),
        "tdm+dgm": SparCLConfig(tdm=tdm, ddr=None, dgm=dgm),
        "full": SparCLConfig(tdm=tdm, ddr=ddr, dgm=dgm),
    }
    wanted = ("tdm", "tdm+ddr", "tdm+dgm", "full") if config.ablation == "all" else (config.ablation,)
    return {name: variants[name] for name in wanted}


def learner_config(config: BenchConfig, sparcl: SparCLConfig, seed: int) -> LearnerConfig:
    method = MethodConfig(name=config.method, buffer_size=config.buffer_size,
                          mask_other_classes=config.mask_other_classes)
    return LearnerConfig(method=method, sparcl=sparcl, width=config.width,
                         train=TrainConfig(epochs_per_task=config.epochs, lr=config.lr, seed=seed))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarise(runs: dict[str, list[StreamResult]]) -> dict[str, dict[str, float]]:
    """Median figures per variant against the dense runs.

    Ratios are taken per seed (the runs share a seed and the machine's state),
    then their median; `acc_delta` is the variant's median Class-IL accuracy
    minus the dense median (`acc_delta_paired`: the median of per-seed deltas).
    """
    dense = runs["dense"]
    out = {}
    for name, results in runs.items():
        out[name] = {
            "class_il": median([r.class_il for r in results]),
            "task_il": median([r.task_il for r in results]),
            "forgetting": median([r.forgetting for r in results]),
            "train_flops": median([r.train_flops for r in results]),
            "examples": median([r.examples for r in results]),
            "wall_s": median([r.wall_s for r in results]),
            "peak_memory_bytes": median([r.peak_memory_bytes for r in results]),
            "flops_ratio": median([d.train_flops / r.train_flops for d, r in zip(dense, results)]),
            "acc_delta": median([r.class_il for r in results]) - median([d.class_il for d in dense]),
            "acc_delta_paired": median([r.class_il - d.class_il for d, r in zip(dense, results)]),
            "wall_ratio": median([d.wall_s / r.wall_s for d, r in zip(dense, results)]),
            "memory_ratio": median([r.peak_memory_bytes / d.peak_memory_bytes for d, r in zip(dense, results)]),
        }
    return out


def run_bench(config: BenchConfig, on_epoch: Callable[[], None] | None = None,
              stream: TaskStream | None = None) -> dict:
    """Run dense and SparCL variants for every seed; return the JSON-ready report."""
    variants = {"dense": SparCLConfig.dense(), **sparcl_variants(config)}
    runs: dict[str, list[StreamResult]] = {name: [] for name in variants}
    for seed in config.seeds:
        seed_stream = stream or load_stream(config.dataset, data_dir=config.data_dir, seed=seed,
                                            max_per_class=config.max_per_class)
        for name, sparcl in variants.items():  # interleaved: dense and sparse share the machine's state
            tick = (lambda task, epoch: on_epoch()) if on_epoch else None
            runs[name].append(run_stream(learner_config(config, sparcl, seed), seed_stream, tick))
    summary = summarise(runs)
    main = "full" if "full" in summary else next(n for n in summary if n != "dense")
    return {
        "config": {**asdict(config), "seeds": list(config.seeds)},
        "label": runs[main][0].label,
        "dense_label": runs["dense"][0].label,
        "flops_ratio": summary[main]["flops_ratio"],
        "acc_delta": summary[main]["acc_delta"],
        "wall_ratio": summary[main]["wall_ratio"],
        "variants": summary,
        "runs": [dict(r.to_dict(), variant=name) for name, rs in runs.items() for r in rs],
    }


def total_epochs(config: BenchConfig, n_tasks: int = 5) -> int:
    return len(config.seeds) * (1 + len(sparcl_variants(config))) * n_tasks * config.epochs


def format_table(report: dict) -> str:
    """A plain-text table of the medians, one row per variant."""
    cfg = report["config"]
    head = (f"{report['dense_label']} vs {report['label']} on {cfg['dataset']}, sparsity {cfg['sparsity']}, "
            f"{cfg['epochs']} epochs/task, medians over seeds {cfg['seeds']}")
    cols = f"{'variant':<14}{'Class-IL':>9}{'Task-IL':>9}{'forget':>8}{'GFLOPs':>10}{'FLOPs x':>9}" \
           f"{'wall s':>8}{'wall x':>8}{'mem MB':>8}"
    lines = [head, cols, "-" * len(cols)]
    for name, v in report["variants"].items():
        lines.append(
            f"{name:<14}{v['class_il']:>9.2f}{v['task_il']:>9.2f}{v['forgetting']:>8.2f}"
            f"{v['train_flops'] / 1e9:>10.1f}{v['flops_ratio']:>9.1f}{v['wall_s']:>8.1f}"
            f"{v['wall_ratio']:>8.2f}{v['peak_memory_bytes'] / 2**20:>8.2f}")
    lines.append(f"flops_ratio {report['flops_ratio']:.1f}x   acc_delta {report['acc_delta']:+.2f} points   "
                 f"wall_ratio {report['wall_ratio']:.2f}x")
    return "\n".join(lines)

