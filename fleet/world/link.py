"""A shared link in simpy: concurrent transfers split its capacity fairly.

The server's ingress is one link that every upload of a round crosses. It is
modelled as a fluid processor-sharing link with max-min fairness (what TCP
flows converge to on a bottleneck): at every instant each active transfer gets
min(its own cap, a water level), the level chosen so the rates sum to the
link's capacity, or every transfer gets its cap when their caps sum to less.
Transfers that start together with equal caps finish together, N transfers of
S bytes over a link of B bytes/s taking N*S/B; a device whose own uplink is the
bottleneck keeps its own rate and leaves the rest to the others.

Why not a simpy Resource (FIFO, one transfer at a time): a link is not a
queue of whole messages; fair sharing delays everyone a little rather than
the last in line a lot, and that is what decides who makes a deadline.

Cost: transfers with the same cap always progress at the same rate, so each
cap class keeps one counter, the bytes each of its transfers has received
since the link started, and a heap of the counter values at which its
transfers end. A start, an end or an abort updates the counters and the
rates (water-filling over the classes), so an event costs O(classes + log
transfers): a fleet has a few device kinds, however many devices upload.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import simpy

# Relative slack under which a transfer counts as complete (float rounding of bytes = rate x time).
_EPS = 1e-12


def water_level(classes: Iterable[tuple[float, int]], capacity: float) -> float:
    """The max-min fair level for (cap, count) classes sharing `capacity`: each flow gets min(cap, level).

    inf when the caps together fit within the capacity (nobody is held back by the link).
    """
    ordered = sorted((cap, n) for cap, n in classes if n > 0)
    left, flows = capacity, sum(n for _, n in ordered)
    for cap, n in ordered:
        if cap * flows > left:  # cap > left / flows: this class and all above it share what is left
            return left / flows
        left -= cap * n
        flows -= n
    return math.inf


def fair_shares(caps: Sequence[float], capacity: float) -> list[float]:
    """Each flow's max-min fair rate when flows with these caps share `capacity` at once."""
    level = water_level(((c, 1) for c in caps), capacity)
    return [min(c, level) for c in caps]


@dataclass(eq=False)
class Transfer:
    """One flow over the link; `done` succeeds when its last byte has crossed."""

    nbytes: float
    finish: float              # the class counter value at which it is complete
    done: simpy.Event
    cls: _Class | None = None
    cancelled: bool = False


@dataclass(eq=False)
class _Class:
    cap: float
    served: float = 0.0        # bytes each active flow of this class has received since the link started
    rate: float = 0.0
    active: int = 0
    heap: list = field(default_factory=list)  # (finish, seq, Transfer)

    def top(self) -> Transfer | None:
        while self.heap and self.heap[0][2].cancelled:
            heapq.heappop(self.heap)
        return self.heap[0][2] if self.heap else None


class SharedLink:
    """A link of `bytes_per_s` shared max-min fairly by the transfers on it (see the module docstring)."""

    def __init__(self, env: simpy.Environment, bytes_per_s: float) -> None:
        if not (math.isfinite(bytes_per_s) and bytes_per_s > 0):
            raise ValueError(f"link capacity must be a finite number > 0, got {bytes_per_s!r}")
        self.env, self.capacity = env, bytes_per_s
        self.classes: dict[float, _Class] = {}
        self.last = env.now
        self.generation = 0    # bumps on every change; a timer of an older generation is stale
        self.seq = itertools.count()

    def send(self, nbytes: float, cap_bytes_per_s: float) -> Transfer:
        """Start sending `nbytes` at no more than `cap_bytes_per_s`; wait on the result's `done`."""
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return Transfer(0.0, 0.0, done)
        self._advance()
        cls = self.classes.get(cap_bytes_per_s)
        if cls is None:
            cls = self.classes[cap_bytes_per_s] = _Class(cap_bytes_per_s)
        transfer = Transfer(float(nbytes), cls.served + nbytes, done, cls)
        heapq.heappush(cls.heap, (transfer.finish, next(self.seq), transfer))
        cls.active += 1
        self._reschedule()
        return transfer

    def cancel(self, transfer: Transfer) -> bool:
        """Stop a transfer (its device failed); True when it had in fact just completed."""
        if transfer.done.triggered or transfer.cls is None:
            return True
        self._advance()
        cls = transfer.cls
        complete = transfer.finish - cls.served <= _EPS * transfer.nbytes
        transfer.cancelled = True
        cls.active -= 1
        if complete:
            transfer.done.succeed()
        self._reschedule()
        return complete

    def remaining(self, transfer: Transfer) -> float:
        """Bytes `transfer` still has to send, now."""
        if transfer.done.triggered or transfer.cls is None:
            return 0.0
        self._advance()
        return max(0.0, transfer.finish - transfer.cls.served)

    # -- the fluid model -------------------------------------------------------------
    def _advance(self) -> None:
        dt = self.env.now - self.last
        if dt > 0:
            for cls in self.classes.values():
                if cls.active:
                    cls.served += cls.rate * dt
        self.last = self.env.now

    def _reschedule(self) -> None:
        active = [c for c in self.classes.values() if c.active]
        level = water_level(((c.cap, c.active) for c in active), self.capacity)
        nearest, when = None, math.inf
        for cls in active:
            cls.rate = min(cls.cap, level)
            top = cls.top()
            assert top is not None  # an active class has a transfer
            left = (top.finish - cls.served) / cls.rate
            if left < when:
                nearest, when = cls, left
        self.generation += 1
        if nearest is not None:
            timer = self.env.timeout(max(0.0, when))
            timer.callbacks.append(partial(self._due, self.generation, nearest))

    def _due(self, generation: int, due: _Class, _event: simpy.Event) -> None:
        self._tick(generation, due)

    def _tick(self, generation: int, due: _Class) -> None:
        """The nearest transfer ends now: complete it (and any other that ends within rounding)."""
        if generation != self.generation:
            return
        self._advance()
        top = due.top()
        assert top is not None  # the class the timer was set for still has its transfer
        due.served = max(due.served, top.finish)  # exactly at its mark, whatever the rounding
        for cls in self.classes.values():
            while (top := cls.top()) is not None and top.finish - cls.served <= _EPS * top.nbytes:
                heapq.heappop(cls.heap)
                top.cancelled = True  # off the link
                cls.active -= 1
                top.done.succeed()
        self._reschedule()


__all__ = ["SharedLink", "Transfer", "fair_shares", "water_level"]
