"""`fleet bench sparcl`: a dense rehearsal method against its SparCL version.

Every configuration trains on the same task stream with the same seed, one
after the other in one process, so FLOPs, accuracy and time are measured side
by side. Comparisons are paired: per seed first (the runs share a stream and
the machine's state), then the median of those per-seed figures, with their
spread (min and max over seeds). Time ratios use process CPU time, which a
busy machine cannot inflate the way it inflates wall-clock time.

Beside dense and SparCL runs an equal-FLOPs baseline trains the dense method
for only as many epochs as SparCL's FLOPs buy, so a reader sees whether SparCL
beats simply training less.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from clients.cl.methods import MethodConfig
from clients.data import TaskStream, load_stream
from clients.errors import InputError, excerpt
from clients.experiment import StreamResult, run_stream
from fleet.stats import median, paired
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.learner import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.tdm import TDMConfig

ABLATIONS = ("full", "tdm", "tdm+ddr", "tdm+dgm", "all", "static")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
EQUAL_FLOPS = "dense-equal-flops"


@dataclass(frozen=True)
class BenchConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    method: str = "derpp"
    sparsity: float = 0.9
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    epochs: int = 50
    lr: float = 0.1          # SGD without momentum; the reference's 0.03 is for 50 CIFAR epochs
    buffer_size: int = 200
    width: int | None = None
    ablation: str = "full"
    dgm_keep: float = 0.2
    mask_other_classes: bool = True
    max_per_class: int | None = None
    equal_flops: bool = True  # also run the dense method at SparCL's FLOPs (fewer epochs)
    granularity: str = "weight"  # TDM masks single weights, or whole channels (compacted where the model can)
    sparse_kernels: bool = False  # also run `full` on SparseProp's kernels where faster (clients.sparcl.sparse_kernels)
    recalibrate_norms: bool = False  # every arm recomputes its norms' statistics at each task's end
    ddr_rank: str = "forgetting"  # DDR removes the least-forgotten examples, or (the control) random ones
    ddr_presentations: int = 1  # epochs of statistics each DDR removal waits for (DDRConfig.presentations)
    device: str = "cpu"  # where every arm trains (clients.sparcl.learner.TrainConfig.device)
    # also run the dense method on a narrower backbone: the other cheap way to train less (what
    # channel masks must beat, since a channel-masked network is a narrower one)
    narrow_width: int | None = None

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise InputError(f"ablation {excerpt(self.ablation)} is unknown (choose from: {', '.join(ABLATIONS)})")
        if not self.seeds:
            raise InputError("seeds must name at least one seed")
        if self.narrow_width is not None and not 1 <= self.narrow_width < (self.width or 1 << 16):
            raise InputError(f"--narrow-width must be in [1, --width), got {excerpt(self.narrow_width)}")
        if self.sparse_kernels and self.ablation != "full":
            raise InputError("--sparse-kernels runs beside the full variant: use it with --ablation full")


SPARSE_KERNELS = "full+sparse-kernels"  # the full variant with its masked layers on SparseProp's kernels
NARROW = "dense-narrow"  # the dense method at BenchConfig.narrow_width


def sparcl_variants(config: BenchConfig) -> dict[str, SparCLConfig]:
    """The SparCL configurations an ablation setting asks for, by component label."""
    tdm = TDMConfig(sparsity=config.sparsity, granularity=config.granularity)
    ddr, dgm = DDRConfig(rank=config.ddr_rank, presentations=config.ddr_presentations), DGMConfig(keep=config.dgm_keep)
    variants = {
        "tdm": SparCLConfig(tdm=tdm, ddr=None, dgm=None),
        "tdm+ddr": SparCLConfig(tdm=tdm, ddr=ddr, dgm=None),
        "tdm+dgm": SparCLConfig(tdm=tdm, ddr=None, dgm=dgm),
        "full": SparCLConfig(tdm=tdm, ddr=ddr, dgm=dgm),
        # the control that separates TDM from any sparse network: its initial mask, never changed
        "static": SparCLConfig(tdm=replace(tdm, static=True), ddr=None, dgm=None),
    }
    wanted = ("tdm", "tdm+ddr", "tdm+dgm", "full") if config.ablation == "all" else (config.ablation,)
    chosen = {name: variants[name] for name in wanted}
    if config.sparse_kernels:  # the same run again on SparseProp's kernels, side by side
        chosen[SPARSE_KERNELS] = replace(variants["full"], tdm=replace(tdm, sparse_kernels=True))
    return chosen


def main_variant(names: Sequence[str]) -> str:
    """The SparCL variant the headline figures describe: all three components if run."""
    return "full" if "full" in names else next(n for n in names if n not in ("dense", EQUAL_FLOPS, NARROW))


def learner_config(config: BenchConfig, sparcl: SparCLConfig, seed: int, epochs: int | None = None,
                   width: int | None = None) -> LearnerConfig:
    method = MethodConfig(name=config.method, buffer_size=config.buffer_size,
                          mask_other_classes=config.mask_other_classes, augment=config.dataset == "cifar10")
    train = TrainConfig(epochs_per_task=epochs or config.epochs, lr=config.lr, seed=seed,
                        recalibrate_norms=config.recalibrate_norms, device=config.device)
    return LearnerConfig(method=method, sparcl=sparcl, width=width or config.width, train=train)


def equal_flops_epochs(epochs: int, dense_flops: float, sparse_flops: float) -> int:
    """Epochs per task at which the dense method spends about the sparse run's FLOPs (at least 1)."""
    return max(1, round(epochs * sparse_flops / dense_flops))


