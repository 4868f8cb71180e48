"""The asynchronous world (FedBuff's clock): arrivals, shared links, ties, failures, availability, checkpoints.

Times and energies are worked by hand from easy profiles (3 GFLOP/s, 10 Mbit/s, 50 ms latency); a shared
link's fluid sums are compared to a relative 1e-12.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace

import numpy as np
import pytest

from clients.errors import InputError
from fleet.world.async_world import READY_KEY, AsyncWorld
from fleet.world.availability import onoff_periods
from fleet.world.draws import TIE, keyed_uniforms
from fleet.world.profiles import DeviceProfile, get_budget
from fleet.world.timing import MIB, energy_j, failure_delay, failure_fraction
from fleet.world import SimWorld
from server.bookkeeping import DeviceReport

# 3 GFLOP/s sustained, 10 Mbit/s (1.25 MB/s) each way, 50 ms latency; always online.
BASE = DeviceProfile(name="base", peak_gflops=10.0, efficiency=0.3, memory_mb=64.0, downlink_mbps=10.0,
                     uplink_mbps=10.0, downlink_latency_s=0.05, uplink_latency_s=0.05, active_w=5.0, radio_w=2.0,
                     idle_w=1.0, availability=1.0, availability_model="always")
GENEROUS = get_budget("generous")


def world(profiles, *, rate=0.0, seed=0, ingress=None, egress=None) -> AsyncWorld:
    return AsyncWorld(SimWorld(profiles, GENEROUS, deadline_s=None, keep_first=None, offline_rate_per_s=rate,
                               seed=seed, server_ingress_mbps=ingress, server_egress_mbps=egress))


def start(w: AsyncWorld, dispatch: int, reports: list[DeviceReport], down_bytes: int = 0) -> dict:
    plans = w.plan(dispatch, sorted(r.device_id for r in reports), down_bytes)
    w.launch(dispatch, reports)
    return plans


def drain(w: AsyncWorld) -> list:
    """Every arrival until nothing is in flight."""
    out = []
    while (event := w.next_event()) is not None:
        out.append(event)
    return out


# --------------------------------------------------------------------------- one device


def test_one_device_arrives_after_download_compute_and_upload_and_pays_no_idle() -> None:
    w = world([BASE])
    start(w, 1, [DeviceReport(0, 6e9, 1_250_000, 2_500_000, 1000)], 1_250_000)
    # download 0.05 + 10 Mbit / 10 Mbit/s; compute 6 GFLOP / 3 GFLOP/s; upload 0.05 + 20 Mbit / 10 Mbit/s
    down, compute, up = 0.05 + 1.0, 2.0, 0.05 + 2.0
    event = w.next_event()
    assert (event.device_id, event.dispatch, event.status) == (0, 1, "ok")
    assert event.time_s == down + compute + up == pytest.approx(5.1, rel=1e-15)
    assert w.clock_s == event.time_s
    o = event.outcome
    assert (o.start_s, o.end_s) == (0.0, event.time_s)
    # each phase is the clock's difference across it (as in a synchronous round): equal to a rounding
    assert [o.download_s, o.compute_s, o.upload_s] == pytest.approx([down, compute, up], rel=1e-15)
    # 5 W x 2 s computing + 2 W x 3.1 s transferring; no idle_w (1 W) at all
    assert o.energy_j == energy_j(o.compute_s, o.download_s + o.upload_s, 0.0, BASE, down_mbit=10.0, up_mbit=20.0)
    assert o.energy_j == pytest.approx(16.2, rel=1e-15)
    assert w.base.upload_bytes == {0: 2_500_000}
    assert w.next_event() is None and w.stalled() and w.clock_s == event.time_s  # nothing left to happen


def test_a_device_online_and_not_in_flight_draws_idle_power_and_one_in_flight_does_not() -> None:
    """Device 0 works for 5.1 s (as above); device 1 waits online at 1 W, device 2 (bernoulli, 1 in 4) for its
    availability's share, device 3 (on/off) only while it is on. Nothing moves the clock once all have arrived."""
    onoff = replace(BASE, availability_model="onoff", mean_on_s=2.0, mean_off_s=2.0, idle_w=0.5)
    w = world([BASE, replace(BASE, idle_w=1.0), replace(BASE, availability_model="bernoulli", availability=0.25,
                                                          idle_w=2.0), onoff])
    start(w, 1, [DeviceReport(0, 6e9, 1_250_000, 2_500_000, 1000)], 1_250_000)
    while (event := w.next_event()) is None:  # device 3 coming online is news for the server, not an arrival
        pass
    assert event.device_id == 0 and event.time_s == pytest.approx(5.1, rel=1e-15)
    on_s, t = 0.0, 0.0
    for on, length in onoff_periods(0, 3, 2.0, 2.0):
        if t >= event.time_s:
            break
        on_s += on * (min(t + length, event.time_s) - t)
        t += length
    idle = w.idle_energy_j()
    assert idle[:3] == pytest.approx([0.0, 1.0 * 5.1, 2.0 * 0.25 * 5.1], rel=1e-12)
    assert idle[3] == pytest.approx(0.5 * on_s, rel=1e-12) and 0 < on_s < 5.1  # the clock stopped at its switches
    assert event.outcome.energy_j == pytest.approx(16.2, rel=1e-15)  # the worker's own bill is unchanged
    w.idle_energy_j()[:] = 99.0  # a copy: the caller cannot change the world's books
    assert np.array_equal(w.idle_energy_j(), idle)


