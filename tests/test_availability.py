"""Availability models, mid-round failures, speed jitter and the shared server link.

Statistical tests are seeded; each tolerance is a few standard errors of its
estimate (worked out next to it), so they are tight enough to catch a wrong
model and never flaky.
"""

from __future__ import annotations

import itertools
from collections import Counter
import json
import math
import random
import time
from dataclasses import replace

import numpy as np
import pytest

from clients.errors import InputError
from fleet.world.availability import Availability, onoff_periods
from fleet.world.draws import keyed_uniforms
from fleet.world.link import fair_shares, water_level
from fleet.world.profiles import DeviceProfile, get_budget
from fleet.world.rounds import Carried, DeviceWork, simulate_round
from fleet.world.timing import DEFAULT_PLAN_QUANTILE, failure_delay, failure_fraction, planned_speed, speed_factor
from fleet.world.sync_world import SimWorld, is_online
from server.bookkeeping import DeviceReport

# 3 GFLOP/s sustained, 10 Mbit/s each way, 50 ms latency: easy numbers.
BASE = DeviceProfile(name="base", peak_gflops=10.0, efficiency=0.3, memory_mb=64.0, downlink_mbps=10.0,
                     uplink_mbps=10.0, downlink_latency_s=0.05, uplink_latency_s=0.05, active_w=5.0, radio_w=2.0,
                     idle_w=1.0, availability=0.5)
GENEROUS = get_budget("generous")


def world(profiles, *, deadline_s=None, rate=0.0, seed=0, ingress=None, egress=None,
          quantile=DEFAULT_PLAN_QUANTILE, keep_first=None) -> SimWorld:
    return SimWorld(profiles, GENEROUS, deadline_s=deadline_s, keep_first=keep_first, offline_rate_per_s=rate,
                    seed=seed, server_ingress_mbps=ingress, server_egress_mbps=egress, plan_quantile=quantile)


def reports_from(plans: dict, flops: float, nbytes: int) -> list[DeviceReport]:
    """What the devices do with their plans: train `flops` (or, in whole steps, just under their budget),
    crash where told to."""
    out = []
    for d, plan in sorted(plans.items()):
        work = min(flops, plan.get("compute-flops", math.inf) * (1 - 1e-9))
        crash = plan.get("fail-after-flops", math.inf)
        if crash < work:
            out.append(DeviceReport(d, crash, nbytes, 0, 1000, status="failed"))
        else:
            out.append(DeviceReport(d, work, nbytes, nbytes, 1000))
    return out


# --------------------------------------------------------------------------- keyed draws


def test_keyed_uniforms_are_exactly_numpys_keyed_generators() -> None:
    rng = np.random.default_rng(5)
    devices = np.concatenate([np.arange(50), rng.integers(0, 2**32, 50)])
    for seed, server_round, stream in [(0, 1, 0), (7, 123, 1), (2**32 - 1, 99_999, 4), (2**40, 3, 0)]:
        want = [np.random.default_rng([seed, server_round, int(d), stream]).random() for d in devices]
        assert keyed_uniforms(seed, server_round, devices, stream).tolist() == want


# --------------------------------------------------------------------------- availability


def test_bernoulli_availability_draws_what_it_always_drew() -> None:
    profiles = [replace(BASE, availability=a) for a in (0.2, 0.5, 0.9)] * 20
    w = world(profiles, seed=9)
    for server_round in (1, 2, 50):
        want = [d for d in range(60)
                if np.random.default_rng([9, server_round, d, 0]).random() < profiles[d].availability]
        assert w.online(server_round, list(range(60))) == want
        assert want == [d for d in range(60) if is_online(profiles[d], 9, server_round, d)]
    assert w.online(3, [5, 1, 4]) == [d for d in [5, 1, 4] if d in w.online(3, list(range(60)))]


def test_always_available_devices_are_online_every_round() -> None:
    w = world([replace(BASE, availability_model="always", availability=0.01)] * 30)
    for server_round in range(1, 20):
        assert w.online(server_round, list(range(30))) == list(range(30))
        w.plan(server_round, [], 1000)
        w.settle(server_round, [])


