"""`fleet bench kernels`: how much faster a sparse network really trains on this machine, for the time model.

The time model (clients.budget.KernelModel) needs to know how much faster a
layer run compacted (`sparcl.granularity: channel`) trains: small dense layers
run at a lower rate than big ones, so a tenth of the FLOPs is not a tenth of
the time. This measures the table (`timing.compaction_speedup`; the built-in
one, fleet.world.profiles.MEASURED_COMPACTION_SPEEDUP, came from here) for the
machine it runs on, on the scenario's model:

- `dense`: the model as built, the reference.
- `weight-masked`: unstructured magnitude masks on every masked 3x3 convolution
  (weights and gradients multiplied by the mask). PyTorch's dense kernels still
  multiply the zeros, so expect about 1x: what `kernels: dense` assumes.
- `weight-sparse-kernels` (the SmallCNN, where SparseProp is installed): the
  same masks, each layer on SparseProp's sparse kernels where they time
  faster than dense for its shape (clients.sparcl.sparse_kernels), as the
  learner runs them with `sparcl.sparse_kernels`; its speed-ups are the
  `speedup` table that `kernels: sparse` takes.
- `channel-compacted`: the same network physically built with round(d * C)
  output channels in every masked convolution (and the matching fewer inputs
  in the next one): the speed structured sparsity buys on any CPU. For the
  ResNets, compacting residual blocks is out of scope: the masked convolutions
  are timed one at a time as bare layers at their input sizes, against the same
  layers at full width (`dense-layers`).

A step is forward, backward and a plain SGD step (cross-entropy on the whole
model; a fixed output gradient on bare layers) on random inputs, timed on
process CPU time with the torch threads a simulated device gets. Every variant
is timed once per repeat, round-robin, so machine noise hits all alike.

Channel compaction at channel density d leaves the middle convolutions about d^2
of their weights and FLOPs, so a speed-up is keyed by `kernel_sparsity`: the
share of the masked convolutions' FLOPs the variant no longer runs (for the
weight masks, the weight sparsity). That is the sparsity KernelModel's
compaction table means (the share of a compacted layer's FLOPs it saves), so
speedup.yaml uses it, not 1 - d.
"""

from __future__ import annotations

import copy
import datetime
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.nn import functional as F

from clients.accounting import profile_model, training_flops_per_example
from clients.backbones import SmallCNN, build_backbone, conv_bn_relu, masked_parameter_names
from clients.budget import KernelModel, check_speedup_table
from clients.errors import InputError, excerpt
from clients.sparcl import sparse_kernels
from clients.sparcl.tdm import keep_count, top_k_mask
from fleet.rules import check_fields, rule

DEFAULT_DENSITIES = (1.0, 0.5, 0.25, 0.1, 0.05)
OUTPUT_FILES = ("kernels.csv", "kernels.json", "speedup.yaml")
CSV_COLUMNS = ("variant", "density", "sparsity", "kernel_sparsity", "median_s_per_example", "min", "max",
               "speedup", "flops_ratio", "scope")
MAX_BATCH = 65536
MAX_THREADS = 4096
MAX_REPEATS = 10_000
MAX_SECONDS = 3600


@dataclass(frozen=True)
class KernelsConfig:
    """What to time; every bound is checked here, so bad flags fail before any work."""

    densities: tuple[float, ...] = DEFAULT_DENSITIES
    batch: int = rule(32, ge=1, le=MAX_BATCH)
    repeats: int = rule(5, ge=1, le=MAX_REPEATS)
    seconds: float = rule(1.0, gt=0, le=MAX_SECONDS)
    threads: int = rule(1, ge=1, le=MAX_THREADS)

    def __post_init__(self) -> None:
        if not self.densities:
            raise InputError("--densities must name at least one density")
        for d in self.densities:
            if not (math.isfinite(d) and 0.0 < d <= 1.0):
                raise InputError(f"--densities: density {excerpt(d)} is outside (0, 1]")
        check_fields(self)


