"""Running a scenario: the run itself (runner), the dry run, comparisons over variants and seeds,
checkpoints and resume, and ending cleanly (signals, the watchdog, processes).

The names below load on first use (PEP 562): the watchdog starts as
`python -m fleet.run.watchdog` beside every run and must be watching within
milliseconds, not after the seconds that importing Flower, Ray and torch take.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.lazy import lazy_names

if TYPE_CHECKING:
    from fleet.run.checkpoint import checkpoint_dir
    from fleet.run.compare import (
        PAIRED_ORDER,
        format_paired,
        format_table,
        named,
        over_seeds,
        paired_over_seeds,
        parse_set,
        run_comparison,
        safe_name,
        seeded,
        variant_dirs,
        variants,
    )
    from fleet.run.dryrun import dry_run
    from fleet.run.processes import stop_group
    from fleet.run.runner import device_spec, run_scenario
    from fleet.run.signals import Terminated, handle_sigterm

_HOMES = {
    "PAIRED_ORDER": "fleet.run.compare",
    "Terminated": "fleet.run.signals",
    "checkpoint_dir": "fleet.run.checkpoint",
    "device_spec": "fleet.run.runner",
    "dry_run": "fleet.run.dryrun",
    "format_paired": "fleet.run.compare",
    "format_table": "fleet.run.compare",
    "handle_sigterm": "fleet.run.signals",
    "named": "fleet.run.compare",
    "over_seeds": "fleet.run.compare",
    "paired_over_seeds": "fleet.run.compare",
    "parse_set": "fleet.run.compare",
    "run_comparison": "fleet.run.compare",
    "run_scenario": "fleet.run.runner",
    "safe_name": "fleet.run.compare",
    "seeded": "fleet.run.compare",
    "stop_group": "fleet.run.processes",
    "variant_dirs": "fleet.run.compare",
    "variants": "fleet.run.compare",
}

__all__ = [
    "PAIRED_ORDER",
    "Terminated",
    "checkpoint_dir",
    "device_spec",
    "dry_run",
    "format_paired",
    "format_table",
    "handle_sigterm",
    "named",
    "over_seeds",
    "paired_over_seeds",
    "parse_set",
    "run_comparison",
    "run_scenario",
    "safe_name",
    "seeded",
    "stop_group",
    "variant_dirs",
    "variants",
]


__getattr__ = lazy_names(__name__, _HOMES)
