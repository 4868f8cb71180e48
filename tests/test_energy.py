"""Energy as the cited sources model it: Huang et al.'s LTE radio (power linear in throughput, an RRC tail after
each transfer burst), power under a compute budget, and the idle energy of every online device over a round."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import yaml

from clients.errors import InputError
from fleet.world.availability import Availability, first_periods, onoff_periods
from fleet.cli import main
from fleet.world import Ledger, SimWorld
from fleet.world.builtin_profiles import PROFILE_SOURCES, get_profile
from fleet.world.profiles import DeviceProfile, apply_budget, budget_active_w, get_budget
from fleet.config import load_scenario
from fleet.world.rounds import DeviceWork, simulate_round
from fleet.world.timing import compute_time_s, energy_j, moved_mbit, tail_time_s
from server.bookkeeping import DeviceReport, RoundTiming, Totals, book_round, round_row


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-12)


# Every time and figure exact in binary: 5e8 FLOP/s; 8 Mbit/s (1e6 B/s) each way, no latency, so 500,000 bytes
# take 0.5 s and move 4 Mbit; a 4 s tail at 2 W.
CELL = DeviceProfile("cell", peak_gflops=1.0, efficiency=0.5, memory_mb=1.0, downlink_mbps=8.0, uplink_mbps=8.0,
                     downlink_latency_s=0.0, uplink_latency_s=0.0, active_w=4.0, radio_w=1.0, idle_w=0.5,
                     availability=1.0, downlink_w_per_mbps=0.25, uplink_w_per_mbps=0.5, tail_s=4.0, tail_w=2.0)
HALF_MB = 500_000


def cell_work(device_id: int, flops: float, profile: DeviceProfile = CELL) -> DeviceWork:
    return DeviceWork(device_id, profile, flops, down_bytes=HALF_MB, up_bytes=HALF_MB, peak_memory_bytes=0)


# --------------------------------------------------------------------------- the tail


def test_the_tail_runs_after_each_burst_and_a_transfer_inside_it_cuts_it():
    assert tail_time_s([(0.0, 1.0), (1.0, 2.0)], stop_s=100.0, tail_s=8.0) == 8.0  # back to back: one burst, one tail
    assert tail_time_s([(0.0, 1.0), (20.0, 21.0)], stop_s=100.0, tail_s=8.0) == 16.0  # more than 8 s apart: two
    assert tail_time_s([(0.0, 1.0), (5.0, 6.0)], stop_s=100.0, tail_s=8.0) == 4.0 + 8.0  # cut at 5 s, then the last's
    assert tail_time_s([(0.0, 1.0)], stop_s=3.0, tail_s=8.0) == 2.0  # counted only while the device is in the round
    assert tail_time_s([(0.0, 1.0), (20.0, 21.0)], stop_s=100.0, tail_s=0.0) == 0.0
    assert tail_time_s([], stop_s=100.0, tail_s=8.0) == 0.0


def test_a_round_pays_the_tail_once_per_transfer_burst_in_exact_joules():
    # A computes nothing: its upload starts as its download ends, one burst. B computes 5 s, longer than the
    # tail: its download's tail runs out before its upload. C computes 2 s: its upload cuts the download's tail.
    # Arrivals at 1.0, 3.0 and 6.0 s; the round closes at the last.
    r = simulate_round([cell_work(0, 0.0), cell_work(1, 2.5e9), cell_work(2, 1e9)], start_s=0.0, deadline_s=12.0,
                       keep_first=None)
    a, b, c = r.devices
    assert r.end_s == 6.0 and r.accepted == (0, 1, 2)
    # every one: radio 1 s x 1 W, 4 Mbit down x 0.25 W and 4 up x 0.5 W per Mbit/s, so 1 + 3 J
    # A: one tail, 1.0 -> 5.0 s, x 2 W; idle 1.0 -> 6.0 x 0.5 W
    assert a.tail_s == 4.0 and a.energy_j == approx(1.0 + 3.0 + 4.0 * 2.0 + 5.0 * 0.5)
    # B: compute 5 s x 4 W; the download's tail 0.5 -> 4.5 runs out before the upload (5.5 -> 6.0); the upload's
    # tail would start at the close: not the round's (the device has left it)
    assert b.tail_s == 4.0 and b.energy_j == approx(20.0 + 1.0 + 3.0 + 4.0 * 2.0)
    # C: compute 2 s x 4 W; the download's tail 0.5 -> 2.5 (cut by the upload), the upload's 3.0 -> 6.0 (the close)
    assert c.tail_s == 2.0 + 3.0 and c.energy_j == approx(8.0 + 1.0 + 3.0 + 5.0 * 2.0 + 3.0 * 0.5)


SLOW = 1e11  # 200 s of compute: late, so the round stays open until its deadline


@pytest.mark.parametrize("flops, tail_s, joules", [
    # download 0 -> 0.5, compute, upload, then idle to the deadline 12 s after the start; radio 1 s x 1 W and 3 J
    # for the megabits in every case. Zero compute: download and upload are one burst: ONE tail (4 s x 2 W = 8 J).
    (0.0, 4.0, 1.0 + 3.0 + 11.0 * 0.5 + 1 * 8.0),
    # 5 s of compute (more than the tail): the download's tail runs out before the upload: TWO tails.
    (2.5e9, 8.0, 5.0 * 4.0 + 1.0 + 3.0 + 6.0 * 0.5 + 2 * 8.0),
    # 2 s of compute: the upload cuts the download's tail at 2 s, then its own tail: 2 + 4 s.
    (1e9, 6.0, 2.0 * 4.0 + 1.0 + 3.0 + 9.0 * 0.5 + 6.0 * 2.0),
])
def test_tail_joules_per_burst(flops, tail_s, joules):
    # a late device keeps the round open to its deadline at 112 s, so the upload's tail runs its whole 4 s
    r = simulate_round([cell_work(0, flops), cell_work(9, SLOW)], start_s=100.0, deadline_s=12.0, keep_first=None)
    d = r.devices[0]
    assert r.end_s == 112.0 and d.status == "ok"
    assert d.tail_s == approx(tail_s) and d.energy_j == approx(joules)
    flat = replace(CELL, tail_s=0.0)
    without = simulate_round([cell_work(0, flops, flat), cell_work(9, SLOW, flat)], start_s=100.0, deadline_s=12.0,
                             keep_first=None).devices[0]
    assert without.tail_s == 0.0 and d.energy_j - without.energy_j == approx(CELL.tail_w * tail_s)


def test_a_late_device_pays_its_tail_to_its_end_and_a_failed_one_to_its_failure():
    late = simulate_round([cell_work(0, 2.5e9)], start_s=0.0, deadline_s=5.0, keep_first=None).devices[0]
    # arrives at 6.0 after the close at 5.0: the download's tail (4 s) is counted, the upload's (after its end) not
    assert late.status == "late" and late.tail_s == 4.0
    assert late.energy_j == approx(20.0 + 1.0 + 3.0 + 4.0 * 2.0)
    failed = simulate_round([replace(cell_work(0, 2.5e9), fail_at_s=2.0)], start_s=0.0, deadline_s=12.0,
                            keep_first=None).devices[0]
    # fails 1.5 s into its compute: 1.5 s of the download's tail, then nothing
    assert failed.status == "failed" and failed.tail_s == 1.5
    assert failed.energy_j == approx(1.5 * 4.0 + 0.5 * 1.0 + 4 * 0.25 + 1.5 * 2.0)


# --------------------------------------------------------------------------- radio power as measured


def test_the_throughput_term_is_energy_per_megabit_moved():
    assert moved_mbit(0.5, HALF_MB, 8.0, 0.0) == 4.0  # done: all of it
    assert moved_mbit(2.0, HALF_MB, 8.0, 0.0) == 4.0  # a slow fair share of a server link moves no more
    assert moved_mbit(0.25, HALF_MB, 8.0, 0.0) == 2.0  # cut short: its own rate's worth
    assert moved_mbit(0.05, HALF_MB, 8.0, 0.1) == 0.0  # still in its latency
    assert energy_j(0.0, 2.0, 0.0, CELL, down_mbit=4.0, up_mbit=4.0, tail_s=1.0) == 2.0 + 1.0 + 2.0 + 2.0


def test_the_phone_radio_is_huangs_model_at_its_link_rates():
    phone = get_profile("phone")
    assert (phone.radio_w, phone.downlink_w_per_mbps, phone.uplink_w_per_mbps) == (1.288, 0.052, 0.438)
    assert phone.download_w == approx(1.288 + 0.052 * 20) == approx(2.328)
    assert phone.upload_w == approx(1.288 + 0.438 * 8) == approx(4.792)
    assert (phone.tail_s, phone.tail_w) == (11.576, 1.06)
    sources = PROFILE_SOURCES["phone"]
    assert all("MobiSys 2012" in sources[f] for f in ("radio_w", "downlink_w_per_mbps", "uplink_w_per_mbps",
                                                        "tail_s", "tail_w"))
    assert "do not lower the power" in sources["radio_w"] and "2.5 W" not in sources["radio_w"]
    # every other built-in keeps one transfer power and has no tail
    for name in ("rpi5", "rpi4", "rpi4-wifi", "rpi-zero2w", "jetson-nano", "mcu"):
        p = get_profile(name)
        assert p.download_w == p.radio_w == p.upload_w and p.tail_s == p.tail_w == 0.0, name


def test_a_phone_round_in_exact_joules():
    # 1 s of compute at 20 GFLOP/s; 2.5 MB down in 0.05 + 1.0 s, 1 MB up in 0.06 + 1.0 s; deadline 60 s kept open
    phone = get_profile("phone")
    w = DeviceWork(0, phone, 2e10, down_bytes=2_500_000, up_bytes=1_000_000, peak_memory_bytes=0)
    slow = replace(w, device_id=9, train_flops=1e13)  # late: the round stays open to its deadline
    d = simulate_round([w, slow], start_s=0.0, deadline_s=60.0, keep_first=None).devices[0]
    assert (d.download_s, d.compute_s, d.upload_s) == (approx(1.05), approx(1.0), approx(1.06))
    # the upload at 2.05 s cuts the download's tail at 1.0 s; the upload's runs 11.576 s (to 14.686 < 60)
    assert d.tail_s == approx(1.0 + 11.576)
    joules = 5.0 * 1.0 + 1.288 * 2.11 + 0.052 * 20 + 0.438 * 8 + 0.5 * (60 - 3.11) + 1.06 * 12.576
    assert d.energy_j == approx(joules) == approx(54.03724)
    # under `tight`: half the clock at 2.75 W, half the rates, the same megabits and tails
    tight = apply_budget(phone, get_budget("tight"))
    t = simulate_round([replace(w, profile=tight), replace(slow, profile=tight)], start_s=0.0, deadline_s=60.0,
                       keep_first=None).devices[0]
    assert (t.download_s, t.compute_s, t.upload_s) == (approx(2.05), approx(2.0), approx(2.06))
    assert t.tail_s == approx(2.0 + 11.576)
    joules = 2.75 * 2.0 + 1.288 * 4.11 + 0.052 * 20 + 0.438 * 8 + 0.5 * (60 - 6.11) + 1.06 * 13.576
    assert t.energy_j == approx(joules) == approx(56.67324)


def test_a_bandwidth_budget_lowers_the_throughput_term_only():
    tight = apply_budget(get_profile("phone"), get_budget("tight"))
    assert tight.radio_w == 1.288 and (tight.downlink_mbps, tight.uplink_mbps) == (10.0, 4.0)
    assert tight.download_w == approx(1.288 + 0.052 * 10) == approx(1.808)
    assert tight.upload_w == approx(1.288 + 0.438 * 4) == approx(3.04)
    assert (tight.tail_s, tight.tail_w) == (11.576, 1.06)


# --------------------------------------------------------------------------- power under a compute budget


def test_a_compute_budget_scales_the_power_above_idle_with_the_clock():
    phone = get_profile("phone")
    assert apply_budget(phone, get_budget("tight")).active_w == 2.75 == 0.5 + (5.0 - 0.5) * 0.5
    assert apply_budget(phone, get_budget("starved")).active_w == 1.625 == 0.5 + (5.0 - 0.5) * 0.25
    assert apply_budget(get_profile("rpi5"), get_budget("tight")).active_w == approx(2.7 + (11.0 - 2.7) * 0.5)
    for name in ("rpi5", "rpi4", "rpi4-wifi", "rpi-zero2w", "jetson-nano", "phone", "mcu"):
        p = get_profile(name)
        assert budget_active_w(p, 1.0) == p.active_w and apply_budget(p, get_budget("generous")) == p, name
    assert budget_active_w(replace(phone, active_w=0.1, idle_w=1.0), 3.0) == 0.0  # never negative


def test_a_flop_under_tight_costs_its_dynamic_energy_plus_a_longer_idle_floor():
    phone = get_profile("phone")
    tight = apply_budget(phone, get_budget("tight"))
    flops = 4e10
    full = energy_j(compute_time_s(flops, phone), 0.0, 0.0, phone)
    half = energy_j(compute_time_s(flops, tight), 0.0, 0.0, tight)
    assert (full, half) == (approx(10.0), approx(11.0))  # 2 s at 5 W; 4 s at 2.75 W: 1.1x, no longer 2x
    assert half - full == approx(phone.idle_w * (4.0 - 2.0))  # the floor paid for the extra 2 s


# --------------------------------------------------------------------------- idle energy of the online fleet


def always(name: str = "always", idle_w: float = 0.5) -> DeviceProfile:
    return replace(CELL, name=name, availability_model="always", tail_s=0.0, idle_w=idle_w)


def test_online_seconds_always_and_bernoulli():
    coin = replace(always("coin"), availability_model="bernoulli", availability=0.5)
    profiles = [always(), coin, coin, coin, coin, coin, coin]
    a = Availability(profiles, seed=3)
    since = np.array([0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 30.0])
    secs = a.online_seconds(4, 10.0, 20.0, since)
    online = set(a.online(4, list(range(7)), 10.0))
    assert secs[0] == 10.0
    for d in range(1, 7):  # all of the stretch or none, as the round's draw says; from `since` on
        expected = (20.0 - max(10.0, since[d])) if d in online else 0.0
        assert secs[d] == max(0.0, expected), d
    assert 0 < len(online - {0}) < 6  # the draw goes both ways here


def brute_onoff(seed: int, device: int, mean_on: float, mean_off: float, lo: float, hi: float) -> float:
    """Online seconds in [lo, hi], walking the device's periods from time 0."""
    states, lengths = first_periods(seed, [device], mean_on, mean_off)
    t, total = 0.0, 0.0
    for on, length in onoff_periods(seed, device, mean_on, mean_off, first=(bool(states[0]), float(lengths[0]))):
        if t >= hi:
            return total
        if on:
            total += max(0.0, min(t + length, hi) - max(t, lo))
        t += length
    return total


