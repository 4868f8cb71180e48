"""Dynamic data removal (DDR): drop the easiest examples of a task as it trains.

An example's difficulty is its number of forgetting events (classified
correctly at one presentation, wrongly at the next); one never classified
correctly counts as the maximum. At a few points early in each task the examples
with the fewest events are removed, a fixed share of the task each time, and the
statistics restart. The next task starts with its full data. Buffer examples are
never removed. `rank: random` removes the same number of examples drawn at random
(the reference's negative `keep_lowest_n`): the control that shows what the
forgetting ranking itself earns. `presentations` is how many epochs of statistics
each removal waits for: the reference's 50-epoch schedule gives it 5, the same
points at 10 epochs give it 1, when every learned example ties at zero events.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from clients.errors import InputError


RANKS = ("forgetting", "random")


@dataclass(frozen=True)
class DDRConfig:
    points: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)  # removal times, fractions of a task (5..20 of 50)
    fraction: float = 0.075                           # share of the task removed at each point
    rank: str = "forgetting"                          # which examples go: fewest events, or at random
    presentations: int = 1                            # epochs of statistics a removal waits for (at least)

    def __post_init__(self) -> None:
        if self.rank not in RANKS:
            raise InputError(f"ddr rank {self.rank!r} is unknown (choose from: {', '.join(RANKS)})")
        if not all(0.0 < p < 1.0 for p in self.points):
            raise InputError(f"ddr points must lie in (0, 1), got {self.points}")
        if not 0.0 <= self.fraction * len(self.points) < 1.0:
            raise InputError(f"ddr removes {self.fraction} x {len(self.points)} of a task: must be < 1")
        if isinstance(self.presentations, bool) or not isinstance(self.presentations, int) \
                or self.presentations < 1:
            raise InputError(f"ddr presentations must be an integer >= 1, got {self.presentations!r}")


def removal_schedule(epochs: int, config: DDRConfig) -> dict[int, float]:
    """Map epoch -> share of the task to remove at its start.

    With one presentation (the default), points that round to the same epoch add
    up, so the total share removed is the same at 5 or 50 epochs per task. With
    more, each removal moves to at least `presentations` epochs after the one
    before (statistics restart at each), and a removal pushed past the task's end
    is skipped: a short task removes less rather than judge on too little.
    """
    schedule: dict[int, float] = defaultdict(float)
    gap, last = config.presentations, 0
    for point in sorted(config.points):
        earliest = last + gap if gap > 1 else 1  # one presentation: points on the same epoch add up
        epoch = max(int(point * epochs + 0.5), earliest)
        if epoch >= epochs:
            continue
        schedule[epoch] += config.fraction
        last = epoch
    return dict(schedule)


class ForgettingTracker:
    """Per-example forgetting events over the presentations since the last reset."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reset()

    def reset(self) -> None:
        self.last = np.full(self.n, -1, dtype=np.int8)      # -1 unseen, 0 wrong, 1 right
        self.events = np.zeros(self.n, dtype=np.int64)
        self.learned = np.zeros(self.n, dtype=bool)
        self.presentations = np.zeros(self.n, dtype=np.int64)

    def record(self, idx: np.ndarray, correct: np.ndarray) -> None:
        correct = correct.astype(np.int8)
        self.events[idx] += (self.last[idx] == 1) & (correct == 0)
        self.learned[idx] |= correct == 1
        self.presentations[idx] += 1
        self.last[idx] = correct

    def counts(self) -> np.ndarray:
        """Forgetting events; never-learned examples get the maximum possible count."""
        never = self.presentations.max(initial=0) + 1
        return np.where(self.learned, self.events, never)


def select_removals(counts: np.ndarray, active: np.ndarray, n_remove: int,
                    rng: np.random.Generator) -> np.ndarray:
    """The `n_remove` active examples with the fewest events; ties broken at random."""
    shuffled = rng.permutation(active)
    order = np.argsort(counts[shuffled], kind="stable")
    return np.sort(shuffled[order[:n_remove]])


class DataRemoval:
    """The DDR state of one task: which examples are still active."""

    def __init__(self, n: int, epochs: int, config: DDRConfig, rng: np.random.Generator) -> None:
        self.n = n
        self.schedule = removal_schedule(epochs, config)
        self.rank = config.rank
        self.rng = rng
        self.active = np.arange(n)
        self.tracker = ForgettingTracker(n)
        self.removed: list[np.ndarray] = []

    def begin_epoch(self, epoch: int) -> np.ndarray:
        """Remove what the schedule says at this epoch; return the removed indices."""
        share = self.schedule.get(epoch, 0.0)
        n_remove = min(int(round(share * self.n)), self.active.size - 1)
        if n_remove <= 0:
            return np.empty(0, dtype=np.int64)
        counts = self.tracker.counts() if self.rank == "forgetting" else np.zeros(self.n, dtype=np.int64)
        gone = select_removals(counts, self.active, n_remove, self.rng)  # all tied: a uniform draw
        self.active = np.setdiff1d(self.active, gone)
        self.removed.append(gone)
        self.tracker.reset()
        return gone
