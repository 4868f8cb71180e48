"""The simulated world the server asks: who is free, what each device may spend, what happened.

Implements server.strategy.World with the simpy round model in fleet.world.timing
and the device profiles (under a budget) in fleet.world.profiles. A round is planned
before anyone trains and settled after:

* `online` and `free`: who is online (fleet.world.availability: `always`, a keyed
  `bernoulli` draw per round, or `onoff` periods that simpy processes play
  out up to the clock) and, of those, who is not still busy finishing a late
  round;
* `plan`: for each sampled device, its download time, the compute budget that
  fits before the deadline after its expected upload (in the FLOPs its kernels
  execute, at the speed it beats in all but `plan_quantile` of its rounds:
  a device does not know its jitter in advance, and a scheduler that planned
  at the mean speed would make it late in about half of its compute-limited
  rounds), its memory budget, and when it fails if it does;
* `settle`: the round replayed with the work really done, at each device's
  jittered speed and over the shared server links if there are (downloads
  through the egress, uploads through the ingress, where the last round's late
  uploads still compete); statuses, the simulated clock, energy, and who stays
  busy past the close; and the idle energy of every device online in the
  round over the time that energy does not charge it for (`_idle_energy`).

The server's aggregation and evaluation take no simulated time: the next
round starts at the close (on the flagship's models they take milliseconds
of the server's CPU against rounds of minutes).

Arrivals at the same instant reach the server in a keyed random order per
round (under `keep_first` the lowest ids would otherwise always win ties).

Failures: a device fails at the earlier of a Poisson failure
(`offline_rate_per_s`, fleet.world.timing.failure_delay) and its profile's
`failure_prob` failure, which falls uniformly over its planned work: from the
round's start to download + planned compute + expected upload. The planned
compute is the compute budget under a deadline, or the device's expected
compute if that is less: the kernel FLOPs of the last round it completed (a
device not seen yet: the mean of the last round in which any completed; none
yet: the budget, or nothing without a deadline), at its jittered speed (the
world, unlike the device, knows it). A failure during training reaches the
device as `fail-after-flops` (the FLOPs its jittered speed does by then); a
device that did less than planned and so finished training before its
failure point fails during its upload instead, at the same fraction of it.
So failure_prob is the share of working devices that fail (one that declines
or runs out of memory does no work to fail in).

Every draw is keyed by device (fleet.world.draws), so the timeline does not depend
on the order in which replies arrive, and a snapshot holds all a resumed run
needs to continue exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np

from clients.budget import KernelModel
from fleet.world.availability import Availability
from fleet.world.draws import ONLINE, TIE, keyed_uniforms
from fleet.world.link import fair_shares
from fleet.world.profiles import BudgetProfile, DeviceProfile, apply_budget
from fleet.world.rounds import Carried, DeviceWork, simulate_round
from fleet.world.timing import (
    DEFAULT_PLAN_QUANTILE,
    MIB,
    compute_time_s,
    download_time_s,
    failure_delay,
    failure_fraction,
    fits_memory,
    planned_speed,
    speed_factor,
    transfer_time_s,
    upload_time_s,
)

from server.bookkeeping import DeviceReport, RoundTiming


def is_online(profile: DeviceProfile, seed: int, server_round: int, device: int) -> bool:
    """A `bernoulli` device's draw: one uniform against its availability, keyed by (seed, round, device)."""
    return bool(keyed_uniforms(seed, server_round, [device], ONLINE)[0] < profile.availability)


