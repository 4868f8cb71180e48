"""`fleet bench sparcl`: a dense rehearsal method against its SparCL version.

Every configuration trains on the same task stream with the same seed, one
after the other in one process, so FLOPs, accuracy and time are measured side
by side. Comparisons are paired: per seed first (the runs share a stream and
the machine's state), then the median of those per-seed figures, with their
spread (min and max over seeds). Time ratios use process CPU time, which a
busy machine cannot inflate the way it inflates wall-clock time.

Every SparCL claim is made against standing controls, trained in the same
process on the same stream: (a) the dense method at the same width, (b) the
static mask at the same sparsity (the initial magnitude-pruned mask kept for the
whole stream: what any sparse network gets without TDM's schedule), and (c) the
dense method on a narrower network of equal training FLOPs, its width chosen so
its training FLOPs per example are nearest SparCL's counted ones (`nearest_width`).
An equal-FLOPs baseline also trains the dense method for only as many epochs as
SparCL's FLOPs buy, so a reader sees whether SparCL beats simply training less.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from clients.accounting import profile_model, training_flops_per_example
from clients.backbones import RESNET_WIDTHS, build_backbone, resolved_backbone
from clients.batching import BATCHINGS
from clients.cl.methods import MethodConfig
from clients.data import TaskStream, load_stream
from clients.errors import InputError, excerpt
from clients.experiment import StreamResult, run_stream
from fleet.stats import median, paired
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig, torch_device
from clients.sparcl.tdm import TDMConfig
from fleet.config import MAX_WIDTH
from fleet.rules import check_fields, rule

ABLATIONS = ("full", "tdm", "tdm+ddr", "tdm+dgm", "all", "static")
SINGLE = ("tdm", "tdm+ddr", "tdm+dgm", "full")  # what `all` runs
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
EQUAL_FLOPS = "dense-equal-flops"
STATIC = "static"  # the static-mask control (and the ablation of that name)
NARROW_MATCHES = ("per-example", "total")
MAX_EPOCHS = 100_000
# What SparCL's authors run (neu-spiral/SparCL): a constant lr of 0.03 (scripts/resnet18/*.sh pass
# --lr 0.03 and the training loop builds no scheduler, main_sparse_train_w_data_gradient_efficient.py
# line 835, so --lr-scheduler cosine and the warm-up never act); replay only from the second task
# (`... and t > 0`, line 303; clients.cl.methods); DDR's removals at epochs 5, 10, 15, 20 of 50, each
# judged on 5 epochs of statistics (DDRConfig.presentations: removals that no longer fit are skipped).
AUTHORS_SETTINGS = {"lr": 0.03, "replay_from_task": 1, "ddr_presentations": 5}


@dataclass(frozen=True)
class BenchConfig:
    """One `fleet bench sparcl` run. Its own bounds are rules on its fields (checked on construction, so a
    bad flag fails before any work); the learner's settings (sparsity, lr, buffer, DGM's keep, the data)
    keep the bounds their own configurations check, so each bound is written once. Number fields must be
    finite either way."""

    dataset: str = "digits"
    data_dir: str | None = None
    method: str = "derpp"
    sparsity: float = 0.9
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    epochs: int = rule(50, ge=1, le=MAX_EPOCHS)
    lr: float = 0.1  # SGD without momentum; the reference's 0.03 is for 50 CIFAR epochs
    buffer_size: int = 200
    width: int | None = rule(None, ge=1, le=MAX_WIDTH)
    ablation: str = "full"
    dgm_keep: float = 0.2
    mask_other_classes: bool = True
    max_per_class: int | None = None
    equal_flops: bool = True  # also run the dense method at SparCL's FLOPs (fewer epochs)
    granularity: str = "weight"  # TDM masks single weights, or whole channels (compacted where the model can)
    sparse_kernels: bool = False  # also run `full` on SparseProp's kernels where faster (clients.sparcl.sparse_kernels)
    recalibrate_norms: bool = False  # every arm recomputes its norms' statistics at each task's end
    ddr_rank: str = "forgetting"  # DDR removes the least-forgotten examples, or (the control) random ones
    ddr_presentations: int = rule(1, ge=1)  # epochs of statistics each DDR removal waits for (DDRConfig.presentations)
    device: str = "cpu"  # where every arm trains (clients.sparcl.config.TrainConfig.device)
    batches: str = rule("loader", choices=BATCHINGS)  # how every arm cuts an epoch into batches (clients.batching)
    # the dense method on a narrower backbone: the other cheap way to train less (what channel masks
    # must beat, since a channel-masked network is a narrower one). None: with `controls`, the width
    # whose training FLOPs are nearest SparCL's (`narrow_match`), chosen after the first seed's run
    narrow_width: int | None = None
    # the standing controls beside every SparCL arm: the static mask at the same sparsity and the dense
    # network of equal training FLOPs (dense at the same width always runs); off for quick runs
    controls: bool = True
    # equal FLOPs per example (the network alone), or in total (DDR's removed examples counted too)
    narrow_match: str = rule("per-example", choices=NARROW_MATCHES)
    replay_from_task: int = rule(0, ge=0)  # the first task whose steps replay (clients.cl.methods.MethodConfig)
    authors_settings: bool = False  # set by with_authors_settings (recorded in the report)

    def __post_init__(self) -> None:
        for name in str(self.ablation).split(","):
            if name not in ABLATIONS or ("," in self.ablation and name == "all"):
                raise InputError(f"ablation {excerpt(self.ablation)} is unknown (choose from: {', '.join(ABLATIONS)}, "
                                 "or a comma-separated list of them without all)")
        if isinstance(self.replay_from_task, bool) or not isinstance(self.replay_from_task, int):
            raise InputError(f"--replay-from-task must be an integer >= 0, got {excerpt(self.replay_from_task)}")
        check_fields(self)
        if not self.seeds:
            raise InputError("seeds must name at least one seed")
        if self.narrow_width is not None and not 1 <= self.narrow_width < (self.width or 1 << 16):
            raise InputError(f"--narrow-width must be in [1, --width), got {excerpt(self.narrow_width)}")
        if self.sparse_kernels and self.ablation != "full":
            raise InputError("--sparse-kernels runs beside the full variant: use it with --ablation full")

    @property
    def ablations(self) -> tuple[str, ...]:
        """The SparCL variants asked for, in order (`all` stands for the four of SINGLE)."""
        names = str(self.ablation).split(",")
        return SINGLE if names == ["all"] else tuple(dict.fromkeys(names))


def with_authors_settings(config: BenchConfig, keep: Iterable[str] = ()) -> BenchConfig:
    """`config` with SparCL's authors' settings (AUTHORS_SETTINGS), except the fields named in `keep`
    (those a user set explicitly)."""
    keep = set(keep)
    # fields of several types (a float lr, int counts): mypy cannot match a `**` to them, __post_init__ checks them
    changes: dict[str, Any] = {k: v for k, v in AUTHORS_SETTINGS.items() if k not in keep}
    return replace(config, authors_settings=True, **changes)


SMALL_CNN_WIDTH = 64  # clients.backbones.build_backbone's default for the small CNN
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
        STATIC: static_control(config),
    }
    chosen = {name: variants[name] for name in config.ablations}
    if config.sparse_kernels:  # the same run again on SparseProp's kernels, side by side
        chosen[SPARSE_KERNELS] = replace(variants["full"], tdm=replace(tdm, sparse_kernels=True))
    return chosen


def static_control(config: BenchConfig) -> SparCLConfig:
    """The control that separates TDM from any sparse network: its initial mask, never changed."""
    tdm = TDMConfig(sparsity=config.sparsity, granularity=config.granularity, static=True)
    return SparCLConfig(tdm=tdm, ddr=None, dgm=None)


def arms(config: BenchConfig) -> dict[str, SparCLConfig]:
    """Every learner trained at the full width and epochs: dense, the SparCL variants, and (with
    `controls`) the static-mask control where the variants do not already hold it."""
    chosen = {"dense": SparCLConfig.dense(), **sparcl_variants(config)}
    if config.controls and STATIC not in chosen:
        chosen[STATIC] = static_control(config)
    return chosen


DENSE_ARMS = ("dense", EQUAL_FLOPS, NARROW)  # the dense method: baselines, never a SparCL arm


def main_variant(names: Sequence[str]) -> str:
    """The SparCL variant the headline figures describe: all three components if run; the static
    mask only where it is the one asked for."""
    if "full" in names:
        return "full"
    sparse = [n for n in names if n not in DENSE_ARMS]
    return next((n for n in sparse if n != STATIC), sparse[0])


def sparcl_arms(names: Sequence[str]) -> list[str]:
    """The arms compared against the controls: every SparCL variant but the static control (itself
    the arm where it is the only one)."""
    sparse = [n for n in names if n not in DENSE_ARMS]
    return [n for n in sparse if n != STATIC] or sparse


def learner_config(config: BenchConfig, sparcl: SparCLConfig, seed: int, epochs: int | None = None,
                   width: int | None = None) -> LearnerConfig:
    method = MethodConfig(name=config.method, buffer_size=config.buffer_size,
                          mask_other_classes=config.mask_other_classes, augment=config.dataset == "cifar10",
                          replay_from_task=config.replay_from_task)
    train = TrainConfig(epochs_per_task=epochs or config.epochs, lr=config.lr, seed=seed,
                        recalibrate_norms=config.recalibrate_norms, device=config.device, batches=config.batches)
    return LearnerConfig(method=method, sparcl=sparcl, width=width or config.width, train=train)


def full_width(input_shape: tuple[int, ...], width: int | None) -> int:
    """The width a learner of `width` builds (None: the backbone's default, as build_backbone picks it)."""
    if width is not None:
        return width
    name = resolved_backbone("auto", input_shape[0])
    return RESNET_WIDTHS.get(name, SMALL_CNN_WIDTH)


@functools.lru_cache(maxsize=512)
def dense_flops_per_example(input_shape: tuple[int, ...], num_classes: int, width: int) -> float:
    """Counted training FLOPs of one example through the dense backbone at `width` (what the learner counts)."""
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the global stream alone
        model = build_backbone("auto", tuple(input_shape), num_classes, width)
    return training_flops_per_example(profile_model(model, tuple(input_shape)), {}, {})


def nearest_width(flops: Callable[[int], float], target: float, widest: int) -> int:
    """The width in [1, widest] whose FLOPs are nearest `target` (the narrower on a tie).

    `flops` must grow with the width (a network's FLOPs do): a bisection finds the
    first width at or above the target, then it and the one below are compared.
    """
    if widest < 1:
        raise ValueError(f"no width in [1, {widest}]")
    low, high = 1, widest
    while low < high:
        mid = (low + high) // 2
        if flops(mid) >= target:
            high = mid
        else:
            low = mid + 1
    if low > 1 and abs(flops(low - 1) - target) <= abs(flops(low) - target):
        return low - 1
    return low


def choose_narrow(config: BenchConfig, stream: TaskStream, main: str, sparse: StreamResult,
                  dense: StreamResult) -> dict | None:
    """The narrow dense control's width and how well its FLOPs match SparCL's (None: no narrower width).

    SparCL's counted training FLOPs per example (`per-example`: its FLOPs over its own
    examples; `total`: over the dense run's, so DDR's removed examples count as saved) are
    the target; an explicit `narrow_width` is kept and only described.
    """
    shape, classes = tuple(stream.input_shape), stream.num_classes
    widest = full_width(shape, config.width) - 1
    if config.narrow_width is None and widest < 1:
        return None
    target = sparse.train_flops / (sparse.examples if config.narrow_match == "per-example" else dense.examples)
    width = config.narrow_width or nearest_width(lambda w: dense_flops_per_example(shape, classes, w), target, widest)
    flops = dense_flops_per_example(shape, classes, width)
    return {"width": width, "auto": config.narrow_width is None, "match": config.narrow_match,
            "matched_to": f"{main}, seed {sparse.seed}", "target_flops_per_example": target,
            "flops_per_example": flops, "flops_ratio": flops / target}


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


def against(runs: dict[str, list[StreamResult]], arm: str, control: str) -> dict[str, float]:
    """`arm` against `control`, paired per seed: the Class-IL difference (arm minus control: median,
    min, max) and the control's training FLOPs, CPU time and wall-clock time over the arm's (medians
    of per-seed ratios: above 1, the arm is the cheaper)."""
    pairs = list(zip(runs[arm], runs[control]))
    return {**versus(runs, arm, control),
            "flops_ratio": median([c.train_flops / a.train_flops for a, c in pairs]),
            "cpu_ratio": median([c.cpu_s / a.cpu_s for a, c in pairs]),
            "wall_clock_ratio": median([c.wall_s / a.wall_s for a, c in pairs])}


def controls_of(runs: dict[str, list[StreamResult]]) -> dict[str, dict[str, dict[str, float]]]:
    """Every SparCL arm against every control that ran: dense, the static mask, the dense network
    of equal FLOPs (and dense at SparCL's FLOPs by fewer epochs, where it ran)."""
    controls = [c for c in ("dense", STATIC, NARROW, EQUAL_FLOPS) if c in runs]
    return {arm: {c: against(runs, arm, c) for c in controls if c != arm} for arm in sparcl_arms(list(runs))}


def machine_info(device: str) -> dict:
    """Which machine gave the figures: host, CPU model, the GPU where one trained, torch and its threads."""
    import platform

    from fleet.bench.kernels import cpu_name

    info = {"host": platform.node(), "cpu": cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device}
    if device != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch_device(device))
    return info