def test_the_radio_tail_counts_between_transfers_but_not_after_the_arrival() -> None:
    p = replace(BASE, tail_s=3.0, tail_w=0.5)
    w = world([p])
    start(w, 1, [DeviceReport(0, 6e9, 1_250_000, 2_500_000, 1000)])
    o = w.next_event().outcome
    # the download's tail (1.05 -> 3.05) is cut by the upload; the upload's, after the arrival, is not counted
    assert o.tail_s == pytest.approx(2.0, rel=1e-15)
    assert o.energy_j == pytest.approx(16.2 + 0.5 * 2.0, rel=1e-15)


# --------------------------------------------------------------------------- shared link


def test_uploads_launched_at_different_times_share_the_ingress_max_min_fairly() -> None:
    """Device 0 starts at 0; device 2 declines and arrives at 0.5, when device 1 starts.

    0: download 0.05 s (no bytes), compute 1 s, upload latency: its 2.5 MB reach the 1.25 MB/s link at 1.1 and
       cross alone at its own 1.25 MB/s until 1.6 (625 kB); from 1.6 the two share it at 625 kB/s each, so its
       1.875 MB left take 3 s: it arrives at 4.6 (its own link alone: 3.1).
    1: reaches the link at 0.5 + 1.1 = 1.6; by 4.6 it has sent 1.875 MB, the last 625 kB alone take 0.5 s: 5.1.
    Each waited 1.5 s for the link beyond its own 2.05 s upload.
    """
    w = world([BASE] * 3, ingress=10.0)
    start(w, 1, [DeviceReport(0, 3e9, 0, 2_500_000, 1000), DeviceReport(2, 0.0, 562_500, 0, 1000, status="declined")])
    declined = w.next_event()
    assert (declined.device_id, declined.status) == (2, "declined")
    assert declined.time_s == pytest.approx(0.05 + 0.45, rel=1e-15)  # 4.5 Mbit over 10 Mbit/s
    start(w, 2, [DeviceReport(1, 3e9, 0, 2_500_000, 1000)])
    first, second = w.next_event(), w.next_event()
    assert (first.device_id, first.dispatch, second.device_id, second.dispatch) == (0, 1, 1, 2)
    assert first.time_s == pytest.approx(4.6, rel=1e-12) and second.time_s == pytest.approx(5.1, rel=1e-12)
    assert second.outcome.start_s == declined.time_s
    for event in (first, second):
        assert event.status == "ok"
        assert event.outcome.upload_s == pytest.approx(3.55, rel=1e-12)
        assert event.outcome.link_wait_s == pytest.approx(1.5, rel=1e-12)
        assert event.outcome.energy_j == pytest.approx(5.0 * 1.0 + 2.0 * (0.05 + 3.55), rel=1e-12)


