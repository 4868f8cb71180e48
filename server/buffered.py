"""Asynchronous buffered aggregation (FedBuff, Nguyen et al., AISTATS 2022) on the simulated clock.

Devices train whenever they are free and online, each from the newest global
model; the server applies the buffer every K arrivals. What this module
defines is the server's side and what it asks of the world:

* `Arrival`: one launched device's work reaching the server (its update,
  or the news that it failed, ran out of memory or declined);
* `AsyncWorld`: the simulated world in asynchronous mode (fleet.world.async_world,
  with simpy): who may start now, each start's budget, and the next arrival;
* `BufferedFedAvg`: the server. It reuses the synchronous strategy's
  validation, identification, aggregation and bookkeeping, and replaces
  Flower's round loop with an event loop (`run`).

The loop: whoever is free and online starts at the clock (up to the
concurrency limit), all from the newest model, in one batch of training
messages (a *dispatch*, whose number is the training's `server-round`); the
world then yields the next arrival. An update `s` versions old (global
versions applied since its device started) is dropped and counted as wasted
beyond `max_staleness` ("late": in asynchronous mode, too stale to count);
otherwise it joins the buffer, and every K updates the buffer is applied:

    new = resparsify(mask-aware mean over the buffer of (current + w(s) x change))

where `change` is the update minus the model its device started from and
w(s) = 1 / sqrt(1 + s) (server.aggregate.staleness_weight). A stale sparse
update is so replayed onto the newest model on the entries its own mask kept;
where the global mask changed since it started, the re-sparsification to the
target decides, as it does for a synchronous round. Each application is a
*version*: the run's rounds.csv has one row per version, evaluated as a
synchronous round is.

Each arrival is also reported (`arrival_rows`): its staleness in versions and
in seconds (from its device's start to its arrival), and whether the task it
trained is still the stream's current one (an update on a task the stream has
left still counts: rehearsal is the point).

A device whose work came back declined or out of memory waits for the next
version before it is started again (its budget would not change before);
one whose reply was rejected or never came counts as failed. Work is booked
when it arrives: downloads, energy and FLOPs of work still in flight when the
run ends are not counted. The run stops early, with a note, when no update can
be applied any more: every device held back and none in flight, or
NO_PROGRESS_ARRIVALS arrivals in a row without one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from clients.records import from_arrays, to_arrays
from clients.wire import decode_model, encode_model, model_bytes
from server.aggregate import change_of, pool_statistics, stale_applied, staleness_weight
from server.bookkeeping import (
    Accepted,
    DeviceReport,
    RoundTiming,
    book_round,
    device_rows,
    executed_flops,
    STATUS_COUNTS,
)
from server.strategy import ServerConfig, SparseFedAvg, plain_model

MODES = ("sync", "async")
NO_PROGRESS_ARRIVALS = 1000  # arrivals in a row with no update for the buffer: the fleet cannot learn

ARRIVAL_COLUMNS = ["version", "device", "dispatch", "start_version", "status", "staleness", "staleness_s",
                   "weight", "start_s", "time_s", "task", "task_now", "task_current", "train_flops", "energy_j"]


@dataclass(frozen=True)
class Arrival:
    """A launched device's work reaching the server at `time_s` (simulated seconds).

    `dispatch` is the launch it came from (the training's `server-round`);
    `status` is ok (its update arrived), failed (it dropped on the way),
    oom or declined (it did no work); `outcome` is its
    fleet.world.timing.DeviceOutcome (phases, energy), which the server only reports.
    """

    device_id: int
    dispatch: int
    status: str
    time_s: float
    outcome: Any


@runtime_checkable
class AsyncWorld(Protocol):
    """What the buffered server asks of the world (fleet.world.async_world.AsyncWorld; its checkpoints are the
    launcher's business)."""

    @property
    def clock_s(self) -> float: ...  # read only: the world's clock moves as its events run

    def ready(self, version: int, limit: int, exclude: frozenset[int] = frozenset()) -> list[int]: ...

    def plan(self, dispatch: int, devices: list[int], down_bytes: int | dict[int, int]) -> dict[int, dict]: ...

    def launch(self, dispatch: int, reports: list[DeviceReport]) -> None: ...

    def next_event(self) -> Arrival | None: ...

    def stalled(self) -> bool: ...

    def idle_energy_j(self) -> np.ndarray: ...  # joules each device drew idle since the run's start, by id


@dataclass(frozen=True)
class BufferConfig:
    """FedBuff's settings: apply every `buffer_size` updates, drop one more than `max_staleness` versions
    old, and let at most `concurrency` devices train at once."""

    buffer_size: int
    max_staleness: int
    concurrency: int


@dataclass
class InFlight:
    """A device's launched work, from its reply until its arrival."""

    dispatch: int
    version: int                     # the global version it started from
    report: DeviceReport
    update: Accepted | None = None   # its validated update (None: it failed, declined or was rejected)
    change: dict[str, np.ndarray] | None = None  # update minus the model it started from (with the update)

    def work(self) -> tuple[Accepted, dict[str, np.ndarray]]:
        """Its update and change, for work that has them (the caller checked `update`)."""
        assert self.update is not None and self.change is not None, "an update always comes with its change"
        return self.update, self.change


@dataclass
class Entry:
    """One arrival within a version: what it was and what became of it."""

    arrival: Arrival
    flight: InFlight
    status: str                      # ok (in the buffer), late (too stale), failed, oom, declined
    staleness: int

    @property
    def update(self) -> Accepted:
        """The validated update of an arrival booked ok (only those are in the buffer or counted useful)."""
        return self.flight.work()[0]

    @property
    def change(self) -> dict[str, np.ndarray]:
        """Its update minus the model its device started from (an arrival booked ok)."""
        return self.flight.work()[1]


@dataclass
class Interval:
    """What happened between two versions."""

    start_s: float
    entries: list[Entry] = field(default_factory=list)
    dispatched: int = 0
    download_bytes: int = 0
    timed_out: int = 0
    rejected: int = 0
    failed: int = 0


class BufferedFedAvg(SparseFedAvg):
    """The synchronous strategy's validation, identification, aggregation and bookkeeping, driven by the
    asynchronous world's events (`run`) instead of Flower's round loop: its synchronous hooks and their
    `world` are not used."""

    def __init__(self, config: ServerConfig, world: AsyncWorld, buffer: BufferConfig,
                 current_task: Callable[[int, float], int] | None = None) -> None:
        super().__init__(config)
        self.async_world = world
        self.buffer_config = buffer
        self.current_task = current_task   # (device, clock) -> the task the stream gives it then
        self.version = 0
        self.dispatch = 0
        self.in_flight: dict[int, InFlight] = {}
        self.buffer: list[Entry] = []
        self.interval = Interval(0.0)
        self.arrival_rows: list[dict] = []
        self.task_clock_s = 0.0
        self.held: set[int] = set()        # declined or out of memory: not started again before the next version
        self._wired: tuple[int, dict[str, np.ndarray]] = (-1, {})  # (version, its wire encoding)
        self.fruitless = 0                 # arrivals in a row with no update for the buffer
        self.idle_seen: np.ndarray | None = None  # the world's idle energy booked so far (None: none yet)

    # -- checkpoints -----------------------------------------------------------------
    def snapshot(self) -> dict:
        """The synchronous strategy's snapshot, the version and dispatch counts, the arrivals so far, and the
        work in flight (its arrays apart: `flight_arrays`). Taken at a version: the buffer is empty."""
        snap = super().snapshot()
        snap.update(version=self.version, dispatch=self.dispatch, arrivals=self.arrival_rows,
                    task_clock_s=self.task_clock_s, held=sorted(self.held), fruitless=self.fruitless,
                    idle_seen=None if self.idle_seen is None else self.idle_seen.tolist(),
                    in_flight=[{"device": d, "dispatch": f.dispatch, "version": f.version, "report": asdict(f.report),
                                "n_examples": None if f.update is None else f.update.n_examples,
                                "metrics": None if f.update is None else f.update.metrics}
                               for d, f in sorted(self.in_flight.items())])
        return snap

    def flight_arrays(self) -> dict[str, np.ndarray]:
        """The updates in flight, as `<device>/<weights|masks|change>/<tensor>` arrays (an npz holds them)."""
        out = {}
        for d, f in self.in_flight.items():
            if f.update is None:
                continue
            update, change = f.work()
            for part, arrays in (("weights", update.weights), ("masks", update.masks), ("change", change)):
                out.update({f"{d}/{part}/{name}": a for name, a in arrays.items()})
        return out

    def restore(self, snapshot: dict, rounds_done: int, weights: dict[str, np.ndarray],
                masks: dict[str, np.ndarray], arrays: dict[str, np.ndarray] | None = None) -> None:
        super().restore(snapshot, rounds_done, weights, masks)
        self.round_offset = 0  # versions are numbered from the run's start
        self.version, self.dispatch = int(snapshot["version"]), int(snapshot["dispatch"])
        self.arrival_rows = list(snapshot["arrivals"])
        self.task_clock_s = float(snapshot["task_clock_s"])
        self.held, self.fruitless = {int(d) for d in snapshot["held"]}, int(snapshot["fruitless"])
        seen = snapshot.get("idle_seen")  # absent in an older checkpoint: the idle energy before it goes unbooked
        self.idle_seen = np.asarray(self.async_world.idle_energy_j() if seen is None else seen, dtype=np.float64)
        self.interval = Interval(self.sim_time_s)
        parts: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        for key, a in (arrays or {}).items():
            device, part, name = key.split("/", 2)
            parts.setdefault((int(device), part), {})[name] = a
        self.in_flight = {}
        for f in snapshot["in_flight"]:
            d = int(f["device"])
            update = None
            if f["n_examples"] is not None:
                update = Accepted(d, parts[(d, "weights")], parts.get((d, "masks"), {}), f["n_examples"],
                                  dict(f["metrics"]))
            self.in_flight[d] = InFlight(int(f["dispatch"]), int(f["version"]), DeviceReport(**f["report"]), update,
                                         None if update is None else parts[(d, "change")])

    # -- the event loop -------------------------------------------------------------
    def run(self, grid: Grid, initial_arrays: ArrayRecord, versions: int,
            evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> dict:
        """Apply `versions` more versions of the global model (fewer if the fleet stalls for good)."""
        if not self.global_weights:
            self.global_weights, self.global_masks = decode_model(from_arrays(initial_arrays))
        if evaluate_fn is not None and self.version == 0:
            evaluate_fn(0, initial_arrays)
        target = self.version + versions
        while self.version < target:
            self._start_ready(grid)
            event = self.async_world.next_event()
            self.sim_time_s = self.async_world.clock_s
            if event is None:
                why = self._stuck()
                if why:
                    self.totals.notes.append(f"stopped after version {self.version}: {why}")
                    self._book_open_interval()
                    break
                continue
            self._arrive(event)
            if self.fruitless >= NO_PROGRESS_ARRIVALS:
                self.totals.notes.append(f"stopped after version {self.version}: {self.fruitless} arrivals in a "
                                         "row brought no update to apply")
                self._book_open_interval()
                break
            if len(self.buffer) >= self.buffer_config.buffer_size:
                arrays = self._apply()
                if evaluate_fn is not None:
                    evaluate_fn(self.version + self.round_offset, arrays)
        return {"versions": self.version}

    def _stuck(self) -> str:
        """Why no version can come any more ('' while one can)."""
        if self.async_world.stalled():
            return "nobody in flight and no device will come online"
        if not self.in_flight and self.held and self.held >= set(self.devices.values()):
            return "every device declined its budget or ran out of memory"
        return ""

    def _book_open_interval(self) -> None:
        """A run that stops between versions still books the arrivals it had (no version, no row)."""
        iv, now = self.interval, self.async_world.clock_s
        idle = self._take_idle()
        if iv.entries or idle:
            timing = interval_timing(iv, now, idle)
            book_round(self.totals, version_row(iv.entries, iv, now, timing.idle_energy_j), timing)
            self.unversioned = (timing, [e.flight.report for e in iv.entries], adapted_devices(iv.entries))
        self.interval = Interval(now)

    def _take_idle(self) -> dict[int, float]:
        """The idle energy the world accrued since the last call, by device (nonzero ones only)."""
        total = np.asarray(self.async_world.idle_energy_j(), dtype=np.float64)
        fresh = total if self.idle_seen is None else total - self.idle_seen
        self.idle_seen = total
        return {int(d): float(fresh[d]) for d in np.flatnonzero(fresh > 0)}

    def _nodes(self, grid: Grid) -> dict[int, int]:
        """Device id -> node id of the devices connected now (new ones identified)."""
        nodes = self._wait_for_nodes(grid)
        self._identify(grid, nodes)
        return {d: n for n, d in self.devices.items() if n in nodes}

    def _train(self, grid: Grid, ready: list[int], plans: dict[int, dict], flat: dict[str, np.ndarray],
               dense: dict[str, np.ndarray], by_device: dict[int, int]
               ) -> tuple[list[Accepted], list[DeviceReport], set[int]]:
        """The devices train (one batch of Flower messages): the valid updates, a report per answer, and
        who answered at all."""
        messages = self.train_messages(self.dispatch, ready, plans, to_arrays(flat),
                                        to_arrays(dense) if dense else None, by_device)
        replies = list(grid.send_and_receive(messages, timeout=self.paced_timeout(plans)))
        replies.sort(key=lambda r: self.devices.get(r.metadata.src_node_id, -1))
        with self.timed("aggregation"):
            accepted, reports = self._collect(self.dispatch, replies)
        return accepted, reports, {self.devices.get(r.metadata.src_node_id, -1) for r in replies}

    def _start_ready(self, grid: Grid) -> None:
        """Start whoever is free and online now (up to the concurrency limit) from the newest model."""
        by_device = self._nodes(grid)
        limit = self.buffer_config.concurrency - len(self.in_flight)
        with self.timed("world"):
            held = frozenset(self.held) | frozenset(d for d in range(self.config.devices) if d not in by_device)
            ready = self.async_world.ready(self.version, limit, held)
        if not ready:
            return
        if self.started_s is None:
            self.started_s = time.perf_counter()
        self.dispatch += 1
        flat = self._wire()
        dense = plain_model(self.global_weights, self.config.counters) if self.plain else {}
        sizes = {"wire": model_bytes(flat), "plain": model_bytes(dense)}
        self._sent = {d: sizes["plain" if d in self.plain else "wire"] for d in ready}
        with self.timed("world"):
            plans = self.async_world.plan(self.dispatch, ready, self._sent)
        rejected0, failed0 = self.totals.rejected_updates, self.totals.failed_replies
        accepted, reports, replied = self._train(grid, ready, plans, flat, dense, by_device)
        self.interval.rejected += self.totals.rejected_updates - rejected0
        self.interval.failed += self.totals.failed_replies - failed0
        booked = {r.device_id for r in reports}
        for d in ready:  # its update was rejected, or no reply came: it failed as far as the server can tell
            if d not in booked:
                if d not in replied:
                    self.totals.timed_out += 1
                    self.interval.timed_out += 1
                reports.append(DeviceReport(d, 0.0, self._sent[d], 0, 0, 0.0, "failed"))
        updates = {a.device_id: a for a in accepted}
        for r in reports:
            a = updates.get(r.device_id) if r.status == "ok" else None
            change = None if a is None else change_of(a.weights, self.global_weights)
            self.in_flight[r.device_id] = InFlight(self.dispatch, self.version, r, a, change)
        self.interval.dispatched += len(ready)
        with self.timed("world"):
            self.async_world.launch(self.dispatch, reports)

    def _wire(self) -> dict[str, np.ndarray]:
        """The global model in the wire format, encoded once a version (a version has many dispatches)."""
        if self._wired[0] != self.version:
            self._wired = (self.version, encode_model(self.global_weights, self.global_masks,
                                                      value_dtype=self.config.value_dtype))
        return self._wired[1]

    def _arrive(self, arrival: Arrival) -> None:
        """Book an arrival: into the buffer, or dropped (too stale, or no update)."""
        flight = self.in_flight.pop(arrival.device_id)
        staleness = self.version - flight.version
        status = arrival.status
        if status == "ok" and flight.update is None:  # it arrived, but its update was rejected
            status = "failed"
        if status == "ok" and staleness > self.buffer_config.max_staleness:
            status = "late"
        entry = Entry(arrival, flight, status, staleness)
        self.interval.entries.append(entry)
        self.interval.download_bytes += flight.report.down_bytes
        self.totals.download_bytes += flight.report.down_bytes
        if status == "ok":
            self.buffer.append(entry)
            self.fruitless = 0
        else:
            self.fruitless += 1
        if status in ("declined", "oom"):
            self.held.add(arrival.device_id)
        self.arrival_rows.append(self._arrival_row(entry))

    def _arrival_row(self, e: Entry) -> dict:
        task = None if e.flight.update is None else e.flight.update.metrics.get("task-id")
        now = None if self.current_task is None else self.current_task(e.arrival.device_id, e.arrival.time_s)
        return {"version": self.version + self.round_offset, "device": e.arrival.device_id,
                "dispatch": e.flight.dispatch, "start_version": e.flight.version, "status": e.status,
                "staleness": e.staleness, "staleness_s": e.arrival.time_s - e.arrival.outcome.start_s,
                "weight": staleness_weight(e.staleness) if e.status == "ok" else 0.0,
                "start_s": e.arrival.outcome.start_s, "time_s": e.arrival.time_s,
                "task": None if task is None else int(task), "task_now": now,
                "task_current": None if task is None or now is None else int(int(task) == now),
                "train_flops": e.flight.report.train_flops, "energy_j": e.arrival.outcome.energy_j}

    def _apply(self) -> ArrayRecord:
        """Apply the buffer: a new global version, its round row and timing for the evaluator."""
        current = self.global_weights
        buffered = [(stale_applied(current, e.change, staleness_weight(e.staleness)),
                     e.update.masks, e.update.n_examples) for e in self.buffer]
        with self.timed("aggregation"):
            weights, masks = self.aggregate(buffered)
            if self.config.norm_statistics == "recalibrated":
                weights = pool_statistics([(e.update.weights, float(e.update.metrics.get("norm-batches", 0)))
                                           for e in self.buffer], self.config.statistics, weights)
            flat = encode_model(weights, masks, value_dtype=self.config.value_dtype)
            self.global_weights, self.global_masks = decode_model(flat)
        self.version += 1
        self._wired = (self.version, flat)
        self._close_interval()
        self.buffer = []
        self.held = set()  # a new version: every device may try again
        return to_arrays(flat)

    def _close_interval(self) -> None:
        """The version's row, timing and device rows, and the run's totals, from the interval's arrivals."""
        iv, now = self.interval, self.async_world.clock_s
        entries = iv.entries
        timing = interval_timing(iv, now, self._take_idle())
        outcomes = timing.devices
        reports = [e.flight.report for e in entries]
        applied = [e for e in entries if e.status == "ok"]
        row = version_row(entries, iv, now, timing.idle_energy_j)
        self.totals.accepted_updates += len(applied)
        book_round(self.totals, row, timing)
        # the latest start of any work that reached the server so far: the tasks evaluated are those reached
        # by then (never fewer than before: an accuracy matrix only grows)
        self.task_clock_s = max([self.task_clock_s, *(e.arrival.outcome.start_s for e in entries)])
        self.last_row = {"round": self.version + self.round_offset, **row, "tasks_from_s": self.task_clock_s}
        self.last_timing, self.last_reports = timing, reports
        self.last_device_rows = [row for e, o in zip(entries, outcomes) for row in device_rows(
            self.version + self.round_offset, [e.flight.report], RoundTiming(
                frozenset([e.arrival.device_id]) if e.status == "ok" else frozenset(), {e.arrival.device_id: e.status},
                now, o.energy_j, start_s=iv.start_s, devices=(o,)),
            self.real, self.plain, [e.update] if e.status == "ok" else [])]
        self.last_adapted = adapted_devices(entries)
        self.last_offline, self.last_busy = frozenset(), frozenset(self.in_flight)
        self.sim_time_s = now
        self.interval = Interval(now)


def adapted_devices(entries: list[Entry]) -> set[int]:
    """The devices whose applied update shrank batch, draw or buffer to fit memory (the ledger's `adapted`)."""
    return {e.arrival.device_id for e in entries if e.status == "ok" and e.update.metrics.get("adapted", 0)}


def interval_timing(interval: Interval, now: float, idle: dict[int, float] | None = None) -> RoundTiming:
    """An interval's arrivals as the timing a synchronous round settles to: their outcomes under the
    status the server gave them, the applied ones accepted (last status per device where one arrived
    twice: the rows and totals count per arrival), and the idle energy the fleet drew over it."""
    entries = interval.entries
    idle = idle or {}
    outcomes = tuple(replace(e.arrival.outcome, status=e.status) for e in entries)
    return RoundTiming(frozenset(e.arrival.device_id for e in entries if e.status == "ok"),
                       {e.arrival.device_id: e.status for e in entries}, now,
                       math.fsum(o.energy_j for o in outcomes), start_s=interval.start_s, devices=outcomes,
                       idle_energy_j=math.fsum(idle.values()), idle_by_device=idle)


def version_row(entries: list[Entry], interval: Interval, now: float, idle_energy_j: float = 0.0) -> dict:
    """A version's figures for rounds.csv, as a synchronous round's (server.strategy.round_row), counted per
    arrival: a device that arrived twice in the interval counts twice. Useful work is what the buffer
    applied; the rest (too stale, failed, out of memory, declined) is wasted."""
    useful = [e for e in entries if e.status == "ok"]
    wasted = [e for e in entries if e.status != "ok"]
    counts = {f"n_{s}": sum(1 for e in entries if e.status == s) for s in STATUS_COUNTS}
    accuracy = [e.update.metrics["local-accuracy"] for e in useful if "local-accuracy" in e.update.metrics]
    modelled = [e.arrival.outcome.compute_s for e in useful]
    measured = [e.flight.report.measured_compute_s for e in useful if e.flight.report.measured_compute_s is not None]
    return {
        "online": None, "busy": None, "sampled": interval.dispatched, "replies": len(entries),
        "accepted": len(useful), "dropped": sum(1 for e in wasted if e.status in ("late", "failed", "oom")),
        "rejected": interval.rejected, "failed": interval.failed, "timed_out": interval.timed_out,
        "sim_start_s": interval.start_s, "sim_time_s": now,
        "energy_j": math.fsum(e.arrival.outcome.energy_j for e in entries), "idle_energy_j": idle_energy_j,
        "upload_bytes": sum(e.flight.report.up_bytes for e in useful),
        "download_bytes": interval.download_bytes,
        "train_flops": sum(e.flight.report.train_flops for e in useful),
        "wasted_train_flops": sum(e.flight.report.train_flops for e in wasted),
        "executed_flops": sum(executed_flops(e.flight.report) for e in useful),
        "wasted_executed_flops": sum(executed_flops(e.flight.report) for e in wasted),
        "wasted_upload_bytes": sum(e.flight.report.up_bytes for e in wasted if e.status == "late"),
        "wasted_energy_j": math.fsum(e.arrival.outcome.energy_j for e in wasted),
        "modelled_compute_s": sum(modelled), "measured_compute_s": sum(measured) if measured else None,
        **counts, "n_offline": 0,
        "n_adapted": sum(1 for e in useful if e.update.metrics.get("adapted", 0)),
        "local_accuracy": float(np.mean(accuracy)) if accuracy else 0.0,
        "tasks": "|".join(str(int(e.update.metrics.get("task-id", -1))) for e in useful),
        "statuses": "|".join(f"{e.arrival.device_id}:{e.status}" for e in entries),
    }
