"""`fleet run --dry-run`: the fleet's world without training, to size a deployment in seconds.

Each round samples devices exactly as the strategy does (the same seeded
draws, the same world), and each sampled device's work comes from the model's
accounting and the data it holds instead of from training: its task's share
of the data (the real partition), trained as its learner trains it (the
memory policy and the compute budget the world planned, clients.budget; the
round's steps fixed from the examples DDR left, removals by the schedule's
counts, partial batches, an epoch's position carried between rounds, and the
replay draws as the reservoir buffer fills: a device replays from its second
step, min(draw, stored) examples a draw, two draws under DER++), and the
norm recalibration passes. The world then settles the round as in a real run,
so rounds.csv, devices.csv, summary.json, timeline.png and bytes.png have the
same columns; accuracy stays empty.

What it says it is (summary.json `estimate`, the CLI's line): under dense
kernels without channel compaction a step's kernel cost does not depend on
the mask, so the executed FLOPs are the learner's own, and the counted FLOPs,
taken at the densest mask a device can hold (TDM's extra density at a task's
start, DGM at most its keep share), bound the real count: training FLOPs are
an upper bound, device-round by device-round (tests/test_dryrun_bound.py).
Under sparse kernels or compacted channel masks the kernel cost follows the
mask, which the dry run takes at the global mask's densities: an estimate.
Time and energy are estimated either way: the world is the real one, but the
dry run uploads what it downloads (a device's nnz drifts, and is larger at a
task's start), and its fates (late, failed) follow from that time.
benchmarks/dryrun_error.py measures the band against real runs.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import yaml

from clients.accounting import compacted_densities, forward_flops_per_example, training_flops_per_example
from clients.batching import next_batch
from clients.budget import Fit, KernelModel, fit_memory
from clients.data import TaskStream, load_stream, partition_indices
from clients.device import RECALIBRATION_SHARE, DeviceSpec, spec_task
from clients.sparcl.ddr import removal_schedule
from clients.sparcl.learner import Learner
from clients.sparcl.tdm import keep_count
from clients.wire import encode_model, model_bytes
from fleet.world import AsyncWorld, DEVICE_COLUMNS, Ledger
from fleet.outputs import RoundsCsv, folder_lock, prepare_output_dir, write_csv, write_json, write_text
from fleet.run.runner import (
    buffer_config,
    device_spec,
    make_world,
    round_columns,
    server_config,
    summarise,
    tasks_reached,
    write_plots,
)
from fleet.config import Scenario
from server.buffered import ARRIVAL_COLUMNS, BufferConfig, BufferedFedAvg
from server.bookkeeping import Accepted, DeviceReport, Totals, book_round, round_row
from server.strategy import arrivals_kept, choose_devices

if TYPE_CHECKING:
    from flwr.app import ArrayRecord
    from flwr.serverapp import Grid


@dataclass(frozen=True)
class StepCost:
    """What one device's training costs per example, and the learner settings its steps follow."""

    train_flops_per_example: float     # counted the RigL way, at the densest mask the learner can hold (a bound)
    kernel_flops_per_example: float    # what the device's kernels execute (its time)
    batch: int
    draw: int                          # replay examples per draw
    draws: int                         # draws per step (ER 1, DER++ 2, none 0)
    buffer: int                        # replay buffer capacity
    memory: Callable[[int, int, int], int]   # peak-memory estimate at (batch, draw, buffer)
    recalibrate: bool = False          # a forward pass over data and buffer after training (norm_statistics)
    forward_flops_per_example: float = 0.0   # counted, one forward pass alone, densest mask (the passes)
    epochs_per_task: int = 1           # rounds_per_task x local_epochs: the learner's task schedule
    removals: tuple[tuple[int, float], ...] = ()   # DDR: (epoch, share of the task removed at its start)
    recalibrate_norms: bool = False    # train.recalibrate_norms: a pass at the task's end, inside the round
    has_norms: bool = True             # the model keeps norm statistics (a pass counts only then)
    fixed_kernels: bool = True         # a step's kernel cost does not follow the mask: FLOPs are a bound
    batches: str = "loader"            # train.batches: how an epoch is cut into batches (clients.batching)


@dataclass(frozen=True)
class DeviceBook:
    """What a device's saved learner state says of its work, between rounds (Learner, ReservoirBuffer).

    A round that is not ok leaves it as it was: the device keeps the state it had.
    """

    seen: int = 0                 # examples offered to the replay buffer (ReservoirBuffer.num_seen)
    buffer: int | None = None     # the buffer's capacity (None: as configured; a memory budget shrinks it)
    task: int = -1
    epoch: int = 0                # epochs of the task finished
    cursor: int = 0               # examples of this epoch's order trained
    order: int | None = None      # examples in this epoch's order; None between epochs
    active: int = 0               # examples of the task DDR has not removed


