"""Per-device bookkeeping of a run: what each device did, spent and went through.

Fed once a round with the world's settled outcomes and who was offline or
busy at its start; becomes devices.csv, and keeps the round worth drawing as a
timeline (the first with the most kinds of outcome: a late or declined device
shows the budget) and every round of the tracked devices (`RoundTrace`) for
the multi-round timeline.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, fields

from fleet.world.rounds import DeviceOutcome
from server.bookkeeping import DeviceReport, RoundTiming, executed_flops


@dataclass
class DeviceTotals:
    device: int
    profile: str
    sampled: int = 0
    offline: int = 0             # rounds at whose start it was offline
    busy: int = 0                # rounds it was online for but still finishing a late round (not eligible)
    ok: int = 0
    late: int = 0
    failed: int = 0
    oom: int = 0
    declined: int = 0
    adapted: int = 0
    busy_s: float = 0.0          # downloading, computing, uploading
    energy_j: float = 0.0
    idle_energy_j: float = 0.0   # idle while online and not in a round's work (RoundTiming.idle_energy_j)
    train_flops: float = 0.0     # of aggregated updates only
    wasted_train_flops: float = 0.0
    executed_flops: float = 0.0  # what its kernels ran, of aggregated updates (clients.budget)
    wasted_executed_flops: float = 0.0


DEVICE_COLUMNS = [f.name for f in fields(DeviceTotals)]
TRACKED = 40  # devices the multi-round timeline follows in a bigger fleet
OUTCOME_COLUMNS = [f.name for f in fields(DeviceOutcome)]


class Ledger:
    def __init__(self, profiles: list[str], track: int = TRACKED) -> None:
        self.devices = [DeviceTotals(d, name) for d, name in enumerate(profiles)]
        self.timeline: tuple[int, RoundTiming] | None = None
        self.tracked = tracked_devices(profiles, track)
        self.rounds: list[RoundTrace] = []

    def add_round(self, server_round: int, timing: RoundTiming, reports: list[DeviceReport],
                  adapted: set[int], offline: Collection[int] = (), busy: Collection[int] = ()) -> None:
        """`offline`, `busy`: the devices offline at the round's start, and those online but still finishing
        a late round (what the server saw before sampling)."""
        if self.timeline is None or kinds(timing) > kinds(self.timeline[1]):
            self.timeline = (server_round, timing)
        for d in offline:
            self.devices[d].offline += 1
        for d in busy:
            self.devices[d].busy += 1
        self.rounds.append(trace(server_round, timing, self.tracked, offline, busy))
        self.add_work(timing, reports, adapted)

    def add_work(self, timing: RoundTiming, reports: list[DeviceReport], adapted: Collection[int] = ()) -> None:
        """Each device's share of a round's work and idle energy, without the round: also what an
        asynchronous run books after its last version, when it stops between versions."""
        by_device: dict[int, list[DeviceReport]] = {}  # in order: an asynchronous version may hold a device twice
        for r in reports:
            by_device.setdefault(r.device_id, []).append(r)
        for d in timing.devices:
            t = self.devices[d.device_id]
            t.sampled += 1
            setattr(t, d.status, getattr(t, d.status) + 1)
            t.busy_s += d.download_s + d.compute_s + d.upload_s
            t.energy_j += d.energy_j
            queue = by_device.get(d.device_id)
            sent = queue.pop(0) if queue else None
            flops, executed = (0.0, 0.0) if sent is None else (sent.train_flops, executed_flops(sent))
            if d.status == "ok":
                t.train_flops += flops
                t.executed_flops += executed
            else:
                t.wasted_train_flops += flops
                t.wasted_executed_flops += executed
        for device in adapted:
            self.devices[device].adapted += 1
        for device, joules in timing.idle_by_device.items():
            self.devices[device].idle_energy_j += joules

    def rows(self) -> list[dict]:
        return [asdict(t) for t in self.devices]

    def snapshot(self) -> dict:
        timeline = None
        if self.timeline is not None:
            server_round, t = self.timeline
            timeline = {"round": server_round, "start_s": t.start_s, "sim_time_s": t.sim_time_s,
                        "energy_j": t.energy_j, "idle_energy_j": t.idle_energy_j,
                        "devices": [asdict(d) for d in t.devices]}
        return {"devices": self.rows(), "timeline": timeline, "outcome_columns": OUTCOME_COLUMNS,
                "rounds": [r.to_json() for r in self.rounds]}

    def restore(self, snapshot: dict) -> None:
        self.devices = [DeviceTotals(**row) for row in snapshot["devices"]]  # older: offline, busy, idle_energy_j 0
        columns = snapshot.get("outcome_columns", OUTCOME_COLUMNS)
        # an older checkpoint has no rounds: the multi-round timeline then starts where the run resumed
        self.rounds = [RoundTrace.from_json(r, columns) for r in snapshot.get("rounds", [])]
        t = snapshot["timeline"]
        if t is None:
            self.timeline = None
            return
        devices = tuple(DeviceOutcome(**d) for d in t["devices"])
        timing = RoundTiming(frozenset(d.device_id for d in devices if d.status == "ok"),
                             {d.device_id: d.status for d in devices}, t["sim_time_s"], t["energy_j"],
                             start_s=t["start_s"], devices=devices, idle_energy_j=t.get("idle_energy_j", 0.0))
        self.timeline = (t["round"], timing)


def kinds(timing: RoundTiming) -> int:
    return len({d.status for d in timing.devices})


# --------------------------------------------------------------------------- every round, of the tracked devices


@dataclass(frozen=True)
class RoundTrace:
    """One round as the multi-round timeline draws it: when it started and closed, the outcomes of the
    tracked devices it sampled, and which tracked devices were offline or busy at its start.

    Kept by the ledger, not rebuilt from device_rounds.csv: that file has no download, upload or
    link-waiting times and no offline or busy devices, and a dry run writes none. Only the tracked
    devices are kept (at most TRACKED), so a fleet of 10,000 costs what one of 40 does.
    """

    round: int
    start_s: float
    close_s: float
    devices: tuple[DeviceOutcome, ...] = ()
    offline: tuple[int, ...] = ()
    busy: tuple[int, ...] = ()

    def to_json(self) -> dict:
        """Outcomes as rows in OUTCOME_COLUMNS' order: a checkpoint holds every round of them."""
        return {"round": self.round, "start_s": self.start_s, "close_s": self.close_s,
                "devices": [[getattr(d, c) for c in OUTCOME_COLUMNS] for d in self.devices],
                "offline": list(self.offline), "busy": list(self.busy)}

    @classmethod
    def from_json(cls, data: dict, columns: Sequence[str]) -> RoundTrace:
        """Inverse of to_json; an outcome field the writer did not have takes its default."""
        return cls(int(data["round"]), float(data["start_s"]), float(data["close_s"]),
                   tuple(DeviceOutcome(**dict(zip(columns, row))) for row in data["devices"]),
                   tuple(data["offline"]), tuple(data["busy"]))


