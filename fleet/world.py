"""The simulated world the server asks: who is online, and who made the deadline.

Implements server.strategy.World with the simpy round model in fleet.timing and
the device profiles (under a budget) in fleet.profiles. The simulated clock
advances round by round; energy and statuses are kept per round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fleet.profiles import BudgetProfile, DeviceProfile, apply_budget
from fleet.timing import DeviceWork, available, simulate_round
from server.strategy import DeviceReport, RoundTiming


class SimWorld:
    def __init__(self, profiles: Sequence[DeviceProfile], budget: BudgetProfile, *, deadline_s: float | None,
                 keep_first: int | None, offline_rate_per_s: float, seed: int) -> None:
        self.profiles = [apply_budget(p, budget) for p in profiles]
        self.deadline_s = deadline_s if deadline_s is not None else budget.deadline_s
        self.keep_first = keep_first
        self.offline_rate_per_s = offline_rate_per_s
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.clock_s = 0.0

    def available(self, server_round: int, devices: list[int]) -> list[int]:
        online = available([self.profiles[d] for d in devices], self.rng)
        return [d for d, up in zip(devices, online) if up]

    def budget(self, device: int) -> dict[str, float]:
        """What the device is told of its budget each round (after the budget profile)."""
        p = self.profiles[device]
        out = {"memory-mb": p.memory_mb, "gflops": p.train_flops_per_s / 1e9, "bandwidth-mbps": p.bandwidth_mbps}
        if self.deadline_s is not None:
            out["deadline-s"] = self.deadline_s
        return out

    def close_round(self, server_round: int, reports: list[DeviceReport]) -> RoundTiming:
        if not reports:
            return RoundTiming(frozenset(), {}, self.clock_s, 0.0)
        works = [DeviceWork(r.device_id, self.profiles[r.device_id], r.train_flops, r.down_bytes,
                            r.up_bytes, r.peak_memory_bytes) for r in reports]
        outcome = simulate_round(works, start_s=self.clock_s, deadline_s=self.deadline_s,
                                 keep_first=self.keep_first, seed=self.seed * 100_003 + server_round,
                                 offline_rate_per_s=self.offline_rate_per_s)
        self.clock_s = outcome.end_s
        return RoundTiming(frozenset(outcome.accepted), {d.device_id: d.status for d in outcome.devices},
                           outcome.end_s, sum(d.energy_j for d in outcome.devices))