class SimWorld:
    def __init__(self, profiles: Sequence[DeviceProfile], budget: BudgetProfile, *, deadline_s: float | None,
                 keep_first: int | None, offline_rate_per_s: float, seed: int,
                 kernels: KernelModel | None = None, server_ingress_mbps: float | None = None,
                 server_egress_mbps: float | None = None, plan_quantile: float = DEFAULT_PLAN_QUANTILE) -> None:
        scaled: dict[DeviceProfile, DeviceProfile] = {}  # a fleet has few kinds: scale each once
        self.profiles = [scaled[p] if p in scaled else scaled.setdefault(p, apply_budget(p, budget)) for p in profiles]
        self.deadline_s = deadline_s if deadline_s is not None else budget.deadline_s
        self.keep_first = keep_first
        self.offline_rate_per_s = offline_rate_per_s
        self.server_ingress_mbps = server_ingress_mbps
        self.server_egress_mbps = server_egress_mbps
        self.plan_quantile = plan_quantile
        self.seed = seed
        self.kernels = kernels or KernelModel()
        self.availability = Availability(self.profiles, seed)
        self.idle_w = np.array([p.idle_w for p in self.profiles], dtype=np.float64)
        self.jitter = np.array([p.speed_jitter for p in self.profiles], dtype=np.float64)
        speeds = {j: planned_speed(j, plan_quantile) for j in set(self.jitter.tolist())}
        self.planned_speed = np.array([speeds[j] for j in self.jitter.tolist()], dtype=np.float64)
        self.failure_prob = np.array([p.failure_prob for p in self.profiles], dtype=np.float64)
        self.tracks_work = bool((self.failure_prob > 0).any())  # the expected compute places failures
        self.clock_s = 0.0
        self.busy_until: dict[int, float] = {}
        self.expected_flops: dict[int, float] = {}  # kernel FLOPs of each device's last completed round
        self.mean_flops: float | None = None        # their mean over the last round in which any completed
        self.fail_at: dict[int, float] = {}  # this round's failure times of the planned devices
        self.poisson_at: dict[int, float] = {}  # of which the Poisson failures
        self.chance_at: dict[int, tuple[float, float]] = {}  # and failure_prob's: (fraction of the work, time)
        self.upload_bytes: dict[int, int] = {}  # the largest update each device has sent back
        self.carry: tuple[Carried, ...] = ()    # late uploads still on the server link at the last close

    # -- checkpoints -------------------------------------------------------------
    def snapshot(self) -> dict:
        """The clock, who is still busy and (with failure_prob) the expected compute; JSON-able.

        Every draw is keyed and the on/off processes replay from time 0, so
        nothing else carries over.
        """
        snap: dict = {"clock_s": self.clock_s, "busy_until": sorted(self.busy_until.items()),
                      "upload_bytes": sorted(self.upload_bytes.items()),
                      "carry": [[f.device_id, f.start_s, f.nbytes, f.cap_bytes_per_s, f.stop_s] for f in self.carry]}
        if self.tracks_work:
            snap.update(expected_flops=sorted(self.expected_flops.items()), mean_flops=self.mean_flops)
        return snap

    def restore(self, snapshot: dict) -> None:
        self.clock_s = float(snapshot["clock_s"])
        self.busy_until = {int(d): float(t) for d, t in snapshot["busy_until"]}
        self.expected_flops = {int(d): float(f) for d, f in snapshot.get("expected_flops", [])}
        mean = snapshot.get("mean_flops")
        self.mean_flops = None if mean is None else float(mean)
        self.upload_bytes = {int(d): int(b) for d, b in snapshot.get("upload_bytes", [])}
        self.carry = tuple(Carried(int(d), float(t), float(b), float(c), float(s))
                           for d, t, b, c, s in snapshot.get("carry", []))
        self.availability.reset()  # the on/off processes replay to the restored clock on the next round

    # -- before the round ------------------------------------------------------
    def online(self, server_round: int, devices: list[int]) -> list[int]:
        """Those online at the start of the round (which starts at the clock), in the order given."""
        return self.availability.online(server_round, devices, self.clock_s)

    def free(self, devices: list[int]) -> list[int]:
        """Those not still finishing a late round: a busy device cannot start a new one."""
        return [d for d in devices if self.busy_until.get(d, 0.0) <= self.clock_s]

    def plan(self, server_round: int, devices: list[int], down_bytes: int | Mapping[int, int]
             ) -> dict[int, dict[str, float | str]]:
        """Each sampled device's budget, as the config values it is sent.

        `down_bytes`: the model sent, to all alike or per device (a plain
        Flower client gets the dense model).

        The expected upload is the largest update the device has sent back so
        far (a task start grows the mask: its update is larger than the model
        it was sent), or the model sent before it has sent one, over the
        device's uplink or, with a server link, at its fair share of that
        link among the sampled devices (with a binding deadline they all
        upload at once); the download likewise through the server's egress.
        The compute budget is what the device's sustained rate, at the speed
        of its `plan_quantile`, does in the time left before the deadline
        (none without one).
        """
        self.fail_at, self.poisson_at, self.chance_at = {}, {}, {}
        plans: dict[int, dict[str, float | str]] = {}
        speeds: np.ndarray | list[float] = []
        fractions: np.ndarray | list[float] = []
        if devices:
            speeds = speed_factor(self.jitter[devices], self.seed, server_round, devices)
            fractions = failure_fraction(self.failure_prob[devices], self.seed, server_round, devices)
        sizes = down_bytes if isinstance(down_bytes, Mapping) else dict.fromkeys(devices, down_bytes)
        expected_up = {d: max(sizes[d], self.upload_bytes.get(d, 0)) for d in devices}
        uploads = self._expected_transfers(devices, expected_up, self.server_ingress_mbps, "uplink")
        downloads = self._expected_transfers(devices, sizes, self.server_egress_mbps, "downlink")
        for d, speed, fraction, up_s, down_s in zip(devices, speeds, fractions, uploads, downloads):
            p = self.profiles[d]
            budget: dict[str, float | str] = {
                "memory-bytes": float(p.memory_mb * MIB), "download-s": down_s, "kernels": self.kernels.kind,
                "speedup": json.dumps(self.kernels.speedup), "compaction": json.dumps(self.kernels.compaction),
                "gflops": p.train_flops_per_s / 1e9,
            }
            if self.deadline_s is not None:
                left = self.deadline_s - down_s - up_s
                budget["compute-flops"] = max(0.0, left) * p.train_flops_per_s * float(self.planned_speed[d])
                budget["deadline-s"] = self.deadline_s
            fail_at = self.poisson_at[d] = failure_delay(self.offline_rate_per_s, self.seed, server_round, d)
            if math.isfinite(fraction):
                planned = self._planned_flops(d, cast("float | None", budget.get("compute-flops")))
                point = float(fraction) * (down_s + planned / (p.train_flops_per_s * speed) + up_s)
                self.chance_at[d] = (float(fraction), point)
                fail_at = min(fail_at, point)
            self.fail_at[d] = fail_at
            if math.isfinite(fail_at):
                budget["fail-after-flops"] = max(0.0, fail_at - down_s) * p.train_flops_per_s * float(speed)
            plans[d] = budget
        return plans

    def _expected_transfers(self, devices: list[int], nbytes: Mapping[int, int], server_mbps: float | None,
                            way: str) -> list[float]:
        """Each device's expected transfer time one `way` ("uplink" or "downlink"): at its own link's rate,
        or at its fair share of the server's link in that direction when there is one (all start at once;
        a share only grows as others finish, so this is an upper bound)."""
        own = [getattr(self.profiles[d], f"{way}_mbps") for d in devices]
        rates = own if server_mbps is None else fair_shares(own, server_mbps)
        return [transfer_time_s(nbytes[d], rate, getattr(self.profiles[d], f"{way}_latency_s"))
                for d, rate in zip(devices, rates)]

    def _planned_flops(self, device: int, budget_flops: float | None) -> float:
        """The compute a device is expected to do: its last completed round's, never more than its budget."""
        expected = self.expected_flops.get(device, self.mean_flops)
        known = [f for f in (budget_flops, expected) if f is not None]
        return min(known) if known else 0.0

    # -- after the round -------------------------------------------------------
    def settle(self, server_round: int, reports: list[DeviceReport], keep: int | None = None) -> RoundTiming:
        """Replay the round with the work really done; advance the clock; book who stays busy.

        `keep`: the round closes at that many in-time arrivals (over-selection), or at `keep_first`'s
        if that is fewer; the updates after it are late."""
        ids = [r.device_id for r in reports]
        speeds: np.ndarray | list[float] = speed_factor(self.jitter[ids], self.seed, server_round, ids) if ids else []
        ties: np.ndarray | list[float] = keyed_uniforms(self.seed, server_round, ids, TIE) if ids else []
        works = [DeviceWork(r.device_id, self.profiles[r.device_id], r.train_flops, r.down_bytes, r.up_bytes,
                            r.peak_memory_bytes, kernel_flops=r.kernel_flops,
                            fail_at_s=self._fail_at(r, float(s)), declined=r.status == "declined",
                            crashed=r.status == "failed", speed_factor=float(s), tie_key=float(tie))
                 for r, s, tie in zip(reports, speeds, ties)]
        start = self.clock_s
        keep_first = min((k for k in (keep, self.keep_first) if k is not None), default=None)
        outcome = simulate_round(works, start_s=start, deadline_s=self.deadline_s, keep_first=keep_first,
                                 ingress_mbps=self.server_ingress_mbps, egress_mbps=self.server_egress_mbps,
                                 carried=self.carry)
        if not works and self.deadline_s is None:  # nobody to wait for: the server waits for someone to come
            outcome = replace(outcome, end_s=self.idle_until(start))
        idle = self._idle_energy(server_round, start, outcome.end_s, outcome.devices, outcome.carried_end_s)
        self.clock_s = outcome.end_s
        for d in outcome.devices:
            self.busy_until[d.device_id] = max(d.end_s, outcome.end_s)
        for device, end in outcome.carried_end_s.items():  # a late upload slowed by this round's
            self.busy_until[device] = max(self.busy_until.get(device, 0.0), end)
        self.carry = outcome.carry
        self.upload_bytes.update((r.device_id, max(r.up_bytes, self.upload_bytes.get(r.device_id, 0)))
                                 for r in reports if r.status == "ok" and r.up_bytes > 0)
        if self.tracks_work:
            self._remember_work(works)
        return RoundTiming(frozenset(outcome.accepted), {d.device_id: d.status for d in outcome.devices},
                           outcome.end_s, outcome.energy_j, start_s=start, devices=outcome.devices,
                           idle_energy_j=math.fsum(idle.values()), idle_by_device=idle)

    def _idle_energy(self, server_round: int, start_s: float, close_s: float, outcomes: Sequence,
                     carried_end_s: Mapping[int, float] | None = None) -> dict[int, float]:
        """idle_w x the seconds each device was online in [start_s, close_s] that energy_j does not charge
        (nonzero ones only, by device id).

        energy_j charges a sampled device from the round's start until it
        leaves: the close for one that waited for it ("ok", "oom"), its end_s
        for the others (a late one past the close). A device still finishing
        an earlier round's late work is not idle until it is done (busy_until,
        or `carried_end_s` for a late upload the server link slowed into this
        round). So energy_j + this is what every online device drew over the
        round, the convention that counts idle fleets; energy_j alone counts
        the work and the waiting of the devices that delivered. Called before
        settle books this round's busy times.
        """
        if close_s <= start_s:
            return {}
        since = np.full(len(self.profiles), start_s)
        for d, until in (*self.busy_until.items(), *(carried_end_s or {}).items()):
            if until > since[d]:
                since[d] = until
        for o in outcomes:
            since[o.device_id] = close_s if o.status in ("ok", "oom") else o.end_s
        joules = self.availability.online_seconds(server_round, start_s, close_s, since) * self.idle_w
        return {int(d): float(joules[d]) for d in np.flatnonzero(joules > 0)}

    def idle_until(self, start_s: float) -> float:
        """Where a round that sampled nobody ends without a deadline: at the next on/off switch, when a
        device may come online (the clock never freezes on a fleet that is away); a fleet of bernoulli
        devices only is drawn again next round, at the same time."""
        following = self.availability.next_change(start_s)
        return following if math.isfinite(following) else start_s

    def _remember_work(self, works: list[DeviceWork]) -> None:
        """Book the compute of the devices that completed their training (in device order: the mean is a sum)."""
        done = sorted((w.device_id, float(w.time_flops)) for w in works
                      if not (w.declined or w.crashed) and fits_memory(w.peak_memory_bytes, w.profile))
        self.expected_flops.update(done)
        if done:
            self.mean_flops = math.fsum(f for _, f in done) / len(done)

    def _fail_at(self, report: DeviceReport, speed: float) -> float:
        """The planned failure; a device whose app crashed fails when its download ends.

        A device that trained in full but would have delivered before its
        failure_prob failure came (it did less than planned) fails in its
        upload instead, at the same fraction of it: so failure_prob is the
        share of the devices that work which fail, whatever their work.
        """
        d = report.device_id
        if report.status == "failed" and not math.isfinite(self.fail_at.get(d, math.inf)):
            return download_time_s(report.down_bytes, self.profiles[d])
        if report.status != "ok" or d not in self.chance_at:
            return self.fail_at.get(d, math.inf)
        fraction, point = self.chance_at[d]
        p = self.profiles[d]
        flops = report.train_flops if report.kernel_flops is None else report.kernel_flops
        upload_from = download_time_s(report.down_bytes, p) + compute_time_s(flops, p) / speed
        upload_s = upload_time_s(report.up_bytes, p)  # its own link's: a shared link only makes it longer
        if point >= upload_from + upload_s:
            point = upload_from + fraction * upload_s
        return min(self.poisson_at[d], point)
