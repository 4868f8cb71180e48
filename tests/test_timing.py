"""Device profiles, timing formulas and the simpy round model, on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.errors import InputError
from fleet.profiles import (
    BUDGETS,
    PROFILES,
    BudgetProfile,
    DeviceProfile,
    apply_budget,
    get_budget,
    get_profile,
)
from fleet.timing import (
    MIB,
    DeviceWork,
    available,
    compute_time_s,
    energy_j,
    fits_memory,
    sample_devices,
    simulate_round,
    staleness_weight,
    transfer_time_s,
)

# 10 GFLOP/s x 0.3 = 3 GFLOP/s; 10 Mbit/s = 1.25 MB/s; 1 MiB of RAM.
HAND = DeviceProfile(
    name="hand",
    peak_gflops=10.0,
    efficiency=0.3,
    memory_mb=1.0,
    bandwidth_mbps=10.0,
    latency_s=0.05,
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
    assert transfer_time_s(MB, HAND) == approx(1.05)
    assert transfer_time_s(0, HAND) == approx(0.05)


def test_energy_is_power_times_time_per_state() -> None:
    assert energy_j(2.0, 3.0, 4.0, HAND) == 5 * 2 + 2 * 3 + 1 * 4


def test_staleness_weight() -> None:
    assert staleness_weight(0) == 1.0
    assert staleness_weight(3) == 0.5


def test_fits_memory_counts_mib() -> None:
    assert fits_memory(MIB, HAND)
    assert not fits_memory(MIB + 1, HAND)


def test_formulas_reject_negative_inputs() -> None:
    with pytest.raises(InputError, match="train_flops"):
        compute_time_s(-1, HAND)
    with pytest.raises(InputError, match="nbytes"):
        transfer_time_s(float("nan"), HAND)
    with pytest.raises(InputError, match="staleness"):
        staleness_weight(-1)


# --------------------------------------------------------------------------- simpy round


def test_round_with_deadline_one_ok_one_late_one_oom() -> None:
    works = [work(0, 3e9), work(1, 1.5e10), work(2, 3e9, memory=MIB + 1)]
    r = simulate_round(works, start_s=100.0, deadline_s=5.0, keep_first=None, seed=0)
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
    r = simulate_round([work(0, 3e9), work(1, 6e9)], start_s=0.0, deadline_s=60.0, keep_first=None, seed=0)
    assert r.end_s == approx(4.1)
    assert r.accepted == (0, 1)
    assert r.devices[0].energy_j == approx(5 * 1.0 + 2 * 2.1 + 1 * 1.0)
    assert r.devices[1].energy_j == approx(5 * 2.0 + 2 * 2.1)


def test_arrival_exactly_at_deadline_is_in_time() -> None:
    # 1e6 B/s link, no latency, 5e8 FLOP/s: 0.5 + 2.0 + 0.5 = 3.0 s, all exact in binary.
    exact = DeviceProfile("exact", 1.0, 0.5, 1.0, 8.0, 0.0, 1.0, 1.0, 1.0, 1.0)
    w = DeviceWork(7, exact, 1e9, down_bytes=500_000, up_bytes=500_000, peak_memory_bytes=0)
    r = simulate_round([w], start_s=0.0, deadline_s=3.0, keep_first=None, seed=0)
    assert r.devices[0].end_s == 3.0
    assert r.accepted == (7,) and r.end_s == 3.0


def test_keep_first_closes_at_kth_arrival() -> None:
    works = [work(0, 3e9), work(1, 6e9), work(2, 9e9)]  # arrive at 3.1, 4.1, 5.1 s
    r = simulate_round(works, start_s=100.0, deadline_s=None, keep_first=2, seed=0)
    assert r.end_s == approx(104.1)
    assert [d.status for d in r.devices] == ["ok", "ok", "late"]
    assert r.accepted == (0, 1)
    assert r.devices[2].end_s == approx(105.1)
    assert [d.energy_j for d in r.devices] == [approx(10.2), approx(14.2), approx(19.2)]


def test_keep_first_larger_than_arrivals_waits_for_all() -> None:
    r = simulate_round([work(0, 3e9), work(1, 6e9)], start_s=0.0, deadline_s=None, keep_first=5, seed=0)
    assert r.end_s == approx(4.1) and r.accepted == (0, 1)


def test_all_oom_round_closes_at_once() -> None:
    r = simulate_round([work(0, 3e9, memory=MIB + 1)], start_s=10.0, deadline_s=5.0, keep_first=None, seed=0)
    assert r.end_s == 10.0 and r.devices[0].status == "oom" and r.devices[0].energy_j == 0.0


def test_no_dropout_at_rate_zero() -> None:
    works = [work(i, 3e9) for i in range(20)]
    r = simulate_round(works, start_s=0.0, deadline_s=None, keep_first=None, seed=123, offline_rate_per_s=0.0)
    assert all(d.status == "ok" for d in r.devices)


def test_dropout_is_deterministic_for_a_seed() -> None:
    works = [work(i, 3e9) for i in range(8)]  # each needs 3.1 s
    kwargs = dict(start_s=50.0, deadline_s=None, keep_first=None, seed=7, offline_rate_per_s=0.3)
    r1, r2 = simulate_round(works, **kwargs), simulate_round(works, **kwargs)
    assert r1 == r2
    delays = np.random.default_rng(7).exponential(1 / 0.3, size=8)  # one draw per device, input order
    expected = ["offline" if t < 3.1 else "ok" for t in delays]
    assert [d.status for d in r1.devices] == expected
    assert "offline" in expected and "ok" in expected
    for d, t in zip(r1.devices, delays):
        if d.status == "offline":
            assert d.end_s == approx(50.0 + t)
            assert d.download_s + d.compute_s + d.upload_s == approx(t)
    # Dropouts are reported, so the round closes at the last event, arrival or dropout.
    assert r1.end_s == approx(50.0 + max(min(t, 3.1) for t in delays))


def test_dropout_during_download_costs_radio_energy_only() -> None:
    rate, seed = 1e4, 3  # mean 0.1 ms, well inside the 50 ms latency
    r = simulate_round(
        [work(0, 3e9)], start_s=0.0, deadline_s=None, keep_first=None, seed=seed, offline_rate_per_s=rate
    )
    t = np.random.default_rng(seed).exponential(1 / rate)
    d = r.devices[0]
    assert d.status == "offline" and d.compute_s == 0.0 and d.upload_s == 0.0
    assert d.download_s == approx(t) and d.energy_j == approx(2.0 * t)
    assert r.end_s == approx(t) and r.accepted == ()


def test_oom_device_never_goes_offline() -> None:
    r = simulate_round(
        [work(0, 3e9, memory=MIB + 1)], start_s=0.0, deadline_s=None, keep_first=None, seed=0, offline_rate_per_s=1e6
    )
    assert r.devices[0].status == "oom"


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        (dict(deadline_s=0.0), "deadline_s"),
        (dict(keep_first=0), "keep_first"),
        (dict(offline_rate_per_s=-1.0), "offline_rate_per_s"),
    ],
)
def test_round_rejects_bad_settings(kwargs: dict, culprit: str) -> None:
    base = dict(start_s=0.0, deadline_s=None, keep_first=None, seed=0)
    with pytest.raises(InputError, match=culprit):
        simulate_round([work(0, 3e9)], **{**base, **kwargs})


def test_round_rejects_duplicate_ids() -> None:
    with pytest.raises(InputError, match=r"repeated: \[4\]"):
        simulate_round([work(4, 1e9), work(4, 2e9)], start_s=0.0, deadline_s=None, keep_first=None, seed=0)


def test_device_work_rejects_negative_bytes() -> None:
    with pytest.raises(InputError, match="device 3: up_bytes"):
        DeviceWork(3, HAND, 1e9, down_bytes=0, up_bytes=-1, peak_memory_bytes=0)


# --------------------------------------------------------------------------- selection


def test_sample_devices_over_selects_and_caps() -> None:
    picked = sample_devices(list(range(100)), 10, seed=1)
    assert len(picked) == 13 and picked == sorted(set(picked))  # ceil(10 * 1.3), not 14
    assert picked == sample_devices(list(range(100)), 10, seed=1)
    assert sample_devices([5, 9, 2], 10, seed=1) == [2, 5, 9]
    assert len(sample_devices(list(range(100)), 10, over_select=1.0, seed=1)) == 10
    assert sample_devices([], 3, seed=0) == []


def test_sample_devices_rejects_bad_k() -> None:
    with pytest.raises(InputError, match="k "):
        sample_devices([1, 2], 0, seed=0)
    with pytest.raises(InputError, match="over_select"):
        sample_devices([1, 2], 1, over_select=0.5, seed=0)


def test_available_draws_against_availability() -> None:
    never = DeviceProfile("never", 1.0, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1e-12)
    flags = available([HAND, never, HAND], np.random.default_rng(0))
    assert flags == [True, False, True]
    draws = np.random.default_rng(5).random(3)
    half = DeviceProfile("half", 1.0, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.5)
    assert available([half] * 3, np.random.default_rng(5)) == [bool(u < 0.5) for u in draws]


# --------------------------------------------------------------------------- profiles


def test_builtin_profiles_and_budgets() -> None:
    assert {"rpi5", "rpi4", "rpi4-wifi", "rpi-zero2w", "jetson-nano", "phone", "mcu"} <= set(PROFILES)
    assert set(BUDGETS) == {"generous", "tight", "starved"}
    assert get_profile("rpi5").train_flops_per_s == approx(30e9 * 0.3)
    assert get_profile("rpi4-wifi").bandwidth_mbps == 50.0
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
    assert (scaled.peak_gflops, scaled.memory_mb, scaled.bandwidth_mbps) == (15.0, 1024.0, 940.0 * 0.1)
    assert scaled.train_flops_per_s == approx(dev.train_flops_per_s * 0.5)
    unchanged = ("name", "efficiency", "latency_s", "active_w", "radio_w", "idle_w", "availability")
    assert all(getattr(scaled, f) == getattr(dev, f) for f in unchanged)
    assert apply_budget(dev, get_budget("generous")) == dev


def test_profiles_validate_fields() -> None:
    with pytest.raises(InputError, match="device profile 'bad': efficiency"):
        DeviceProfile("bad", 1.0, 1.5, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="device profile 'bad': bandwidth_mbps"):
        DeviceProfile("bad", 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="budget profile 'b': deadline_s"):
        BudgetProfile("b", 1.0, 1.0, 1.0, deadline_s=-1.0)
    assert math.isclose(get_profile("mcu").memory_mb * MIB, 256 * 1024)