@dataclass(frozen=True)
class Steps:
    """What `train_steps` did: Learner.train_round's loop, counted."""

    steps: int = 0
    examples: int = 0             # through the model in training steps, buffer draws included
    passes: int = 0               # through the model in train.recalibrate_norms passes (forward only)
    kernel_flops: float = 0.0     # what the kernels executed, passes included (the compute budget's measure)
    removed: int = 0              # DDR removals
    limited: bool = False         # stopped early: the next step would not fit the compute budget
    next_step_flops: float = 0.0  # the step that did not fit (a decline names it)


@dataclass(frozen=True)
class Work:
    status: str                 # ok | declined | failed
    train_flops: float
    kernel_flops: float
    memory_bytes: int
    adapted: bool
    reason: str = ""
    steps: int = 0
    examples: int = 0           # through the model in training steps, buffer draws included (not the passes)


@dataclass
class DryStrategy:
    """The part of the strategy a summary reads."""

    totals: Totals = field(default_factory=Totals)
    sim_time_s: float = 0.0


def dry_report(device: int, work: Work, model_size: int) -> DeviceReport:
    """What the strategy books of a device's counted work: an ok one sends the model's size back; a decline
    or failure sends nothing and holds no memory."""
    ok = work.status == "ok"
    return DeviceReport(device, work.train_flops, model_size, model_size if ok else 0,
                        work.memory_bytes if ok else 0, work.kernel_flops, work.status)


class DryBuffered(BufferedFedAvg):
    """The buffered server's own event loop over a fleet that trains nothing (asynchronous mode).

    Each device's work comes from the accounting (round_work, as a synchronous dry round's) and its
    update is the model it was sent, unchanged: so arrivals, staleness, versions, time and energy are
    what the real loop would book for that work, and the model never moves.
    """

    def __init__(self, config, world, buffer: BufferConfig, current_task, spec: DeviceSpec, cost: StepCost,
                 sizes: np.ndarray) -> None:
        super().__init__(config, world, buffer, current_task)
        self.spec, self.cost, self.sizes = spec, cost, sizes
        self.books = [DeviceBook() for _ in range(spec.devices)]

    def _nodes(self, grid) -> dict[int, int]:
        return {d: d for d in range(self.spec.devices)}

    def _train(self, grid, ready, plans, flat, dense, by_device):
        accepted, reports = [], []
        for d in ready:
            task = spec_task(self.spec, d, self.dispatch, self.async_world.clock_s)
            examples = int(self.sizes[task, d])
            work, book = round_work(self.cost, task, examples, self.spec.local_epochs, self.books[d], plans[d])
            if work.status == "ok":  # a device keeps its state unless its round is ok (clients.app)
                self.books[d] = book
                accepted.append(Accepted(d, self.global_weights, self.global_masks, examples,
                                         {"adapted": int(work.adapted), "task-id": task, "num-examples": examples}))
            reports.append(dry_report(d, work, self._sent[d]))
        return accepted, reports, set(ready)


# what a dry run says it is (summary.json `estimate`, the CLI's line; see the module docstring)
FLOPS_BOUND = "training FLOPs an upper bound, time and energy estimated"
FLOPS_ESTIMATE = "training FLOPs estimated ({why}), time and energy estimated"


def step_cost(spec: DeviceSpec, learner: Learner, kernels: KernelModel, *, resparsify: bool = True,
              stock_devices: int = 0) -> StepCost:
    """The learner's per-example costs under the world's kernel model, its task schedule and memory estimate.

    Counted FLOPs are taken at the densest mask a device can hold (densest_masks), so they bound the
    real count; executed FLOPs are the learner's own, which do not follow the mask under dense kernels
    without channel compaction (`fixed_kernels`): there the dry run's steps are the learner's.
    """
    learner.use_kernels(kernels)
    _, kernel_flops, _ = learner.step_costs()
    weights, grads = densest_masks(learner, spec.mask_policy, resparsify)
    compacted = compacted_densities(weights, learner.compacted_inputs)
    m, train = learner.method, learner.config.train
    ddr = learner.config.sparcl.ddr
    epochs_per_task = spec.rounds_per_task * spec.local_epochs  # clients.device.build_learner
    removals = tuple(sorted(removal_schedule(epochs_per_task, ddr).items())) if ddr else ()
    recalibrate = spec.norm_statistics == "recalibrated" and learner.has_norm_statistics
    fixed = (kernels.kind == "dense" or learner.masks is None) and not learner.compacted_inputs and not stock_devices
    return StepCost(training_flops_per_example(learner.cost, weights, grads, compacted), kernel_flops,
                    train.batch_size, m.minibatch, m.draws, m.buffer.capacity, learner.round_memory, recalibrate,
                    forward_flops_per_example(learner.cost, weights, compacted), epochs_per_task, removals,
                    train.recalibrate_norms, learner.has_norm_statistics, fixed, train.batches)