def test_downloads_share_the_egress() -> None:
    """Two 1.25 MB downloads at once over a 10 Mbit/s egress: 0.05 s latency, then 625 kB/s each: 2.05 s."""
    w = world([BASE] * 2, egress=10.0)
    start(w, 1, [DeviceReport(d, 0.0, 1_250_000, 0, 1000, status="declined") for d in (0, 1)])
    events = drain(w)
    assert [e.status for e in events] == ["declined"] * 2
    assert [e.time_s for e in events] == pytest.approx([2.05, 2.05], rel=1e-12)


# --------------------------------------------------------------------------- ties


def test_simultaneous_arrivals_come_one_per_call_in_keyed_order_whatever_the_reports_order() -> None:
    ids = [0, 1, 2, 3, 4]
    reports = [DeviceReport(d, 3e9, 0, 1_250_000, 1000) for d in ids]
    ties = keyed_uniforms(2, 1, ids, TIE)
    expected = sorted(ids, key=lambda d: ties[d])
    assert expected == [1, 3, 0, 4, 2]  # seed 2: not the ids' order (seed 0's happens to be)
    runs = []
    for shuffle in range(3):
        w = world([BASE] * 5, seed=2)
        shuffled = reports[:]
        random.Random(shuffle).shuffle(shuffled)
        start(w, 1, shuffled)
        runs.append(drain(w))
    assert [e.device_id for e in runs[0]] == expected
    assert len({e.time_s for e in runs[0]}) == 1  # all at 0.05 + 1 + 1.05
    assert runs[0] == runs[1] == runs[2]


def test_every_device_wins_ties_about_equally_often() -> None:
    """Two identical devices launched together 400 times: device 0 first in 200 +- 3 x 10 (binomial sd)."""
    w = world([BASE] * 2)
    wins = 0
    for dispatch in range(1, 401):
        start(w, dispatch, [DeviceReport(d, 3e9, 0, 0, 1000) for d in (0, 1)])
        first, second = w.next_event(), w.next_event()
        assert first.time_s == second.time_s
        wins += first.device_id == 0
    assert 170 <= wins <= 230


# --------------------------------------------------------------------------- failures, oom, declined


@pytest.mark.parametrize("crashed", [False, True])
def test_a_poisson_failure_ends_the_work_at_its_time(crashed: bool) -> None:
    w = world([BASE], rate=0.5)
    fail = failure_delay(0.5, 0, 1, 0)  # 0.847 s: in the 1000 s of compute
    plans = w.plan(1, [0], 0)
    assert plans[0]["fail-after-flops"] == pytest.approx((fail - 0.05) * 3e9, rel=1e-12)
    report = (DeviceReport(0, plans[0]["fail-after-flops"], 0, 0, 1000, status="failed") if crashed
              else DeviceReport(0, 3e12, 0, 1_250_000, 1000))
    w.launch(1, [report])
    event = w.next_event()
    assert event.status == "failed"
    assert event.time_s == pytest.approx(fail, rel=1e-12)
    assert event.outcome.compute_s == pytest.approx(fail - 0.05, rel=1e-12)
    assert event.outcome.energy_j == pytest.approx(5.0 * (fail - 0.05) + 2.0 * 0.05, rel=1e-12)
    assert w.base.upload_bytes == {}  # nothing arrived


