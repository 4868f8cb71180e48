"""The simulated world in asynchronous mode (FedBuff): one simpy clock for the whole run.

Implements server.buffered.AsyncWorld on top of a synchronous SimWorld
(`base`, by composition): its budget-scaled profiles, availability, jitter,
failure draws, kernels, server links and the bookkeeping of what each device
sent and computed. Devices train continuously: each starts from the newest
global model when it is free and online, and its work runs on one persistent
simpy Environment with the same device model as a synchronous round
(fleet.world.timing.device_process: download -> compute -> upload, cut short by its
failure), over persistent server links (fleet.world.link.SharedLink, max-min fair)
when the base has `server_ingress_mbps` / `server_egress_mbps`.

* `ready`: who is online at the clock (`always`, `onoff` periods, or a
  `bernoulli` draw per global version, as a synchronous device is drawn per
  round; when nobody is training and every such device drew offline, the
  fleet is drawn again at the same instant, as a synchronous round that
  sampled nobody is followed by a fresh draw: each draw has its own key,
  version + 1 + REDRAW x redraws) and not in flight; over the server's
  limit, a keyed random choice
  (fleet.world.draws' TIE stream at key READY_KEY + the next dispatch, apart from
  every tie draw), so no device id is always preferred;
* `plan`: SimWorld.plan keyed by the dispatch (the batch of starts): its
  failure and jitter draws, and a compute budget sized by the deadline if
  there is one. The deadline only sizes each update's work: nothing is late;
* `launch`: the devices' work starts at the clock; an "oom" device (its peak
  memory does not fit) does nothing and arrives at once;
* `next_event`: the clock runs to the next arrival (ok, failed, oom,
  declined), one per call, in (time, tie key, device id) order, the tie keys
  drawn per dispatch (seed, dispatch, device, TIE) as a synchronous round
  draws them; or to the next on/off switch that brings a device that is not
  in flight online (None): the server may start it. A switch at the very
  instant an arrival is due is reported first, the arrival on the next call.

Energy: a device is charged from its launch until its arrival (compute,
transfers, the radio's tail between them), exactly as fleet.world.timing charges a
synchronous device that leaves at its end: an arrived device waits for no
round to close, and its radio's tail after the upload is not counted. Apart
from that, `idle_energy_j` accrues idle_w over the seconds a device is online
and not in flight (waiting to start, or held back by the server), as a
synchronous round's SimWorld._idle_energy does. It is booked at each change of
who is idle (a launch, an arrival, an on/off switch: the clock stops at every
switch), so the rate holds in between, however many events the clock runs.
A bernoulli device is drawn only when it may start, so between draws it counts
for its availability's share of the time (the expectation of its draw).

Checkpoints: every call that changes the world (plan, launch, next_event) is
logged with its arguments, as plain JSON values; `restore` rebuilds the base
from its state at construction and a fresh Environment, and replays the log.
A simpy fluid link's state is float sums over its whole history, so replaying
the calls is the only way to resume bit for bit; the log grows with the run
(a launch's reports and a count of next_event calls between changes).
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import simpy

from clients.errors import InputError
from fleet.world.availability import BERNOULLI
from fleet.world.draws import TIE, keyed_uniforms
from fleet.world.link import SharedLink
from fleet.world.rounds import (
    DeviceTrace,
    DeviceWork,
    collector_paused,
    device_outcome,
    device_process,
    device_status,
)
from fleet.world.timing import fits_memory, speed_factor
from fleet.world.sync_world import SimWorld
from server.buffered import Arrival
from server.bookkeeping import DeviceReport

# ready()'s keyed choice draws on the TIE stream at this key plus the dispatch: far above any round or dispatch
# number, so it never shares a draw with the tie keys of (seed, dispatch, device, TIE), and still one 32-bit word
# (keyed_uniforms' fast path).
READY_KEY = 2**31
REDRAW = 2**24  # bernoulli draws: key version + 1 + REDRAW x redraws, apart from every version's first draw
SNAPSHOT_FORMAT = "async-world/1"
_REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceReport))


@dataclass
class _Planned:
    """A dispatch's plan, kept until its launch: who and the base's failure draws for them."""

    devices: frozenset[int]
    fail_at: dict[int, float]
    poisson_at: dict[int, float]
    chance_at: dict[int, tuple[float, float]]


@dataclass
class _Flight:
    """A launched device, from its launch until next_event has returned its arrival."""

    dispatch: int
    report: DeviceReport
    work: DeviceWork
    trace: DeviceTrace
    start_s: float


def _plain(value: Any) -> Any:
    """A report field as a JSON value that rebuilds it exactly (numpy numbers become Python's)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def report_row(report: DeviceReport) -> list:
    """A DeviceReport as a plain list (the log's form), field by field."""
    return [_plain(getattr(report, f)) for f in _REPORT_FIELDS]


def report_from_row(row: list) -> DeviceReport:
    return DeviceReport(*row)


def delay_to(now: float, at: float) -> float:
    """The delay d for which simpy's `now + d` is exactly `at` (at - now alone can miss it by a rounding)."""
    d = at - now
    while now + d < at:
        d = math.nextafter(d, math.inf)
    while now + d > at:
        d = math.nextafter(d, -math.inf)
    return d


class AsyncWorld:
    """server.buffered.AsyncWorld over a SimWorld (see the module docstring)."""

    def __init__(self, base: SimWorld) -> None:
        self.base = base
        self._drawn = any(p.availability_model == "bernoulli" for p in base.profiles)
        self._initial = base.snapshot()
        self._reset()

    def _reset(self) -> None:
        """A fresh clock at 0, nothing planned or in flight, an empty log."""
        base = self.base
        self.env = simpy.Environment(initial_time=0.0)
        self._closed = self.env.event()  # no round to wait for: an arrived device leaves at once
        self._closed.succeed()
        self._inbox = simpy.Store(self.env)
        self._ingress = (SharedLink(self.env, base.server_ingress_mbps * 1e6 / 8)
                         if base.server_ingress_mbps is not None else None)
        self._egress = (SharedLink(self.env, base.server_egress_mbps * 1e6 / 8)
                        if base.server_egress_mbps is not None else None)
        self._planned: dict[int, _Planned] = {}
        self._flying: dict[int, _Flight] = {}
        self._ended: list[tuple[float, float, int]] = []  # heap of (time, tie key, device): ended, not returned
        self._running = 0
        self._dispatch = 0  # the last planned dispatch
        self._redraws = 0   # fresh bernoulli draws of an idle fleet (ready's key)
        self._idle_j = np.zeros(len(base.profiles))  # idle energy up to _idle_at, by device (idle_energy_j)
        self._idle_at = 0.0
        self._log: list[list] = []

    # -- the protocol ----------------------------------------------------------------
    @property
    def clock_s(self) -> float:
        return float(self.env.now)

    def in_flight(self) -> list[int]:
        """Devices launched whose arrival next_event has not returned yet, by id."""
        return sorted(self._flying)

    def ready(self, version: int, limit: int, exclude: frozenset[int] = frozenset()) -> list[int]:
        """Devices online at the clock, not in flight and not in `exclude` (the server holds them back), at
        most `limit` (a keyed choice), by id.

        `version` is the global model's: bernoulli devices are drawn for version + 1 (and for each redraw
        of an idle fleet, see the module docstring).
        """
        if limit <= 0:
            return []
        free = np.ones(len(self.base.profiles), dtype=bool)
        free[[*self._flying, *exclude]] = False
        idle = np.flatnonzero(free).tolist()
        key = version + 1 + REDRAW * self._redraws
        online = self.base.availability.online(key, idle, self.clock_s) if idle else []
        if len(online) <= limit:
            return online
        keys = keyed_uniforms(self.base.seed, READY_KEY + self._dispatch + 1, online, TIE)
        ids = np.asarray(online, dtype=np.int64)
        return sorted(ids[np.lexsort((ids, keys))[:limit]].tolist())

    def plan(self, dispatch: int, devices: list[int], down_bytes: int | Mapping[int, int]
             ) -> dict[int, dict[str, float | str]]:
        """Each device's budget, as SimWorld.plan gives it with the dispatch as the round (its draws' key)."""
        devices = [int(d) for d in devices]
        down = (int(down_bytes) if not isinstance(down_bytes, Mapping)
                else sorted((int(d), int(b)) for d, b in down_bytes.items()))
        plans = self._plan(int(dispatch), devices, down_bytes)
        self._log.append(["plan", int(dispatch), devices, down])
        return plans

    def launch(self, dispatch: int, reports: list[DeviceReport]) -> None:
        """Start the planned devices' reported work at the clock (whatever the order of `reports`)."""
        with collector_paused():
            self._launch(int(dispatch), reports)
        self._log.append(["launch", int(dispatch), [report_row(r) for r in reports]])

    def next_event(self) -> Arrival | None:
        """The next arrival; None when the clock moved to an on/off switch instead, or nothing can happen."""
        if self._log and self._log[-1][0] == "next":
            self._log[-1][1] += 1
        else:
            self._log.append(["next", 1])
        with collector_paused():
            return self._next_event()

    def stalled(self) -> bool:
        """Nothing in flight, no device will ever switch online or offline again, and none is drawn."""
        return not self._flying and math.isinf(self._next_change()) and not self._drawn

    def idle_energy_j(self) -> np.ndarray:
        """Joules each device has drawn idle since the run's start: online and not in flight (see the module
        docstring), by device id; the server books what accrued over each version."""
        return self._idle_j + self._idle_rate() * (self.env.now - self._idle_at)

    # -- checkpoints -------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The base's state at construction and the log of calls since; JSON-able."""
        return {"format": SNAPSHOT_FORMAT, "base": copy.deepcopy(self._initial), "log": copy.deepcopy(self._log)}

    def restore(self, snapshot: dict) -> None:
        """Rebuild the world the snapshot was taken of: a fresh clock, and the logged calls replayed."""
        if not isinstance(snapshot, Mapping) or snapshot.get("format") != SNAPSHOT_FORMAT:
            raise InputError(f"async world snapshot: expected format {SNAPSHOT_FORMAT!r}, got "
                             f"{snapshot.get('format') if isinstance(snapshot, Mapping) else snapshot!r}")
        self._initial = copy.deepcopy(snapshot["base"])
        self.base.restore(self._initial)
        self._reset()
        for entry in snapshot["log"]:
            kind = entry[0]
            if kind == "plan":
                _, dispatch, devices, down = entry
                self.plan(dispatch, devices, down if isinstance(down, int) else {int(d): b for d, b in down})
            elif kind == "launch":
                self.launch(entry[1], [report_from_row(row) for row in entry[2]])
            elif kind == "next":
                for _ in range(int(entry[1])):
                    self.next_event()
            else:
                raise InputError(f"async world snapshot: unknown log entry {kind!r}")

    # -- the model ---------------------------------------------------------------------
    def _check_device(self, what: str, d: int) -> None:
        if not 0 <= d < len(self.base.profiles):
            raise InputError(f"{what}: device {d} is not in the fleet of {len(self.base.profiles)}")
        if d in self._flying:
            raise InputError(f"{what}: device {d} is still in flight")

    def _plan(self, dispatch: int, devices: list[int], down_bytes: int | Mapping[int, int]) -> dict:
        if dispatch <= self._dispatch:
            raise InputError(f"plan: dispatch {dispatch} must follow the last one, {self._dispatch}")
        if len(set(devices)) != len(devices):
            raise InputError(f"plan: dispatch {dispatch} repeats a device: {devices}")
        for d in devices:
            self._check_device(f"plan (dispatch {dispatch})", d)
        base = self.base
        plans = base.plan(dispatch, devices, down_bytes)
        self._dispatch = dispatch
        self._planned[dispatch] = _Planned(frozenset(devices), dict(base.fail_at), dict(base.poisson_at),
                                           dict(base.chance_at))
        return plans

    def _launch(self, dispatch: int, reports: list[DeviceReport]) -> None:
        planned = self._planned.pop(dispatch, None)
        if planned is None:
            raise InputError(f"launch: dispatch {dispatch} was not planned, or was launched already")
        ids = [r.device_id for r in reports]
        if len(set(ids)) != len(ids):
            raise InputError(f"launch: dispatch {dispatch} repeats a device: {ids}")
        for d in ids:
            self._check_device(f"launch (dispatch {dispatch})", d)
            if d not in planned.devices:
                raise InputError(f"launch: device {d} was not planned in dispatch {dispatch}")
        if not reports:
            return
        base = self.base
        base.fail_at, base.poisson_at, base.chance_at = planned.fail_at, planned.poisson_at, planned.chance_at
        speeds = speed_factor(base.jitter[ids], base.seed, dispatch, ids)
        ties = keyed_uniforms(base.seed, dispatch, ids, TIE)
        works = [(DeviceWork(r.device_id, base.profiles[r.device_id], r.train_flops, r.down_bytes, r.up_bytes,
                             r.peak_memory_bytes, kernel_flops=r.kernel_flops,
                             fail_at_s=base._fail_at(r, float(s)), declined=r.status == "declined",
                             crashed=r.status == "failed", speed_factor=float(s), tie_key=float(tie)), r)
                 for r, s, tie in zip(reports, speeds, ties)]
        works.sort(key=lambda wr: (wr[0].tie_key, wr[0].device_id))
        self._settle_idle()  # they enter the flight: no longer idle
        now = self.env.now
        for work, report in works:
            trace = DeviceTrace(end_s=now)
            self._flying[work.device_id] = _Flight(dispatch, report, work, trace, now)
            if not fits_memory(work.peak_memory_bytes, work.profile):
                trace.waited_until = now  # it does nothing, and arrives at once
                heapq.heappush(self._ended, (now, work.tie_key, work.device_id))
                continue
            process = self.env.process(device_process(self.env, work, self._inbox, self._closed, trace,
                                                      self._ingress, self._egress))
            process.callbacks.append(partial(self._ended_now, work))
            self._running += 1

    def _ended_now(self, work: DeviceWork, _event: simpy.Event) -> None:
        """A device's process has ended: its arrival is due now."""
        self._running -= 1
        self._inbox.items.clear()  # nobody reads the device's message: the process's end is the arrival
        heapq.heappush(self._ended, (self.env.now, work.tie_key, work.device_id))

    def _next_change(self) -> float:
        """When the next on/off switch comes after the clock (inf: never)."""
        if not self.base.availability.alternating.size:
            return math.inf
        return self.base.availability.next_change(self.clock_s)

    def _next_event(self) -> Arrival | None:
        env = self.env
        while not self._ended:
            change = self._next_change()
            if self._running and env.peek() < change:
                env.step()
                continue
            if math.isinf(change):
                if self._drawn:  # an idle fleet of drawn devices: draw it again at this instant
                    self._redraws += 1
                return None  # nothing in flight and nothing will come online until a draw
            if self._switch_to(change):
                return None
        while env.peek() == env.now:  # everything else due at this instant, so the tie order decides
            env.step()
        _, _, device = heapq.heappop(self._ended)
        self._settle_idle()  # it leaves the flight: idle from now on
        return self._arrive(self._flying.pop(device))

    def _switch_to(self, at: float) -> bool:
        """Move the clock to an on/off switch at `at`; True when it brings online a device not in flight."""
        availability = self.base.availability
        alternating = availability.alternating
        before = availability.on[alternating].copy()
        self.env.run(until=self.env.timeout(delay_to(self.env.now, at)))  # the clock at exactly `at`
        self._settle_idle()  # who is online changes now
        availability.advance(at)
        came = alternating[availability.on[alternating] & ~before]
        return any(d not in self._flying for d in came.tolist())

    def _idle_rate(self) -> np.ndarray:
        """Idle watts by device now: idle_w of every device online and not in flight (a bernoulli one for its
        availability's share)."""
        availability = self.base.availability
        online = np.where(availability.codes == BERNOULLI, availability.chance, 1.0)
        online[availability.alternating] = availability.on[availability.alternating]
        if self._flying:
            online[list(self._flying)] = 0.0
        return self.base.idle_w * online

    def _settle_idle(self) -> None:
        """Book the idle energy since the last change of who is idle, before the next one (a launch, an
        arrival, an on/off switch): between them the rate holds, however many events the clock runs through."""
        span = self.env.now - self._idle_at
        if span > 0:
            self._idle_j += self._idle_rate() * span
        self._idle_at = self.env.now

    def _arrive(self, flight: _Flight) -> Arrival:
        """Freeze an ended device's outcome; book an ok update's size and work as SimWorld.settle does."""
        work, trace, report = flight.work, flight.trace, flight.report
        status = device_status(work, trace, {work.device_id})
        outcome = device_outcome(work, trace, status, flight.start_s)
        if status == "ok":
            base = self.base
            if report.up_bytes > 0:
                base.upload_bytes[work.device_id] = max(report.up_bytes, base.upload_bytes.get(work.device_id, 0))
            if base.tracks_work:
                base._remember_work([work])
        return Arrival(work.device_id, flight.dispatch, status, float(outcome.end_s), outcome)


__all__ = ["READY_KEY", "REDRAW", "SNAPSHOT_FORMAT", "AsyncWorld", "delay_to", "report_from_row", "report_row"]
