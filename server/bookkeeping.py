"""What a round leaves in the books: the updates accepted, per-round rows, per-device rows and run totals.

Pure functions of the round's reports and timing, so the synchronous strategy
and the buffered server keep the same columns and the same sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DeviceReport:
    """What the timing model needs to know about one device's round."""

    device_id: int
    train_flops: float
    down_bytes: int
    up_bytes: int
    peak_memory_bytes: int
    kernel_flops: float | None = None   # what its kernels executed (its time); None: train_flops
    status: str = "ok"                  # ok | declined | failed (crashed, or the app errored)
    measured_compute_s: float | None = None  # the training time the device measured (a real clock)
    measured_peak_rss_bytes: int | None = None  # its process's peak memory (clients.measure)
    measured_energy_j: float | None = None      # from its energy counter, where it has one


@dataclass(frozen=True)
class RoundTiming:
    accepted: frozenset[int]                # device ids whose update arrived in time
    statuses: dict[int, str]                # device id -> ok | late | failed | oom | declined
    sim_time_s: float                       # simulated clock when the round closed
    energy_j: float                         # energy the round cost the fleet
    start_s: float = 0.0                    # simulated clock when the round started
    devices: tuple = ()                     # per-device outcomes (fleet.world.timing.DeviceOutcome)
    # idle power of every device online in the round over the time energy_j does not charge it for (fleet.world),
    # so energy_j + idle_energy_j is what the online fleet drew; idle_by_device: its nonzero shares, by device id
    idle_energy_j: float = 0.0
    idle_by_device: dict[int, float] = field(default_factory=dict)


@dataclass
class Accepted:
    device_id: int
    weights: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    n_examples: float  # its weight in the average: its examples (a plain client's, scaled; see plain_count)
    metrics: dict


STATUS_COUNTS = ("ok", "late", "failed", "oom", "declined")


@dataclass
class Totals:
    """Run totals. Useful work (aggregated updates) and wasted work (updates lost to
    lateness or failure) are kept apart; energy_j is everything that was spent."""

    rejected_updates: int = 0
    accepted_updates: int = 0        # valid updates that arrived in time and were aggregated
    failed_replies: int = 0          # the device's app crashed (an error reply)
    timed_out: int = 0               # sent a task, but no reply came within round_timeout_s
    dropped_updates: int = 0         # late, failed mid-round or out of memory
    declined: int = 0                # the budget fitted nothing
    adapted: int = 0                 # replies that shrank batch, draw or buffer to fit memory
    upload_bytes: int = 0
    download_bytes: int = 0
    train_flops: float = 0.0
    energy_j: float = 0.0
    idle_energy_j: float = 0.0       # online devices idle outside what energy_j charges (RoundTiming)
    wasted_train_flops: float = 0.0
    wasted_upload_bytes: int = 0
    wasted_energy_j: float = 0.0
    # FLOPs the devices' kernels executed (what time is made of: dense kernels multiply a masked
    # layer's zeros), beside train_flops, the FLOPs counted the RigL way
    executed_flops: float = 0.0
    wasted_executed_flops: float = 0.0
    rejections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # declines and adaptations, with reasons

    @property
    def every_reply_failed(self) -> bool:
        """Devices were asked to train and not one update was aggregated, because every reply was an
        error, an update rejected as invalid, or none came in time: the run is not a result, and its
        summary.json says `failed` (a fleet whose every device declined its budget is a result)."""
        return self.accepted_updates == 0 and self.failed_replies + self.rejected_updates + self.timed_out > 0


def book_round(totals: Totals, row: dict, timing: RoundTiming) -> None:
    """Add a settled round's row (from round_row) to the run's totals."""
    t = totals
    t.dropped_updates += row["dropped"]
    t.declined += row["n_declined"]
    t.adapted += row["n_adapted"]
    t.energy_j += timing.energy_j
    t.idle_energy_j += timing.idle_energy_j
    t.upload_bytes += row["upload_bytes"]
    t.train_flops += row["train_flops"]
    t.wasted_train_flops += row["wasted_train_flops"]
    t.executed_flops += row["executed_flops"]
    t.wasted_executed_flops += row["wasted_executed_flops"]
    t.wasted_upload_bytes += row["wasted_upload_bytes"]
    t.wasted_energy_j += row["wasted_energy_j"]


def compute_times(reports: list[DeviceReport], timing: RoundTiming) -> dict:
    """Modelled and measured compute seconds of the ok devices: summed over those that measured theirs
    (so the two compare), or the modelled alone when none did (a dry run)."""
    ok = {d.device_id: d.compute_s for d in timing.devices if d.status == "ok"}
    measured = {r.device_id: r.measured_compute_s for r in reports
                if r.measured_compute_s is not None and r.device_id in ok}
    if not measured:
        return {"modelled_compute_s": sum(ok.values()), "measured_compute_s": None}
    return {"modelled_compute_s": sum(ok[d] for d in measured), "measured_compute_s": sum(measured.values())}