def densest_masks(learner: Learner, mask_policy: str, resparsify: bool) -> tuple[dict[str, float], dict[str, float]]:
    """The densest weight and gradient masks a device's learner can hold, per masked layer.

    TDM opens `task_extra` of density at a task's start and renews the mask back to the target
    (clients.sparcl.tdm); the server re-sparsifies the global mask to the target. Under `local`
    masks the forward pass also runs the global mask's frozen weights; without re-sparsifying the
    global mask is the union of the devices' masks, so a layer may be dense. DGM keeps at most
    `keep` of a layer's gradient entries, inside the weight mask.
    """
    masks = learner.masks
    if masks is None:
        return {}, {}
    tdm, dgm = masks.config, learner.config.sparcl.dgm
    extra = 0.0 if tdm.static else tdm.task_extra
    weights, grads = {}, {}
    for name, p in masks.params.items():
        units = p.shape[0] if masks.channel else p.numel()  # channels or single weights
        own = keep_count(units, min(1.0, masks.target + extra))
        live = own
        if mask_policy == "local":
            live = min(units, own + keep_count(units, masks.target))  # its own mask and the shared one
        if mask_policy == "global" and not resparsify:
            live = own = units
        weights[name] = live / units
        trained = own / units if mask_policy == "local" else weights[name]
        grads[name] = trained if dgm is None else min(trained, keep_count(p.numel(), dgm.keep) / p.numel())
    return weights, grads


def recalibration_examples(cost: StepCost, examples: int, stored: int, batch: int | None = None,
                           draw: int | None = None) -> int:
    """Examples a norm recalibration pass pushes through the model (Learner.recalibration_examples): every
    example of the task, and the buffer draws after each batch of them."""
    batch, draw = batch or cost.batch, cost.draw if draw is None else draw
    return examples + math.ceil(examples / batch) * cost.draws * min(draw, stored)


def at_task(book: DeviceBook, task: int, examples: int) -> DeviceBook:
    """The book after the device starts `task` (Learner.begin_task), or as it was if it is on it."""
    if book.task == task:
        return book
    return replace(book, task=task, epoch=0, cursor=0, order=None, active=examples)


def train_steps(cost: StepCost, book: DeviceBook, examples: int, epochs: int, batch: int, draw: int,
                capacity: int, compute: float | None) -> tuple[Steps, DeviceBook]:
    """Learner.train_round's loop, counted: `epochs` epochs' worth of steps from where the book stands.

    As the learner does it: the round's step count is fixed from the active examples at its start;
    an epoch starts with DDR's removals (a share of the task, at the schedule's epochs); each step
    takes the next batch of the epoch's order (clients.batching: a partial one last, or balanced)
    and `draws` buffer draws of min(draw, stored) examples, where the buffer stores min(seen, capacity)
    and every trained example is offered to it after its step (reservoir sampling: the first `capacity` all stay),
    so replay starts at a device's second step; the round stops before a step (with the task's
    end-of-task pass, if it ends the task) that would overrun `compute`.
    """
    seen, epoch, cursor, order, active = book.seen, book.epoch, book.cursor, book.order, book.active
    schedule = dict(cost.removals)
    kpe = cost.kernel_flops_per_example
    steps = through = passes = removed = 0
    spent, step_flops, limited = 0.0, 0.0, False
    for _ in range(epochs * math.ceil(active / batch)):
        if order is None:  # Learner._start_epoch
            drop = min(int(round(schedule.get(epoch, 0.0) * examples)), active - 1)
            if drop > 0:
                active, removed = active - drop, removed + drop
            order, cursor = active, 0
        n = next_batch(order - cursor, batch, cost.batches)
        stored = min(seen, capacity)
        step = n + cost.draws * min(draw, stored)
        step_flops = step * kpe
        if cursor + n >= order and epoch + 1 >= cost.epochs_per_task and cost.recalibrate_norms:
            step_flops += recalibration_examples(cost, examples, stored, batch, draw) * kpe / 3.0
        if compute is not None and spent + step_flops > compute:
            limited = True
            break
        spent += step * kpe
        steps, through, cursor = steps + 1, through + step, cursor + n
        if capacity > 0 and cost.draws > 0:  # end_step: the batch offered to the buffer
            seen += n
        if cursor >= order:  # Learner._finish_epoch
            epoch, order, cursor = epoch + 1, None, 0
            if epoch >= cost.epochs_per_task and cost.recalibrate_norms and cost.has_norms and examples:
                p = recalibration_examples(cost, examples, min(seen, capacity), batch, draw)
                passes, spent = passes + p, spent + p * kpe / 3.0
    after = replace(book, seen=seen, buffer=capacity, epoch=epoch, cursor=cursor, order=order, active=active)
    return Steps(steps, through, passes, spent, removed, limited, step_flops), after


