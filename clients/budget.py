"""What a device may spend in a round, and how it fits its training to that.

The simulated world (or a real device's own limits) gives each round a
`RoundBudget`: the FLOPs its kernels may execute before the deadline, the
memory it may use, and the kernel model that says what a masked layer costs.
Pure functions and frozen configs: the learner applies them, Flower carries
them as plain config values.

The kernel model is what turns SparCL's skipped FLOPs into time, or not.
PyTorch's CPU kernels are dense: a masked layer multiplies its zeros too, so
under `dense` a layer costs its dense FLOPs whatever its density (measured on
this project's CPU: TDM alone takes dense DER++'s CPU time within 5%, see the
README). `sparse` kernels
run a masked layer `speedup(sparsity)` times faster, from a measured or
published table (piecewise linear through (0, 1); the last point holds beyond
the table).

The memory policy, in order: halve the batch, then the buffer draw, then the
buffer itself, each down to its stated minimum, until this round's peak-memory
estimate fits; if nothing fits, decline with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clients.accounting import ModelCost
from clients.errors import InputError

KERNELS = ("dense", "sparse")
MIN_BATCH = 4      # the smallest current-task batch the policy tries
MIN_DRAW = 4       # the smallest buffer draw
MIN_BUFFER = 16    # the smallest replay buffer it shrinks to (a shrunk buffer stays shrunk)


@dataclass(frozen=True)
class KernelModel:
    """How a device's kernels turn a masked layer's density into time.

    `compaction`: the speed-up of a layer run compacted (channel masks: a
    physically smaller dense layer), by the share of its FLOPs it no longer
    runs. Small layers run at a lower rate than big ones, so a layer with a
    tenth of the FLOPs is not ten times faster; `fleet bench kernels`
    measures the table. Empty: the ideal, 1 / (FLOPs share).
    """

    kind: str = "dense"
    speedup: tuple[tuple[float, float], ...] = ()  # (sparsity, speed-up over dense), increasing sparsity
    compaction: tuple[tuple[float, float], ...] = ()  # (FLOPs sparsity, speed-up) of compacted layers

    def __post_init__(self) -> None:
        if self.kind not in KERNELS:
            raise InputError(f"kernels {self.kind!r} is unknown (choose from: {', '.join(KERNELS)})")
        check_speedup_table(self.speedup, "speedup")
        check_speedup_table(self.compaction, "compaction speedup")
        if self.kind == "sparse" and not self.speedup:
            raise InputError("kernels 'sparse' needs a speedup table of (sparsity, speed-up) points")

    def layer_speedup(self, density: float) -> float:
        """How many times faster than dense a masked layer of this density runs."""
        if self.kind == "dense" or not self.speedup:
            return 1.0
        return table_speedup(self.speedup, 1.0 - density)

    def compacted_speedup(self, share: float) -> float:
        """How many times faster than dense a compacted layer that runs `share` of its FLOPs is."""
        if not self.compaction:
            return 1.0 / max(share, 1e-12)
        return min(table_speedup(self.compaction, 1.0 - share), 1.0 / max(share, 1e-12))


def table_speedup(table: Sequence[Sequence[float]], sparsity: float) -> float:
    """A speed-up table read at `sparsity`: piecewise linear through (0, 1); the last point holds beyond."""
    points = ((0.0, 1.0), *table)
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if sparsity <= s1:
            return v0 + (v1 - v0) * max(0.0, sparsity - s0) / (s1 - s0)
    return points[-1][1]


def check_speedup_table(table: Sequence[Sequence[float]], what: str) -> None:
    """Sparsities strictly increasing in [0, 1), speed-ups positive and not falling as sparsity grows."""
    last, last_speedup = -math.inf, 0.0
    for point in table:
        if len(point) != 2:
            raise InputError(f"{what}: each point must be (sparsity, speed-up), got {point!r}")
        sparsity, speedup = point
        if not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0):
            raise InputError(f"{what}: sparsity {sparsity!r} must be in [0, 1)")
        if sparsity <= last:
            raise InputError(f"{what}: sparsities must be increasing, got {sparsity} after {last}")
        if not (isinstance(speedup, (int, float)) and math.isfinite(speedup) and speedup > 0):
            raise InputError(f"{what}: speed-up {speedup!r} at sparsity {sparsity} must be a number > 0")
        if speedup < last_speedup:
            raise InputError(f"{what}: speed-ups must not fall as sparsity grows, got {speedup} at {sparsity} "
                             f"after {last_speedup} at {last}")
        last, last_speedup = sparsity, speedup


def kernel_flops_per_example(cost: ModelCost, densities: dict[str, float], kernels: KernelModel,
                             compacted: dict[str, float] | None = None) -> float:
    """FLOPs the device's kernels execute per training example: what its time is made of.

    Every layer costs 3F (forward, input gradient, weight gradient) as dense
    kernels run it; a masked layer under sparse kernels costs 3F / speedup. A
    layer run compacted (`compacted`: name -> live_out x live_in share, see
    clients.accounting.compacted_densities) costs 3F / the kernel model's
    compaction speed-up for that share under any kernels: its smaller tensors
    are dense, so the saving is real on dense kernels, though smaller than the
    FLOPs saved.
    """
    total = 3.0 * cost.elementwise_flops
    compacted = compacted or {}
    for layer in cost.layers:
        if layer.name in compacted:
            total += 3.0 * layer.forward_flops / kernels.compacted_speedup(compacted[layer.name])
            continue
        d = densities.get(layer.name)
        total += 3.0 * layer.forward_flops / (1.0 if d is None else kernels.layer_speedup(d))
    return total


@dataclass(frozen=True)
class RoundBudget:
    """A round's limits; None means unlimited."""

    compute_flops: float | None = None   # kernel FLOPs (see kernel_flops_per_example)
    memory_bytes: float | None = None
    kernels: KernelModel = KernelModel()

    def __post_init__(self) -> None:
        for name in ("compute_flops", "memory_bytes"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InputError(f"budget {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Fit:
    """What the memory policy chose for a round."""

    batch: int
    draw: int
    buffer: int
    memory_bytes: int
    adaptations: tuple[str, ...] = ()
    declined: str | None = None

    @property
    def adapted(self) -> bool:
        return bool(self.adaptations)


def fit_memory(estimate: Callable[[int, int, int], int], budget_bytes: float | None,
               batch: int, draw: int, buffer: int) -> Fit:
    """Shrink batch, then draw, then buffer (halving, down to the minimums) until `estimate` fits.

    `estimate(batch, draw, buffer)` is the round's peak-memory estimate in
    bytes. Settings already below a minimum are never raised.
    """
    steps: list[str] = []
    settings = {"batch": batch, "draw": draw, "buffer": buffer}
    floors = {"batch": min(batch, MIN_BATCH), "draw": min(draw, MIN_DRAW), "buffer": min(buffer, MIN_BUFFER)}
    used = estimate(batch, draw, buffer)
    for knob in ("batch", "draw", "buffer"):
        while budget_bytes is not None and used > budget_bytes and settings[knob] > floors[knob]:
            new = max(floors[knob], settings[knob] // 2)
            steps.append(f"{knob} {settings[knob]}->{new}")
            settings[knob] = new
            used = estimate(settings["batch"], settings["draw"], settings["buffer"])
    declined = None
    if budget_bytes is not None and used > budget_bytes:
        declined = (f"needs {used / 2**20:.1f} MiB at batch {settings['batch']}, draw {settings['draw']}, "
                    f"buffer {settings['buffer']}, over its {budget_bytes / 2**20:.1f} MiB memory budget")
    return Fit(settings["batch"], settings["draw"], settings["buffer"], used, tuple(steps), declined)