def test_a_failure_prob_failure_falls_within_the_planned_work_and_ok_arrivals_book_their_work() -> None:
    """Device 0 fails with chance 0.9 at fraction f of its planned work: the 1.25 MB download 1.05 s, no compute
    known yet, an upload as large as the model 1.05 s, so at f x 2.1 s; device 1 never fails, and its 3 GFLOP
    become the expected work."""
    w = world([replace(BASE, failure_prob=0.9), BASE])
    f = float(failure_fraction(0.9, 0, 1, [0])[0])
    assert math.isfinite(f)  # seed 0 draws 0.049: device 0 fails
    start(w, 1, [DeviceReport(d, 3e9, 1_250_000, 1_250_000, 1000) for d in (0, 1)], 1_250_000)
    failed, ok = w.next_event(), w.next_event()
    assert (failed.device_id, failed.status, ok.device_id, ok.status) == (0, "failed", 1, "ok")
    assert failed.time_s == pytest.approx(f * 2.1, rel=1e-12)  # 0.10 s: in its download
    assert failed.outcome.download_s == failed.time_s and failed.outcome.compute_s == 0.0
    assert ok.time_s == pytest.approx(1.05 + 1.0 + 1.05, rel=1e-15)
    assert w.base.expected_flops == {1: 3e9} and w.base.mean_flops == 3e9


def test_oom_arrives_at_once_with_no_work_and_declined_after_its_download() -> None:
    w = world([BASE] * 3)
    start(w, 1, [DeviceReport(2, 3e9, 0, 0, 1000)])
    assert w.next_event().time_s == pytest.approx(1.1, rel=1e-15)  # 0.05 + 1 + 0.05: the clock is no longer 0
    start(w, 2, [DeviceReport(0, 3e9, 1_250_000, 1_250_000, 64 * MIB + 1),
                 DeviceReport(1, 0.0, 1_250_000, 0, 1000, status="declined")], 1_250_000)
    oom, declined = w.next_event(), w.next_event()
    assert (oom.device_id, oom.status) == (0, "oom")
    assert oom.time_s == oom.outcome.start_s == pytest.approx(1.1, rel=1e-15)  # at its launch
    o = oom.outcome
    assert (o.download_s, o.compute_s, o.upload_s, o.energy_j) == (0.0, 0.0, 0.0, 0.0)
    assert (declined.device_id, declined.status) == (1, "declined")
    assert declined.time_s == pytest.approx(1.1 + 1.05, rel=1e-15)
    assert declined.outcome.energy_j == pytest.approx(2.0 * 1.05, rel=1e-15)
    assert w.base.upload_bytes == {}  # an empty update books no size; oom and declined send none


# --------------------------------------------------------------------------- ready, availability, stalls


def test_ready_skips_devices_in_flight_and_chooses_within_the_limit_by_a_keyed_draw() -> None:
    w = world([BASE] * 3)
    assert w.ready(0, 5) == [0, 1, 2]
    assert w.ready(0, 0) == [] and w.ready(0, -1) == []
    keys = keyed_uniforms(0, READY_KEY + 1, [0, 1, 2], TIE)
    chosen = w.ready(0, 2)
    assert chosen == sorted(np.argsort(keys)[:2].tolist())
    start(w, 1, [DeviceReport(d, 3e9, 0, 0, 1000) for d in chosen])
    assert w.ready(0, 5) == [d for d in (0, 1, 2) if d not in chosen]
    with pytest.raises(InputError, match="still in flight"):
        w.plan(2, chosen, 0)


def test_ready_leaves_each_device_out_about_equally_often() -> None:
    """300 dispatches of 2 out of 3 idle devices: each is left out 100 +- 3 x 8.2 times (binomial sd)."""
    w = world([BASE] * 3)
    left_out = [0, 0, 0]
    for dispatch in range(1, 301):
        chosen = w.ready(0, 2)
        assert len(chosen) == 2
        left_out[({0, 1, 2} - set(chosen)).pop()] += 1
        start(w, dispatch, [DeviceReport(d, 3e9, 0, 0, 1000) for d in chosen])
        assert len(drain(w)) == 2
    assert all(75 <= n <= 125 for n in left_out), left_out


