"""Device and budget profiles: what one simulated edge device can do and costs.

A DeviceProfile turns measured work (FLOPs, bytes, peak memory) into seconds and
joules in fleet.timing. Hardware figures below are published/measured numbers
(cited in comments, rounded); the *training efficiency* (the fraction of the
vendor/HPL peak that a real training loop reaches) and the power of transfers
and waiting are modelling assumptions, marked as such.

A BudgetProfile scales a device down (compute, memory, bandwidth) and may add a
per-round deadline, so `fleet compare` can run one scenario under several
resource regimes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from clients.errors import InputError

# Assumption: a training loop (small batches, framework overhead, memory-bound
# layers) sustains about 30% of an HPL/vendor peak on CPU-class devices.
HPL_TRAIN_EFFICIENCY = 0.3

# Sparse-kernel speed-ups of a training step over dense, by weight sparsity: SparCL
# (Wang et al., NeurIPS 2022), measured on a Snapdragon 865 phone CPU at batch 32 with
# the authors' (unreleased) code generator: 2.3x at 0.90, 3.1x at 0.95. The example
# table for `timing.kernels: sparse`; a kernel table measured on the device beats it.
PAPER_SPARSE_SPEEDUP = ((0.9, 2.3), (0.95, 3.1))

AVAILABILITY_MODELS = ("always", "bernoulli", "onoff")


# --------------------------------------------------------------------------- checks


def _check_positive(owner: str, field: str, value: float) -> None:
    """Rates, sizes and scales must be finite and > 0, or the formulas divide by zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{owner}: {field} must be a finite number > 0, got {value!r}")


def _check_non_negative(owner: str, field: str, value: float) -> None:
    """Powers and latencies may be zero (an idealised device) but never negative."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{owner}: {field} must be a finite number >= 0, got {value!r}")


def _check_fraction(owner: str, field: str, value: float) -> None:
    """Efficiencies and probabilities live in (0, 1]; 0 would mean a device that never works."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InputError(f"{owner}: {field} must be in (0, 1], got {value!r}")


def _check_unit_interval(owner: str, field: str, value: float, *, closed: bool) -> None:
    """Chances and spreads: [0, 1] (or [0, 1) where 1 would mean a device that always fails)."""
    top_ok = value <= 1 if closed else value < 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value and top_ok):
        raise InputError(f"{owner}: {field} must be in [0, 1{']' if closed else ')'}, got {value!r}")


