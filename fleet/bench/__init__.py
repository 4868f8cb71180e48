"""Benchmarks: SparCL against its controls on one learner (`fleet bench sparcl`), the speed of sparse
kernels (`fleet bench kernels`), a device's calibration (`fleet calibrate`) and the accuracy-speed
frontier (`fleet bench frontier`).
"""

from fleet.bench.calibrate import VARIANTS, calibrate
from fleet.bench.kernels import KernelsConfig, check_kernels_dir, format_kernels_table, parse_densities, run_kernels
from fleet.bench.sparcl import (
    BenchConfig,
    format_table,
    learner_config,
    run_bench,
    sparcl_variants,
    total_epochs,
    with_authors_settings,
)

__all__ = [
    "BenchConfig",
    "KernelsConfig",
    "VARIANTS",
    "calibrate",
    "check_kernels_dir",
    "format_kernels_table",
    "format_table",
    "learner_config",
    "parse_densities",
    "run_bench",
    "run_kernels",
    "sparcl_variants",
    "total_epochs",
    "with_authors_settings",
]
