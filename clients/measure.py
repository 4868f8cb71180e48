"""What a device measures about its own round: the process's peak memory and, where the
platform has a counter, the energy it drew. Both sit next to the time model's figures so
that the model can be checked against hardware.

Peak memory is the process's high-water mark (getrusage's ru_maxrss). On a real device
a SuperNode starts a fresh ClientApp process per message, so it is that round's peak;
in simulation a Ray worker serves several devices and the figure is the worker's.
Linux keeps ru_maxrss across fork and exec, so a process starts at its parent's
mark: a ClientApp's peak (about 500 MB) is well above its launcher's.

Energy comes from the Linux powercap interface (Intel RAPL: package energy in
microjoules, wrapping at max_energy_range_uj). A Raspberry Pi has no energy counter
(its PMIC reports instantaneous readings only), so there the reading is absent, not
made up.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


def peak_rss_bytes() -> int:
    """This process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class EnergyCounter:
    """One RAPL package domain: a cumulative microjoule counter that wraps at `range_uj`."""

    path: Path
    range_uj: int

    def read_uj(self) -> int | None:
        return _read_int(self.path / "energy_uj")


def energy_counters(root: Path = POWERCAP) -> list[EnergyCounter]:
    """The readable package-level domains (intel-rapl:N, not their sub-domains intel-rapl:N:M)."""
    found = []
    for domain in sorted(root.glob("intel-rapl:*")):
        if domain.name.count(":") != 1:
            continue
        span = _read_int(domain / "max_energy_range_uj")
        if span and _read_int(domain / "energy_uj") is not None:
            found.append(EnergyCounter(domain, span))
    return found


class EnergyMeter:
    """Joules drawn between `start` and `stop`, summed over the packages; None without a counter.

    Package energy covers the whole chip, other processes included: on a device that
    trains alone it is the round's energy, on a shared machine an upper bound.
    """

    def __init__(self, root: Path = POWERCAP) -> None:
        self.counters = energy_counters(root)
        self._start: list[int | None] = []

    def start(self) -> None:
        self._start = [c.read_uj() for c in self.counters]

    def stop(self) -> float | None:
        if not self.counters or not self._start:
            return None
        total = 0
        for counter, began in zip(self.counters, self._start):
            now = counter.read_uj()
            if now is None or began is None:
                return None
            total += (now - began) % counter.range_uj  # one wrap at most in a round
        return total / 1e6