def _unknown(kind: str, name: object, known: dict[str, object]) -> InputError:
    """One error style for every 'pick a name from this table' lookup."""
    return InputError(f"{kind} '{name}' is unknown (choose from: {', '.join(sorted(known))})")


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of edge device; frozen so a fleet can share it safely.

    memory_mb counts MiB (2**20 bytes, as a "4 GB" board has 4096 of them);
    link rates count Mbit/s (1e6 bits), the unit links are sold in. Uplink
    and downlink differ on most access links (Wi-Fi, LTE, ADSL).
    """

    name: str
    peak_gflops: float  # vendor/HPL peak
    efficiency: float  # fraction of peak that training reaches, (0, 1]
    memory_mb: float  # RAM available for training (after the OS and runtime), MiB
    downlink_mbps: float  # server -> device, Mbit/s
    uplink_mbps: float  # device -> server, Mbit/s
    downlink_latency_s: float  # fixed cost of one download
    uplink_latency_s: float  # fixed cost of one upload
    active_w: float  # power while computing
    radio_w: float  # power while transferring
    idle_w: float  # power while waiting
    availability: float  # probability the device is online at a round ("bernoulli"), (0, 1]
    availability_model: str = "bernoulli"  # always | bernoulli (a draw each round) | onoff (alternating periods)
    mean_on_s: float = 3600.0  # onoff: mean length of an online period, simulated seconds
    mean_off_s: float = 600.0  # onoff: mean length of an offline period
    failure_prob: float = 0.0  # chance that a sampled device fails mid-round, [0, 1)
    speed_jitter: float = 0.0  # coefficient of variation of its compute speed from round to round, [0, 1]

    def __post_init__(self) -> None:
        owner = f"device profile '{self.name}'"
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"device profile name must be a non-empty string, got {self.name!r}")
        for f in ("peak_gflops", "memory_mb", "downlink_mbps", "uplink_mbps"):
            _check_positive(owner, f, getattr(self, f))
        for f in ("downlink_latency_s", "uplink_latency_s", "active_w", "radio_w", "idle_w"):
            _check_non_negative(owner, f, getattr(self, f))
        for f in ("efficiency", "availability"):
            _check_fraction(owner, f, getattr(self, f))
        if self.availability_model not in AVAILABILITY_MODELS:
            raise InputError(f"{owner}: availability_model must be one of {', '.join(AVAILABILITY_MODELS)}, "
                             f"got {self.availability_model!r}")
        for f in ("mean_on_s", "mean_off_s"):
            _check_positive(owner, f, getattr(self, f))
        _check_unit_interval(owner, "failure_prob", self.failure_prob, closed=False)
        _check_unit_interval(owner, "speed_jitter", self.speed_jitter, closed=True)

    @property
    def train_flops_per_s(self) -> float:
        """FLOP/s a training loop actually sustains: peak derated by efficiency."""
        return self.peak_gflops * 1e9 * self.efficiency


PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        # Raspberry Pi 5 (4 GB): HPL ~30 GFLOP/s FP64 at ~11 W under load, idle
        # ~2.7 W; Gigabit Ethernet measures ~940 Mbit/s. Radio power (idle plus
        # NIC/stack work) and availability are assumptions.
        DeviceProfile(
            name="rpi5",
            peak_gflops=30.0,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=4096,
            downlink_mbps=940.0,
            uplink_mbps=940.0,
            downlink_latency_s=0.005,
            uplink_latency_s=0.005,
            active_w=11.0,
            radio_w=3.5,
            idle_w=2.7,
            availability=0.99,
        ),
        # Raspberry Pi 4 (2 GB) at 1.8 GHz: HPL ~11.9 GFLOP/s at ~7 W, idle
        # 2.2-3 W (2.6 used); Gigabit Ethernet ~940 Mbit/s.
        DeviceProfile(
            name="rpi4",
            peak_gflops=11.9,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=2048,
            downlink_mbps=940.0,
            uplink_mbps=940.0,
            downlink_latency_s=0.005,
            uplink_latency_s=0.005,
            active_w=7.0,
            radio_w=3.4,
            idle_w=2.6,
            availability=0.99,
        ),
        # The same Pi 4 on Wi-Fi: ~50 Mbit/s and more latency (assumption for a
        # typical indoor 802.11ac link); the radio costs a little more.
        DeviceProfile(
            name="rpi4-wifi",
            peak_gflops=11.9,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=2048,
            downlink_mbps=50.0,
            uplink_mbps=50.0,
            downlink_latency_s=0.02,
            uplink_latency_s=0.02,
            active_w=7.0,
            radio_w=3.6,
            idle_w=2.6,
            availability=0.95,
        ),
        # Raspberry Pi Zero 2 W: 4x Cortex-A53 at 1 GHz, 512 MB. Its published HPL
        # figure (~0.37 GFLOP/s) comes from a run squeezed into 512 MB and says
        # little about training. Estimate instead: a quarter of the Pi 4's 11.9
        # (1.0 against 1.8 GHz, and the in-order A53 does about half the A72's FP
        # work per clock), so ~3 GFLOP/s, the same HPL-like peak the 0.3 efficiency
        # derates: 4x slower than a Pi 4, within the 3-5x its cores suggest.
        # Calibrate on a real board when you have one. Training memory is what
        # the OS and Python runtime leave of 512 MB: ~320 MiB. ~2 W under load,
        # idle ~0.6 W; 2.4 GHz 802.11n gives ~20 Mbit/s in practice.
        DeviceProfile(
            name="rpi-zero2w",
            peak_gflops=3.0,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=320,
            downlink_mbps=20.0,
            uplink_mbps=20.0,
            downlink_latency_s=0.02,
            uplink_latency_s=0.02,
            active_w=2.0,
            radio_w=1.2,
            idle_w=0.6,
            availability=0.9,
        ),
        # NVIDIA Jetson Nano: 472 GFLOP/s FP16 peak (vendor), 10 W mode, 4 GB
        # LPDDR4 shared by CPU, GPU and OS. Assumption: training small models
        # reaches only ~10% of that FP16 peak (kernel launch overhead, FP32 ops,
        # shared memory bandwidth); idle ~1.5 W.
        DeviceProfile(
            name="jetson-nano",
            peak_gflops=472.0,
            efficiency=0.1,
            memory_mb=4096,
            downlink_mbps=940.0,
            uplink_mbps=940.0,
            downlink_latency_s=0.005,
            uplink_latency_s=0.005,
            active_w=10.0,
            radio_w=2.5,
            idle_w=1.5,
            availability=0.98,
        ),
        # Phone, Snapdragon 8xx class: on-device CPU *training* measures ~15-30
        # GFLOP/s, so peak_gflops=25 is already a training figure, not HPL;
        # efficiency 0.8 only derates it for thermal throttling and background
        # load (assumption). ~5 W while training; LTE ~20 Mbit/s. Per-app RAM,
        # radio/idle power and availability (phones train when idle and
        # charging) are assumptions.
        DeviceProfile(
            name="phone",
            peak_gflops=25.0,
            efficiency=0.8,
            memory_mb=3072,
            downlink_mbps=20.0,
            uplink_mbps=20.0,
            downlink_latency_s=0.05,
            uplink_latency_s=0.05,
            active_w=5.0,
            radio_w=2.5,
            idle_w=0.5,
            availability=0.5,
        ),
        # Microcontroller for contrast (nRF52840 class): Cortex-M4F at 64 MHz,
        # ~6 MFLOP/s sustained at ~11 mW, 256 KB SRAM; BLE ~1 Mbit/s radio at
        # ~15 mW, sleep in the microwatts. 6 MFLOP/s is already a sustained
        # figure, so efficiency 0.8 as for the phone (assumption).
        DeviceProfile(
            name="mcu",
            peak_gflops=0.006,
            efficiency=0.8,
            memory_mb=0.25,
            downlink_mbps=1.0,
            uplink_mbps=1.0,
            downlink_latency_s=0.03,
            uplink_latency_s=0.03,
            active_w=0.011,
            radio_w=0.015,
            idle_w=0.00001,
            availability=0.9,
        ),
    )
}


def get_profile(name: str) -> DeviceProfile:
    """The built-in profile called `name`; a typo gets the list of valid names."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise _unknown("device profile", name, PROFILES) from None


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class BudgetProfile:
    """A resource regime: multiplies a device's compute, memory and bandwidth.

    deadline_s is a per-round deadline in seconds after the round starts, or
    None for "wait for everyone".
    """

    name: str
    compute_scale: float
    memory_scale: float
    bandwidth_scale: float
    deadline_s: float | None

    def __post_init__(self) -> None:
        owner = f"budget profile '{self.name}'"
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"budget profile name must be a non-empty string, got {self.name!r}")
        for f in ("compute_scale", "memory_scale", "bandwidth_scale"):
            _check_positive(owner, f, getattr(self, f))
        if self.deadline_s is not None:
            _check_positive(owner, "deadline_s", self.deadline_s)