def test_onoff_periods_have_the_mean_lengths_asked_for() -> None:
    # 10,000 periods of each kind: the standard error of an exponential mean is mean/sqrt(n) = 1%; allow 4%.
    mean_on, mean_off = 120.0, 45.0
    on, off = [], []
    for device in range(20):
        for is_on, length in itertools.islice(onoff_periods(3, device, mean_on, mean_off), 1000):
            (on if is_on else off).append(length)
    assert len(on) == len(off) == 10_000
    assert np.mean(on) == pytest.approx(mean_on, rel=0.04)
    assert np.mean(off) == pytest.approx(mean_off, rel=0.04)
    assert np.std(on) == pytest.approx(mean_on, rel=0.06)  # exponential: sd = mean
    first = [next(onoff_periods(3, d, mean_on, mean_off))[0] for d in range(4000)]
    # the initial state is on with the stationary share 120/165 = 0.727; sd of the share 0.007: allow 0.03
    assert np.mean(first) == pytest.approx(mean_on / (mean_on + mean_off), abs=0.03)


def test_onoff_devices_are_online_the_stationary_share_of_rounds_and_follow_their_timeline() -> None:
    # 400 devices x 250 rounds of 37 s, periods of mean 60 s on and 40 s off: online share 0.6. Rounds are
    # correlated (exp(-37/24) = 0.21), so the share's standard error is sqrt(0.24/1e5 * 1.54) = 0.002: allow 0.01.
    n, rounds, length = 400, 250, 37.0
    w = world([replace(BASE, availability_model="onoff", mean_on_s=60.0, mean_off_s=40.0)] * n,
              deadline_s=length, seed=4)
    seen = np.zeros((rounds, n), dtype=bool)
    starts = []
    for r in range(rounds):
        starts.append(w.clock_s)
        seen[r, w.online(r + 1, list(range(n)))] = True
        w.plan(r + 1, [], 1000)
        w.settle(r + 1, [])  # nothing arrives: the round lasts its deadline
    assert w.clock_s == pytest.approx(rounds * length)
    assert seen.mean() == pytest.approx(0.6, abs=0.01)
    for device in range(5):  # the simpy processes play out exactly the device's keyed timeline
        switches = np.cumsum([0.0] + [t for _, t in itertools.islice(onoff_periods(4, device, 60.0, 40.0), 400)])
        states = [s for s, _ in itertools.islice(onoff_periods(4, device, 60.0, 40.0), 400)]
        expect = [states[np.searchsorted(switches, t, side="right") - 1] for t in starts]
        assert seen[:, device].tolist() == expect


def test_onoff_availability_has_memory_across_rounds() -> None:
    # rounds of 5 s against periods of 600 s on / 300 s off: an online device is almost surely online next round
    n = 300
    w = world([replace(BASE, availability_model="onoff", mean_on_s=600.0, mean_off_s=300.0)] * n,
              deadline_s=5.0, seed=2)
    seen = []
    for r in range(1, 41):
        seen.append(set(w.online(r, list(range(n)))))
        w.plan(r, [], 1000)
        w.settle(r, [])
    stay = [len(a & b) / len(a) for a, b in zip(seen, seen[1:])]
    assert np.mean(stay) > 0.97 and 0.5 < np.mean([len(s) / n for s in seen]) < 0.85


def test_availability_asked_about_the_past_replays_from_the_start() -> None:
    a = Availability([replace(BASE, availability_model="onoff", mean_on_s=10.0, mean_off_s=10.0)] * 50, seed=1)
    late = a.online(1, list(range(50)), 500.0)
    early = a.online(1, list(range(50)), 100.0)
    fresh = Availability([replace(BASE, availability_model="onoff", mean_on_s=10.0, mean_off_s=10.0)] * 50, seed=1)
    assert fresh.online(1, list(range(50)), 100.0) == early and fresh.online(1, list(range(50)), 500.0) == late


# --------------------------------------------------------------------------- failures


