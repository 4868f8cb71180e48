"""Who is online: each device's availability model, from its profile.

* `always`: online at every round.
* `bernoulli`: online at each round with probability `availability`, an
  independent draw keyed by (seed, round, device) (fleet.world.draws, stream 0).
  Rounds are independent: a device offline now is as likely online next round.
* `onoff`: the device alternates online and offline periods whose lengths are
  exponential with means `mean_on_s` and `mean_off_s` simulated seconds, so
  availability has memory: a device that just went offline stays away for a
  while, however many rounds that spans. It starts online with the stationary
  share mean_on / (mean_on + mean_off); with exponential periods the first
  period's remainder has the same law as a whole one, so the process is
  stationary from time 0. A device is online for a round if it is on at the
  round's start (a switch at that very instant counts: a round that waited
  for a device to come online starts as it does).

Each on/off device is a simpy process in one Environment that the world
advances to its clock before each round (`env.run(until=clock)`). Its first
state and period come from keyed draws (seed, device) made for the whole
fleet at once; later periods from a generator of its own keyed by (seed,
device) (a SeedSequence spawn key, so no other draw shares it), made when it
first switches: building 10,000 devices costs no generator each. Its
timeline is therefore a pure function of (seed, device, time): whatever the
rounds, the devices asked or the order replies came in; and a resumed run
rebuilds the processes at time 0 and replays them to the restored clock
(`reset`), which replays exactly what the uninterrupted run played.

`online_seconds` says how long each device was online within a stretch of a
round (for the idle energy of the devices that were online but not working):
`always`, all of it; `bernoulli`, all of it or none, as its draw at the
round's start said (the model has nothing finer than a round); `onoff`, the
parts of its online periods inside, from the switches logged while the
processes play the stretch out.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence

import numpy as np
import simpy

from fleet.world.draws import ONLINE, keyed_uniforms
from fleet.world.profiles import DeviceProfile
from fleet.world.rounds import collector_paused

ALWAYS, BERNOULLI, ONOFF = 0, 1, 2
_CODES = {"always": ALWAYS, "bernoulli": BERNOULLI, "onoff": ONOFF}
ONOFF_STATE, ONOFF_FIRST, ONOFF_STREAM = 5, 6, 7  # keyed-draw streams of the first period; the spawn key's tag


def first_periods(seed: int, devices, mean_on_s, mean_off_s) -> tuple[np.ndarray, np.ndarray]:
    """Each device's first state (on with the stationary share) and the length of its first period.

    Keyed draws (fleet.world.draws) for all devices at once, so building a fleet
    costs no generator per device; means are one per device or one for all.
    """
    ids = np.asarray(devices, dtype=np.int64).reshape(-1)
    mean_on = np.broadcast_to(np.asarray(mean_on_s, dtype=np.float64), ids.shape)
    mean_off = np.broadcast_to(np.asarray(mean_off_s, dtype=np.float64), ids.shape)
    on = keyed_uniforms(seed, 0, ids, ONOFF_STATE) < mean_on / (mean_on + mean_off)
    lengths = -np.log1p(-keyed_uniforms(seed, 0, ids, ONOFF_FIRST)) * np.where(on, mean_on, mean_off)
    return on, lengths


def onoff_periods(seed: int, device: int, mean_on_s: float, mean_off_s: float,
                  first: tuple[bool, float] | None = None) -> Iterator[tuple[bool, float]]:
    """The device's periods in order, as (online?, length in seconds), for ever.

    The first comes from `first_periods` (pass it in when already drawn); the
    rest from a generator of the device's own, keyed by (seed, device) through
    a SeedSequence spawn key, made only when the device first switches.
    """
    if first is None:
        states, lengths = first_periods(seed, [device], mean_on_s, mean_off_s)
        first = (bool(states[0]), float(lengths[0]))
    on, length = first
    yield on, length
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(device, ONOFF_STREAM)))
    while True:
        on = not on
        yield on, float(rng.exponential(mean_on_s if on else mean_off_s))


class _SwitchLog:
    """Where the on/off processes note their switches, (time, device, online?), while `entries` is a list."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, bool]] | None = None


def _alternate(env: simpy.Environment, state: np.ndarray, device: int, periods: Iterator[tuple[bool, float]],
               log: _SwitchLog | None = None) -> Generator[simpy.Event, object, None]:
    """The simpy process of one on/off device: set its state, wait out the period, switch."""
    for on, length in periods:
        state[device] = on
        if log is not None and log.entries is not None:
            log.entries.append((env.now, device, on))
        yield env.timeout(length)


def _on_seconds(on_at_start: bool, switches: Sequence[tuple[float, bool]], start_s: float, lo: float,
                end_s: float) -> float:
    """Seconds online within [lo, end_s] of a device online (or not) at start_s <= lo that switched at the
    given (time, online?) in order, all within [start_s, end_s]."""
    total, since, on = 0.0, start_s, on_at_start
    for t, state in (*switches, (end_s, on_at_start)):
        if on:
            total += max(0.0, min(t, end_s) - max(since, lo))
        since, on = t, state
    return total