# Assumptions: "tight" halves everything and gives a 5-minute round; "starved"
# is a quarter of compute/memory, a tenth of bandwidth and a 1-minute round.
BUDGETS: dict[str, BudgetProfile] = {
    b.name: b
    for b in (
        BudgetProfile("generous", compute_scale=1.0, memory_scale=1.0, bandwidth_scale=1.0, deadline_s=None),
        BudgetProfile("tight", compute_scale=0.5, memory_scale=0.5, bandwidth_scale=0.5, deadline_s=300.0),
        BudgetProfile("starved", compute_scale=0.25, memory_scale=0.25, bandwidth_scale=0.1, deadline_s=60.0),
    )
}


def get_budget(name: str) -> BudgetProfile:
    """The built-in budget called `name`; a typo gets the list of valid names."""
    try:
        return BUDGETS[name]
    except (KeyError, TypeError):
        raise _unknown("budget profile", name, BUDGETS) from None


def apply_budget(device: DeviceProfile, budget: BudgetProfile) -> DeviceProfile:
    """The device under a budget: peak compute, memory and bandwidth scaled.

    Compute scales the peak, not the efficiency, so efficiency stays in (0, 1].
    The name is kept so the result still identifies the hardware; the deadline
    is the round's business (fleet.timing.simulate_round), not the device's.
    """
    return replace(
        device,
        peak_gflops=device.peak_gflops * budget.compute_scale,
        memory_mb=device.memory_mb * budget.memory_scale,
        downlink_mbps=device.downlink_mbps * budget.bandwidth_scale,
        uplink_mbps=device.uplink_mbps * budget.bandwidth_scale,
    )


__all__ = [
    "BUDGETS",
    "HPL_TRAIN_EFFICIENCY",
    "PAPER_SPARSE_SPEEDUP",
    "PROFILES",
    "BudgetProfile",
    "DeviceProfile",
    "apply_budget",
    "get_budget",
    "get_profile",
]