def test_failure_prob_fails_about_that_share_of_device_rounds() -> None:
    # 200 devices x 100 rounds = 20,000 device-rounds at p = 0.1: sd of the count sqrt(n p (1-p)) = 42; allow 170.
    p, n, rounds = 0.1, 200, 100
    w = world([replace(BASE, failure_prob=p)] * n, deadline_s=30.0, seed=12)
    failed, fractions = 0, []
    for r in range(1, rounds + 1):
        plans = w.plan(r, list(range(n)), 1_250_000)
        timing = w.settle(r, reports_from(plans, math.inf, 1_250_000))  # every device uses its whole budget
        failed += sum(1 for s in timing.statuses.values() if s == "failed")
        fractions += [f for f in failure_fraction(p, 12, r, range(n)) if math.isfinite(f)]
    assert abs(failed - p * n * rounds) < 170
    assert failed == len(fractions)  # work that fills the plan: every drawn failure happens
    assert np.mean(fractions) == pytest.approx(0.5, abs=0.03)  # uniform over the work: sd 0.0065


def test_failure_prob_holds_when_devices_do_less_than_planned() -> None:
    # no deadline and work that varies 30x from round to round, so plans are often too long; a device that
    # finished training before its failure point fails in its upload instead. 20,000 device-rounds: allow 170.
    p, n, rounds = 0.1, 200, 100
    w = world([replace(BASE, failure_prob=p, speed_jitter=0.2)] * n, seed=13)
    rng = np.random.default_rng(0)
    failed, in_upload = 0, 0
    for r in range(1, rounds + 1):
        plans = w.plan(r, list(range(n)), 1_250_000)
        timing = w.settle(r, reports_from(plans, float(rng.uniform(1e9, 30e9)), 1_250_000))
        failed += sum(1 for d in timing.devices if d.status == "failed")
        in_upload += sum(1 for d in timing.devices if d.status == "failed" and d.upload_s > 0)
        assert sum(1 for d in timing.devices if d.status == "failed") == len(w.chance_at)  # each draw fails
    assert abs(failed - p * n * rounds) < 170 and in_upload > 0


def test_a_failure_falls_within_the_planned_work_and_the_earlier_failure_wins() -> None:
    n = 400
    w = world([replace(BASE, failure_prob=0.5)] * n, rate=0.02, seed=3)  # no deadline
    down = up = 0.05 + 8 * 1_250_000 / 10e6
    plans = w.plan(1, list(range(n)), 1_250_000)
    fractions = failure_fraction(0.5, 3, 1, range(n))
    for d in range(n):  # nothing known of their compute yet: the planned work is the two transfers
        assert w.fail_at[d] == pytest.approx(min(failure_delay(0.02, 3, 1, d), fractions[d] * (down + up)))
    w.settle(1, reports_from(plans, 30e9, 1_250_000))  # 10 s of compute each
    w.plan(2, list(range(n)), 1_250_000)
    late = [w.fail_at[d] for d in range(n) if math.isfinite(failure_fraction(0.5, 3, 2, [d])[0])]
    assert max(late) > down + up and max(late) <= down + 10.0 + up  # now the compute is planned too
    snap = json.loads(json.dumps(w.snapshot()))
    assert len(snap["expected_flops"]) > 0 and snap["mean_flops"] == pytest.approx(30e9)


def test_crash_points_reach_the_device_and_the_settle_agrees() -> None:
    w = world([replace(BASE, failure_prob=0.9, speed_jitter=0.3)] * 50, deadline_s=20.0, seed=8)
    plans = w.plan(1, list(range(50)), 1_250_000)
    timing = w.settle(1, reports_from(plans, math.inf, 1_250_000))
    for d in timing.devices:
        if math.isfinite(w.fail_at[d.device_id]):
            assert d.status == "failed" and d.end_s - d.start_s <= w.fail_at[d.device_id] * (1 + 1e-12)
        else:
            assert d.status in ("ok", "late")


# --------------------------------------------------------------------------- speed jitter