def test_online_seconds_of_onoff_devices_are_their_periods_inside():
    flicker = replace(always("flicker"), availability_model="onoff", mean_on_s=40.0, mean_off_s=25.0)
    profiles = [flicker] * 12
    a = Availability(profiles, seed=11)
    a.online(1, list(range(12)), 50.0)  # the world has been asked at the round's start
    since = np.array([100.0] * 6 + [150.0, 200.0, 260.0, 399.0, 500.0, 100.0])
    secs = a.online_seconds(2, 100.0, 400.0, since)
    expected = [brute_onoff(11, d, 40.0, 25.0, max(100.0, since[d]), 400.0) for d in range(12)]
    assert secs.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert sum(0 < s < 300 for s in secs[:6]) >= 3  # devices that switched inside the stretch
    # asked again after a restore (the processes replay from 0), or for a later round: the same timeline
    a.reset()
    assert a.online_seconds(2, 100.0, 400.0, since).tolist() == pytest.approx(expected, rel=1e-12, abs=1e-9)
    later = a.online_seconds(3, 400.0, 700.0, 400.0)
    assert later.tolist() == pytest.approx([brute_onoff(11, d, 40.0, 25.0, 400.0, 700.0) for d in range(12)],
                                           rel=1e-12, abs=1e-9)


