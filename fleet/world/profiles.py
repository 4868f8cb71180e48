"""Device and budget profiles: what one simulated edge device can do and costs.

A DeviceProfile turns measured work (FLOPs, bytes, peak memory) into seconds and
joules in fleet.world.timing. Every figure of every built-in profile (fleet.world.builtin_profiles)
carries its source in PROFILE_SOURCES, next to the profile (`fleet profiles --sources` prints them):
a measurement, datasheet or paper, with a URL where one exists, or
"assumption: <why>". The *training efficiency* (the fraction of the vendor/HPL
peak that a real training loop reaches), the power of transfers and waiting, and
the availability and failure figures are mostly modelling assumptions, and say so.
memory_mb is what is left for training after the firmware, the OS and the
Python/torch/Flower runtime (training_memory_mb), not the board's total.

Scenarios add their own profiles (a built-in with some figures changed, or
every figure from scratch) under `profiles:`; see fleet.config.

A BudgetProfile scales a device down (compute, memory, bandwidth, and the power
that goes with them: apply_budget) and may add a per-round deadline, so
`fleet compare` can run one scenario under several resource regimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace

from clients.errors import InputError
from fleet.rules import check_fields, rule

# Assumption: a training loop (small batches, framework overhead, memory-bound
# layers) sustains about 30% of an HPL/vendor peak on CPU-class devices.
HPL_TRAIN_EFFICIENCY = 0.3

# Sparse-kernel speed-ups of a training step over dense, by weight sparsity: SparCL
# (Wang et al., NeurIPS 2022), measured on a Snapdragon 865 phone CPU at batch 32 with
# the authors' (unreleased) code generator: 2.3x at 0.90, 3.1x at 0.95. The example
# table for `timing.kernels: sparse`; a kernel table measured on the device beats it.
PAPER_SPARSE_SPEEDUP = ((0.9, 2.3), (0.95, 3.1))

# Speed-ups of compacted (channel-masked) layers over dense, by the share of their FLOPs they
# no longer run: measured with `fleet bench kernels scenarios/quickstart.yaml` (the quickstart's
# SmallCNN, batch 32, one torch 2.13 thread on this project's 2-core AMD EPYC, median of 5;
# the run of 2026-11-28; the rerun of 2026-11-29 in results/kernels/, with two other benchmarks
# on the same 2 cores, measured 2.27, 4.11, 5.14 and 5.72). Whole-model ratios (the stem and
# norms stay dense), so a layer alone gains a little more. The default for
# `sparcl.granularity: channel`; `timing.compaction_speedup` takes a table measured on the
# device (`fleet bench kernels` writes one).
MEASURED_COMPACTION_SPEEDUP = ((0.7273, 2.437), (0.9205, 4.589), (0.9828, 6.338), (0.9937, 7.065))

AVAILABILITY_MODELS = ("always", "bernoulli", "onoff")


# --------------------------------------------------------------------------- checks


def unknown_name(kind: str, name: object, known: Mapping[str, object]) -> InputError:
    """One error style for every 'pick a name from this table' lookup."""
    return InputError(f"{kind} '{name}' is unknown (choose from: {', '.join(sorted(known))})")


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of edge device; frozen so a fleet can share it safely.

    memory_mb counts MiB (2**20 bytes, as a "4 GB" board has 4096 of them);
    link rates count Mbit/s (1e6 bits), the unit links are sold in. Uplink
    and downlink differ on most access links (Wi-Fi, LTE, ADSL).

    Radio power follows Huang et al.'s LTE model (MobiSys 2012), linear in
    throughput: radio_w plus downlink_w_per_mbps (uplink_w_per_mbps) per
    Mbit/s received (sent), so that term's energy is per megabit moved; with
    both 0 (the default) a transfer draws radio_w whatever its rate. After each
    transfer the radio may stay powered for tail_s at tail_w (LTE's RRC tail;
    0: none), on top of what the device does meanwhile (fleet.world.timing).
    """

    name: str
    peak_gflops: float = rule(gt=0)  # vendor/HPL peak
    efficiency: float = rule(gt=0, le=1)  # fraction of peak that training reaches
    memory_mb: float = rule(gt=0)  # RAM available for training (after the OS and runtime), MiB
    downlink_mbps: float = rule(gt=0)  # server -> device, Mbit/s
    uplink_mbps: float = rule(gt=0)  # device -> server, Mbit/s
    downlink_latency_s: float = rule(ge=0)  # fixed cost of one download
    uplink_latency_s: float = rule(ge=0)  # fixed cost of one upload
    active_w: float = rule(ge=0)  # power while computing
    radio_w: float = rule(ge=0)  # power while transferring, before the per-Mbit/s terms below (Huang et al.'s base)
    idle_w: float = rule(ge=0)  # power while waiting
    availability: float = rule(gt=0, le=1)  # probability the device is online at a round ("bernoulli")
    # always | bernoulli (a draw each round) | onoff (alternating periods)
    availability_model: str = rule("bernoulli", choices=AVAILABILITY_MODELS)
    mean_on_s: float = rule(3600.0, gt=0)  # onoff: mean length of an online period, simulated seconds
    mean_off_s: float = rule(600.0, gt=0)  # onoff: mean length of an offline period
    failure_prob: float = rule(0.0, ge=0, lt=1)  # chance that a sampled device fails mid-round
    speed_jitter: float = rule(0.0, ge=0, le=1)  # coefficient of variation of its compute speed, round to round
    downlink_w_per_mbps: float = rule(0.0, ge=0)  # radio power per Mbit/s received, on top of radio_w
    uplink_w_per_mbps: float = rule(0.0, ge=0)  # radio power per Mbit/s sent, on top of radio_w
    tail_s: float = rule(0.0, ge=0)  # seconds the radio stays powered after each transfer (an LTE RRC tail)
    tail_w: float = rule(0.0, ge=0)  # power of that tail, on top of what the device does meanwhile

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"device profile name must be a non-empty string, got {self.name!r}")
        check_fields(self, f"device profile '{self.name}'")

    @property
    def train_flops_per_s(self) -> float:
        """FLOP/s a training loop actually sustains: peak derated by efficiency."""
        return self.peak_gflops * 1e9 * self.efficiency

    @property
    def download_w(self) -> float:
        """Power while receiving at the full downlink rate (Huang et al.: linear in throughput)."""
        return self.radio_w + self.downlink_w_per_mbps * self.downlink_mbps

    @property
    def upload_w(self) -> float:
        """Power while sending at the full uplink rate."""
        return self.radio_w + self.uplink_w_per_mbps * self.uplink_mbps