def summarise(runs: dict[str, list[StreamResult]]) -> dict[str, dict]:
    """Per variant: medians of its own figures, and paired figures against dense.

    `acc_delta` is the median of the per-seed differences in Class-IL accuracy
    (variant minus dense, same seed), `acc_delta_min`/`_max` their spread;
    ratios are dense over variant per seed, then the median. `wall_ratio` is
    measured on process CPU time (`wall_clock_ratio` on the wall clock).
    """
    dense = runs["dense"]
    out = {}
    for name, results in runs.items():
        delta = paired([r.class_il - d.class_il for d, r in zip(dense, results)])
        cpu_ratio = median([d.cpu_s / r.cpu_s for d, r in zip(dense, results)])
        out[name] = {
            "class_il": median([r.class_il for r in results]),
            "task_il": median([r.task_il for r in results]),
            "forgetting": median([r.forgetting for r in results]),
            "forgetting_authors": median([r.forgetting_authors for r in results]),
            "learning_acc": median([r.learning_acc for r in results]),
            "train_flops": median([r.train_flops for r in results]),
            "examples": median([r.examples for r in results]),
            "epochs": median([r.epochs for r in results]),
            "wall_s": median([r.wall_s for r in results]),
            "cpu_s": median([r.cpu_s for r in results]),
            "peak_memory_bytes": median([r.peak_memory_bytes for r in results]),
            "flops_ratio": median([d.train_flops / r.train_flops for d, r in zip(dense, results)]),
            "acc_delta": delta["median"], "acc_delta_min": delta["min"], "acc_delta_max": delta["max"],
            "wall_ratio": cpu_ratio,
            "cpu_ratio": cpu_ratio,
            "wall_clock_ratio": median([d.wall_s / r.wall_s for d, r in zip(dense, results)]),
            "memory_ratio": median([r.peak_memory_bytes / d.peak_memory_bytes for d, r in zip(dense, results)]),
        }
    return out


def versus(runs: dict[str, list[StreamResult]], a: str, b: str) -> dict[str, float]:
    """Paired Class-IL difference a minus b over seeds: median, min, max."""
    return paired([x.class_il - y.class_il for x, y in zip(runs[a], runs[b])])


def run_bench(config: BenchConfig, on_epoch: Callable[[], None] | None = None,
              stream: TaskStream | None = None) -> dict:
    """Run dense, SparCL variants and the equal-FLOPs baseline for every seed; return the JSON report."""
    variants = {"dense": SparCLConfig.dense(), **sparcl_variants(config)}
    main = main_variant(list(variants))
    names = [*variants, *([EQUAL_FLOPS] if config.equal_flops else []), *([NARROW] if config.narrow_width else [])]
    runs: dict[str, list[StreamResult]] = {name: [] for name in names}
    tick = (lambda task, epoch: on_epoch()) if on_epoch else None
    for seed in config.seeds:
        seed_stream = stream or load_stream(config.dataset, data_dir=config.data_dir, seed=seed,
                                            max_per_class=config.max_per_class)
        for name, sparcl in variants.items():  # interleaved: dense and sparse share the machine's state
            runs[name].append(run_stream(learner_config(config, sparcl, seed), seed_stream, tick))
        if config.equal_flops:
            epochs = equal_flops_epochs(config.epochs, runs["dense"][-1].train_flops, runs[main][-1].train_flops)
            runs[EQUAL_FLOPS].append(run_stream(learner_config(config, SparCLConfig.dense(), seed, epochs),
                                                seed_stream, tick))
        if config.narrow_width:
            narrow = learner_config(config, SparCLConfig.dense(), seed, width=config.narrow_width)
            runs[NARROW].append(run_stream(narrow, seed_stream, tick))
    summary = summarise(runs)
    report = {
        "config": {**asdict(config), "seeds": list(config.seeds)},
        "label": runs[main][0].label,
        "dense_label": runs["dense"][0].label,
        "flops_ratio": summary[main]["flops_ratio"],
        "acc_delta": summary[main]["acc_delta"],
        "acc_delta_min": summary[main]["acc_delta_min"],
        "acc_delta_max": summary[main]["acc_delta_max"],
        "wall_ratio": summary[main]["wall_ratio"],
        "variants": summary,
        "runs": [dict(r.to_dict(), variant=name) for name, rs in runs.items() for r in rs],
    }
    if config.equal_flops:
        report["vs_equal_flops"] = versus(runs, main, EQUAL_FLOPS)
    if config.narrow_width:
        report["vs_narrow"] = versus(runs, main, NARROW)
    if SPARSE_KERNELS in runs:  # CPU time of the same learner on dense kernels over on sparse, per seed
        pairs = zip(runs["full"], runs[SPARSE_KERNELS])
        report["sparse_kernels_speedup"] = paired([a.cpu_s / b.cpu_s for a, b in pairs])
    return report


