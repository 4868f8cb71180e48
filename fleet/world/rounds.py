"""One synchronous round on the simulated clock: a simpy model of every device and the server.

The real training measures the work (FLOPs, bytes each way, peak memory); fleet.world.timing
turns it into simulated seconds and joules with a device profile. The
formulas are pure functions; `simulate_round` runs them inside a simpy model
of one synchronous round, so deadlines, "keep the first K" over-selection and
devices dropping offline interact the way they do on a real server.

Round model (all times absolute simulated seconds):

* every device starts at `start_s` and does download -> compute -> upload;
  compute time is the FLOPs its kernels execute (`kernel_flops`, see
  clients.budget: dense kernels multiply the zeros) over its sustained rate
  times this round's speed factor (`speed_factor`, the world's keyed
  lognormal jitter: mean 1, coefficient of variation `speed_jitter`);
* with a server ingress link (`ingress_mbps`), every upload's bytes cross
  one shared link after the device's own uplink latency: concurrent uploads
  split it max-min fairly, each also capped by its own uplink (fleet.world.link),
  so 1,000 devices uploading at once take as long as the server's link
  needs; without one (None) each upload runs at its own uplink rate; an
  earlier round's late uploads still on that link (`carried`) share it, and
  the ones still on it at this close are handed on (`RoundOutcome.carry`);
* with a server egress link (`egress_mbps`), downloads share it the same way;
* arrivals at the same instant reach the server in `tie_key` order (the world
  draws it per round, so no device id always wins a tie);
* a device whose peak memory exceeds its profile is "oom": it does no work and
  idles until the round closes;
* a device that declined (its budget fits nothing) downloads, answers at once
  and does no more: "declined";
* a device with a failure time (`fail_at_s` after the start, drawn by the
  world per device) that comes before it finishes is "failed": it stops there
  and its update is lost (the server notices at once, as a dropped
  connection); a device that reports it crashed computes until its failure;
  the world draws the failure times (`failure_delay`: Poisson, the round's
  `offline_rate_per_s`; `failure_fraction`: the profile's `failure_prob`,
  a point uniform over the device's planned work) and takes the earlier;
* the round closes at the earliest of: the deadline, the K-th accepted
  arrival (keep_first=K), or when every working device has reported; a round
  in which no update arrives waits for its deadline all the same;
* an arrival exactly at the deadline is in time; arrivals after the close are
  "late" — they still finish their work (and pay its energy) but are ignored,
  and the device stays busy until it has finished;
* accepted ("ok") devices then idle from their arrival until the close;
* energy: computing at active_w, transferring at radio_w plus the megabits
  moved at the profile's per-Mbit/s terms (Huang et al.'s LTE model, linear
  in throughput), waiting at idle_w, and after each transfer burst the
  radio's tail (tail_s at tail_w) on top of computing or waiting: cut short
  by the next transfer, and counted only while the device is in the round
  (to the close for one that waits for it, else to its end_s).
"""

from __future__ import annotations

import gc
import math
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import simpy

from clients.errors import InputError
from fleet.world.link import SharedLink
from fleet.world.profiles import DeviceProfile
from fleet.world.timing import (
    Status,
    compute_time_s,
    download_time_s,
    energy_j,
    fits_memory,
    moved_mbit,
    non_negative,
    tail_time_s,
    upload_time_s,
)

# --------------------------------------------------------------------------- round records