def round_work(cost: StepCost, task: int, examples: int, epochs: int, book: DeviceBook,
               plan: dict) -> tuple[Work, DeviceBook]:
    """A device's round as clients.device.run_round does it, and the book it leaves if the round is ok.

    Fit memory; reserve the norm recalibration pass from the compute budget (with the buffer as
    full as it can get, where it leaves training at least as much, clients.device.RECALIBRATION_SHARE);
    train steps until the budget or the failure ends them (train_steps); then the pass. A failure
    before the budget ends the round as failed, its work wasted; no step fitting declines it.
    """
    capacity = cost.buffer if book.buffer is None else book.buffer
    fit = fitted(cost, plan.get("memory-bytes"), capacity)
    if fit.declined:
        return Work("declined", 0.0, 0.0, fit.memory_bytes, fit.adapted, fit.declined), book
    if examples == 0:
        return Work("declined", 0.0, 0.0, fit.memory_bytes, fit.adapted, "holds no data of its task"), book
    kpe = cost.kernel_flops_per_example
    planned, fail = plan.get("compute-flops"), plan.get("fail-after-flops")
    recalibrates = cost.recalibrate
    if recalibrates and planned is not None:
        reserve = recalibration_examples(cost, examples, capacity) * kpe / 3.0
        recalibrates = reserve <= RECALIBRATION_SHARE * planned
        planned = planned - reserve if recalibrates else planned
    cap = min((v for v in (planned, fail) if v is not None), default=None)
    done, after = train_steps(cost, at_task(book, task, examples), examples, epochs, fit.batch, fit.draw, fit.buffer,
                              cap)
    passed = done.passes
    if recalibrates and done.steps:  # the device's pass runs at its configured batch and draw
        passed += recalibration_examples(cost, examples, min(after.seen, fit.buffer))
    kernel = done.kernel_flops + (passed - done.passes) * kpe / 3.0
    train = done.examples * cost.train_flops_per_example + passed * cost.forward_flops_per_example
    args = (fit.memory_bytes, fit.adapted)
    if fail is not None and done.limited and (planned is None or fail <= planned):
        return Work("failed", train, kernel, *args, "crashed mid-round (simulated)", done.steps,
                    done.examples), book
    if done.steps == 0 and done.limited:
        assert cap is not None  # only a compute cap limits the steps
        return Work("declined", 0.0, 0.0, *args, f"its compute budget of {cap / 1e9:.3g} GFLOPs fits no step "
                    f"(one costs {done.next_step_flops / 1e9:.3g})"), book
    return Work("ok", train, kernel, *args, "", done.steps, done.examples), after


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
    cost = step_cost(spec, learner, world.kernels, resparsify=scenario.federation.resparsify,
                     stock_devices=scenario.fleet.stock_clients)
    masks = learner.masks_numpy() if config.sparsity is not None else {}
    model_size = model_bytes(encode_model(learner.weights_numpy(), masks, value_dtype=config.value_dtype))
    with folder_lock(out_dir):
        prepare_output_dir(out_dir, force=force)
        write_text(out_dir / "scenario.yaml", yaml.safe_dump(scenario.to_dict(), sort_keys=False))
        rows_csv = RoundsCsv(out_dir / "rounds.csv", round_columns(spec.n_tasks))
        ledger = Ledger(scenario.device_profiles())
        started = time.perf_counter()
        strategy: DryBuffered | DryStrategy
        if scenario.federation.mode == "async":
            strategy = dry_versions(scenario, spec, config, world, cost, sizes, learner, masks, ledger, rows_csv,
                                    on_round, started)
            write_csv(out_dir / "arrivals.csv", strategy.arrival_rows, ARRIVAL_COLUMNS)
        else:
            strategy, rng = DryStrategy(), random.Random(config.seed)
            books = [DeviceBook() for _ in range(spec.devices)]
            for server_round in range(1, config.rounds + 1):
                row = dry_round(server_round, spec, config, world, rng, books, sizes, cost, model_size, strategy,
                                ledger)
                row["wall_s"] = round(time.perf_counter() - started, 2)
                rows_csv.append(row)
                if callable(on_round):
                    on_round(row)
        estimate = FLOPS_BOUND if cost.fixed_kernels else FLOPS_ESTIMATE.format(why=estimate_reason(scenario))
        summary = {"status": "complete", "dry_run": True, "estimate": estimate, "flops_upper_bound": cost.fixed_kernels,
                   **summarise(scenario, strategy, rows_csv.rows, time.perf_counter() - started)}
        write_json(out_dir / "summary.json", summary)
        write_csv(out_dir / "devices.csv", ledger.rows(), DEVICE_COLUMNS)
        write_plots(scenario, spec, world, ledger, rows_csv.rows, summary, out_dir)
    return summary


