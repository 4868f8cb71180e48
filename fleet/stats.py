"""Statistics over seeds, as pure functions: medians, bootstrap intervals, paired differences.

One seed's run moves by points on its own (a fleet's final round, a task
split), so a claim is made over seeds: the median, a 95% interval, and for a
comparison the difference from a baseline taken seed by seed. The bootstrap
draws from a fixed generator, so the same figures give the same interval on
every machine and every rerun.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_DRAWS = 10_000
LEVEL = 0.95


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of per-seed figures."""
    return {"median": median(values), "min": float(min(values)), "max": float(max(values))}


def bootstrap_interval(values: Sequence[float], level: float = LEVEL, draws: int = BOOTSTRAP_DRAWS,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median: resample the values with replacement `draws`
    times, take each resample's median, and return the central `level` share of them.

    With 5 seeds it cannot be narrower than the data allow: read it as the range a median
    over other seeds would plausibly fall in, not as a test.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, x.size, size=(draws, x.size))], axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return float(low), float(high)


def describe(values: Sequence[float]) -> dict[str, float]:
    """Median, 95% bootstrap interval and range of per-seed figures."""
    low, high = bootstrap_interval(values)
    return {**paired(values), "ci_low": low, "ci_high": high}


def consistent_sign(differences: Sequence[float]) -> bool:
    """True when every difference is non-zero and of one sign: the least a paired effect must show."""
    return all(d > 0 for d in differences) or all(d < 0 for d in differences)


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> dict:
    """`values` minus `baseline`, seed by seed: describe() of the differences and whether their sign
    holds on every seed."""
    if len(values) != len(baseline):
        raise ValueError(f"paired figures need one value per seed on both sides, got {len(values)} "
                         f"and {len(baseline)}")
    # a difference within float rounding of the figures is none (two runs' equal times summed apart)
    differences = [0.0 if abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b)) else a - b
                   for a, b in zip(values, baseline)]
    return {**describe(differences), "same_sign": consistent_sign(differences)}