@dataclass(frozen=True)
class DeviceWork:
    """One device's share of a round, as measured by the real training.

    `kernel_flops` is what the device's kernels executed (its time);
    `train_flops` the FLOPs counted the RigL way (None kernel_flops: the same).
    """

    device_id: int
    profile: DeviceProfile
    train_flops: float
    down_bytes: int
    up_bytes: int
    peak_memory_bytes: int
    kernel_flops: float | None = None
    fail_at_s: float = math.inf      # seconds after the round starts at which the device fails
    declined: bool = False
    crashed: bool = False            # it reported failing: it computed until fail_at_s
    speed_factor: float = 1.0        # this round's compute speed over the profile's (jitter)
    tie_key: float = 0.0             # orders arrivals at the same instant (the world draws it per round)

    @property
    def time_flops(self) -> float:
        return self.train_flops if self.kernel_flops is None else self.kernel_flops

    def __post_init__(self) -> None:
        if isinstance(self.device_id, bool) or not isinstance(self.device_id, (int, np.integer)):
            raise InputError(f"device_id must be an int, got {self.device_id!r}")
        if not isinstance(self.profile, DeviceProfile):
            raise InputError(f"device {self.device_id}: profile must be a DeviceProfile, got {self.profile!r}")
        for f in ("train_flops", "down_bytes", "up_bytes", "peak_memory_bytes", "time_flops"):
            non_negative(f"device {self.device_id}: {f}", getattr(self, f))
        if not self.fail_at_s >= 0:
            raise InputError(f"device {self.device_id}: fail_at_s must be >= 0, got {self.fail_at_s!r}")
        if self.crashed and not math.isfinite(self.fail_at_s):
            raise InputError(f"device {self.device_id}: a crashed device needs a finite fail_at_s")
        if not (math.isfinite(self.speed_factor) and self.speed_factor > 0):
            raise InputError(f"device {self.device_id}: speed_factor must be a finite number > 0, "
                             f"got {self.speed_factor!r}")


@dataclass(frozen=True)
class DeviceOutcome:
    """What happened to one device in a round.

    Durations are the time actually spent in each phase (a "failed" device
    stops at its failure, an "oom" one spends none); energy_j includes idle
    waiting for the round to close, which only "ok" and "oom" devices do.
    end_s is when the device stopped working: after the close for a late one,
    which stays busy until then. speed_factor is the jitter it computed at.
    tail_s is the time its radio spent in its tail after transfers (LTE),
    counted while the device was in the round: up to the close for one that
    waited for it ("ok", "oom"), up to end_s for the others (a late device's
    upload tail after its end, a declined one's download tail, are not).
    """

    device_id: int
    status: Status
    start_s: float
    end_s: float
    compute_s: float
    download_s: float
    upload_s: float
    energy_j: float
    speed_factor: float = 1.0
    link_wait_s: float = 0.0         # of upload_s, the time the shared server link added to its own uplink's
    tail_s: float = 0.0              # its radio's tail after transfers, within the round (energy_j has it)


@dataclass(frozen=True)
class Carried:
    """A late upload still crossing the server link when its round closed: it shares the link with the
    next round's uploads from `start_s` (when its remaining `nbytes` start, or started, to cross) until
    it is done or its device fails (`stop_s`)."""

    device_id: int
    start_s: float
    nbytes: float
    cap_bytes_per_s: float
    stop_s: float = math.inf


@dataclass(frozen=True)
class RoundOutcome:
    """A closed round: when it started and closed, and every device's fate.

    `carry`: the late uploads the next round's shares the server link with;
    `carried_end_s`: when the earlier rounds' late uploads given to this one
    ended (their devices stay busy until then).
    """

    start_s: float
    end_s: float
    devices: tuple[DeviceOutcome, ...]
    carry: tuple[Carried, ...] = ()
    carried_end_s: dict[int, float] = field(default_factory=dict)

    @property
    def accepted(self) -> tuple[int, ...]:
        """Ids of the devices whose updates the server aggregates, in input order."""
        return tuple(d.device_id for d in self.devices if d.status == "ok")

    @property
    def duration_s(self) -> float:
        """Wall time of the round, the quantity a deadline trades against accuracy."""
        return self.end_s - self.start_s

    @property
    def energy_j(self) -> float:
        """Fleet energy of the round, wasted work of late/offline devices included."""
        return sum(d.energy_j for d in self.devices)


# --------------------------------------------------------------------------- simpy model


@dataclass
class DeviceTrace:
    """Mutable per-device log the simpy processes fill in; frozen into a DeviceOutcome afterwards.

    Public so that other simpy models of the same device (fleet.world.async_world) reuse `device_process`,
    `device_status` and `device_outcome` rather than copy them.
    """

    end_s: float
    download_s: float = 0.0
    compute_s: float = 0.0
    upload_s: float = 0.0
    dropped: bool = False
    waited_until: float | None = None  # when an arrived/oom device stopped waiting for the close
    link_wait_s: float = 0.0
    transfer: Any = None               # its upload on the shared link, while it is on it
    link_start_s: float = math.inf     # when its upload's bytes started onto the shared link


@dataclass(frozen=True)
class _Report:
    """A message to the server: an update arrived, or the device dropped offline."""

    device_id: int
    arrived: bool


