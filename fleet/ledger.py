"""Per-device bookkeeping of a run: what each device did, spent and went through.

Fed once a round with the world's settled outcomes; becomes devices.csv, and
keeps the round worth drawing as a timeline: the first with the most kinds of
outcome (a late or declined device shows the budget).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from fleet.timing import DeviceOutcome
from server.strategy import DeviceReport, RoundTiming, executed_flops


@dataclass
class DeviceTotals:
    device: int
    profile: str
    sampled: int = 0
    ok: int = 0
    late: int = 0
    failed: int = 0
    oom: int = 0
    declined: int = 0
    adapted: int = 0
    busy_s: float = 0.0          # downloading, computing, uploading
    energy_j: float = 0.0
    train_flops: float = 0.0     # of aggregated updates only
    wasted_train_flops: float = 0.0
    executed_flops: float = 0.0  # what its kernels ran, of aggregated updates (clients.budget)
    wasted_executed_flops: float = 0.0


COLUMNS = [f.name for f in fields(DeviceTotals)]


class Ledger:
    def __init__(self, profiles: list[str]) -> None:
        self.devices = [DeviceTotals(d, name) for d, name in enumerate(profiles)]
        self.timeline: tuple[int, RoundTiming] | None = None

    def add_round(self, server_round: int, timing: RoundTiming, reports: list[DeviceReport],
                  adapted: set[int]) -> None:
        if self.timeline is None or kinds(timing) > kinds(self.timeline[1]):
            self.timeline = (server_round, timing)
        flops = {r.device_id: r.train_flops for r in reports}
        executed = {r.device_id: executed_flops(r) for r in reports}
        for d in timing.devices:
            t = self.devices[d.device_id]
            t.sampled += 1
            setattr(t, d.status, getattr(t, d.status) + 1)
            t.busy_s += d.download_s + d.compute_s + d.upload_s
            t.energy_j += d.energy_j
            if d.status == "ok":
                t.train_flops += flops.get(d.device_id, 0.0)
                t.executed_flops += executed.get(d.device_id, 0.0)
            else:
                t.wasted_train_flops += flops.get(d.device_id, 0.0)
                t.wasted_executed_flops += executed.get(d.device_id, 0.0)
        for device in adapted:
            self.devices[device].adapted += 1

    def rows(self) -> list[dict]:
        return [asdict(t) for t in self.devices]

    def snapshot(self) -> dict:
        timeline = None
        if self.timeline is not None:
            server_round, t = self.timeline
            timeline = {"round": server_round, "start_s": t.start_s, "sim_time_s": t.sim_time_s,
                        "energy_j": t.energy_j, "devices": [asdict(d) for d in t.devices]}
        return {"devices": self.rows(), "timeline": timeline}

    def restore(self, snapshot: dict) -> None:
        self.devices = [DeviceTotals(**row) for row in snapshot["devices"]]
        t = snapshot["timeline"]
        if t is None:
            self.timeline = None
            return
        devices = tuple(DeviceOutcome(**d) for d in t["devices"])
        timing = RoundTiming(frozenset(d.device_id for d in devices if d.status == "ok"),
                             {d.device_id: d.status for d in devices}, t["sim_time_s"], t["energy_j"],
                             start_s=t["start_s"], devices=devices)
        self.timeline = (t["round"], timing)


def kinds(timing: RoundTiming) -> int:
    return len({d.status for d in timing.devices})
