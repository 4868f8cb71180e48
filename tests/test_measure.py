"""A device's own measurements: its process's peak memory and, where the platform has a
powercap counter, its energy (a sysfs tree written here in the kernel's format)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from clients.measure import EnergyMeter, energy_counters, peak_rss_bytes


def rapl(root: Path, name: str, energy_uj: int, range_uj: int = 262_143_328_850) -> Path:
    domain = root / name
    domain.mkdir(parents=True)
    (domain / "energy_uj").write_text(f"{energy_uj}\n")
    (domain / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return domain


def test_peak_rss_grows_with_what_the_process_touches():
    """In a fresh process, which starts with its parent's high-water mark (Linux keeps ru_maxrss across
    fork and exec): it writes more than that mark, and the figure follows."""
    script = ("import numpy as np; from clients.measure import peak_rss_bytes; before = peak_rss_bytes(); "
              "block = np.ones((before + 128 * 2**20) // 8); print(before, peak_rss_bytes())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[1])
    before, after = map(int, done.stdout.split())
    assert before > 10 * 2**20 and after >= before + 64 * 2**20
    assert peak_rss_bytes() > 10 * 2**20


def test_energy_is_summed_over_packages_and_survives_a_wrap(tmp_path):
    p0 = rapl(tmp_path, "intel-rapl:0", 1_000_000)
    p1 = rapl(tmp_path, "intel-rapl:1", 999_000_000, range_uj=1_000_000_000)
    rapl(tmp_path, "intel-rapl:0:0", 5)  # a sub-domain (core): inside package 0, not added again
    meter = EnergyMeter(tmp_path)
    assert [c.path.name for c in energy_counters(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    meter.start()
    (p0 / "energy_uj").write_text("3500000\n")   # +2.5 J
    (p1 / "energy_uj").write_text("1500000\n")   # wrapped: +2.5 J
    assert meter.stop() == 5.0


def test_no_counter_means_no_reading_not_a_zero(tmp_path):
    meter = EnergyMeter(tmp_path)
    meter.start()
    assert meter.stop() is None
    unreadable = rapl(tmp_path, "intel-rapl:0", 10)
    (unreadable / "energy_uj").write_text("n/a\n")
    assert energy_counters(tmp_path) == []