def trace(server_round: int, timing: RoundTiming, tracked: Sequence[int], offline: Collection[int],
          busy: Collection[int]) -> RoundTrace:
    """The round's RoundTrace, of the `tracked` devices only."""
    keep = set(tracked)
    offline, busy = set(offline), set(busy)
    return RoundTrace(server_round, timing.start_s, timing.sim_time_s,
                      tuple(sorted((d for d in timing.devices if d.device_id in keep), key=lambda d: d.device_id)),
                      tuple(d for d in tracked if d in offline), tuple(d for d in tracked if d in busy))


def tracked_devices(profiles: Sequence[str], limit: int = TRACKED) -> list[int]:
    """The devices a multi-round timeline follows: all of a fleet of at most `limit`; else each profile in
    proportion to its share of the fleet (at least one each while they fit), evenly spread over its ids."""
    if len(profiles) <= limit:
        return list(range(len(profiles)))
    groups: dict[str, list[int]] = {}
    for d, name in enumerate(profiles):
        groups.setdefault(name, []).append(d)
    quota = {k: max(1, round(limit * len(v) / len(profiles))) for k, v in groups.items()}
    while sum(quota.values()) > limit:  # the rounding and the floors of one may overshoot
        quota[max(quota, key=lambda k: quota[k])] -= 1
    step = {k: (len(v) - 1) / max(1, quota[k] - 1) for k, v in groups.items()}
    return sorted(v[round(i * step[k])] for k, v in groups.items() for i in range(quota[k]))
