"""What a device's work costs in simulated seconds and joules, as pure functions of its profile.

The real training measures the work (FLOPs, bytes each way, peak memory); these
formulas turn it into time and energy, and draw the per-round randomness the
world keys by (seed, round, device): failures and speed jitter. The simpy model
of a round that runs them is fleet.world.rounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np

from clients.errors import InputError
from fleet.world.draws import FAILURE, JITTER_A, JITTER_B, keyed_normals, keyed_uniforms
from fleet.world.profiles import DeviceProfile

MIB = 2**20  # bytes per memory_mb unit
Status = Literal["ok", "late", "failed", "oom", "declined"]

# A scheduler's margin: plan a deadline's compute at the speed a jittery device beats in all but this share of
# its rounds (planned_speed), so a compute-limited device is late in about a tenth of them; at the mean speed
# it would be late in about half.
DEFAULT_PLAN_QUANTILE = 0.1


# --------------------------------------------------------------------------- checks


def non_negative(what: str, value: float) -> float:
    """Work, sizes and durations are never negative; NaN would poison every sum."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


# --------------------------------------------------------------------------- formulas


def compute_time_s(flops: float, profile: DeviceProfile) -> float:
    """Seconds to do `flops` of training at the rate the device sustains."""
    return non_negative("train_flops", flops) / profile.train_flops_per_s


def transfer_time_s(nbytes: float, mbps: float, latency_s: float) -> float:
    """Seconds for one transfer: fixed latency plus bits over the link rate (Mbit/s = 1e6 bit/s)."""
    return latency_s + 8 * non_negative("nbytes", nbytes) / (mbps * 1e6)


def download_time_s(nbytes: float, profile: DeviceProfile) -> float:
    """Seconds to receive `nbytes` from the server over the device's downlink."""
    return transfer_time_s(nbytes, profile.downlink_mbps, profile.downlink_latency_s)


def upload_time_s(nbytes: float, profile: DeviceProfile) -> float:
    """Seconds to send `nbytes` to the server over the device's uplink."""
    return transfer_time_s(nbytes, profile.uplink_mbps, profile.uplink_latency_s)


def energy_j(busy_s: float, radio_s: float, idle_s: float, profile: DeviceProfile, *, down_mbit: float = 0.0,
             up_mbit: float = 0.0, tail_s: float = 0.0) -> float:
    """Joules: each state's power times the time spent in it, plus the radio's throughput term and its tail.

    busy_s computing at active_w, radio_s transferring at radio_w, idle_s
    waiting at idle_w; the megabits received and sent at downlink_w_per_mbps
    and uplink_w_per_mbps (Huang et al.'s model is linear in throughput, so
    that term's energy is per megabit, whatever the rate); tail_s in the
    radio's tail at tail_w, on top of what the device does meanwhile (the CPU
    computing or waiting and the radio are both on).
    """
    return (
        profile.active_w * non_negative("busy_s", busy_s)
        + profile.radio_w * non_negative("radio_s", radio_s)
        + profile.idle_w * non_negative("idle_s", idle_s)
        + profile.downlink_w_per_mbps * non_negative("down_mbit", down_mbit)
        + profile.uplink_w_per_mbps * non_negative("up_mbit", up_mbit)
        + profile.tail_w * non_negative("tail_s", tail_s)
    )


def moved_mbit(seconds: float, nbytes: float, mbps: float, latency_s: float) -> float:
    """Megabits a transfer of `nbytes` moved in `seconds`: all of them once done; cut short, at most its own
    rate's worth after its latency (a shared link's fair share moves no more)."""
    return min(8 * non_negative("nbytes", nbytes) / 1e6, max(0.0, seconds - latency_s) * mbps)