_DEADLINE = object()  # sentinel the deadline process puts in the server's inbox

SimGen = Generator[simpy.Event, Any, None]


def _over_link(env: simpy.Environment, link: SharedLink, transfer, fail: float):
    """Wait for `transfer` to cross `link`, or for the device's failure; True when it crossed."""
    if math.isfinite(fail):
        yield transfer.done | env.timeout(max(0.0, fail - env.now))
    else:
        yield transfer.done
    return transfer.done.triggered or link.cancel(transfer)


def device_process(
    env: simpy.Environment, work: DeviceWork, inbox: simpy.Store, closed: simpy.Event, trace: DeviceTrace,
    link: SharedLink | None = None, egress: SharedLink | None = None,
) -> SimGen:
    """download -> compute -> upload, each cut short by the device's failure time.

    Over a shared link (`egress` for the download, `link` for the upload) a
    transfer is its latency, then its bytes over the link, as long as the
    link's sharing makes it; link_wait_s is what that sharing added to the
    upload over its own uplink's time.
    """
    p = work.profile
    fail = env.now + work.fail_at_s
    down = p.downlink_latency_s if egress is not None else download_time_s(work.down_bytes, p)
    phases = [("download_s", down, egress, work.down_bytes, p.downlink_mbps)]
    if not work.declined:
        compute = math.inf if work.crashed else compute_time_s(work.time_flops, p) / work.speed_factor
        up = p.uplink_latency_s if link is not None else upload_time_s(work.up_bytes, p)
        phases += [("compute_s", compute, None, 0, 0.0), ("upload_s", up, link, work.up_bytes, p.uplink_mbps)]
    for phase, duration, shared, nbytes, mbps in phases:
        started = env.now
        crossed = True
        if env.now + duration > fail:
            yield env.timeout(fail - env.now)
            crossed = False
        else:
            yield env.timeout(duration)
            if shared is not None:
                transfer = shared.send(nbytes, mbps * 1e6 / 8)
                if shared is link:
                    trace.transfer, trace.link_start_s = transfer, env.now
                crossed = yield from _over_link(env, shared, transfer, fail)
                trace.transfer = None
        setattr(trace, phase, env.now - started)
        if phase == "upload_s" and shared is not None and crossed:
            trace.link_wait_s = max(0.0, trace.upload_s - upload_time_s(nbytes, p))
        if not crossed:
            trace.end_s, trace.dropped = env.now, True
            yield inbox.put(_Report(work.device_id, arrived=False))
            return
    trace.end_s = env.now
    yield inbox.put(_Report(work.device_id, arrived=not work.declined))
    if work.declined:
        return
    yield closed  # wait (idle) for the server to close the round
    trace.waited_until = env.now


def _carried(env: simpy.Environment, link: SharedLink, flow: Carried, ends: dict[int, float],
             live: dict[int, Any]) -> SimGen:
    """An earlier round's late upload, still crossing the server link in this round."""
    yield env.timeout(max(0.0, flow.start_s - env.now))
    transfer = link.send(flow.nbytes, flow.cap_bytes_per_s)
    live[flow.device_id] = transfer
    yield from _over_link(env, link, transfer, flow.stop_s)
    live.pop(flow.device_id, None)
    ends[flow.device_id] = env.now


def _idle_until_close(env: simpy.Environment, closed: simpy.Event, trace: DeviceTrace) -> SimGen:
    """An oom device does nothing but wait for the round to close."""
    yield closed
    trace.waited_until = env.now


def _deadline(env: simpy.Environment, delay: float, inbox: simpy.Store, closed: simpy.Event) -> SimGen:
    """Post the deadline to the server after everything else due at that instant.

    Yielding zero timeouts while other events share the deadline's time lets an
    upload finishing exactly at the deadline reach the inbox first (in time).
    """
    yield env.timeout(delay)
    while not closed.triggered and env.peek() == env.now:
        yield env.timeout(0)
    if not closed.triggered:
        yield inbox.put(_DEADLINE)


def _server(
    env: simpy.Environment,
    inbox: simpy.Store,
    expected: int,
    keep_first: int | None,
    accepted: list[int],
    closed: simpy.Event,
    has_deadline: bool,
) -> SimGen:
    """Accept arrivals until the deadline, the K-th arrival, or every device has reported.

    With nothing to aggregate the server has no reason to close early: it
    waits for the deadline.
    """
    while expected or (has_deadline and not accepted):
        report = yield inbox.get()
        if report is _DEADLINE:
            break
        expected -= 1
        if report.arrived:
            accepted.append(report.device_id)
            if keep_first is not None and len(accepted) >= keep_first:
                break
    closed.succeed(env.now)