DEVICE_ROUND_COLUMNS = ["round", "device", "real", "client", "status", "train_flops", "executed_flops",
                        "modelled_compute_s", "measured_compute_s", "estimated_peak_memory_bytes",
                        "measured_peak_rss_bytes", "modelled_energy_j", "measured_energy_j", "down_bytes", "up_bytes",
                        "num_examples", "counted_examples", "in_mask_share", "speed_factor", "task", "epoch",
                        "steps", "batch", "buffer_draw", "buffer_size", "removed", "compute_limited"]
# what a device's reply says it did -> its device_rounds.csv column (a stock client says none of it)
DEVICE_WORK = {"task-id": "task", "epoch": "epoch", "steps": "steps", "batch-size": "batch",
               "buffer-draw": "buffer_draw", "buffer-size": "buffer_size", "removed": "removed",
               "compute-limited": "compute_limited"}


def executed_flops(report: DeviceReport) -> float:
    """What the device's kernels ran (its time); the counted FLOPs where it did not say."""
    return report.train_flops if report.kernel_flops is None else report.kernel_flops


def device_rows(server_round: int, reports: list[DeviceReport], timing: RoundTiming, real: set[int],
                plain: set[int], accepted: Sequence[Accepted] = ()) -> list[dict]:
    """One row per device that answered: the time model's figures next to what the device measured
    (a real device's are its hardware's; a simulated device's are this machine's), and what its
    update counted for in the average."""
    outcomes = {d.device_id: d for d in timing.devices}
    updates = {a.device_id: a for a in accepted}
    rows = []
    for r in sorted(reports, key=lambda r: r.device_id):
        o, a = outcomes.get(r.device_id), updates.get(r.device_id)
        rows.append({
            "round": server_round, "device": r.device_id, "real": int(r.device_id in real),
            "client": "stock" if r.device_id in plain else "sparcl",
            "status": timing.statuses.get(r.device_id, r.status), "train_flops": r.train_flops,
            "executed_flops": executed_flops(r), "speed_factor": None if o is None else o.speed_factor,
            "modelled_compute_s": None if o is None else o.compute_s, "measured_compute_s": r.measured_compute_s,
            "estimated_peak_memory_bytes": r.peak_memory_bytes or None,
            "measured_peak_rss_bytes": r.measured_peak_rss_bytes,
            "modelled_energy_j": None if o is None else o.energy_j, "measured_energy_j": r.measured_energy_j,
            "down_bytes": r.down_bytes, "up_bytes": r.up_bytes,
            "num_examples": None if a is None else a.metrics.get("num-examples"),
            "counted_examples": None if a is None else a.n_examples,
            "in_mask_share": None if a is None else a.metrics.get("in-mask-share"),
            **{column: None if a is None else a.metrics.get(key) for key, column in DEVICE_WORK.items()},
        })
    return rows


def round_row(accepted: list[Accepted], reports: list[DeviceReport], timing: RoundTiming) -> dict:
    """The per-round figures that go to rounds.csv (useful work only in the totals)."""
    ok = timing.accepted
    by_device = sorted(accepted, key=lambda a: a.device_id)
    on_time = [a for a in accepted if a.device_id in ok]
    accuracy = [a.metrics["local-accuracy"] for a in on_time if "local-accuracy" in a.metrics]  # not stock
    useful = [r for r in reports if r.device_id in ok]
    wasted = [r for r in reports if r.device_id not in ok]
    counts = {f"n_{s}": sum(1 for v in timing.statuses.values() if v == s) for s in STATUS_COUNTS}
    return {
        "replies": len(reports), "accepted": len(on_time),
        "dropped": sum(1 for r in reports if timing.statuses.get(r.device_id) in ("late", "failed", "oom")),
        "sim_start_s": timing.start_s, "sim_time_s": timing.sim_time_s, "energy_j": timing.energy_j,
        "idle_energy_j": timing.idle_energy_j,
        "upload_bytes": sum(r.up_bytes for r in useful), "train_flops": sum(r.train_flops for r in useful),
        "wasted_train_flops": sum(r.train_flops for r in wasted),
        "executed_flops": sum(executed_flops(r) for r in useful),
        "wasted_executed_flops": sum(executed_flops(r) for r in wasted),
        "wasted_upload_bytes": sum(r.up_bytes for r in wasted if timing.statuses.get(r.device_id) == "late"),
        "wasted_energy_j": sum(d.energy_j for d in timing.devices if d.status != "ok"),
        # the time model against the devices' own clocks, over the devices that reported both
        **compute_times(reports, timing),
        **counts,
        "n_adapted": sum(1 for a in accepted if a.metrics.get("adapted", 0)),
        "local_accuracy": float(np.mean(accuracy)) if accuracy else 0.0,
        "tasks": "|".join(str(int(a.metrics.get("task-id", -1))) for a in by_device),
        "statuses": "|".join(f"{d}:{s}" for d, s in sorted(timing.statuses.items())),
    }