def test_an_offline_device_coming_online_moves_the_clock_and_returns_none() -> None:
    """Online 1 s in 1001 on average: the device starts offline, and the clock jumps to its first switch."""
    p = replace(BASE, availability_model="onoff", mean_on_s=1.0, mean_off_s=1000.0)
    w = world([p])
    is_on, first = next(onoff_periods(0, 0, 1.0, 1000.0))
    assert not is_on
    assert w.ready(0, 5) == [] and not w.stalled()
    assert w.next_event() is None
    assert w.clock_s == first
    assert w.ready(0, 5) == [0]


def test_a_device_going_offline_is_no_event_only_its_return_is() -> None:
    p = replace(BASE, availability_model="onoff", mean_on_s=1000.0, mean_off_s=1.0)
    w = world([p])
    periods = onoff_periods(0, 0, 1000.0, 1.0)
    (on1, l1), (on2, l2) = next(periods), next(periods)
    assert (on1, on2) == (True, False)
    assert w.ready(0, 5) == [0]
    assert w.next_event() is None  # nobody in flight: off at l1 is skipped, back on at l1 + l2
    assert w.clock_s == l1 + l2
    assert w.ready(0, 5) == [0]


def test_a_switch_of_a_device_in_flight_is_no_event() -> None:
    """Both devices are in flight for 1000 s while device 0 switches about 400 times: only arrivals come."""
    p = replace(BASE, availability_model="onoff", mean_on_s=5.0, mean_off_s=1e-3)
    w = world([p, replace(p, mean_on_s=1e6)])
    assert w.ready(0, 5) == [0, 1]
    start(w, 1, [DeviceReport(0, 3e12, 0, 0, 1000), DeviceReport(1, 3e12, 0, 0, 1000)])
    events = [w.next_event(), w.next_event()]
    assert [e.device_id for e in events] == sorted((0, 1), key=lambda d: keyed_uniforms(0, 1, [0, 1], TIE)[d])
    assert all(e.time_s == pytest.approx(1000.1, rel=1e-15) for e in events)


def test_stalled_only_when_nothing_is_in_flight_and_nobody_will_switch() -> None:
    w = world([BASE])
    assert w.stalled()
    start(w, 1, [DeviceReport(0, 3e9, 0, 0, 1000)])
    assert not w.stalled()
    event = w.next_event()
    assert event.status == "ok" and w.stalled()
    assert w.next_event() is None and w.clock_s == event.time_s


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Driver:
    """The buffered server's loop, with deterministic replies: concurrency 3, a version every 2 ok arrivals;
    a device whose plan fails it before its work is done reports the crash."""

    version: int = 0
    dispatch: int = 0
    in_flight: int = 0
    ok: int = 0

    def step(self, w: AsyncWorld):
        ready = w.ready(self.version, 3 - self.in_flight)
        if ready:
            self.dispatch += 1
            plans = w.plan(self.dispatch, ready, 200_000)
            reports = []
            for d in ready:
                flops = 1e9 * (1 + (d * 7 + self.dispatch) % 4)
                crash = plans[d].get("fail-after-flops", math.inf)
                reports.append(DeviceReport(d, crash, 200_000, 0, 1000, status="failed") if crash < flops else
                               DeviceReport(d, flops, 200_000, 300_000 + 10_000 * d, 1000))
            random.Random(self.dispatch).shuffle(reports)
            w.launch(self.dispatch, reports)
            self.in_flight += len(reports)
        event = w.next_event()
        if event is not None:
            self.in_flight -= 1
            self.ok += event.status == "ok"
            self.version = self.ok // 2
        return event