def world(profiles, deadline_s=None) -> SimWorld:
    from fleet.world import BudgetProfile
    budget = BudgetProfile("none", compute_scale=1.0, memory_scale=1.0, bandwidth_scale=1.0, deadline_s=None)
    return SimWorld(profiles, budget, deadline_s=deadline_s, keep_first=None, offline_rate_per_s=0.0, seed=0)


def test_settle_charges_idle_to_every_online_device_outside_what_energy_j_charges():
    # five always-online devices: 0 trains (0.5 + 2.0 + 0.5 s: the round closes at 3.0 s), 1 declines (leaves
    # after its 0.5 s download), 2 is still finishing an earlier round's late work until 1.0 s, 3 and 4 are idle
    w = world([always()] * 5)
    w.busy_until[2] = 1.0
    w.plan(1, [0, 1], HALF_MB)
    timing = w.settle(1, [DeviceReport(0, 1e9, HALF_MB, HALF_MB, 0),
                          DeviceReport(1, 0.0, HALF_MB, 0, 0, status="declined")])
    assert timing.sim_time_s == 3.0 and timing.statuses == {0: "ok", 1: "declined"}
    assert timing.idle_by_device == {1: 2.5 * 0.5, 2: 2.0 * 0.5, 3: 3.0 * 0.5, 4: 3.0 * 0.5}
    assert timing.idle_energy_j == 1.25 + 1.0 + 1.5 + 1.5
    # energy_j keeps its meaning: the sampled devices' round (0's download, compute, upload; 1's download)
    assert timing.energy_j == approx(1.0 + 3.0 + 2.0 * 4.0 + 0.5 * 1.0 + 4.0 * 0.25)