def device_status(work: DeviceWork, trace: DeviceTrace, accepted: set[int]) -> Status:
    """Classify a device once the simulation has run to the end."""
    if not fits_memory(work.peak_memory_bytes, work.profile):
        return "oom"
    if trace.dropped:
        return "failed"
    if work.declined:
        return "declined"
    return "ok" if work.device_id in accepted else "late"


def device_outcome(work: DeviceWork, trace: DeviceTrace, status: Status, start_s: float) -> DeviceOutcome:
    """Freeze a trace; only devices still waiting at the close ("ok", "oom") pay idle energy.

    Energy: compute at active_w, transfers at radio_w plus the megabits they
    moved at the per-Mbit/s terms, waiting at idle_w, and the radio's tail at
    tail_w on top (tail_time_s: the download's, cut by the upload if that
    starts within it, and the upload's), within the device's time in the round.
    """
    p = work.profile
    until = trace.waited_until if status in ("ok", "oom") else None  # it waited for the close
    idle_s = until - trace.end_s if until is not None else 0.0
    radio_s = trace.download_s + trace.upload_s
    up_start = start_s + trace.download_s + trace.compute_s
    transfers = [(a, a + t) for a, t in ((start_s, trace.download_s), (up_start, trace.upload_s)) if t > 0]
    tail_s = tail_time_s(transfers, until if until is not None else trace.end_s, p.tail_s) if p.tail_s else 0.0
    mbit = {"down_mbit": moved_mbit(trace.download_s, work.down_bytes, p.downlink_mbps, p.downlink_latency_s),
            "up_mbit": moved_mbit(trace.upload_s, work.up_bytes, p.uplink_mbps, p.uplink_latency_s)}
    return DeviceOutcome(
        device_id=work.device_id,
        status=status,
        start_s=start_s,
        end_s=trace.end_s,
        compute_s=trace.compute_s,
        download_s=trace.download_s,
        upload_s=trace.upload_s,
        energy_j=energy_j(trace.compute_s, radio_s, max(idle_s, 0.0), p, tail_s=tail_s, **mbit),
        speed_factor=work.speed_factor,
        link_wait_s=trace.link_wait_s,
        tail_s=tail_s,
    )