def dry_versions(scenario: Scenario, spec: DeviceSpec, config, world, cost: StepCost, sizes: np.ndarray,
                 learner: Learner, masks: dict, ledger: Ledger, rows_csv: RoundsCsv, on_round, started: float
                 ) -> DryBuffered:
    """Asynchronous mode without training: the buffered server's loop (DryBuffered) over the asynchronous
    world, one rounds.csv row per version."""
    buffer = buffer_config(scenario)
    assert buffer is not None  # asynchronous mode
    strategy = DryBuffered(config, AsyncWorld(world), buffer,
                           lambda device, clock_s: spec_task(spec, device, 1, clock_s), spec, cost, sizes)
    strategy.global_weights, strategy.global_masks = learner.weights_numpy(), masks

    def version_done(version: int, _arrays) -> None:
        if version == 0:
            return
        row = {**strategy.last_row, "local_accuracy": None, "class_il_accuracy": None,
               "tasks_reached": tasks_reached(spec, version, strategy.last_row["tasks_from_s"]),
               "wall_s": round(time.perf_counter() - started, 2)}
        assert strategy.last_timing is not None  # booked by the version just applied
        ledger.add_round(version, strategy.last_timing, strategy.last_reports, strategy.last_adapted,
                         strategy.last_offline, strategy.last_busy)
        rows_csv.append(row)
        if callable(on_round):
            on_round(row)

    # no Flower grid and no initial arrays: DryBuffered's _nodes and _train never ask the grid, and its global
    # weights are set above (version_done ignores the arrays of version 0)
    strategy.run(cast("Grid", None), cast("ArrayRecord", None), config.rounds, version_done)
    if strategy.unversioned is not None:  # stopped between versions: its last arrivals have no row
        ledger.add_work(*strategy.unversioned)
    return strategy


def estimate_reason(scenario: Scenario) -> str:
    """Why a dry run's FLOPs are not a bound: a step's kernel cost follows the mask, or stock clients train."""
    if scenario.fleet.stock_clients:
        return "stock Flower clients train dense, counted as SparCL devices"
    if scenario.timing.kernels == "sparse":
        return "sparse kernels: a step's cost follows the mask, taken at the global mask's densities"
    return "channel masks run compacted: a step's cost follows the mask, taken at the global mask's densities"


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
        work, book = round_work(cost, task, int(sizes[task, d]), spec.local_epochs, books[d], plans[d])
        if work.status == "ok":  # a device keeps its state unless its round is ok (clients.app)
            books[d] = book
        reports.append(dry_report(d, work, model_size))
        if work.status == "ok":
            accepted.append(Accepted(d, {}, {}, int(sizes[task, d]),
                                     {"adapted": int(work.adapted), "task-id": task}))
    timing = world.settle(server_round, reports, arrivals_kept(config, len(free)))
    strategy.sim_time_s = timing.sim_time_s
    strategy.totals.accepted_updates += len(timing.accepted)
    row = {"round": server_round, "online": len(online), "busy": len(online) - len(free),
           "n_offline": spec.devices - len(online), "sampled": len(chosen),
           **round_row(accepted, reports, timing), "rejected": 0, "failed": 0, "timed_out": 0,
           "download_bytes": model_size * len(chosen), "tasks_reached": tasks_reached(spec, server_round, start_s)}
    row.update(local_accuracy=None, class_il_accuracy=None)  # nothing was trained
    book_round(strategy.totals, row, timing)
    strategy.totals.download_bytes += row["download_bytes"]
    ledger.add_round(server_round, timing, reports, {a.device_id for a in accepted if a.metrics["adapted"]},
                     set(everyone) - set(online), set(online) - set(free))
    return row