def test_no_jitter_is_exactly_no_change() -> None:
    assert speed_factor(0.0, 1, 1, range(100)).tolist() == [1.0] * 100
    plain = world([BASE] * 8, deadline_s=10.0, seed=5, rate=0.05)
    zero = world([replace(BASE, speed_jitter=0.0)] * 8, deadline_s=10.0, seed=5, rate=0.05)
    for w in (plain, zero):
        plans = w.plan(1, list(range(8)), 1_250_000)
        w.last = w.settle(1, reports_from(plans, 12e9, 1_250_000))
    assert plain.last == zero.last and all(d.speed_factor == 1.0 for d in plain.last.devices)


def test_jitter_has_mean_one_and_the_coefficient_of_variation_asked_for() -> None:
    # 40,000 factors at cv 0.2: the mean's standard error is 0.001 and the sd's about 0.0009: allow 0.005.
    for cv in (0.05, 0.2, 0.5):
        f = speed_factor(cv, 11, 3, range(40_000))
        assert f.mean() == pytest.approx(1.0, abs=0.005 * max(1.0, cv / 0.2))
        assert f.std() / f.mean() == pytest.approx(cv, abs=0.005 * max(1.0, cv / 0.2) ** 2)
        assert (f > 0).all()
    assert not np.array_equal(speed_factor(0.2, 11, 3, range(10)), speed_factor(0.2, 11, 4, range(10)))


@pytest.mark.parametrize("q", [0.1, 0.5])
def test_jitter_makes_a_device_that_uses_its_whole_budget_late_when_it_runs_below_its_planned_speed(q) -> None:
    n = 40
    w = world([replace(BASE, speed_jitter=0.3)] * n, deadline_s=20.0, seed=6, quantile=q)
    plans = w.plan(1, list(range(n)), 1_250_000)
    speed = planned_speed(0.3, q)
    assert [p["compute-flops"] for p in plans.values()] == [pytest.approx((20.0 - 2 * 1.05) * 3e9 * speed)] * n
    timing = w.settle(1, reports_from(plans, math.inf, 1_250_000))
    factors = speed_factor(0.3, 6, 1, range(n))
    assert [d.speed_factor for d in timing.devices] == factors.tolist()
    assert [d.status for d in timing.devices] == ["ok" if f >= speed else "late" for f in factors]


def test_the_planned_speed_is_the_quantile_of_the_jitter() -> None:
    sigma = math.sqrt(math.log1p(0.3**2))
    assert planned_speed(0.3, 0.5) == pytest.approx(math.exp(-sigma**2 / 2))  # the lognormal's median
    assert planned_speed(0.3, 0.1) == pytest.approx(math.exp(-1.2815515655446004 * sigma - sigma**2 / 2))
    assert planned_speed(0.0, 0.1) == 1.0
    assert planned_speed(0.3, 0.05) < planned_speed(0.3, 0.1) < planned_speed(0.3, 0.5) < 1.0


@pytest.mark.parametrize("q", [0.1, 0.3])
def test_over_ten_thousand_planned_rounds_a_jittered_device_is_late_in_a_share_q(q) -> None:
    # 100 compute-limited devices that train their whole budget, 100 rounds: 10,000 planned device-rounds,
    # each with its own keyed speed. The late share's standard error is sqrt(q(1-q)/10,000) = 0.003 (q 0.1)
    # or 0.0046 (q 0.3): allow four of them.
    n, rounds = 100, 100
    w = world([replace(BASE, speed_jitter=0.2)] * n, deadline_s=20.0, seed=3, quantile=q)
    late = 0
    for r in range(1, rounds + 1):
        plans = w.plan(r, list(range(n)), 1_250_000)
        late += list(w.settle(r, reports_from(plans, math.inf, 1_250_000)).statuses.values()).count("late")
    assert late / (n * rounds) == pytest.approx(q, abs=4 * math.sqrt(q * (1 - q) / (n * rounds)))


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5])
def test_a_plan_quantile_outside_the_open_unit_interval_is_refused(q) -> None:
    with pytest.raises(InputError, match="plan_quantile must be in \\(0, 1\\)"):
        world([BASE], deadline_s=20.0, quantile=q)


# --------------------------------------------------------------------------- the server's ingress link