def tail_time_s(transfers: Sequence[tuple[float, float]], stop_s: float, tail_s: float) -> float:
    """Seconds the radio spends in its tail: after each transfer (start, end), in time order, until tail_s has
    passed, the next transfer starts, or the device leaves the round at stop_s.

    A transfer that starts inside the tail cuts it: the two are one burst,
    and only the tail after the last of them runs its course. So a download
    followed at once by an upload pays one tail; two transfers more than
    tail_s apart pay two.
    """
    total = 0.0
    for i, (_, end) in enumerate(transfers):
        until = min(end + tail_s, stop_s, transfers[i + 1][0] if i + 1 < len(transfers) else math.inf)
        total += max(0.0, until - end)
    return total


def fits_memory(peak_bytes: float, profile: DeviceProfile) -> bool:
    """Whether training's peak memory fits the device (memory_mb counts MiB)."""
    return non_negative("peak_memory_bytes", peak_bytes) <= profile.memory_mb * MIB



# --------------------------------------------------------------------------- keyed draws


def failure_delay(rate_per_s: float, seed: int, server_round: int, device: int) -> float:
    """Seconds into a round at which `device` fails (inf when failures are off).

    Drawn from its own generator keyed by (seed, round, device), so it does
    not depend on which other devices take part or in which order they reply.
    """
    non_negative("offline_rate_per_s", rate_per_s)
    if rate_per_s == 0:
        return math.inf
    return float(np.random.default_rng([seed, server_round, device, 1]).exponential(1.0 / rate_per_s))


def failure_fraction(failure_prob, seed: int, server_round: int, devices) -> np.ndarray:
    """Where in its planned work each device fails, as a fraction in [0, 1) (inf: it does not fail).

    One keyed uniform u per (seed, round, device): the device fails when
    u < failure_prob, and then u / failure_prob is uniform on [0, 1), so one
    draw decides both whether and where. `failure_prob` is one chance or one
    per device.
    """
    ids = np.asarray(devices, dtype=np.int64).reshape(-1)
    prob = np.broadcast_to(np.asarray(failure_prob, dtype=np.float64), ids.shape)
    out = np.full(ids.shape, math.inf)
    risky = prob > 0
    if risky.any():
        u = keyed_uniforms(seed, server_round, ids[risky], FAILURE)
        out[risky] = np.where(u < prob[risky], u / prob[risky], math.inf)
    return out


def speed_factor(speed_jitter, seed: int, server_round: int, devices) -> np.ndarray:
    """Each device's compute-speed factor this round: lognormal with mean 1 and coefficient of variation
    `speed_jitter` (one per device or one for all); exactly 1 where the jitter is 0.

    A lognormal keeps speeds positive and skews slow rounds longer than fast
    ones, as background load and thermal throttling do; sigma^2 = ln(1 + cv^2)
    and mu = -sigma^2 / 2 give mean 1. Keyed by (seed, round, device).
    """
    ids = np.asarray(devices, dtype=np.int64).reshape(-1)
    cv = np.broadcast_to(np.asarray(speed_jitter, dtype=np.float64), ids.shape)
    out = np.ones(ids.shape)
    jittery = cv > 0
    if jittery.any():
        sigma2 = np.log1p(cv[jittery] ** 2)
        z = keyed_normals(seed, server_round, ids[jittery], (JITTER_A, JITTER_B))
        out[jittery] = np.exp(np.sqrt(sigma2) * z - sigma2 / 2)
    return out


def planned_speed(speed_jitter: float, quantile: float) -> float:
    """The speed factor a device reaches or beats with probability 1 - `quantile` (speed_factor's lognormal).

    Planning a deadline's compute at this speed makes a compute-limited
    device late in a share `quantile` of its rounds: it is late exactly when
    its round's factor falls below this one. 1 where the jitter is 0.
    """
    if not 0 < quantile < 1:
        raise InputError(f"plan_quantile must be in (0, 1), got {quantile!r}")
    cv = non_negative("speed_jitter", speed_jitter)
    if cv == 0:
        return 1.0
    sigma2 = math.log1p(cv * cv)
    return math.exp(math.sqrt(sigma2) * NormalDist().inv_cdf(quantile) - sigma2 / 2)
