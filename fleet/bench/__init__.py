"""Benchmarks: SparCL against its controls on one learner (`fleet bench sparcl`), the speed of sparse
kernels (`fleet bench kernels`), a device's calibration (`fleet calibrate`) and the accuracy-speed
frontier (`fleet bench frontier`).
"""

from fleet.bench.calibrate import VARIANTS, run_calibration
from fleet.bench.frontier import format_points, parse_target, read_reports, write_frontier
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
    "check_kernels_dir",
    "format_kernels_table",
    "format_points",
    "format_table",
    "learner_config",
    "parse_densities",
    "parse_target",
    "read_reports",
    "run_bench",
    "run_calibration",
    "run_kernels",
    "sparcl_variants",
    "total_epochs",
    "with_authors_settings",
    "write_frontier",
]
