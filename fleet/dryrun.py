"""`fleet run --dry-run`: the fleet's world without training, to size a deployment in seconds.

Each round samples devices exactly as the strategy does (the same seeded
draws, the same world), and each sampled device's work comes from the model's
accounting and the data it holds instead of from training: its task's share
of the data (the real partition), `local_epochs` epochs of it plus its replay
draws, at the FLOPs per example of the global mask's densities under the
scenario's kernel model, cut by the memory policy and the compute budget the
world planned (clients.budget, as a real device applies them). The world then
settles the round as in a real run, so rounds.csv, devices.csv, summary.json,
timeline.png and bytes.png have the same columns; accuracy stays empty.

What a dry run does not know: the accuracy, DDR's removals (it counts every
example every epoch, an upper bound on the work) and how masks change within
a task (it keeps the global mask's densities), nor the norm recalibration at a
task's end (`train.recalibrate_norms`: one forward pass over the task and the
buffer, about a ninth of a DER++ epoch).
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from clients.budget import Fit, KernelModel, fit_memory
from clients.data import TaskStream, load_stream, partition_indices
from clients.device import RECALIBRATION_SHARE, DeviceSpec, spec_task
from clients.sparcl.learner import Learner
from clients.wire import encode_model, model_bytes
from fleet.ledger import COLUMNS as DEVICE_COLUMNS, Ledger
from fleet.report import RoundsCsv, folder_lock, prepare_output_dir, write_csv, write_json, write_text
from fleet.runner import (
    device_spec, make_world, round_columns, server_config, summarise, tasks_reached, write_plots,
)
from fleet.scenario import Scenario
from server.strategy import Accepted, DeviceReport, Totals, book_round, choose_devices, round_row


@dataclass(frozen=True)
class StepCost:
    """What one device's training costs, from the model's accounting at the global mask's densities."""

    train_flops_per_example: float     # counted the RigL way (what summary.json reports)
    kernel_flops_per_example: float    # what the device's kernels execute (its time)
    batch: int
    draw: int                          # replay examples per draw
    draws: int                         # draws per step (ER 1, DER++ 2, none 0)
    buffer: int                        # replay buffer capacity
    memory: Callable[[int, int, int], int]   # peak-memory estimate at (batch, draw, buffer)
    recalibrate: bool = False          # a forward pass over data and buffer after training (norm_statistics)


@dataclass
class DeviceBook:
    """A device's memory between rounds: how full its buffer is, and whether the policy shrank it."""

    seen: int = 0
    buffer: int | None = None


@dataclass(frozen=True)
class Work:
    status: str                 # ok | declined | failed
    train_flops: float
    kernel_flops: float
    memory_bytes: int
    adapted: bool
    reason: str = ""


@dataclass
class DryStrategy:
    """The part of the strategy a summary reads."""

    totals: Totals = field(default_factory=Totals)
    sim_time_s: float = 0.0


def step_cost(spec: DeviceSpec, learner: Learner, kernels: KernelModel) -> StepCost:
    """The learner's own per-example costs under the world's kernel model, and its memory estimate."""
    learner.use_kernels(kernels)
    train_flops, kernel_flops, _ = learner.step_costs()
    m = learner.method
    recalibrate = spec.norm_statistics == "recalibrated" and learner.has_norm_statistics
    return StepCost(train_flops, kernel_flops, spec.learner.train.batch_size, spec.learner.method.minibatch,
                    m.draws, m.buffer.capacity, learner.round_memory, recalibrate)


def recalibration_examples(cost: StepCost, examples: int, stored: int) -> int:
    """Examples the recalibration pass pushes through the model (Learner.recalibration_examples): every
    example of the task, and the buffer draws after each batch of them."""
    if not cost.recalibrate:
        return 0
    return examples + math.ceil(examples / cost.batch) * cost.draws * min(cost.draw, stored)


