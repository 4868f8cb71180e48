"""One device's federated round, without Flower.

The ClientApp (clients/app.py) is thin glue around `run_round`: it turns
Flower records into the plain values below and back. Keeping the round here
means it can be tested and driven by anything, a real Raspberry Pi included.

A device knows its own task schedule: from the round number, its device id and
the stream settings it computes which task it is on, so the server never has to
track it. Its whole continual-learning state (model, masks, buffer, DDR
statistics, task position, RNG) travels in one blob between rounds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch

from clients import wire
from clients.budget import KernelModel, RoundBudget
from clients.cl.methods import MethodConfig
from clients.data import TaskStream, load_stream, partition_indices
from clients.errors import InputError
from clients.measure import EnergyMeter, peak_rss_bytes
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.learner import Learner
from clients.sparcl.tdm import TDMConfig

MASK_POLICIES = ("global", "local")
# the most of a round's planned compute the norm recalibration pass may take (the rest trains)
RECALIBRATION_SHARE = 0.5


@dataclass(frozen=True)
class DeviceSpec:
    """Everything a device needs to know, sent by the server as JSON each round."""

    dataset: str = "digits"
    data_dir: str | None = None
    n_tasks: int = 5
    max_per_class: int | None = None
    devices: int = 1
    alpha: float | None = None          # None: iid split of each task across devices
    rounds_per_task: int = 3
    stagger_rounds: int = 0
    local_epochs: int = 2
    mask_policy: str = "global"
    value_dtype: str = "float32"
    seed: int = 0
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    threads: int | None = 1             # torch threads a round trains on (None: the process's own)
    norm_statistics: str = "averaged"   # or "recalibrated": the norms' statistics recomputed before sending
    task_every_s: float | None = None   # tasks arrive on the simulated clock (None: by rounds)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DeviceSpec:
        raw = json.loads(text)
        raw["learner"] = learner_config_from_dict(raw["learner"])
        return cls(**raw)


def learner_config_from_dict(raw: dict) -> LearnerConfig:
    """Inverse of dataclasses.asdict for LearnerConfig (JSON turns tuples into lists)."""
    sp = raw["sparcl"]
    ddr = None if sp["ddr"] is None else DDRConfig(**{**sp["ddr"], "points": tuple(sp["ddr"]["points"])})
    sparcl = SparCLConfig(tdm=None if sp["tdm"] is None else TDMConfig(**sp["tdm"]), ddr=ddr,
                          dgm=None if sp["dgm"] is None else DGMConfig(**sp["dgm"]))
    rest = {f.name: raw[f.name] for f in fields(LearnerConfig) if f.name not in ("method", "sparcl", "train")}
    return LearnerConfig(method=MethodConfig(**raw["method"]), sparcl=sparcl,
                         train=TrainConfig(**raw["train"]), **rest)


def task_of(device: int, server_round: int, *, rounds_per_task: int, n_tasks: int, offset: int) -> int:
    """The task a device trains at 1-based `server_round`, `offset` rounds behind.

    clamp((server_round - 1 - offset) // rounds_per_task, 0, n_tasks - 1): a
    lagging device stays on task 0 until it catches up and stays on the last
    task once it is done. `device` is unused; it keeps call sites readable.
    """
    if rounds_per_task < 1 or n_tasks < 1:
        raise InputError(f"task_of needs rounds_per_task >= 1 and n_tasks >= 1, got {rounds_per_task}, {n_tasks}")
    if server_round < 1:
        raise InputError(f"server_round is 1-based, got {server_round}")
    return min(max((server_round - 1 - offset) // rounds_per_task, 0), n_tasks - 1)


def device_offset(device: int, devices: int, stagger_rounds: int) -> int:
    """Rounds `device` lags behind device 0: devices spread evenly over [0, stagger_rounds].

    round(device * stagger_rounds / max(1, devices - 1)), with Python's
    round-half-to-even; device 0 has offset 0, the last device stagger_rounds.
    """
    if devices < 1 or not 0 <= device < devices:
        raise InputError(f"device must be in [0, {devices}), got {device}")
    if stagger_rounds < 0:
        raise InputError(f"stagger_rounds must be >= 0, got {stagger_rounds}")
    return round(device * stagger_rounds / max(1, devices - 1))


def spec_task(spec: DeviceSpec, device: int, server_round: int, sim_time_s: float = 0.0) -> int:
    """The task a device of this spec trains on in a (1-based) round that starts at `sim_time_s`: by the
    round (task_of), or, when tasks arrive on the simulated clock, floor(sim_time_s / task_every_s),
    the last task once the stream is over."""
    if spec.task_every_s is not None:
        return min(int(sim_time_s // spec.task_every_s), spec.n_tasks - 1)
    return task_of(device, server_round, rounds_per_task=spec.rounds_per_task, n_tasks=spec.n_tasks,
                   offset=device_offset(device, spec.devices, spec.stagger_rounds))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block on `n` torch intra-op threads (None: as the process has them), then restore.

    Why: a kernel split over threads sums in another order, so a device's update
    depends on its thread count to the last bit, and chaotic training turns bits
    into points. Ray gives each worker OMP_NUM_THREADS from its CPU reservation
    or the driver's environment; fixing the count makes a rerun bit-identical
    wherever the device runs.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=4)
def cached_stream(dataset: str, data_dir: str | None, n_tasks: int, seed: int,
                  max_per_class: int | None) -> TaskStream:
    """Load each stream once per process (simulation workers serve many devices)."""
    return load_stream(dataset, data_dir=data_dir, n_tasks=n_tasks, seed=seed, max_per_class=max_per_class)


def stream_of(spec: DeviceSpec) -> TaskStream:
    return cached_stream(spec.dataset, spec.data_dir, spec.n_tasks, spec.seed, spec.max_per_class)


def device_data(spec: DeviceSpec, device: int, task_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This device's share of a task's training data (the same split on every device)."""
    task = stream_of(spec).tasks[task_id]
    parts = partition_indices(task.y_train.numpy(), spec.devices, alpha=spec.alpha,
                              seed=spec.seed * 1000 + task_id)
    idx = torch.as_tensor(parts[device])
    return task.x_train[idx], task.y_train[idx]


def build_learner(spec: DeviceSpec, device: int) -> Learner:
    """A device's learner; the schedule spans rounds_per_task x local_epochs per task."""
    stream = stream_of(spec)
    train = TrainConfig(**{**asdict(spec.learner.train),
                           "epochs_per_task": spec.rounds_per_task * spec.local_epochs,
                           "seed": spec.seed * 1000 + device})
    sparcl = spec.learner.sparcl
    if sparcl.tdm is not None and spec.mask_policy == "local":
        # Local masks are never reconciled by the server, so devices draw their regrowth
        # from one fleet-wide seed and keep their masks aligned (clients.sparcl.tdm.regrow).
        # Under the global policy independent draws are better: the server's re-sparsify
        # picks the best of every device's candidates, a federated exploration.
        sparcl = replace(sparcl, tdm=replace(sparcl.tdm, regrow_seed=spec.seed))
    config = replace(spec.learner, train=train, sparcl=sparcl)
    return Learner(config, stream.input_shape, stream.num_classes)


def budget_from_config(config: dict) -> tuple[RoundBudget, float | None]:
    """The round's budget from the `budget-*` config values, and the FLOPs after which it fails.

    A device that would cross `fail-after-flops` crashes there (the world drew
    it): its update is lost and the state it persisted before the round stays.
    The budget's compute is the planned one; run_round caps it at the failure.
    """
    speedup = tuple(tuple(p) for p in json.loads(str(config.get("budget-speedup", "[]"))))
    compaction = tuple(tuple(p) for p in json.loads(str(config.get("budget-compaction", "[]"))))
    kernels = KernelModel(str(config.get("budget-kernels", "dense")), speedup, compaction)
    compute = config.get("budget-compute-flops")
    fail = config.get("budget-fail-after-flops")
    memory = config.get("budget-memory-bytes")
    budget = RoundBudget(compute_flops=None if compute is None else float(compute),
                         memory_bytes=None if memory is None else float(memory), kernels=kernels)
    return budget, None if fail is None else float(fail)


@dataclass(frozen=True)
class RoundResult:
    update: dict[str, np.ndarray]   # the encoded update (wire format); empty unless status is ok
    metrics: dict[str, float | int]
    state: bytes | None             # the device's learner state after the round (unchanged unless ok)
    status: str = "ok"              # ok | declined | failed
    reason: str = ""
    adaptations: str = ""


def run_round(spec: DeviceSpec, device: int, server_round: int, global_update: dict[str, np.ndarray],
              state: bytes | None, budget: RoundBudget | None = None,
              fail_after_flops: float | None = None, sim_time_s: float = 0.0) -> RoundResult:
    """Load the global model, train what the budget allows of this round's local epochs, return
    the sparse update.

    `state` is the blob the previous round returned (None on a device's first
    round). A round that declines (nothing fits the budget) or fails (it
    crossed `fail_after_flops`) returns no update and the state it was given.
    """
    with torch_threads(spec.threads):
        return _run_round(spec, device, server_round, global_update, state, budget, fail_after_flops, sim_time_s)


def _run_round(spec: DeviceSpec, device: int, server_round: int, global_update: dict[str, np.ndarray],
               state: bytes | None, budget: RoundBudget | None, fail_after_flops: float | None,
               sim_time_s: float) -> RoundResult:
    task_id = spec_task(spec, device, server_round, sim_time_s)
    x, y = device_data(spec, device, task_id)
    learner = build_learner(spec, device)
    fresh = state is None
    if state is not None:
        learner.load_bytes(state)
    weights, masks = wire.decode_model(global_update)
    # `global`: adopt the server's masks every round. `local`: keep this device's own mask
    # (adopted once, on its first round) for what it trains and sends, and compute with the
    # rest of the global model frozen, so a weight it does not send is one it did not train.
    local = spec.mask_policy == "local"
    learner.load_weights(weights, None if (local and not fresh) else masks, shared=masks if local else None)
    if learner.task_id != task_id:
        learner.begin_task(task_id, stream_of(spec).tasks[task_id].classes, x, y)
    else:
        learner.attach(x, y)
    budget = budget or RoundBudget()
    recalibrate = spec.norm_statistics == "recalibrated" and learner.has_norm_statistics
    planned = budget.compute_flops
    if recalibrate and planned is not None:
        # the pass after training is part of the round: reserve it with the buffer as full as it can get,
        # where it leaves training at least as much; a tighter budget trains, and its statistics count
        # for nothing in the pooling (server.aggregate.pool_statistics)
        reserve = learner.recalibration_kernel_flops(stored=learner.method.buffer.capacity)
        recalibrate = reserve <= RECALIBRATION_SHARE * planned
        planned = planned - reserve if recalibrate else planned
    # it cannot compute past its failure
    caps = [v for v in (planned, fail_after_flops) if v is not None]
    budget = replace(budget, compute_flops=min(caps) if caps else None)
    meter = EnergyMeter()
    meter.start()
    # this process's CPU time: other devices sharing the machine do not count. On a GPU the CPU
    # only queues kernels, so there it is wall time, once they are done.
    clock = time.perf_counter if learner.device.type == "cuda" else time.process_time
    started = clock()
    work = learner.train_round(spec.local_epochs, budget)
    norm_batches = 0
    if recalibrate and work.steps:
        # the statistics of the weights it sends, counted as its forward passes (recalibrate_norms)
        flops_before = (learner.counters.train_flops, learner.counters.kernel_flops)
        norm_batches = learner.recalibrate_norms()
        work = replace(work, train_flops=work.train_flops + learner.counters.train_flops - flops_before[0],
                       kernel_flops=work.kernel_flops + learner.counters.kernel_flops - flops_before[1])
    learner.wait()
    compute_s = clock() - started  # measured, next to the time model's prediction
    energy_j = meter.stop()
    metrics = {
        "num-examples": int(len(y)),
        "device-id": device,
        "task-id": task_id,
        "train-flops": work.train_flops,
        "kernel-flops": work.kernel_flops,
        "examples-processed": work.examples,
        "steps": work.steps,
        "compute-s": compute_s,
        "process-peak-rss-bytes": peak_rss_bytes(),  # measured; next to the estimate below
        "removed": work.removed,
        "peak-memory-bytes": learner.counters.peak_memory,
        "round-peak-memory-bytes": work.peak_memory_bytes,
        "compute-limited": int(work.compute_limited),
        "adapted": int(work.fit.adapted),
        "batch-size": work.fit.batch,
        "buffer-draw": work.fit.draw,
        "buffer-size": work.fit.buffer,
        "epoch": learner.epoch,                 # epochs of its task trained so far, this round's included
        "down-bytes": wire.model_bytes(global_update),
        "local-accuracy": work.accuracy,
        "density": float(np.mean(list(learner.weight_densities().values()))) if learner.masks else 1.0,
        "norm-batches": norm_batches,   # the recalibration pass's batches: its statistics' weight
    }
    if energy_j is not None:
        metrics["energy-j"] = energy_j
    adaptations = ", ".join(work.fit.adaptations)
    # the failure bound before the budget did: it crashed, even before its first step ended
    crashed = (fail_after_flops is not None and work.compute_limited
               and (planned is None or fail_after_flops <= planned))
    if crashed:
        return RoundResult({}, metrics, state, "failed", "crashed mid-round (simulated)", adaptations)
    if work.declined:
        return RoundResult({}, metrics, state, "declined", work.declined, adaptations)
    update = wire.encode_model(learner.weights_numpy(), learner.masks_numpy(), value_dtype=spec.value_dtype)
    metrics["up-bytes"] = wire.model_bytes(update)
    return RoundResult(update, metrics, learner.to_bytes(), "ok", "", adaptations)