def test_idle_energy_follows_the_bernoulli_draw_and_the_clock_that_waits_for_nobody():
    coin = replace(always("coin"), availability_model="bernoulli", availability=0.5)
    w = world([coin] * 8, deadline_s=10.0)
    online = w.online(1, list(range(8)))
    timing = w.settle(1, [])  # nobody sampled: the round waits for its deadline
    assert timing.sim_time_s == 10.0 and timing.energy_j == 0.0
    assert timing.idle_by_device == {d: 10.0 * 0.5 for d in online} and 0 < len(online) < 8


def test_the_ledger_books_idle_energy_and_restores_an_older_checkpoint():
    ledger = Ledger(["a", "b", "c"])
    timing = RoundTiming(frozenset(), {}, 5.0, 0.0, idle_energy_j=3.0, idle_by_device={0: 1.0, 2: 2.0})
    ledger.add_round(1, timing, [], set())
    ledger.add_round(2, timing, [], set())
    assert [r["idle_energy_j"] for r in ledger.rows()] == [2.0, 0.0, 4.0]
    snap = ledger.snapshot()
    restored = Ledger(["a", "b", "c"])
    restored.restore(snap)
    assert restored.rows() == ledger.rows() and restored.timeline[1].idle_energy_j == 3.0
    for row in snap["devices"]:
        del row["idle_energy_j"]
    del snap["timeline"]["idle_energy_j"]
    old = Ledger(["a", "b", "c"])
    old.restore(snap)  # a checkpoint from before the field
    assert [r["idle_energy_j"] for r in old.rows()] == [0.0, 0.0, 0.0] and old.timeline[1].idle_energy_j == 0.0