FIGURES: tuple[str, ...] = tuple(f.name for f in fields(DeviceProfile) if f.name != "name")
REQUIRED_FIGURES: tuple[str, ...] = tuple(
    f.name for f in fields(DeviceProfile) if f.name != "name" and f.default is MISSING
)


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class BudgetProfile:
    """A resource regime: multiplies a device's compute, memory and bandwidth.

    deadline_s is a per-round deadline in seconds after the round starts, or
    None for "wait for everyone".
    """

    name: str
    compute_scale: float = rule(gt=0)
    memory_scale: float = rule(gt=0)
    bandwidth_scale: float = rule(gt=0)
    deadline_s: float | None = rule(None, gt=0)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"budget profile name must be a non-empty string, got {self.name!r}")
        check_fields(self, f"budget profile '{self.name}'")


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
        raise unknown_name("budget profile", name, BUDGETS) from None


def budget_active_w(device: DeviceProfile, compute_scale: float) -> float:
    """Power while computing under a compute budget: idle_w + (active_w - idle_w) x compute_scale.

    Assumption (no profile's source measures a capped device): a budget caps
    the clock, and a CMOS chip's dynamic power, C V^2 f, scales with the clock
    at a fixed voltage, while the idle floor stays. So a FLOP costs the same
    dynamic energy at any cap, and only the floor's share grows with the longer
    time. Not the cubic of DVFS, where the voltage follows the clock down: a
    cap need not lower the voltage, and linear is the conservative choice,
    the one that saves the least. Written as active_w x s + idle_w x (1 - s),
    exact at s = 1; never below 0 (a scale above 1 on a device whose active
    power is below its idle power would go negative).
    """
    return max(0.0, device.active_w * compute_scale + device.idle_w * (1.0 - compute_scale))


def apply_budget(device: DeviceProfile, budget: BudgetProfile) -> DeviceProfile:
    """The device under a budget: peak compute, memory and bandwidth scaled, and the power that goes with them.

    Compute scales the peak, not the efficiency, so efficiency stays in (0, 1],
    and the power while computing with it (budget_active_w: the clock's
    dynamic share, linearly). Bandwidth scales both link rates; radio power
    follows them through Huang et al.'s linear model: radio_w stays (paid for
    the longer transfer) and the per-Mbit/s terms, whose energy is per megabit
    moved, scale with the throughput by themselves, so nothing here changes
    them: a phone under `tight` receives at 10 Mbit/s at 1.808 W (2.328 at 20)
    and sends at 4 Mbit/s at 3.040 W (4.792 at 8). The tail, a timer, stays.
    The name is kept so the result still identifies the hardware; the deadline
    is the round's business (fleet.world.timing.simulate_round), not the device's.
    """
    return replace(
        device,
        peak_gflops=device.peak_gflops * budget.compute_scale,
        active_w=budget_active_w(device, budget.compute_scale),
        memory_mb=device.memory_mb * budget.memory_scale,
        downlink_mbps=device.downlink_mbps * budget.bandwidth_scale,
        uplink_mbps=device.uplink_mbps * budget.bandwidth_scale,
    )