def fast(**kw) -> DeviceProfile:
    return replace(BASE, uplink_mbps=1e6, downlink_mbps=1e6, uplink_latency_s=0.0, downlink_latency_s=0.0, **kw)


def uploads(profiles, nbytes: int, **kw) -> list[DeviceWork]:
    return [DeviceWork(i, p, 0.0, down_bytes=0, up_bytes=nbytes, peak_memory_bytes=0, **kw)
            for i, p in enumerate(profiles)]


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_n_uploads_share_the_server_link(n: int) -> None:
    size, mbps = 1_000_000, 80.0  # 10 MB/s
    r = simulate_round(uploads([fast()] * n, size), start_s=3.0, deadline_s=None, keep_first=None,
                       ingress_mbps=mbps)
    assert r.end_s == pytest.approx(3.0 + n * size / 10e6, rel=1e-12)
    assert all(d.upload_s == pytest.approx(n * size / 10e6, rel=1e-12) for d in r.devices)


def test_uploads_take_no_less_than_the_link_allows_and_own_uplinks_still_bind() -> None:
    size, mbps, n = 1_000_000, 80.0, 20
    links = zip(itertools.cycle([2.0, 5.0, 40.0, 1000.0]), itertools.cycle([0.0, 0.01, 0.3]))
    mixed = [replace(BASE, uplink_mbps=u, uplink_latency_s=lat) for u, lat in itertools.islice(links, n)]
    works = [DeviceWork(i, p, 3e9 * (i % 3), down_bytes=0, up_bytes=size, peak_memory_bytes=0)
             for i, p in enumerate(mixed)]
    shared = simulate_round(works, start_s=0.0, deadline_s=None, keep_first=None, ingress_mbps=mbps)
    alone = simulate_round(works, start_s=0.0, deadline_s=None, keep_first=None)
    assert shared.end_s >= n * size / 10e6 * (1 - 1e-12)
    for s, a in zip(shared.devices, alone.devices):
        assert s.upload_s >= a.upload_s * (1 - 1e-12)  # sharing never speeds an upload up
    rng = random.Random(1)
    assert simulate_round(rng.sample(works, n), start_s=0.0, deadline_s=None, keep_first=None,
                          ingress_mbps=mbps) == shared


def test_a_device_held_back_by_its_own_uplink_leaves_the_rest_of_the_link_to_others() -> None:
    size = 1_000_000
    slow = replace(fast(), uplink_mbps=20.0)  # a quarter of the link
    r = simulate_round(uploads([slow, fast()], size), start_s=0.0, deadline_s=None, keep_first=None,
                       ingress_mbps=80.0)
    assert [d.upload_s for d in r.devices] == [pytest.approx(size / 2.5e6), pytest.approx(size / 7.5e6)]
    assert fair_shares([20.0, 1e6, 1e6], 80.0) == [20.0, 30.0, 30.0]
    assert water_level([(20.0, 1), (50.0, 2)], 200.0) == math.inf


def test_a_device_failing_mid_upload_frees_the_link() -> None:
    size = 1_000_000
    works = uploads([fast(), fast()], size)
    works[0] = replace(works[0], fail_at_s=0.04)  # half-way through its share
    r = simulate_round(works, start_s=0.0, deadline_s=None, keep_first=None, ingress_mbps=80.0)
    (gone, ok) = r.devices
    assert gone.status == "failed" and gone.upload_s == pytest.approx(0.04)
    assert ok.status == "ok" and ok.upload_s == pytest.approx(0.04 + (size - 0.04 * 5e6) / 10e6)


def test_the_plan_budgets_each_upload_at_its_share_of_the_server_link() -> None:
    n, size = 100, 1_250_000  # alone 1.05 s up; at a 100th of 100 Mbit/s, 10 s
    w = world([BASE] * n, deadline_s=60.0, ingress=100.0)
    plans = w.plan(1, list(range(n)), size)
    assert plans[0]["compute-flops"] == pytest.approx((60.0 - 1.05 - 0.05 - 10.0) * 3e9)
    timing = w.settle(1, reports_from(plans, math.inf, size))
    assert set(timing.statuses.values()) == {"ok"} and timing.sim_time_s == pytest.approx(60.0)
    unlimited = world([BASE] * n, deadline_s=60.0)
    plans = unlimited.plan(1, list(range(n)), size)
    w.plan(2, list(range(n)), size)
    assert set(w.settle(2, reports_from(plans, math.inf, size)).statuses.values()) == {"late"}