def test_rounds_and_totals_carry_idle_energy_beside_energy():
    timing = RoundTiming(frozenset(), {}, 5.0, 7.0, idle_energy_j=3.0, idle_by_device={0: 3.0})
    row = round_row([], [], timing)
    assert (row["energy_j"], row["idle_energy_j"]) == (7.0, 3.0)
    totals = Totals()
    book_round(totals, row, timing)
    book_round(totals, row, timing)
    assert (totals.energy_j, totals.idle_energy_j) == (14.0, 6.0)
    assert Totals(**{k: v for k, v in vars(Totals()).items() if k != "idle_energy_j"}).idle_energy_j == 0.0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dry_run_writes_idle_energy_to_rounds_devices_and_summary(tmp_path, mode):
    """Synchronous: the devices online and not sampled idle through a round; asynchronous (at most 3 of 12 in
    flight at once), the devices online and waiting to start between versions."""
    scenario = tmp_path / "s.yaml"
    out = tmp_path / "out"
    federation = ("{rounds: 4, devices_per_round: 0.25}" if mode == "sync" else
                  "{rounds: 4, devices_per_round: 0.25, mode: async, buffer_size: 2, concurrency: 3}")
    stream = "{rounds_per_task: 2}" if mode == "sync" else "{task_every_s: 60}"
    scenario.write_text(f"""name: idle
dataset: {{name: synthetic}}
fleet: {{devices: 12, profiles: {{rpi4: 6, phone: 6}}}}
stream: {stream}
train: {{local_epochs: 1, width: 4}}
federation: {federation}
timing: {{deadline_s: 30}}
""")
    assert main(["run", str(scenario), "--dry-run", "--out", str(out), "--quiet"]) in (0, 1)
    rounds = list(csv.DictReader((out / "rounds.csv").open()))
    devices = list(csv.DictReader((out / "devices.csv").open()))
    summary = json.loads((out / "summary.json").read_text())
    per_round = [float(r["idle_energy_j"]) for r in rounds]
    assert all(j > 0 for j in per_round)  # unsampled online devices idle through every round
    assert summary["idle_energy_j"] == pytest.approx(math.fsum(per_round), rel=1e-9)
    assert math.fsum(float(d["idle_energy_j"]) for d in devices) == pytest.approx(summary["idle_energy_j"], rel=1e-9)
    assert summary["energy_j"] == pytest.approx(math.fsum(float(r["energy_j"]) for r in rounds), rel=1e-9)