def _check_round_args(
    works: Sequence[DeviceWork], start_s: float, deadline_s: float | None, keep_first: int | None,
    ingress_mbps: float | None = None, egress_mbps: float | None = None,
) -> None:
    """Reject round settings that would make the model meaningless, naming the culprit."""
    for name, mbps in (("ingress_mbps", ingress_mbps), ("egress_mbps", egress_mbps)):
        if mbps is not None and (isinstance(mbps, bool) or not isinstance(mbps, (int, float))
                                 or not (math.isfinite(mbps) and mbps > 0)):
            raise InputError(f"{name} must be a finite number > 0 or None, got {mbps!r}")
    if not math.isfinite(start_s):
        raise InputError(f"start_s must be finite, got {start_s!r}")
    if deadline_s is not None and not (math.isfinite(deadline_s) and deadline_s > 0):
        raise InputError(f"deadline_s must be a finite number > 0 or None, got {deadline_s!r}")
    if keep_first is not None and (isinstance(keep_first, bool) or not isinstance(keep_first, int) or keep_first < 1):
        raise InputError(f"keep_first must be an int >= 1 or None, got {keep_first!r}")
    dupes = sorted(i for i, n in Counter(w.device_id for w in works).items() if n > 1)
    if dupes:
        raise InputError(f"device ids must be unique in a round, repeated: {dupes}")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while simpy churns through events.

    A fleet's processes and events are many objects that the collector would
    rescan again and again as the simulation allocates more; pausing it makes
    a round of 1,000 devices about 2x faster, and building 10,000 on/off
    devices about 5x. Reference counting still frees everything; cycles wait
    for the next collection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def simulate_round(
    works: Sequence[DeviceWork],
    *,
    start_s: float,
    deadline_s: float | None,
    keep_first: int | None,
    ingress_mbps: float | None = None,
    egress_mbps: float | None = None,
    carried: Sequence[Carried] = (),
) -> RoundOutcome:
    """Run one synchronous round in simpy and report each device's status, times and energy.

    deadline_s is seconds after start_s (None: no deadline); keep_first=K
    closes the round at the K-th in-time arrival (None: keep all in time);
    ingress_mbps is the server link every upload shares, egress_mbps the one
    every download shares (None: unlimited); `carried` are earlier rounds'
    late uploads still on the ingress link. Failures, speed factors and the
    order of arrivals at the same instant (tie_key) come with the work
    (DeviceWork), so the outcome is the same whatever the order of `works`.
    """
    _check_round_args(works, start_s, deadline_s, keep_first, ingress_mbps, egress_mbps)
    works = sorted(works, key=lambda w: (w.tie_key, w.device_id))
    env = simpy.Environment(initial_time=start_s)
    inbox, closed = simpy.Store(env), env.event()
    accepted: list[int] = []
    traces = [DeviceTrace(end_s=start_s) for _ in works]
    link = SharedLink(env, ingress_mbps * 1e6 / 8) if ingress_mbps is not None else None
    egress = SharedLink(env, egress_mbps * 1e6 / 8) if egress_mbps is not None else None
    ends: dict[int, float] = {}
    live: dict[int, Any] = {}
    if link is not None:
        for flow in carried:
            env.process(_carried(env, link, flow, ends, live))
    expected = 0
    for work, trace in zip(works, traces):
        if not fits_memory(work.peak_memory_bytes, work.profile):
            env.process(_idle_until_close(env, closed, trace))
            continue
        expected += 1
        env.process(device_process(env, work, inbox, closed, trace, link, egress))
    env.process(_server(env, inbox, expected, keep_first, accepted, closed, deadline_s is not None))
    if deadline_s is not None:
        env.process(_deadline(env, deadline_s, inbox, closed))
    in_flight: list[Carried] = []
    if link is not None:
        closed.callbacks.append(
            lambda _: in_flight.extend(_in_flight(env, link, start_s, works, traces, carried, live)))
    with collector_paused():
        env.run()  # to the end, so late devices finish and their energy is counted
    kept = set(accepted)
    order = sorted(range(len(works)), key=lambda i: works[i].device_id)
    devices = tuple(device_outcome(works[i], traces[i], device_status(works[i], traces[i], kept), start_s)
                    for i in order)
    end_s = cast(float, closed.value)  # the close: the deadline, the K-th arrival or the last report
    carry = () if link is None else _after_close(start_s, works, traces, carried, end_s, in_flight)
    return RoundOutcome(start_s=start_s, end_s=end_s, devices=devices, carry=carry, carried_end_s=ends)


def _in_flight(env: simpy.Environment, link: SharedLink, start_s: float, works: Sequence[DeviceWork],
               traces: Sequence[DeviceTrace], carried: Sequence[Carried], live: dict[int, Any]) -> list[Carried]:
    """At the close: the uploads on the server link, each with the bytes it has left."""
    stops = {f.device_id: f.stop_s for f in carried}
    out = [Carried(w.device_id, env.now, link.remaining(t.transfer), t.transfer.cls.cap, start_s + w.fail_at_s)
           for w, t in zip(works, traces) if t.transfer is not None and not t.transfer.done.triggered]
    out += [Carried(d, env.now, link.remaining(transfer), transfer.cls.cap, stops[d])
            for d, transfer in sorted(live.items()) if not transfer.done.triggered]
    return out


def _after_close(start_s: float, works: Sequence[DeviceWork], traces: Sequence[DeviceTrace],
                 carried: Sequence[Carried], close_s: float, in_flight: Sequence[Carried]) -> tuple[Carried, ...]:
    """The uploads that reach the server link only from the close on (late devices still computing then)."""
    on_link = {f.device_id for f in in_flight}
    out = [Carried(w.device_id, t.link_start_s, w.up_bytes, w.profile.uplink_mbps * 1e6 / 8, start_s + w.fail_at_s)
           for w, t in zip(works, traces) if close_s <= t.link_start_s < math.inf and w.device_id not in on_link]
    out += [f for f in carried if f.start_s >= close_s and f.device_id not in on_link]
    return tuple(in_flight) + tuple(sorted(out, key=lambda f: (f.start_s, f.device_id)))