def total_epochs(config: BenchConfig, n_tasks: int = 5) -> int:
    """Epochs the progress bar counts (the equal-FLOPs runs are not known in advance)."""
    arms = 1 + len(sparcl_variants(config)) + (1 if config.narrow_width else 0)
    return len(config.seeds) * arms * n_tasks * config.epochs


def format_table(report: dict) -> str:
    """A plain-text table: medians per variant, paired deltas with their spread over seeds.

    `learn` is the learning accuracy (Class-IL on each task right after training it): where a
    variant loses to dense by learning new tasks less well rather than forgetting old ones.
    `forget` is ours (can be negative), `f-auth` the authors' and mammoth's (never negative).
    """
    cfg = report["config"]
    head = (f"{report['dense_label']} vs {report['label']} on {cfg['dataset']}, sparsity {cfg['sparsity']}, "
            f"{cfg['epochs']} epochs/task, medians over seeds {cfg['seeds']} (deltas paired per seed)")
    cols = (f"{'variant':<20}{'epochs':>7}{'Class-IL':>9}{'delta [min, max]':>25}{'Task-IL':>9}{'forget':>8}"
            f"{'f-auth':>8}{'learn':>7}{'GFLOPs':>9}{'FLOPs x':>8}{'CPU s':>8}{'CPU x':>7}{'mem MB':>8}")
    lines = [head, cols, "-" * len(cols)]
    for name, v in report["variants"].items():
        spread = f"{v['acc_delta']:+.2f} [{v['acc_delta_min']:+.2f}, {v['acc_delta_max']:+.2f}]"
        lines.append(
            f"{name:<20}{v['epochs']:>7.0f}{v['class_il']:>9.2f}{spread:>25}{v['task_il']:>9.2f}"
            f"{v['forgetting']:>8.2f}{v.get('forgetting_authors', float('nan')):>8.2f}{v['learning_acc']:>7.2f}"
            f"{v['train_flops'] / 1e9:>9.1f}"
            f"{v['flops_ratio']:>8.1f}{v['cpu_s']:>8.1f}{v['cpu_ratio']:>7.2f}{v['peak_memory_bytes'] / 2**20:>8.2f}")
    lines.append(f"flops_ratio {report['flops_ratio']:.1f}x   acc_delta {report['acc_delta']:+.2f} points "
                 f"[{report['acc_delta_min']:+.2f}, {report['acc_delta_max']:+.2f}]   "
                 f"wall_ratio (CPU time) {report['wall_ratio']:.2f}x")
    if cfg.get("device", "cpu") != "cpu":  # on a GPU the host's CPU time says little about training speed
        main = report["variants"][main_variant(list(report["variants"]))]
        lines.append(f"trained on {cfg['device']}: wall-clock ratio {main['wall_clock_ratio']:.2f}x")
    if "vs_equal_flops" in report:
        e = report["vs_equal_flops"]
        lines.append(f"{report['label']} minus dense at equal FLOPs: {e['median']:+.2f} points "
                     f"[{e['min']:+.2f}, {e['max']:+.2f}]")
    if "vs_narrow" in report:
        e = report["vs_narrow"]
        lines.append(f"{report['label']} minus dense at width {cfg['narrow_width']}: {e['median']:+.2f} points "
                     f"[{e['min']:+.2f}, {e['max']:+.2f}]")
    if "sparse_kernels_speedup" in report:
        k = report["sparse_kernels_speedup"]
        lines.append(f"{SPARSE_KERNELS} against full (dense kernels), CPU time paired per seed: {k['median']:.2f}x "
                     f"[{k['min']:.2f}, {k['max']:.2f}]")
    return "\n".join(lines)