def run_bench(config: BenchConfig, on_epoch: Callable[[], None] | None = None,
              stream: TaskStream | None = None) -> dict:
    """Run dense, the SparCL variants, the controls and the equal-FLOPs baseline for every seed; return
    the JSON report."""
    variants = arms(config)
    main = main_variant(list(variants))
    want_narrow = config.narrow_width is not None or config.controls
    names = [*variants, *([EQUAL_FLOPS] if config.equal_flops else []), *([NARROW] if want_narrow else [])]
    runs: dict[str, list[StreamResult]] = {name: [] for name in names}
    tick = (lambda task, epoch: on_epoch()) if on_epoch else None
    narrow: dict | None = None
    for seed in config.seeds:
        seed_stream = stream or load_stream(config.dataset, data_dir=config.data_dir, seed=seed,
                                            max_per_class=config.max_per_class)
        for name, sparcl in variants.items():  # interleaved: dense and sparse share the machine's state
            runs[name].append(run_stream(learner_config(config, sparcl, seed), seed_stream, tick))
        if config.equal_flops:
            epochs = equal_flops_epochs(config.epochs, runs["dense"][-1].train_flops, runs[main][-1].train_flops)
            runs[EQUAL_FLOPS].append(run_stream(learner_config(config, SparCLConfig.dense(), seed, epochs),
                                                seed_stream, tick))
        if want_narrow and narrow is None and seed == config.seeds[0]:  # one width for every seed
            narrow = choose_narrow(config, seed_stream, main, runs[main][-1], runs["dense"][-1])
        if narrow:
            narrow_config = learner_config(config, SparCLConfig.dense(), seed, width=narrow["width"])
            runs[NARROW].append(run_stream(narrow_config, seed_stream, tick))
    if not narrow:
        runs.pop(NARROW, None)
    summary = summarise(runs)
    report = {
        # the narrow width as run (chosen, where none was given)
        "config": {**asdict(config), "seeds": list(config.seeds),
                   "narrow_width": narrow["width"] if narrow else config.narrow_width},
        "machine": machine_info(config.device),
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
    if narrow:
        report["narrow"] = narrow
        report["vs_narrow"] = versus(runs, main, NARROW)
    report["controls"] = controls_of(runs)
    if SPARSE_KERNELS in runs:  # CPU time of the same learner on dense kernels over on sparse, per seed
        pairs = zip(runs["full"], runs[SPARSE_KERNELS])
        report["sparse_kernels_speedup"] = paired([a.cpu_s / b.cpu_s for a, b in pairs])
    return report


def total_epochs(config: BenchConfig, n_tasks: int = 5) -> int:
    """Epochs the progress bar counts (the equal-FLOPs runs are not known in advance)."""
    count = len(arms(config)) + (1 if config.narrow_width is not None or config.controls else 0)
    return len(config.seeds) * count * n_tasks * config.epochs


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
    lines.extend(format_controls(report))
    if "sparse_kernels_speedup" in report:
        k = report["sparse_kernels_speedup"]
        lines.append(f"{SPARSE_KERNELS} against full (dense kernels), CPU time paired per seed: {k['median']:.2f}x "
                     f"[{k['min']:.2f}, {k['max']:.2f}]")
    return "\n".join(lines)


def control_label(name: str, report: dict) -> str:
    cfg = report["config"]
    width = cfg.get("width") or "default"
    if name == "dense":
        return f"dense, width {width}"
    if name == STATIC:
        return f"static mask {cfg['sparsity']:g}"
    if name == NARROW:
        return f"dense, width {cfg['narrow_width']}"
    return "dense, fewer epochs"


def format_controls(report: dict) -> list[str]:
    """The standing controls block: each SparCL arm minus each control, paired per seed, with the
    control's FLOPs and time over the arm's; then how the narrow width was chosen."""
    controls = report.get("controls")
    if not controls:
        return []
    on_cpu = report["config"].get("device", "cpu") == "cpu"
    time_key, time_name = ("cpu_ratio", "CPU x") if on_cpu else ("wall_clock_ratio", "wall x")
    lines = ["standing controls: SparCL arm minus control, paired per seed, median [min, max]; "
             f"control over arm in training FLOPs and {'CPU' if on_cpu else 'wall-clock'} time",
             f"{'arm':<20}{'control':<24}{'delta [min, max]':>25}{'FLOPs x':>9}{time_name:>8}"]
    for arm, against_ in controls.items():
        for name, c in against_.items():
            spread = f"{c['median']:+.2f} [{c['min']:+.2f}, {c['max']:+.2f}]"
            lines.append(f"{arm:<20}{control_label(name, report):<24}{spread:>25}{c['flops_ratio']:>9.2f}"
                         f"{c[time_key]:>8.2f}")
    narrow = report.get("narrow")
    if narrow:
        how = "chosen for" if narrow["auto"] else "given; at"
        per = "per example" if narrow["match"] == "per-example" else "in total (over the dense run's examples)"
        mine, target = narrow["flops_per_example"] / 1e6, narrow["target_flops_per_example"] / 1e6
        lines.append(f"dense width {narrow['width']} {how} equal training FLOPs {per}: "
                     f"{narrow['flops_ratio']:.3f}x {narrow['matched_to']}'s counted FLOPs "
                     f"({mine:.2f} M against {target:.2f} M)")
    return lines
