"""`fleet calibrate`: measure how fast this machine really trains a scenario's model, and make a profile of it.

The time model turns the FLOPs a device's kernels execute into seconds at the
profile's sustained rate. Here that rate is measured, not looked up: the
project's own learner trains the scenario's model in the shape of a device's
round (one device's share of the first task, `local_epochs` epochs at a time):
as the scenario configures it, dense, and with SparCL's weight masks alone (TDM), at
a few batch sizes, interleaved and repeated, on the torch threads one simulated
device gets. The rate is kernel FLOPs (clients.budget's count: dense kernels
multiply the zeros) over the CPU seconds of `train_round`, so everything a
training loop does besides the multiply-adds is inside it.

The profile takes the rate of the scenario's learner as configured, at its
batch size, as its sustained rate (`peak_gflops` with `efficiency` 1); every
other figure comes from a base profile, and its sources say so. Rates are on
process CPU time, as a device reports its compute time (clients.device), so
other processes on the machine (the other simulated devices) do not skew them.
Run on a Raspberry Pi, this makes a measured Pi profile.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml

from clients.budget import RoundBudget
from clients.device import device_data, stream_of
from clients.errors import InputError
from clients.sparcl.config import LearnerConfig
from clients.sparcl.learner import Learner
from fleet.world import PROFILES
from fleet.outputs import write_csv, write_text
from fleet.config import Scenario

VARIANTS = ("dense", "masked", "scenario")


@dataclass(frozen=True)
class Measurement:
    variant: str            # dense | masked (TDM weight masks alone) | scenario (its learner as configured)
    batch: int
    repeat: int
    examples: int
    kernel_flops: float
    seconds: float          # wall clock of train_round
    cpu_seconds: float      # this process's CPU time over the same span: what the rate is made of

    @property
    def gflops(self) -> float:
        """Kernel GFLOP/s on process CPU time: other load on the machine does not slow it down."""
        return self.kernel_flops / self.cpu_seconds / 1e9


def config_for(scenario: Scenario, variant: str, batch: int) -> LearnerConfig:
    """The scenario's learner at this batch size: as configured, dense, or masked by TDM alone; on the
    CPU whatever train.device says (the rate is per process CPU second, and profiles are CPUs)."""
    config = scenario.learner_config(scenario.seed)
    if variant == "dense":
        config = replace(config, sparcl=replace(config.sparcl, tdm=None, ddr=None, dgm=None))
    elif variant == "masked":
        tdm = config.sparcl.tdm or scenario.with_overrides({"sparcl.enabled": True}).learner_config(
            scenario.seed).sparcl.tdm
        config = replace(config, sparcl=replace(config.sparcl, tdm=tdm, ddr=None, dgm=None))
    return replace(config, train=replace(config.train, batch_size=batch, device="cpu"))


def measure(scenario: Scenario, *, batches: tuple[int, ...], repeats: int = 3, chunk_s: float = 1.0,
            threads: int = 1, progress=None) -> list[Measurement]:
    """Time training chunks of about `chunk_s`, every (variant, batch) once per repeat, interleaved."""
    if threads < 1 or repeats < 1 or chunk_s <= 0 or not batches or min(batches) < 1:
        raise InputError("calibrate: --threads, --repeats, --seconds and every batch size must be positive")
    from fleet.run import device_spec

    torch.set_num_threads(threads)
    spec = device_spec(scenario)
    stream = stream_of(spec)
    x, y = device_data(spec, 0, 0)  # a device's share of the first task: its rounds' shape
    learners = {}
    for variant in VARIANTS:
        for batch in batches:
            learner = Learner(config_for(scenario, variant, batch), stream.input_shape, stream.num_classes)
            learner.begin_task(0, stream.tasks[0].classes, x, y)
            learner.train_round(1, RoundBudget(compute_flops=_one_step(learner, batch)))  # warm up
            learners[variant, batch] = learner
    found = []
    for repeat in range(repeats):
        for (variant, batch), learner in learners.items():
            found.append(_time_chunk(learner, variant, batch, repeat, chunk_s, spec.local_epochs))
            if callable(progress):
                progress()
    return found


def _one_step(learner: Learner, batch: int) -> float:
    """Kernel FLOPs of about one step, so the warm-up trains once."""
    return learner.step_costs()[1] * batch * 3


def _time_chunk(learner: Learner, variant: str, batch: int, repeat: int, chunk_s: float,
                epochs: int) -> Measurement:
    """Whole device rounds (`epochs` epochs of its share) for about `chunk_s`: the per-epoch work
    (mask updates, removals, shuffles) weighs on a device's few examples as it does in a run."""
    examples, flops = 0, 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < chunk_s:
        work = learner.train_round(epochs)
        examples += work.examples
        flops += work.kernel_flops
    return Measurement(variant, batch, repeat, examples, flops, time.perf_counter() - wall0,
                       time.process_time() - cpu0)