def fleet_world() -> AsyncWorld:
    kinds = [BASE, replace(BASE, uplink_mbps=4.0, speed_jitter=0.3, failure_prob=0.2),
             replace(BASE, availability_model="onoff", mean_on_s=20.0, mean_off_s=5.0)]
    return world([kinds[d % 3] for d in range(6)], rate=0.02, seed=3, ingress=6.0, egress=30.0)


def test_restore_mid_run_gives_exactly_the_arrivals_of_the_uninterrupted_world() -> None:
    whole, driver = fleet_world(), Driver()
    expected = [driver.step(whole) for _ in range(60)]
    arrivals = [e for e in expected if e is not None]
    assert {e.status for e in arrivals} >= {"ok", "failed"} and None in expected  # a varied run
    assert any(e.outcome.link_wait_s > 0 for e in arrivals)

    first, driver = fleet_world(), Driver()
    before = [driver.step(first) for _ in range(25)]
    assert before == expected[:25]
    assert len(first.in_flight()) >= 2
    snap = json.loads(json.dumps(first.snapshot()))

    resumed = fleet_world()
    resumed.restore(snap)
    assert resumed.clock_s == first.clock_s and resumed.in_flight() == first.in_flight()
    assert resumed.snapshot() == snap
    assert resumed.base.upload_bytes == first.base.upload_bytes
    assert np.array_equal(resumed.idle_energy_j(), first.idle_energy_j())
    after = [driver.step(resumed) for _ in range(35)]
    assert after == expected[25:]
    assert resumed.snapshot()["log"] == whole.snapshot()["log"]
    assert np.array_equal(resumed.idle_energy_j(), whole.idle_energy_j()) and whole.idle_energy_j().sum() > 0


def test_restore_between_plan_and_launch() -> None:
    w = world([replace(BASE, failure_prob=0.5)] * 3, rate=0.1, ingress=5.0)
    start(w, 1, [DeviceReport(0, 3e9, 0, 100_000, 1000)])
    w.plan(2, [1, 2], 0)
    snap = json.loads(json.dumps(w.snapshot()))
    resumed = world([replace(BASE, failure_prob=0.5)] * 3, rate=0.1, ingress=5.0)
    resumed.restore(snap)
    reports = [DeviceReport(d, 3e9, 0, 100_000, 1000) for d in (1, 2)]
    for x in (w, resumed):
        x.launch(2, reports)
    assert drain(resumed) == drain(w)


# --------------------------------------------------------------------------- refusals


def test_bernoulli_devices_are_drawn_per_version_and_an_idle_fleet_is_drawn_again() -> None:
    """A bernoulli device is drawn at each version (the key a synchronous round would use), so within a version
    its draw holds; with nobody training and nobody drawn online, next_event returns None without moving the
    clock and the next ready() draws afresh: the fleet never stalls."""
    flaky = replace(BASE, name="flaky", availability_model="bernoulli", availability=0.3)
    w = world([flaky] * 6)
    first = w.ready(0, 6)
    assert first == w.ready(0, 6)  # the same version, the same draw
    draws = [first]
    for _ in range(40):
        if draws[-1]:
            break
        assert w.next_event() is None and not w.stalled() and w.clock_s == 0.0
        draws.append(w.ready(0, 6))
    assert draws[-1], "forty fresh draws of six devices at 0.3 all came out offline"
    online = [d for v in range(200) for d in w.ready(v, 6)]  # over many versions, about 30% of the devices
    assert abs(len(online) / 1200 - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 1200)


def test_launching_what_was_not_planned_is_refused() -> None:
    w = world([BASE] * 2)
    with pytest.raises(InputError, match="dispatch 1 was not planned"):
        w.launch(1, [DeviceReport(0, 3e9, 0, 0, 1000)])
    w.plan(1, [0], 0)
    with pytest.raises(InputError, match="device 1 was not planned"):
        w.launch(1, [DeviceReport(1, 3e9, 0, 0, 1000)])
    with pytest.raises(InputError, match="must follow"):
        w.plan(1, [1], 0)