def test_a_late_upload_slows_an_on_time_upload_of_the_next_round_by_the_fair_share_amount() -> None:
    link = 80.0  # 10 MB/s
    late = DeviceWork(1, fast(), 0.9 * 3e9, down_bytes=0, up_bytes=2_000_000, peak_memory_bytes=0)
    first = simulate_round([late], start_s=0.0, deadline_s=1.0, keep_first=None, ingress_mbps=link)
    # on the link from 0.9 s alone at 10 MB/s: 1 MB crossed by the close at 1 s, 1 MB left; it ends at 1.1 s
    assert first.end_s == 1.0 and first.devices[0].status == "late"
    assert first.devices[0].end_s == pytest.approx(1.1)
    assert first.carry == (Carried(1, 1.0, pytest.approx(1e6), 1e6 * 1e6 / 8),)
    on_time = DeviceWork(0, fast(), 0.0, down_bytes=0, up_bytes=1_000_000, peak_memory_bytes=0)
    alone = simulate_round([on_time], start_s=1.0, deadline_s=1.0, keep_first=None, ingress_mbps=link)
    shared = simulate_round([on_time], start_s=1.0, deadline_s=1.0, keep_first=None, ingress_mbps=link,
                            carried=first.carry)
    assert alone.devices[0].upload_s == pytest.approx(0.1)
    # both have 1 MB to send from 1 s: 5 MB/s each, so both end at 1.2 s; the on-time upload waited 0.1 s
    assert shared.devices[0].upload_s == pytest.approx(0.2)
    # link_wait_s: what the server link added over its own (1 Tbit/s) uplink's 8 us
    assert shared.devices[0].link_wait_s - alone.devices[0].link_wait_s == pytest.approx(0.1)
    assert shared.devices[0].link_wait_s == pytest.approx(0.2 - 8e-6)
    assert shared.carried_end_s == {1: pytest.approx(1.2)} and shared.carry == ()
    assert shared.end_s == pytest.approx(1.2)  # everyone reported: the round closes


def test_a_late_upload_still_computing_at_the_close_joins_the_next_round_when_it_starts_sending() -> None:
    late = DeviceWork(1, fast(), 1.5 * 3e9, down_bytes=0, up_bytes=1_000_000, peak_memory_bytes=0)
    first = simulate_round([late], start_s=0.0, deadline_s=1.0, keep_first=None, ingress_mbps=80.0)
    assert first.carry == (Carried(1, pytest.approx(1.5), 1_000_000, 1e6 * 1e6 / 8),)
    on_time = DeviceWork(0, fast(), 0.5 * 3e9, down_bytes=0, up_bytes=1_000_000, peak_memory_bytes=0)
    second = simulate_round([on_time], start_s=1.0, deadline_s=1.0, keep_first=None, ingress_mbps=80.0,
                            carried=first.carry)
    # from 1.5 s both share the link: 1 MB each at 5 MB/s, both end at 1.7 s (alone, 1.6 s)
    assert second.devices[0].upload_s == pytest.approx(0.2) and second.carried_end_s == {1: pytest.approx(1.7)}


def test_the_world_keeps_a_late_device_busy_until_its_slowed_upload_ends_and_snapshots_the_link() -> None:
    w = world([fast(), fast()], deadline_s=1.0, ingress=80.0)
    w.plan(1, [1], 0)
    w.settle(1, [DeviceReport(1, 0.9 * 3e9, 0, 2_000_000, 1000)])
    assert w.busy_until[1] == pytest.approx(1.1) and len(w.carry) == 1
    resumed = world([fast(), fast()], deadline_s=1.0, ingress=80.0)
    resumed.restore(json.loads(json.dumps(w.snapshot())))
    for x in (w, resumed):
        x.plan(2, [0], 0)
        x.last = x.settle(2, [DeviceReport(0, 0.0, 0, 1_000_000, 1000)])
    assert w.last == resumed.last and w.busy_until == resumed.busy_until
    assert w.busy_until[1] == pytest.approx(1.2) and w.last.devices[0].upload_s == pytest.approx(0.2)