def median_rates(found: list[Measurement]) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(variant, batch) -> (median, min, max) GFLOP/s over the repeats."""
    groups: dict[tuple[str, int], list[float]] = {}
    for m in found:
        groups.setdefault((m.variant, m.batch), []).append(m.gflops)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in groups.items()}


def profile_entry(scenario: Scenario, found: list[Measurement], *, base: str, threads: int) -> tuple[str, dict]:
    """A `profiles:` entry for this machine: the scenario's learner's measured rate at its batch size."""
    batch = scenario.train.batch_size
    rates = median_rates(found)
    gflops = rates["scenario", batch][0]
    host = platform.node() or "this-machine"
    name = "calibrated-" + "".join(c if c.isascii() and (c.isalnum() or c in "-.") else "-" for c in host)[:28]
    when = datetime.date.today().isoformat()
    source = (f"measured by `fleet calibrate` on {host} ({platform.machine()}, torch {torch.__version__}, "
              f"{threads} thread{'s' * (threads != 1)}) on {when}: kernel FLOPs over process CPU time, median of "
              f"{len(set(m.repeat for m in found))} runs of {scenario.learner_config(scenario.seed).label} at batch "
              f"{batch} on a device's share of {scenario.dataset.name}, {scenario.train.local_epochs} epochs a round")
    entry = {"base": base, "peak_gflops": round(gflops, 4), "efficiency": 1.0,
             "sources": {"peak_gflops": source,
                         "efficiency": "measured: the rate above is already what training sustains"}}
    return name, entry


def run_calibration(scenario: Scenario, out_dir: Path, *, batches: tuple[int, ...], repeats: int, chunk_s: float,
              threads: int, base: str, progress=None) -> dict:
    """Measure, then write calibration.csv, profile.yaml (a `profiles:` block) and scenario.yaml (the
    scenario with every device on the measured profile, ready for `fleet run`)."""
    if scenario.train.batch_size not in batches:
        raise InputError(f"calibrate: the scenario's batch size {scenario.train.batch_size} must be among --batches")
    if base not in PROFILES:  # a user profile's own base would not carry over into profile.yaml
        raise InputError(f"calibrate: --base '{base}' is not a built-in device profile "
                         f"(choose from: {', '.join(PROFILES)})")
    found = measure(scenario, batches=batches, repeats=repeats, chunk_s=chunk_s, threads=threads,
                    progress=progress)
    name, entry = profile_entry(scenario, found, base=base, threads=threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "calibration.csv",
              [{**m.__dict__, "gflops": m.gflops} for m in found],
              ["variant", "batch", "repeat", "examples", "kernel_flops", "seconds", "cpu_seconds", "gflops"])
    write_text(out_dir / "profile.yaml", yaml.safe_dump({"profiles": {name: entry}}, sort_keys=False))
    calibrated = scenario.to_dict()
    calibrated["profiles"] = {**(calibrated.get("profiles") or {}), name: entry}
    calibrated["fleet"]["profiles"] = {name: scenario.fleet.devices}
    calibrated["name"] = f"{scenario.name}-calibrated"
    calibrated["output"] = f"{scenario.output}-calibrated"
    write_text(out_dir / "scenario.yaml", yaml.safe_dump(calibrated, sort_keys=False))
    return {"profile": name, "entry": entry, "rates": median_rates(found), "measurements": found}