def round_work(cost: StepCost, examples: int, epochs: int, book: DeviceBook, plan: dict) -> Work:
    """A device's round as its learner would do it: fit memory, then steps until the compute budget ends.

    Pure but for `book` (the buffer fills with what it trains). The replay
    draw is the buffer's fill at the round's start.
    """
    fit = fitted(cost, plan.get("memory-bytes"), cost.buffer if book.buffer is None else book.buffer)
    if fit.declined:
        return Work("declined", 0.0, 0.0, fit.memory_bytes, fit.adapted, fit.declined)
    book.buffer = fit.buffer
    if examples == 0:
        return Work("declined", 0.0, 0.0, fit.memory_bytes, fit.adapted, "holds no data of its task")
    steps_per_epoch = math.ceil(examples / fit.batch)
    replay = cost.draws * min(fit.draw, book.seen, fit.buffer)
    wanted_examples = epochs * (examples + steps_per_epoch * replay)
    per_example_kernel = cost.kernel_flops_per_example
    # the device reserves the pass from its compute budget, with its buffer as full as it can get, where it
    # leaves training at least as much (clients.device.RECALIBRATION_SHARE); else it skips the pass
    reserve = recalibration_examples(cost, examples, cost.buffer) * per_example_kernel / 3.0
    compute, fail = plan.get("compute-flops"), plan.get("fail-after-flops")
    recalibrates = cost.recalibrate and (compute is None or reserve <= RECALIBRATION_SHARE * compute)
    if compute is not None and recalibrates:
        compute = compute - reserve
    cap = min((v for v in (compute, fail) if v is not None), default=None)
    step_kernel = (fit.batch + replay) * per_example_kernel
    done = wanted_examples
    limited = cap is not None and wanted_examples * per_example_kernel > cap
    crashed = limited and fail is not None and (compute is None or fail <= compute)
    if limited:
        steps = int(cap // step_kernel)
        if steps == 0 and not crashed:
            return Work("declined", 0.0, 0.0, fit.memory_bytes, fit.adapted,
                        f"its compute budget of {cap / 1e9:.3g} GFLOPs fits no step")
        done = min(wanted_examples, steps * (fit.batch + replay))
    book.seen += int(done * examples / (examples + steps_per_epoch * replay))  # current-task examples only
    status = "failed" if crashed else "ok"
    # a forward pass costs a third of a step (clients.budget), counted and executed alike
    passed = recalibration_examples(cost, examples, min(book.seen, fit.buffer)) / 3.0 if recalibrates else 0.0
    passed = 0.0 if crashed else passed
    return Work(status, (done + passed) * cost.train_flops_per_example, (done + passed) * per_example_kernel,
                fit.memory_bytes, fit.adapted, "crashed mid-round (simulated)" if status == "failed" else "")


@functools.lru_cache(maxsize=4096)
def fitted(cost: StepCost, memory_bytes: float | None, buffer: int) -> Fit:
    """The memory policy's choice; a fleet has few distinct memory budgets, so it is worked out once each."""
    return fit_memory(cost.memory, memory_bytes, cost.batch, cost.draw, buffer)


def partition_sizes(spec: DeviceSpec) -> tuple[np.ndarray, TaskStream]:
    """Examples each device holds of each task (sizes[task, device], from the real partition), and the stream."""
    stream = load_stream(spec.dataset, data_dir=spec.data_dir, n_tasks=spec.n_tasks, seed=spec.seed,
                         max_per_class=spec.max_per_class)
    sizes = np.zeros((spec.n_tasks, spec.devices), dtype=np.int64)
    for t, task in enumerate(stream.tasks):
        parts = partition_indices(task.y_train.numpy(), spec.devices, alpha=spec.alpha, seed=spec.seed * 1000 + t)
        sizes[t] = [len(p) for p in parts]
    return sizes, stream


def dry_run(scenario: Scenario, out_dir: Path, *, on_round=None, force: bool = False) -> dict:
    """Run the scenario's world for every round without training; write the run's files; return the summary."""
    spec = device_spec(scenario)
    sizes, stream = partition_sizes(spec)
    learner = Learner(spec.learner.with_device("cpu"), stream.input_shape, stream.num_classes)  # trains nothing
    config = server_config(scenario, spec, learner)
    world = make_world(scenario)
    cost = step_cost(spec, learner, world.kernels)
    masks = learner.masks_numpy() if config.sparsity is not None else {}
    model_size = model_bytes(encode_model(learner.weights_numpy(), masks, value_dtype=config.value_dtype))
    with folder_lock(out_dir):
        prepare_output_dir(out_dir, force=force)
        write_text(out_dir / "scenario.yaml", yaml.safe_dump(scenario.to_dict(), sort_keys=False))
        rows_csv = RoundsCsv(out_dir / "rounds.csv", round_columns(spec.n_tasks))
        ledger = Ledger(scenario.device_profiles())
        strategy, rng = DryStrategy(), random.Random(config.seed)
        books = [DeviceBook() for _ in range(spec.devices)]
        started = time.perf_counter()
        for server_round in range(1, config.rounds + 1):
            row = dry_round(server_round, spec, config, world, rng, books, sizes, cost, model_size, strategy,
                            ledger)
            row["wall_s"] = round(time.perf_counter() - started, 2)
            rows_csv.append(row)
            if callable(on_round):
                on_round(row)
        summary = {"status": "complete", "dry_run": True,
                   **summarise(scenario, strategy, rows_csv.rows, time.perf_counter() - started)}
        write_json(out_dir / "summary.json", summary)
        write_csv(out_dir / "devices.csv", ledger.rows(), DEVICE_COLUMNS)
        write_plots(scenario, spec, world, ledger, rows_csv.rows, summary, out_dir)
    return summary


def dry_round(server_round: int, spec: DeviceSpec, config, world, rng: random.Random, books: list[DeviceBook],
              sizes: np.ndarray, cost: StepCost, model_size: int, strategy: DryStrategy, ledger: Ledger) -> dict:
    """One round: sample as the strategy does, work out each device's round, settle it in the world."""
    everyone = list(range(spec.devices))
    online = world.online(server_round, everyone)
    free = world.free(online)
    chosen = choose_devices(rng, free, config)
    plans = world.plan(server_round, chosen, model_size)
    reports, accepted = [], []
    start_s = world.clock_s
    for d in chosen:
        task = spec_task(spec, d, server_round, start_s)
        work = round_work(cost, int(sizes[task, d]), spec.local_epochs, books[d], plans[d])
        up = model_size if work.status == "ok" else 0
        reports.append(DeviceReport(d, work.train_flops, model_size, up, work.memory_bytes, work.kernel_flops,
                                    work.status))
        if work.status == "ok":
            accepted.append(Accepted(d, {}, {}, int(sizes[task, d]),
                                     {"adapted": int(work.adapted), "task-id": task}))
    timing = world.settle(server_round, reports)
    strategy.sim_time_s = timing.sim_time_s
    row = {"round": server_round, "online": len(online), "busy": len(online) - len(free),
           "n_offline": spec.devices - len(online), "sampled": len(chosen),
           **round_row(accepted, reports, timing), "rejected": 0, "failed": 0, "timed_out": 0,
           "download_bytes": model_size * len(chosen), "tasks_reached": tasks_reached(spec, server_round, start_s)}
    row.update(local_accuracy=None, class_il_accuracy=None)  # nothing was trained
    book_round(strategy.totals, row, timing)
    strategy.totals.download_bytes += row["download_bytes"]
    ledger.add_round(server_round, timing, reports, {a.device_id for a in accepted if a.metrics["adapted"]})
    return row
