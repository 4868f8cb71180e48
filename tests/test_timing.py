"""Device profiles, timing formulas and the simpy round model, on hand-computed numbers."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from clients.errors import InputError
from fleet.world.builtin_profiles import PROFILES, get_profile
from fleet.world.profiles import BUDGETS, BudgetProfile, DeviceProfile, apply_budget, get_budget
from fleet.world.rounds import DeviceWork, simulate_round
from fleet.world.timing import (
    MIB,
    compute_time_s,
    energy_j,
    failure_delay,
    fits_memory,
    download_time_s,
    transfer_time_s,
    upload_time_s,
)

# 10 GFLOP/s x 0.3 = 3 GFLOP/s; 10 Mbit/s = 1.25 MB/s; 1 MiB of RAM.
HAND = DeviceProfile(
    name="hand",
    peak_gflops=10.0,
    efficiency=0.3,
    memory_mb=1.0,
    downlink_mbps=10.0,
    uplink_mbps=10.0,
    downlink_latency_s=0.05,
    uplink_latency_s=0.05,
    active_w=5.0,
    radio_w=2.0,
    idle_w=1.0,
    availability=1.0,
)
MB = 1_250_000  # 1.25 MB -> 1.0 s at 10 Mbit/s, 1.05 s with latency


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-12)


def work(device_id: int, flops: float, *, memory: int = 1000, profile: DeviceProfile = HAND) -> DeviceWork:
    return DeviceWork(device_id, profile, flops, down_bytes=MB, up_bytes=MB, peak_memory_bytes=memory)


# --------------------------------------------------------------------------- formulas


def test_compute_time_is_flops_over_derated_peak() -> None:
    assert HAND.train_flops_per_s == approx(3e9)
    assert compute_time_s(3e9, HAND) == approx(1.0)


def test_transfer_time_is_latency_plus_bits_over_rate() -> None:
    assert download_time_s(MB, HAND) == approx(1.05)
    assert upload_time_s(0, HAND) == approx(0.05)
    asymmetric = replace(HAND, uplink_mbps=2.0, uplink_latency_s=0.1)
    assert download_time_s(MB, asymmetric) == approx(1.05) and upload_time_s(MB, asymmetric) == approx(5.1)


def test_energy_is_power_times_time_per_state() -> None:
    assert energy_j(2.0, 3.0, 4.0, HAND) == 5 * 2 + 2 * 3 + 1 * 4


def test_fits_memory_counts_mib() -> None:
    assert fits_memory(MIB, HAND)
    assert not fits_memory(MIB + 1, HAND)


def test_formulas_reject_negative_inputs() -> None:
    with pytest.raises(InputError, match="train_flops"):
        compute_time_s(-1, HAND)
    with pytest.raises(InputError, match="nbytes"):
        transfer_time_s(float("nan"), 10.0, 0.05)


# --------------------------------------------------------------------------- simpy round


def test_round_with_deadline_one_ok_one_late_one_oom() -> None:
    works = [work(0, 3e9), work(1, 1.5e10), work(2, 3e9, memory=MIB + 1)]
    r = simulate_round(works, start_s=100.0, deadline_s=5.0, keep_first=None)
    ok, late, oom = r.devices
    assert r.start_s == 100.0 and r.end_s == approx(105.0)  # closed by the deadline
    assert [d.status for d in r.devices] == ["ok", "late", "oom"]
    assert r.accepted == (0,)
    # ok: 1.05 down + 1.0 compute + 1.05 up, then idles 103.1 -> 105.
    assert (ok.start_s, ok.end_s) == (100.0, approx(103.1))
    assert (ok.download_s, ok.compute_s, ok.upload_s) == (approx(1.05), approx(1.0), approx(1.05))
    assert ok.energy_j == approx(5 * 1.0 + 2 * 2.1 + 1 * 1.9)
    # late: 5 s of compute, finishes at 107.1 after the close; no idle waiting.
    assert late.end_s == approx(107.1) and late.compute_s == approx(5.0)
    assert late.energy_j == approx(5 * 5.0 + 2 * 2.1)
    # oom: no work, idles the whole round.
    assert (oom.end_s, oom.compute_s, oom.download_s, oom.upload_s) == (100.0, 0.0, 0.0, 0.0)
    assert oom.energy_j == approx(1 * 5.0)
    assert r.energy_j == approx(11.1 + 29.2 + 5.0)
    assert r.duration_s == approx(5.0)


def test_round_closes_when_everyone_reported_before_deadline() -> None:
    r = simulate_round([work(0, 3e9), work(1, 6e9)], start_s=0.0, deadline_s=60.0, keep_first=None)
    assert r.end_s == approx(4.1)
    assert r.accepted == (0, 1)
    assert r.devices[0].energy_j == approx(5 * 1.0 + 2 * 2.1 + 1 * 1.0)
    assert r.devices[1].energy_j == approx(5 * 2.0 + 2 * 2.1)


def test_arrival_exactly_at_deadline_is_in_time() -> None:
    # 1e6 B/s link, no latency, 5e8 FLOP/s: 0.5 + 2.0 + 0.5 = 3.0 s, all exact in binary.
    exact = DeviceProfile("exact", 1.0, 0.5, 1.0, 8.0, 8.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0)
    w = DeviceWork(7, exact, 1e9, down_bytes=500_000, up_bytes=500_000, peak_memory_bytes=0)
    r = simulate_round([w], start_s=0.0, deadline_s=3.0, keep_first=None)
    assert r.devices[0].end_s == 3.0
    assert r.accepted == (7,) and r.end_s == 3.0


def test_keep_first_closes_at_kth_arrival() -> None:
    works = [work(0, 3e9), work(1, 6e9), work(2, 9e9)]  # arrive at 3.1, 4.1, 5.1 s
    r = simulate_round(works, start_s=100.0, deadline_s=None, keep_first=2)
    assert r.end_s == approx(104.1)
    assert [d.status for d in r.devices] == ["ok", "ok", "late"]
    assert r.accepted == (0, 1)
    assert r.devices[2].end_s == approx(105.1)
    assert [d.energy_j for d in r.devices] == [approx(10.2), approx(14.2), approx(19.2)]


def test_keep_first_larger_than_arrivals_waits_for_all() -> None:
    r = simulate_round([work(0, 3e9), work(1, 6e9)], start_s=0.0, deadline_s=None, keep_first=5)
    assert r.end_s == approx(4.1) and r.accepted == (0, 1)


def test_a_round_with_no_update_waits_for_its_deadline() -> None:
    r = simulate_round([work(0, 3e9, memory=MIB + 1)], start_s=10.0, deadline_s=5.0, keep_first=None)
    assert r.end_s == 15.0 and r.devices[0].status == "oom" and r.devices[0].energy_j == approx(5.0)
    r = simulate_round([work(0, 3e9, memory=MIB + 1)], start_s=10.0, deadline_s=None, keep_first=None)
    assert r.end_s == 10.0  # without a deadline there is nothing to wait for


def test_no_failure_without_a_failure_time() -> None:
    r = simulate_round([work(i, 3e9) for i in range(20)], start_s=0.0, deadline_s=None, keep_first=None)
    assert all(d.status == "ok" for d in r.devices)


def failing(device_id: int, flops: float, fail_at: float, **kw) -> DeviceWork:
    return DeviceWork(device_id, HAND, flops, down_bytes=MB, up_bytes=MB, peak_memory_bytes=1000,
                      fail_at_s=fail_at, **kw)


def test_failures_stop_a_device_where_they_fall() -> None:
    # each needs 1.05 + 1.0 + 1.05 = 3.1 s; failures at 0.5 (download), 2.0 (compute), 2.5 (upload), 9 (never)
    works = [failing(0, 3e9, 0.5), failing(1, 3e9, 2.0), failing(2, 3e9, 2.5), failing(3, 3e9, 9.0)]
    r = simulate_round(works, start_s=50.0, deadline_s=None, keep_first=None)
    assert [d.status for d in r.devices] == ["failed", "failed", "failed", "ok"]
    d0, d1, d2, _ = r.devices
    assert d0.download_s == approx(0.5) and d0.compute_s == 0.0 and d0.energy_j == approx(2.0 * 0.5)
    assert (d1.download_s, d1.compute_s, d1.upload_s) == (approx(1.05), approx(0.95), 0.0)
    assert d2.upload_s == approx(0.45) and d2.end_s == approx(52.5)
    assert r.end_s == approx(53.1) and r.accepted == (3,)  # failures are noticed at once


def test_a_crashed_device_computes_until_its_failure() -> None:
    r = simulate_round([failing(0, 1e9, 4.0, crashed=True)], start_s=0.0, deadline_s=10.0, keep_first=None)
    d = r.devices[0]
    assert d.status == "failed" and d.compute_s == approx(4.0 - 1.05) and d.upload_s == 0.0
    assert r.end_s == 10.0  # nothing arrived: the server waits for its deadline


def test_a_declined_device_only_downloads() -> None:
    w = DeviceWork(0, HAND, 0.0, down_bytes=MB, up_bytes=0, peak_memory_bytes=0, declined=True)
    r = simulate_round([w, work(1, 3e9)], start_s=0.0, deadline_s=60.0, keep_first=None)
    d, ok = r.devices
    assert d.status == "declined" and d.download_s == approx(1.05) and d.compute_s == 0.0
    assert d.energy_j == approx(2.0 * 1.05)  # no idle waiting: it is done
    assert ok.status == "ok" and r.end_s == approx(3.1)


def test_time_comes_from_kernel_flops_when_given() -> None:
    w = DeviceWork(0, HAND, 3e8, down_bytes=MB, up_bytes=MB, peak_memory_bytes=0, kernel_flops=3e9)
    r = simulate_round([w], start_s=0.0, deadline_s=None, keep_first=None)
    assert r.devices[0].compute_s == approx(1.0)  # the kernels ran dense: 3e9 FLOPs, not the counted 3e8


def test_the_outcome_does_not_depend_on_the_order_of_the_work() -> None:
    works = [failing(i, (i + 1) * 1e9, failure_delay(0.2, 7, 3, i)) for i in range(12)]
    a = simulate_round(works, start_s=5.0, deadline_s=4.0, keep_first=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        shuffled = [works[i] for i in rng.permutation(len(works))]
        assert simulate_round(shuffled, start_s=5.0, deadline_s=4.0, keep_first=3) == a


def test_failure_delays_are_keyed_by_device_and_round() -> None:
    assert failure_delay(0.0, 1, 1, 1) == math.inf
    assert failure_delay(0.3, 7, 2, 5) == failure_delay(0.3, 7, 2, 5)
    assert failure_delay(0.3, 7, 2, 5) != failure_delay(0.3, 7, 3, 5)
    assert failure_delay(0.3, 7, 2, 5) == np.random.default_rng([7, 2, 5, 1]).exponential(1 / 0.3)
    with pytest.raises(InputError, match="offline_rate_per_s"):
        failure_delay(-1.0, 0, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        (dict(deadline_s=0.0), "deadline_s"),
        (dict(keep_first=0), "keep_first"),
        (dict(ingress_mbps=0.0), "ingress_mbps"),
        (dict(ingress_mbps=math.inf), "ingress_mbps"),
    ],
)
def test_round_rejects_bad_settings(kwargs: dict, culprit: str) -> None:
    base = dict(start_s=0.0, deadline_s=None, keep_first=None)
    with pytest.raises(InputError, match=culprit):
        simulate_round([work(0, 3e9)], **{**base, **kwargs})


def test_round_rejects_duplicate_ids() -> None:
    with pytest.raises(InputError, match=r"repeated: \[4\]"):
        simulate_round([work(4, 1e9), work(4, 2e9)], start_s=0.0, deadline_s=None, keep_first=None)


def test_device_work_rejects_negative_bytes() -> None:
    with pytest.raises(InputError, match="device 3: up_bytes"):
        DeviceWork(3, HAND, 1e9, down_bytes=0, up_bytes=-1, peak_memory_bytes=0)
    with pytest.raises(InputError, match="device 3: speed_factor"):
        DeviceWork(3, HAND, 1e9, down_bytes=0, up_bytes=0, peak_memory_bytes=0, speed_factor=0.0)


def test_a_speed_factor_scales_the_compute_time() -> None:
    w = DeviceWork(0, HAND, 3e9, down_bytes=MB, up_bytes=MB, peak_memory_bytes=0, speed_factor=0.8)
    d = simulate_round([w], start_s=0.0, deadline_s=None, keep_first=None).devices[0]
    assert d.compute_s == approx(1.0 / 0.8) and d.speed_factor == 0.8


# --------------------------------------------------------------------------- selection


# --------------------------------------------------------------------------- profiles


def test_builtin_profiles_and_budgets() -> None:
    assert {"rpi5", "rpi4", "rpi4-wifi", "rpi-zero2w", "jetson-nano", "phone", "mcu"} <= set(PROFILES)
    assert set(BUDGETS) == {"generous", "tight", "starved"}
    assert get_profile("rpi5").train_flops_per_s == approx(30e9 * 0.3)
    assert get_profile("rpi4-wifi").downlink_mbps == 50.0
    assert get_budget("generous").deadline_s is None


def test_unknown_names_raise_input_error_naming_them() -> None:
    with pytest.raises(InputError, match=r"device profile 'rpi6' is unknown \(choose from: .*rpi5"):
        get_profile("rpi6")
    msg = r"budget profile 'lavish' is unknown \(choose from: generous, starved, tight\)"
    with pytest.raises(InputError, match=msg):
        get_budget("lavish")
    assert issubclass(InputError, ValueError)


def test_apply_budget_scales_exactly() -> None:
    dev = get_profile("rpi5")
    b = BudgetProfile("b", compute_scale=0.5, memory_scale=0.25, bandwidth_scale=0.1, deadline_s=9.0)
    scaled = apply_budget(dev, b)
    assert (scaled.peak_gflops, scaled.memory_mb, scaled.downlink_mbps, scaled.uplink_mbps) == (
        15.0, dev.memory_mb * 0.25, 940.0 * 0.1, 940.0 * 0.1)
    assert scaled.train_flops_per_s == approx(dev.train_flops_per_s * 0.5)
    assert scaled.active_w == approx(2.7 + (11.0 - 2.7) * 0.5)  # the clock's dynamic power scales with it
    unchanged = ("name", "efficiency", "downlink_latency_s", "uplink_latency_s", "radio_w", "idle_w",
                 "availability", "tail_s", "tail_w")
    assert all(getattr(scaled, f) == getattr(dev, f) for f in unchanged)
    assert apply_budget(dev, get_budget("generous")) == dev


def test_profiles_validate_fields() -> None:
    with pytest.raises(InputError, match="device profile 'bad': efficiency"):
        replace(HAND, name="bad", efficiency=1.5)
    with pytest.raises(InputError, match="device profile 'bad': uplink_mbps"):
        replace(HAND, name="bad", uplink_mbps=0.0)
    with pytest.raises(InputError, match="budget profile 'b': deadline_s"):
        BudgetProfile("b", 1.0, 1.0, 1.0, deadline_s=-1.0)
    assert math.isclose(get_profile("mcu").memory_mb * MIB, 200 * 1024)  # 256 KB SRAM less BLE stack, firmware