@pytest.mark.parametrize("n", [1, 5, 200])
def test_n_downloads_share_the_server_egress_and_the_plan_budgets_for_it(n: int) -> None:
    size = 1_250_000  # 1 s alone at 10 Mbit/s; n of them through a 10 Mbit/s egress take n s
    w = world([BASE] * n, deadline_s=float(3 * n), egress=10.0)
    plans = w.plan(1, list(range(n)), size)
    assert plans[0]["download-s"] == pytest.approx(0.05 + n * 1.0)
    assert plans[0]["compute-flops"] == pytest.approx((3 * n - 0.05 - n - 1.05) * 3e9 * planned_speed(0.0, 0.1))
    timing = w.settle(1, reports_from(plans, 0.0, size))
    assert all(d.download_s == pytest.approx(0.05 + n * 1.0) for d in timing.devices)


def test_bad_server_links_are_refused_naming_them() -> None:
    for kw, name in (({"egress_mbps": -1.0}, "egress_mbps"), ({"ingress_mbps": 0.0}, "ingress_mbps")):
        with pytest.raises(InputError, match=name):
            simulate_round([], start_s=0.0, deadline_s=None, keep_first=None, **kw)


def test_the_plan_expects_the_largest_update_a_device_has_sent_back() -> None:
    w = world([BASE], deadline_s=60.0)
    first = w.plan(1, [0], 1_250_000)
    w.settle(1, [DeviceReport(0, 1e9, 1_250_000, 2_500_000, 1000)])  # its update was twice the model's size
    second = w.plan(2, [0], 1_250_000)
    assert first[0]["compute-flops"] - second[0]["compute-flops"] == pytest.approx(1.0 * 3e9)  # 1 s more upload


def test_under_keep_first_simultaneous_arrivals_are_ordered_by_a_keyed_draw_not_by_id() -> None:
    n, keep, rounds = 10, 3, 400
    w = world([BASE] * n, deadline_s=100.0, keep_first=keep)
    wins = Counter()
    for r in range(1, rounds + 1):
        plans = w.plan(r, list(range(n)), 1000)
        timing = w.settle(r, reports_from(plans, 1e9, 1000))
        assert len(timing.accepted) == keep
        wins.update(timing.accepted)
        for d in range(n):
            w.busy_until[d] = 0.0
    # each device wins a share 3/10 of rounds: 120 of 400, standard deviation 9.2; allow 5 of them
    assert all(abs(wins[d] - rounds * keep / n) < 5 * math.sqrt(rounds * 0.3 * 0.7) for d in range(n))


def test_over_selection_closes_the_round_at_the_kth_arrival_and_the_rest_are_late_and_busy() -> None:
    """Four devices, 1, 2, 3 and 4 GFLOPs of work at 3 GFLOP/s (BASE): keeping 2 closes the round when the
    second arrives; the other two are late, their work wasted, and still busy when the next round starts.
    The world's own keep_first binds where it is fewer."""
    w = world([BASE] * 4)
    reports = [DeviceReport(d, (d + 1) * 1e9, 1000, 1000, 1000) for d in range(4)]
    w.plan(1, list(range(4)), 1000)
    timing = w.settle(1, reports, keep=2)
    assert timing.accepted == {0, 1} and timing.statuses == {0: "ok", 1: "ok", 2: "late", 3: "late"}
    second = next(o for o in timing.devices if o.device_id == 1)
    assert timing.sim_time_s == pytest.approx(second.end_s)
    assert w.free(list(range(4))) == [0, 1]
    fewer = world([BASE] * 4, keep_first=1)
    fewer.plan(1, list(range(4)), 1000)
    assert fewer.settle(1, reports, keep=2).accepted == {0}