# --------------------------------------------------------------------------- scenario profiles


def test_scenario_profiles_set_the_new_figures_with_bounds(tmp_path):
    def scenario(profile: dict) -> str:
        return yaml.safe_dump({"name": "p", "dataset": {"name": "synthetic"}, "profiles": {"lte-pi": profile},
                               "fleet": {"devices": 2, "profiles": {"lte-pi": 2}}}, sort_keys=False)

    path = tmp_path / "ok.yaml"
    path.write_text(scenario({"base": "rpi4", "uplink_w_per_mbps": 0.4, "tail_s": 10.0, "tail_w": 1.0}))
    p = load_scenario(path).resolved_device_profiles()[0]
    assert (p.uplink_w_per_mbps, p.downlink_w_per_mbps, p.tail_s, p.tail_w) == (0.4, 0.0, 10.0, 1.0)
    assert p.radio_w == get_profile("rpi4").radio_w
    bad = tmp_path / "bad.yaml"
    bad.write_text(scenario({"base": "phone", "tail_s": -1}))
    with pytest.raises(InputError, match=r"profiles\.lte-pi\.tail_s"):
        load_scenario(bad)
    with pytest.raises(InputError, match="device profile 'x': tail_w"):
        replace(CELL, name="x", tail_w=-0.5)
