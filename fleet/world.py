"""The simulated world the server asks: who is free, what each device may spend, what happened.

Implements server.strategy.World with the simpy round model in fleet.timing
and the device profiles (under a budget) in fleet.profiles. A round is planned
before anyone trains and settled after:

* `online` and `free`: who is online (a draw per device keyed by seed, round
  and device) and, of those, who is not still busy finishing a late round;
* `plan`: for each sampled device, its download time, the compute budget that
  fits before the deadline after its expected upload (in the FLOPs its kernels
  execute), its memory budget, and when it fails if it does;
* `settle`: the round replayed with the work really done; statuses, the
  simulated clock, energy, and who stays busy past the close.

Every draw is keyed by device, so the timeline does not depend on the order in
which replies arrive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from clients.budget import KernelModel
from fleet.profiles import BudgetProfile, DeviceProfile, apply_budget
from fleet.timing import MIB, DeviceWork, download_time_s, failure_delay, simulate_round, upload_time_s
from server.strategy import DeviceReport, RoundTiming


def is_online(profile: DeviceProfile, seed: int, server_round: int, device: int) -> bool:
    """One uniform draw per device and round against its availability, keyed by (seed, round, device)."""
    return bool(np.random.default_rng([seed, server_round, device, 0]).random() < profile.availability)


class SimWorld:
    def __init__(self, profiles: Sequence[DeviceProfile], budget: BudgetProfile, *, deadline_s: float | None,
                 keep_first: int | None, offline_rate_per_s: float, seed: int,
                 kernels: KernelModel | None = None) -> None:
        self.profiles = [apply_budget(p, budget) for p in profiles]
        self.deadline_s = deadline_s if deadline_s is not None else budget.deadline_s
        self.keep_first = keep_first
        self.offline_rate_per_s = offline_rate_per_s
        self.seed = seed
        self.kernels = kernels or KernelModel()
        self.clock_s = 0.0
        self.busy_until: dict[int, float] = {}
        self.fail_at: dict[int, float] = {}  # this round's failure times of the planned devices

    # -- checkpoints -------------------------------------------------------------
    def snapshot(self) -> dict:
        """The clock and who is still busy (every draw is keyed, so nothing else carries over)."""
        return {"clock_s": self.clock_s, "busy_until": sorted(self.busy_until.items())}

    def restore(self, snapshot: dict) -> None:
        self.clock_s = float(snapshot["clock_s"])
        self.busy_until = {int(d): float(t) for d, t in snapshot["busy_until"]}

    # -- before the round ------------------------------------------------------
    def online(self, server_round: int, devices: list[int]) -> list[int]:
        return [d for d in devices if is_online(self.profiles[d], self.seed, server_round, d)]

    def free(self, devices: list[int]) -> list[int]:
        """Those not still finishing a late round: a busy device cannot start a new one."""
        return [d for d in devices if self.busy_until.get(d, 0.0) <= self.clock_s]

    def plan(self, server_round: int, devices: list[int], down_bytes: int) -> dict[int, dict[str, float | str]]:
        """Each sampled device's budget, as the config values it is sent.

        The expected upload is the size of the model sent (the same tensors at
        the same density); the compute budget is what the device's sustained
        rate does in the time left before the deadline (none without one).
        """
        self.fail_at = {}
        plans = {}
        for d in devices:
            p = self.profiles[d]
            down_s = download_time_s(down_bytes, p)
            up_s = upload_time_s(down_bytes, p)  # the expected upload: the tensors sent, at the same density
            budget: dict[str, float | str] = {
                "memory-bytes": float(p.memory_mb * MIB), "download-s": down_s, "kernels": self.kernels.kind,
                "speedup": json.dumps(self.kernels.speedup), "gflops": p.train_flops_per_s / 1e9,
            }
            if self.deadline_s is not None:
                left = self.deadline_s - down_s - up_s
                budget["compute-flops"] = max(0.0, left) * p.train_flops_per_s
                budget["deadline-s"] = self.deadline_s
            fail_at = failure_delay(self.offline_rate_per_s, self.seed, server_round, d)
            self.fail_at[d] = fail_at
            if math.isfinite(fail_at):
                budget["fail-after-flops"] = max(0.0, fail_at - down_s) * p.train_flops_per_s
            plans[d] = budget
        return plans

    # -- after the round -------------------------------------------------------
    def settle(self, server_round: int, reports: list[DeviceReport]) -> RoundTiming:
        """Replay the round with the work really done; advance the clock; book who stays busy."""
        works = [DeviceWork(r.device_id, self.profiles[r.device_id], r.train_flops, r.down_bytes, r.up_bytes,
                            r.peak_memory_bytes, kernel_flops=r.kernel_flops,
                            fail_at_s=self._fail_at(r), declined=r.status == "declined",
                            crashed=r.status == "failed") for r in reports]
        start = self.clock_s
        outcome = simulate_round(works, start_s=start, deadline_s=self.deadline_s, keep_first=self.keep_first)
        self.clock_s = outcome.end_s
        for d in outcome.devices:
            self.busy_until[d.device_id] = max(d.end_s, outcome.end_s)
        return RoundTiming(frozenset(outcome.accepted), {d.device_id: d.status for d in outcome.devices},
                           outcome.end_s, outcome.energy_j, start_s=start, devices=outcome.devices)

    def _fail_at(self, report: DeviceReport) -> float:
        """The planned failure; a device whose app crashed fails when its download ends."""
        if report.status == "failed" and not math.isfinite(self.fail_at.get(report.device_id, math.inf)):
            return download_time_s(report.down_bytes, self.profiles[report.device_id])
        return self.fail_at.get(report.device_id, math.inf)
