"""The world's round planning alone (online, free, plan, settle), without Flower or training.

Prints, for fleets of 1,000 / 10,000 / 100,000 devices (a mix of the built-in
profiles, on/off phones included, failures and jitter as the profiles say),
the wall seconds per round and for 100 rounds, sampling 10% of the fleet a
round; every sampled device reports the work of a small model.
Usage: python benchmarks/world_planning.py [N ...]
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from fleet.world import BUDGETS, SimWorld, get_profile
from server.bookkeeping import DeviceReport

MIX = (("rpi4", 0.3), ("rpi4-wifi", 0.3), ("rpi-zero2w", 0.2), ("phone", 0.2))
ROUNDS = 100


def fleet(n: int) -> list:
    names = [name for name, share in MIX for _ in range(round(share * n))]
    return [get_profile(name) for name in names[:n]]


def round_seconds(n: int, rounds: int, seed: int) -> list[float]:
    world = SimWorld(fleet(n), BUDGETS["tight"], deadline_s=None, keep_first=None, offline_rate_per_s=0.0,
                     seed=seed)
    rng, everyone, spent = random.Random(seed), list(range(n)), []
    for r in range(1, rounds + 1):
        started = time.perf_counter()
        free = world.free(world.online(r, everyone))
        chosen = sorted(rng.sample(free, min(len(free), n // 10)))
        world.plan(r, chosen, 60_000)
        world.settle(r, [DeviceReport(d, 2e9, 60_000, 60_000, 20 << 20) for d in chosen])
        spent.append(time.perf_counter() - started)
    return spent


def main(sizes: list[int]) -> None:
    print("world planning alone: online + free + plan + settle, 10% of the fleet sampled a round, budget tight")
    print(f"{'devices':>8} {'rounds':>6} {'median s/round':>15} {'min':>8} {'max':>8} {'s for 100 rounds':>17}")
    for n in sizes:
        rounds = ROUNDS if n <= 10_000 else 20
        spent = round_seconds(n, rounds, seed=0)
        per = statistics.median(spent)
        print(f"{n:>8,} {rounds:>6} {per:>15.4f} {min(spent):>8.4f} {max(spent):>8.4f} {per * ROUNDS:>17.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000])