# --------------------------------------------------------------------------- resuming


def fleet_of_every_kind() -> SimWorld:
    kinds = [replace(BASE, availability_model="onoff", mean_on_s=40.0, mean_off_s=25.0, failure_prob=0.2,
                     speed_jitter=0.3),
             replace(BASE, availability=0.7, failure_prob=0.1, speed_jitter=0.1, uplink_mbps=4.0),
             replace(BASE, availability_model="always", speed_jitter=0.5)]
    return world([kinds[d % 3] for d in range(24)], deadline_s=15.0, rate=0.01, seed=21, ingress=30.0)


def play(w: SimWorld, server_round: int) -> tuple:
    devices = w.free(w.online(server_round, list(range(24))))
    chosen = sorted(random.Random(server_round).sample(devices, min(10, len(devices))))
    plans = w.plan(server_round, chosen, 400_000)
    timing = w.settle(server_round, reports_from(plans, 20e9, 400_000))
    return devices, plans, timing


def test_the_world_with_every_model_continues_exactly_after_a_snapshot() -> None:
    straight = fleet_of_every_kind()
    expected = [play(straight, r) for r in range(1, 13)]
    first = fleet_of_every_kind()
    got = [play(first, r) for r in range(1, 7)]
    snap = json.loads(json.dumps(first.snapshot()))
    resumed = fleet_of_every_kind()
    resumed.restore(snap)
    got += [play(resumed, r) for r in range(7, 13)]
    assert got == expected
    assert {s for *_, t in expected for s in t.statuses.values()} >= {"ok", "failed"}
    first.restore(snap)  # the same world, rewound: its on/off processes replay from the start
    assert [play(first, r) for r in range(7, 13)] == expected[6:]


# --------------------------------------------------------------------------- scale


def test_ten_thousand_onoff_devices_over_a_hundred_rounds() -> None:
    n, rounds = 10_000, 100
    started = time.perf_counter()
    w = world([replace(BASE, availability_model="onoff", mean_on_s=600.0, mean_off_s=300.0, failure_prob=0.05,
                       speed_jitter=0.1)] * n, deadline_s=60.0, seed=1)
    built = time.perf_counter() - started
    rng = random.Random(0)
    for r in range(1, rounds + 1):
        free = w.free(w.online(r, list(range(n))))
        plans = w.plan(r, sorted(rng.sample(free, 100)), 200_000)
        w.settle(r, reports_from(plans, math.inf, 200_000))
    took = time.perf_counter() - started
    print(f"\n10,000 on/off devices: built in {built:.2f} s, 100 rounds (100 sampled each) in {took - built:.2f} s, "
          f"{(took - built) / rounds * 1000:.1f} ms a round, simulated {w.clock_s:.0f} s")
    assert w.clock_s == pytest.approx(60.0 * rounds)


def test_a_fleet_offline_for_a_stretch_waits_on_the_clock_and_resumes_when_a_device_comes_back() -> None:
    """No deadline and nobody online: the round ends at the next on/off switch (the clock used to freeze at
    0 and the devices never came back), and the next round starts there with that device online."""
    from fleet.world.availability import first_periods

    profile = replace(BASE, availability_model="onoff", mean_on_s=100.0, mean_off_s=10_000.0)
    seed = next(s for s in range(100) if not first_periods(s, [0, 1], 100.0, 10_000.0)[0].any())
    states, lengths = first_periods(seed, [0, 1], 100.0, 10_000.0)
    w = world([profile, profile], seed=seed)
    assert w.online(1, [0, 1]) == []
    timing = w.settle(1, [])
    back = float(lengths.min())  # the first switch: the device whose off period ends first comes online
    assert timing.start_s == 0.0 and timing.sim_time_s == back and w.clock_s == back
    assert w.online(2, [0, 1]) == [int(lengths.argmin())]


def test_a_fleet_of_bernoulli_devices_only_is_drawn_again_at_the_same_time() -> None:
    w = world([replace(BASE, availability=0.5)] * 2)
    assert w.settle(1, []).sim_time_s == 0.0  # no switch in time to wait for: the next round draws anew