def parse_densities(text: str) -> tuple[float, ...]:
    """Comma-separated densities, each in (0, 1]; duplicates dropped, densest first (the table's order)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--densities must be comma-separated numbers, got {excerpt(text)}") from None
    KernelsConfig(densities=tuple(values))  # the range check, with its message
    return tuple(sorted(set(values), reverse=True))


# --------------------------------------------------------------------------- the networks


def compact_widths(widths: Sequence[int], density: float) -> tuple[int, ...]:
    """Channel counts kept at this channel density: round(d * C), at least one channel."""
    return tuple(max(1, round(density * c)) for c in widths)


class CompactSmallCNN(nn.Module):
    """clients.backbones.SmallCNN with its four masked convolutions at any widths (w1, w2, w3, w4).

    Same module names as SmallCNN, so masked_parameter_names and the accounting
    see the same layers; the stem (not masked) keeps its 16 channels.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int]) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = conv_bn_relu(in_channels, 16)
        self.features = nn.Sequential(
            conv_bn_relu(16, w1), conv_bn_relu(w1, w2), nn.MaxPool2d(2),
            conv_bn_relu(w2, w3), conv_bn_relu(w3, w4),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(w4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


def masked_widths(model: nn.Module) -> tuple[int, ...]:
    """Output channels of each masked convolution, in order."""
    modules = dict(model.named_modules())
    return tuple(modules[name.removesuffix(".weight")].out_channels for name in masked_parameter_names(model))


def compact_small_cnn(model: SmallCNN, density: float) -> CompactSmallCNN:
    """The SmallCNN physically narrowed to `density` of its masked convolutions' output channels."""
    stem = model.stem[0]
    assert isinstance(stem, nn.Conv2d)  # conv_bn_relu: the convolution first
    return CompactSmallCNN(stem.in_channels, model.head.out_features,
                           compact_widths(masked_widths(model), density))


@dataclass(frozen=True)
class ConvSite:
    """A masked 3x3 convolution as the model runs it: its shape and its input's spatial size."""

    name: str
    in_channels: int
    out_channels: int
    stride: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def conv_sites(model: nn.Module, input_shape: tuple[int, ...]) -> list[ConvSite]:
    """Every masked convolution with the spatial sizes one example meets there (forward hooks)."""
    modules = dict(model.named_modules())
    names = [n.removesuffix(".weight") for n in masked_parameter_names(model)]
    seen: dict[str, ConvSite] = {}

    def hook(name: str):
        def record(conv: nn.Conv2d, inputs, out: torch.Tensor) -> None:
            (in_h, in_w), (out_h, out_w) = inputs[0].shape[-2:], out.shape[-2:]  # NCHW, as a Conv2d takes them
            seen[name] = ConvSite(name, conv.in_channels, conv.out_channels, conv.stride[0], (in_h, in_w),
                                  (out_h, out_w))
        return record

    hooks = [modules[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [seen[n] for n in names]


def conv_flops(in_channels: int, out_channels: int, out_hw: tuple[int, int]) -> float:
    """Forward FLOPs of one example through a 3x3 convolution: 2 x multiply-accumulates."""
    return 2.0 * 9 * in_channels * out_channels * out_hw[0] * out_hw[1]


def compact_site(site: ConvSite, density: float) -> ConvSite:
    """The site with round(d * C) input and output channels (at least one of each)."""
    cin, cout = compact_widths((site.in_channels, site.out_channels), density)
    return ConvSite(site.name, cin, cout, site.stride, site.in_hw, site.out_hw)


def magnitude_masks(model: nn.Module, density: float) -> dict[str, torch.Tensor]:
    """Unstructured masks keeping the largest |w| of every masked convolution at `density`."""
    params = dict(model.named_parameters())
    return {name: top_k_mask(params[name].detach().abs(), keep_count(params[name].numel(), density))
            for name in masked_parameter_names(model)}


# --------------------------------------------------------------------------- what is timed


@dataclass
class Job:
    """One variant at one density: a training step, and the FLOPs it stands for (per example)."""

    variant: str
    density: float
    scope: str               # "model" (the whole network) or "masked layers" (the masked convolutions alone)
    step: Callable[[], None]  # one training step on `batch` examples
    train_flops: float       # training FLOPs per example, RigL convention (clients.accounting)
    masked_flops: float      # forward FLOPs per example of the masked convolutions as this variant runs them


def model_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float,
               masks: dict[str, torch.Tensor] | None = None) -> Callable[[], None]:
    """Forward, cross-entropy, backward, plain SGD; masked weights and gradients stay masked (as TDM keeps them)."""
    model.train()
    params = dict(model.named_parameters())
    masked = [(params[name], mask.to(params[name].dtype)) for name, mask in (masks or {}).items()]
    with torch.no_grad():
        for weight, mask in masked:
            weight.mul_(mask)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for weight, mask in masked:
                assert weight.grad is not None  # set by the backward above: every masked weight is in the loss
                weight.grad.mul_(mask)
        optimizer.step()
        with torch.no_grad():
            for weight, mask in masked:
                weight.mul_(mask)

    return step


def layers_step(sites: Sequence[ConvSite], batch: int, lr: float, generator: torch.Generator) -> Callable[[], None]:
    """The convolutions one at a time: forward, backward (input and weight gradients), SGD on the weight."""
    convs, inputs, grads = [], [], []
    for s in sites:
        conv = nn.Conv2d(s.in_channels, s.out_channels, 3, stride=s.stride, padding=1, bias=False)
        convs.append(conv)
        inputs.append(torch.randn((batch, s.in_channels, *s.in_hw), generator=generator).requires_grad_(True))
        grads.append(torch.randn((batch, s.out_channels, *s.out_hw), generator=generator))
    optimizer = torch.optim.SGD([c.weight for c in convs], lr=lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)
        for conv, x, g in zip(convs, inputs, grads):
            x.grad = None
            conv(x).backward(g)
        optimizer.step()

    return step


def model_jobs(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, densities: Sequence[float],
               batch: int, lr: float, generator: torch.Generator) -> list[Job]:
    """dense once, weight-masked at every density (and, where SparseProp is installed, the SmallCNN's same masks
    on its kernels), and channel-compacted: the SmallCNN rebuilt narrower,
    or, for any other backbone, its masked convolutions as bare layers (with dense-layers as their reference)."""
    x = torch.randn((batch, *input_shape), generator=generator)
    y = torch.randint(0, num_classes, (batch,), generator=generator)
    cost = profile_model(model, input_shape)
    masked = set(masked_parameter_names(model))
    forward = {layer.name: layer.forward_flops for layer in cost.layers if layer.name in masked}
    jobs = [Job("dense", 1.0, "model", model_step(model, x, y, lr), training_flops_per_example(cost, {}, {}),
                sum(forward.values()))]

    def weight_masked(variant: str, d: float) -> Job:
        net = copy.deepcopy(model)  # each variant trains its own network, from the same weights
        masks = magnitude_masks(net, d)
        kept = {name: float(m.sum()) / m.numel() for name, m in masks.items()}
        if variant == "weight-sparse-kernels":
            assert isinstance(net, SmallCNN)  # asked of a SmallCNN only (below)
            net.set_sparse_kernels(sparse_kernels.SparseKernels(net, list(masks), (batch, *input_shape)).plans(masks))
        return Job(variant, d, "model", model_step(net, x, y, lr, masks), training_flops_per_example(cost, kept, kept),
                   sum(kept[name] * f for name, f in forward.items()))

    jobs += [weight_masked("weight-masked", d) for d in densities]
    if isinstance(model, SmallCNN) and sparse_kernels.available():
        jobs += [weight_masked("weight-sparse-kernels", d) for d in densities]
    if isinstance(model, SmallCNN):
        for d in densities:
            net = compact_small_cnn(model, d)
            small = profile_model(net, input_shape)
            jobs.append(Job("channel-compacted", d, "model", model_step(net, x, y, lr),
                            training_flops_per_example(small, {}, {}),
                            sum(layer.forward_flops for layer in small.layers if layer.name in masked)))
        return jobs
    sites = conv_sites(model, input_shape)
    for variant, density in (("dense-layers", 1.0), *(("channel-compacted", d) for d in densities)):
        narrow = [compact_site(s, density) for s in sites]  # density 1 keeps every channel
        flops = sum(conv_flops(s.in_channels, s.out_channels, s.out_hw) for s in narrow)
        jobs.append(Job(variant, density, "masked layers", layers_step(narrow, batch, lr, generator), 3 * flops, flops))
    return jobs


def reference_of(job: Job) -> str:
    """The variant a job's speed-up and FLOPs ratio are taken against: the dense thing of the same scope."""
    return "dense" if job.scope == "model" else "dense-layers"


# --------------------------------------------------------------------------- timing


def time_job(job: Job, seconds: float, batch: int) -> float:
    """CPU seconds per example over steps run for about `seconds` of wall time, after one warm-up step."""
    job.step()
    steps = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while steps == 0 or time.perf_counter() - wall0 < seconds:
        job.step()
        steps += 1
    return (time.process_time() - cpu0) / (steps * batch)


def measure(jobs: Sequence[Job], config: KernelsConfig,
            progress: Callable[[], None] | None = None) -> list[list[float]]:
    """Seconds per example of every job at every repeat, round-robin over the jobs within each repeat.

    Denormal floats are flushed to zero while timing: a network trained on one
    fixed batch drifts into them, and x86 handles them tens of times slower,
    which no device training on real data sees.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)
    try:
        found: list[list[float]] = [[] for _ in jobs]
        for _ in range(config.repeats):
            for i, job in enumerate(jobs):
                found[i].append(time_job(job, config.seconds, config.batch))
                if progress is not None:
                    progress()
        return found
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def summarise(jobs: Sequence[Job], found: Sequence[Sequence[float]]) -> list[dict]:
    """One row per job: median and spread of seconds per example, speed-up and FLOPs ratio over its reference."""
    median = [statistics.median(times) for times in found]
    ref = {job.variant: i for i, job in enumerate(jobs) if job.variant in ("dense", "dense-layers")}
    rows = []
    for job, times, med in zip(jobs, found, median):
        r = ref[reference_of(job)]
        rows.append({
            "variant": job.variant, "density": job.density, "sparsity": round(1.0 - job.density, 6),
            "kernel_sparsity": round(1.0 - job.masked_flops / jobs[r].masked_flops, 6),
            "median_s_per_example": med, "min": min(times), "max": max(times),
            "speedup": median[r] / med, "flops_ratio": jobs[r].train_flops / job.train_flops, "scope": job.scope,
        })
    return rows


def speedup_table(rows: Sequence[dict], variant: str = "channel-compacted") -> tuple[tuple[float, float], ...]:
    """(kernel sparsity, speed-up) points from one variant's rows, as KernelModel takes them: the
    channel-compacted rows for `compaction`, the weight-sparse-kernels rows for `speedup`.

    Sparsity 0 is dropped (KernelModel's table starts from (0, 1) itself);
    equal sparsities (densities that round to the same widths) keep the best;
    speed-ups are made non-decreasing by a running maximum: timing noise must
    not make a sparser layer look slower than a denser one.
    """
    best: dict[float, float] = {}
    for row in rows:
        s = round(row["kernel_sparsity"], 4)
        if row["variant"] == variant and row["density"] < 1.0 and s > 0.0:
            best[s] = max(best.get(s, 0.0), row["speedup"])
    table, running = [], 0.0
    for s in sorted(best):
        running = max(running, float(f"{best[s]:.4g}"))
        table.append((s, running))
    check_speedup_table(table, "measured speedup")
    return tuple(table)


def speedup_yaml(table: Sequence[tuple[float, float]], source: Sequence[str],
                 sparse: Sequence[tuple[float, float]] = ()) -> str:
    """The `timing:` lines a scenario can take (merge them into its own `timing:` section), under comments
    naming where they come from: `compaction_speedup` for channel masks, and `speedup` (for
    `kernels: sparse`) where SparseProp's kernels were timed."""
    head = "".join(f"# {' '.join(line.split())}\n" for line in source)
    if not table and not sparse:
        return head + "# no density below 1 was measured: no speed-up table to give\n"
    KernelModel(kind="sparse" if sparse else "dense", speedup=tuple(sparse), compaction=tuple(table))
    timing = {"compaction_speedup": {s: v for s, v in table}} if table else {}
    if sparse:
        timing["speedup"] = {s: v for s, v in sparse}
    return head + yaml.safe_dump({"timing": timing}, sort_keys=False)


# --------------------------------------------------------------------------- the command


def cpu_name() -> str:
    """Linux's CPU model name (platform.processor() says only "x86_64" or nothing there), else that."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and line.split(":", 1)[1].strip():
                return line.split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    return platform.processor()


def check_kernels_dir(out_dir: Path, *, force: bool) -> None:
    """Fail before any work if `out_dir` cannot take the results, or already holds some and not `force`."""
    from fleet.outputs import check_output_dir

    check_output_dir(out_dir, force=True)  # a folder (or one that can be created), and writable
    held = [name for name in OUTPUT_FILES if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    if held and not force:
        raise InputError(f"output folder '{out_dir}' already holds a kernels benchmark ({held[0]}): pass --force "
                         "to replace it, or choose another folder with --out")


def memory_check(model: nn.Module, input_shape: tuple[int, ...], config: KernelsConfig) -> None:
    """Refuse a batch whose step would not fit in the memory a run may use, before building anything big."""
    from fleet.config import memory_limit_bytes

    cost = profile_model(model, input_shape)
    copies = 1 + (3 if sparse_kernels.available() else 2) * len(config.densities)
    need = 4 * (3 * cost.activation_elems * config.batch + 4 * sum(cost.param_elems.values()) * copies)
    limit = memory_limit_bytes()
    if need > limit:
        raise InputError(f"--batch {config.batch}: a step would need about {need / 1e9:,.1f} GB, more than the "
                         f"{limit / 1e9:,.1f} GB (half of this machine's memory) a run may use")


def scenario_model(scenario) -> tuple[nn.Module, tuple[int, ...], int]:
    """The scenario's backbone as its devices build it, with the data set's input shape and class count."""
    from clients.data import INPUT_SHAPES, NUM_CLASSES

    shape, classes = INPUT_SHAPES[scenario.dataset.name], NUM_CLASSES[scenario.dataset.name]
    torch.manual_seed(scenario.seed)
    return build_backbone(scenario.train.backbone, shape, classes, scenario.train.width), shape, classes


def run_kernels(scenario, config: KernelsConfig, out_dir: Path, *, command: str,
                progress: Callable[[], None] | None = None, on_start: Callable[[int], None] | None = None) -> dict:
    """Build the jobs, time them, write kernels.csv, kernels.json and speedup.yaml; return the report."""
    from fleet.outputs import write_csv, write_json, write_text

    model, shape, classes = scenario_model(scenario)
    memory_check(model, shape, config)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # sparse kernels are chosen at the threads they are timed with
    try:
        jobs = model_jobs(model, shape, classes, config.densities, config.batch, scenario.train.lr,
                          torch.Generator().manual_seed(scenario.seed))
    finally:
        torch.set_num_threads(threads)
    if on_start is not None:
        on_start(len(jobs) * config.repeats)
    rows = summarise(jobs, measure(jobs, config, progress))
    table = speedup_table(rows)
    sparse = speedup_table(rows, "weight-sparse-kernels")
    machine = {"node": platform.node(), "machine": platform.machine(), "processor": platform.processor(),
               "cpu": cpu_name(), "torch": torch.__version__, "threads": config.threads}
    when = datetime.datetime.now().isoformat(timespec="seconds")
    backbone = type(model).__name__
    scope = "whole model" if isinstance(model, SmallCNN) else "the masked 3x3 convolutions as bare layers"
    report = {"scenario": scenario.name, "backbone": backbone, "width": scenario.train.width,
              "dataset": scenario.dataset.name, "batch": config.batch, "repeats": config.repeats,
              "seconds": config.seconds, "densities": list(config.densities), "machine": machine, "date": when,
              "command": command, "compacted_scope": scope, "rows": rows, "speedup": [list(p) for p in table],
              "sparse_kernels": sparse_kernels.available(), "sparse_speedup": [list(p) for p in sparse]}
    source = [f"Measured by `fleet bench kernels` on {machine['node'] or 'this machine'} ({machine['machine']}, "
              f"{machine['cpu'] or 'unknown CPU'}, torch {machine['torch']}, {config.threads} thread"
              f"{'s' * (config.threads != 1)}) on {when}.",
              f"Channel-compacted {backbone} ({scope}) of scenario {scenario.name}, batch {config.batch}, median of "
              f"{config.repeats} runs; keys are the masked convolutions' FLOPs sparsity (kernel_sparsity).",
              *(["speedup: weight masks on SparseProp's kernels where faster per layer (clients.sparcl."
                 "sparse_kernels), keyed by weight sparsity; it applies with `kernels: sparse`."] if sparse else []),
              f"Command: {command}",
              "Merge into the scenario's `timing:` section."]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "kernels.csv", rows, CSV_COLUMNS)
    write_json(out_dir / "kernels.json", report)
    write_text(out_dir / "speedup.yaml", speedup_yaml(table, source, sparse))
    return report


def format_kernels_table(report: dict) -> str:
    """The rows as a table a reader takes in at a glance."""
    lines = [f"{report['scenario']}: {report['backbone']} on {report['dataset']}, batch {report['batch']}, "
             f"{report['machine']['threads']} thread(s), CPU time per example: median [min, max] of "
             f"{report['repeats']} runs of ~{report['seconds']:g} s",
             f"{'variant':21s} {'density':>7s} {'kernel_sp':>9s} {'us/example':>11s} {'[min, max]':>21s} "
             f"{'speed-up':>8s} {'FLOPs ratio':>11s}"]
    for r in report["rows"]:
        spread = f"[{r['min'] * 1e6:.1f}, {r['max'] * 1e6:.1f}]"
        lines.append(f"{r['variant']:21s} {r['density']:7.3f} {r['kernel_sparsity']:9.3f} "
                     f"{r['median_s_per_example'] * 1e6:11.1f} {spread:>21s} {r['speedup']:8.2f} "
                     f"{r['flops_ratio']:11.2f}")
    if any(r["scope"] != "model" for r in report["rows"]):
        lines.append("channel-compacted: the masked 3x3 convolutions timed one at a time as bare layers (residual "
                     "blocks are not compacted), against the same layers at full width (dense-layers)")
    points = ", ".join(f"{s:g}: {v:g}" for s, v in report["speedup"]) or "none"
    lines.append(f"compaction speed-up by kernel sparsity (speedup.yaml): {points}")
    if report.get("sparse_kernels"):
        points = ", ".join(f"{s:g}: {v:g}" for s, v in report["sparse_speedup"]) or "none"
        lines.append(f"sparse-kernel speed-up by weight sparsity (speedup.yaml): {points}")
    else:
        lines.append("weight-sparse-kernels: not timed, SparseProp is not installed here (see docs/how-to/kernels.md)")
    return "\n".join(lines)