class Availability:
    """The availability of a fleet: keyed draws for `bernoulli`, simpy processes for `onoff`."""

    def __init__(self, profiles: Sequence[DeviceProfile], seed: int) -> None:
        self.seed = seed
        self.codes = np.array([_CODES[p.availability_model] for p in profiles], dtype=np.int8)
        self.chance = np.array([p.availability for p in profiles], dtype=np.float64)
        self.alternating = np.flatnonzero(self.codes == ONOFF)
        self.mean_on = np.array([profiles[d].mean_on_s for d in self.alternating.tolist()], dtype=np.float64)
        self.mean_off = np.array([profiles[d].mean_off_s for d in self.alternating.tolist()], dtype=np.float64)
        self.log = _SwitchLog()
        self.reset()

    def reset(self) -> None:
        """Rebuild the on/off processes at time 0 (they replay to the clock on the next query)."""
        self.env = simpy.Environment()
        self.on = np.zeros(len(self.codes), dtype=bool)
        states, lengths = first_periods(self.seed, self.alternating, self.mean_on, self.mean_off)
        self.on[self.alternating] = states  # known before the processes first run
        with collector_paused():
            for device, mean_on, mean_off, on, length in zip(self.alternating.tolist(), self.mean_on.tolist(),
                                                             self.mean_off.tolist(), states.tolist(), lengths.tolist()):
                periods = onoff_periods(self.seed, device, mean_on, mean_off, first=(on, length))
                self.env.process(_alternate(self.env, self.on, device, periods, self.log))

    def advance(self, clock_s: float) -> None:
        """Run the on/off processes up to `clock_s`, switches at exactly clock_s included."""
        if clock_s < self.env.now:  # asked about the past (a restore to an earlier clock): replay from 0
            self.reset()
        with collector_paused():
            if clock_s > self.env.now:
                self.env.run(until=clock_s)  # stops before the events at clock_s itself
            while self.env.peek() <= clock_s:
                self.env.step()

    def next_change(self, clock_s: float) -> float:
        """When the next on/off device switches after `clock_s` (inf: none will; bernoulli devices are
        drawn per round, not in time)."""
        self.advance(clock_s)
        return float(self.env.peek())

    def online(self, server_round: int, devices: Sequence[int], clock_s: float) -> list[int]:
        """The devices online at a round that starts at `clock_s`, in the order given."""
        devices = list(devices)
        ids = np.fromiter(devices, dtype=np.int64, count=len(devices))
        codes = self.codes[ids]
        keep = np.ones(len(ids), dtype=bool)
        drawn = codes == BERNOULLI
        if drawn.any():
            keep[drawn] = keyed_uniforms(self.seed, server_round, ids[drawn], ONLINE) < self.chance[ids[drawn]]
        alternating = codes == ONOFF
        if alternating.any():
            self.advance(clock_s)
            keep[alternating] = self.on[ids[alternating]]
        return [d for d, k in zip(devices, keep.tolist()) if k]

    def online_seconds(self, server_round: int, start_s: float, end_s: float, from_s) -> np.ndarray:
        """Seconds each device of the fleet was online within [max(from_s, start_s), end_s] of the round
        `server_round` that started at `start_s`; `from_s` is one time per device (or one for all).

        `always`: all of it; `bernoulli`: all of it if its draw at the round's
        start said online (the same draw as `online`), else none; `onoff`: the
        parts of its online periods inside. Plays the on/off processes out to
        end_s (the next round starts there or later).
        """
        lo = np.maximum(np.broadcast_to(np.asarray(from_s, dtype=np.float64), self.codes.shape), start_s)
        span = np.maximum(end_s - lo, 0.0)
        out = np.where(self.codes == ALWAYS, span, 0.0)
        drawn = np.flatnonzero(self.codes == BERNOULLI)
        if drawn.size:
            online = keyed_uniforms(self.seed, server_round, drawn, ONLINE) < self.chance[drawn]
            out[drawn] = np.where(online, span[drawn], 0.0)
        if self.alternating.size and end_s > start_s:
            out[self.alternating] = self._onoff_seconds(start_s, end_s, lo[self.alternating])
        return out

    def _onoff_seconds(self, start_s: float, end_s: float, lo: np.ndarray) -> np.ndarray:
        """The on/off devices' online seconds within [lo, end_s], from their state at start_s and the switches
        logged while the processes run on to end_s."""
        self.advance(start_s)
        on_at_start = self.on[self.alternating].copy()
        self.log.entries = []
        try:
            self.advance(end_s)
            entries = self.log.entries
        finally:
            self.log.entries = None
        out = np.where(on_at_start, np.maximum(end_s - lo, 0.0), 0.0)
        switches: dict[int, list[tuple[float, bool]]] = {}
        for t, device, on in entries:  # in time order: the environment runs its events so
            switches.setdefault(device, []).append((t, on))
        if switches:
            index = np.searchsorted(self.alternating, list(switches))
            for i, (device, seen) in zip(index.tolist(), switches.items()):
                out[i] = _on_seconds(bool(on_at_start[i]), seen, start_s, float(lo[i]), end_s)
        return out


__all__ = ["ALWAYS", "BERNOULLI", "ONOFF", "Availability", "first_periods", "onoff_periods"]
