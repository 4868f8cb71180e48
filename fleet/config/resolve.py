"""The second step of parsing: defaults that depend on other sections, and the combinations that no
single field can check (the fleet's mix, the stream against the data, budgets, async mode, user
profiles, and the fleet's memory against this machine's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import difflib
import os
from dataclasses import fields, replace
from pathlib import Path

import torch

from clients.accounting import buffer_bytes
from clients.backbones import build_backbone, resolved_backbone
from clients.budget import check_speedup_table
from clients.data import DEFAULT_DATA_DIRS, INPUT_SHAPES, NUM_CLASSES, TRAIN_PER_CLASS, require_data_dir
from clients.errors import InputError, excerpt
from fleet.world import (
    FIGURES,
    PROFILES,
    REQUIRED_FIGURES,
)
from fleet.config.builder import key_text
from fleet.config.schema import (
    FILE_DATASETS,
    MAX_NAME,
    MAX_ROUNDS,
    MEMORY_SHARE,
    PROFILE_NAME,
    FederationSpec,
    ProfileSpec,
    build_profile,
)

if TYPE_CHECKING:  # the scenario module builds on this one
    from fleet.config.scenario import Scenario

FEDERATION_DEFAULTS = {f.name: f.default for f in fields(FederationSpec)}


# --------------------------------------------------------------------------- derived defaults, combinations


def resolve_scenario(s: Scenario, fail) -> Scenario:
    """Fill the defaults that depend on other fields, then check cross-field constraints."""
    if not s.name.strip():
        fail("name must be a non-empty string")
    if len(s.name) > MAX_NAME:
        fail(f"name is {len(s.name)} characters long, more than {MAX_NAME}: {excerpt(s.name, 40)}")
    if "/" in s.name or "\\" in s.name or s.name in (".", ".."):
        fail(f"name must not hold '/' or '\\' or be '.' or '..' (it names the folder runs/<name>), "
             f"got {excerpt(s.name)}")
    if s.output is not None and not s.output.strip():
        fail("output must be a non-empty path")
    if s.output is not None and any(len(part.encode()) > 255 for part in Path(s.output).parts):
        fail(f"output has a path component longer than 255 bytes: {excerpt(s.output)}")

    ds = s.dataset
    classes = NUM_CLASSES[ds.name]
    if classes % ds.n_tasks:
        fail(f"dataset.n_tasks {ds.n_tasks} does not divide the {classes} classes of {ds.name}")
    if ds.name in FILE_DATASETS:
        if ds.data_dir is None and ds.name not in DEFAULT_DATA_DIRS:
            fail(f"dataset.data_dir is required for {ds.name} (a folder holding its files)")
        try:
            require_data_dir(ds.name, ds.data_dir)
        except InputError as err:
            fail(f"dataset.data_dir: {err}")

    for name, spec in (s.profiles or {}).items():
        _check_user_profile(name, spec, fail)
    known = [*PROFILES, *(s.profiles or {})]
    fl = s.fleet
    profiles = {"rpi4": fl.devices} if fl.profiles is None else fl.profiles
    for name, count in profiles.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            fail(f"fleet.profiles: unknown device profile '{key_text(name)}' ({hint}choose from: "
                 f"{', '.join(known)})")
        if count < 0:
            fail(f"fleet.profiles.{name} must be >= 0, got {count}")
    if sum(profiles.values()) != fl.devices:
        fail(f"fleet.profiles counts sum to {sum(profiles.values())} but fleet.devices is {fl.devices}")
    if fl.stock_clients > fl.devices:
        fail(f"fleet.stock_clients {fl.stock_clients} exceeds fleet.devices {fl.devices}")
    per_task = examples_per_task(ds.name, ds.n_tasks, ds.max_per_class)
    if fl.devices > per_task:
        fail(f"fleet.devices {fl.devices} exceeds the {per_task} training examples of a {ds.name} task"
             f"{' (dataset.max_per_class ' + str(ds.max_per_class) + ')' if ds.max_per_class else ''}: "
             "every device needs at least one")

    pa = s.partition
    if pa.scheme == "dirichlet" and pa.alpha is None:
        fail("partition.alpha is required when partition.scheme is dirichlet")
    if pa.scheme == "iid" and pa.alpha is not None:
        fail("partition.alpha is only for partition.scheme dirichlet (remove it for iid)")

    sp = s.sparcl
    if sp.enabled and not (sp.tdm or sp.ddr or sp.dgm):
        fail("sparcl.enabled is true but tdm, ddr and dgm are all false (set sparcl.enabled: false)")
    if sp.granularity == "channel" and not (sp.enabled and sp.tdm):
        fail("sparcl.granularity channel shapes TDM's masks: it needs sparcl.enabled and sparcl.tdm true")
    if sp.granularity == "channel" and s.train.norm != "batch":
        fail("train.norm group: channel masks compact each layer with its BatchNorm (sparcl.granularity "
             "channel needs train.norm batch)")
    tr = s.train
    if tr.device == "cuda" and tr.gpus_per_device == 0:
        fail("train.device cuda needs train.gpus_per_device > 0: Ray hides the GPUs from a simulated device "
             "that reserves none")
    if sp.sparse_kernels and tr.device != "cpu":
        fail(f"sparcl.sparse_kernels are SparseProp's CPU kernels: they need train.device cpu, not {tr.device}")
    if sp.sparse_kernels:
        if not (sp.enabled and sp.tdm) or sp.granularity != "weight":
            fail("sparcl.sparse_kernels runs TDM's weight masks: it needs sparcl.enabled and sparcl.tdm true "
                 "and granularity weight")
        channels = INPUT_SHAPES.get(s.dataset.name, (1,))[0]
        if resolved_backbone(s.train.backbone, channels) != "small-cnn":
            fail("sparcl.sparse_kernels runs the small-cnn backbone only (train.backbone)")

    fe = s.federation
    per_round = fe.devices_per_round
    if isinstance(per_round, float) and per_round > 1:
        fail(f"federation.devices_per_round as a fraction must be in (0, 1], got {per_round}")
    if isinstance(per_round, int) and per_round > fl.devices:
        fail(f"federation.devices_per_round {per_round} exceeds fleet.devices {fl.devices}")
    if fe.over_select > 1 and (per_round is None or per_round == fl.devices
                               or (isinstance(per_round, float) and round(per_round * fl.devices) >= fl.devices)):
        fail(f"federation.over_select {fe.over_select:g} samples no one more: federation.devices_per_round is "
             f"the whole fleet of {fl.devices} (ask for fewer)")
    if fe.min_available is not None and fe.min_available > fl.devices:
        fail(f"federation.min_available {fe.min_available} exceeds fleet.devices {fl.devices}")
    if s.stream.task_every_s is not None and s.stream.stagger_rounds:
        fail("stream.task_every_s puts every device on the clock's task: it cannot be combined with "
             "stream.stagger_rounds (set it to 0)")
    if fe.mask_policy == "local" and not (sp.enabled and sp.tdm):
        fail("federation.mask_policy local needs weight masks (sparcl.enabled and sparcl.tdm true)")

    s = replace(
        s,
        output=s.output if s.output is not None else f"runs/{s.name}",
        fleet=replace(fl, profiles=dict(profiles)),
        federation=replace(
            fe,
            rounds=fe.rounds if fe.rounds is not None
            else s.stream.rounds_per_task * ds.n_tasks + s.stream.stagger_rounds,
            devices_per_round=_devices_per_round(per_round, fl.devices),
            min_available=fe.min_available if fe.min_available is not None else min(2, fl.devices),
        ),
    )
    rounds = s.federation.rounds
    assert rounds is not None  # derived above
    if s.report.last_k is not None and s.report.last_k > rounds:
        fail(f"report.last_k {s.report.last_k} is larger than the run's {rounds} rounds (federation.rounds)")
    s = replace(s, report=replace(s.report, last_k=s.report.last_k or min(3, rounds)))
    budgets = s.budget_profiles()
    if s.timing.budget not in budgets:
        close = difflib.get_close_matches(s.timing.budget, list(budgets), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        fail(f"timing.budget: unknown budget profile '{s.timing.budget}' ({hint}choose from: {', '.join(budgets)})")
    if s.timing.compaction_speedup is not None:
        try:
            check_speedup_table(tuple(s.timing.compaction_speedup.items()), "timing.compaction_speedup")
        except InputError as err:
            fail(str(err))
    if s.timing.speedup is not None:
        try:
            check_speedup_table(tuple(s.timing.speedup.items()), "timing.speedup")
        except InputError as err:
            fail(str(err))
    if rounds > MAX_ROUNDS:
        derived = "" if fe.rounds is not None else " (stream.rounds_per_task x dataset.n_tasks + stream.stagger_rounds)"
        fail(f"federation.rounds {s.federation.rounds} is more than {MAX_ROUNDS:,}{derived}")
    if s.timing.keep_first is not None and s.timing.keep_first > s.sample_size():
        fail(f"timing.keep_first {s.timing.keep_first} exceeds the {s.sample_size()} devices sampled per round "
             "(federation.devices_per_round)")
    if s.federation.mode == "async":
        _check_async(s, fail)
    else:
        _check_sync(s.federation, fail)
    return s


def _check_sync(f: FederationSpec, fail) -> None:
    """Asynchronous settings a synchronous run would silently ignore. The defaults pass: every run folder's
    scenario.yaml spells them out, and they change nothing."""
    if f.concurrency is not None:
        fail("federation.concurrency limits asynchronous training: it needs federation.mode async")
    for name in ("buffer_size", "max_staleness"):
        value = getattr(f, name)
        if value != FEDERATION_DEFAULTS[name]:
            fail(f"federation.{name} {value} sets asynchronous aggregation (FedBuff): it needs federation.mode "
                 "async (synchronous rounds aggregate every accepted update)")


def _check_async(s: Scenario, fail) -> None:
    """What asynchronous mode needs: tasks on the clock (there are no rounds to count them by), and none of the
    synchronous round's controls."""
    if s.stream.task_every_s is None:
        fail("federation.mode async has no rounds to count tasks by: set stream.task_every_s (tasks on the "
             "simulated clock)")
    if s.federation.over_select > 1:
        fail("federation.over_select samples synchronous rounds: it cannot be combined with federation.mode async")
    if s.timing.keep_first is not None:
        fail("timing.keep_first closes synchronous rounds: in federation.mode async use federation.buffer_size")
    if s.fleet.stock_clients:
        fail("federation.mode async runs SparCL devices only (fleet.stock_clients)")


def _check_user_profile(name: str, spec: ProfileSpec, fail) -> None:
    """What the field rules cannot see: the name, the base, a complete from-scratch profile, the sources."""
    where = f"profiles.{key_text(name)}"
    if not PROFILE_NAME.fullmatch(name):
        fail(f"{where}: a profile name is 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if name in PROFILES:
        fail(f"{where}: '{name}' is a built-in profile; give yours another name and start from it with "
             f"base: {name}")
    if spec.base is not None and spec.base not in PROFILES:
        close = difflib.get_close_matches(spec.base, list(PROFILES), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        fail(f"{where}.base: unknown built-in profile {excerpt(spec.base, 40)} ({hint}choose from: "
             f"{', '.join(PROFILES)})")
    if spec.base is None:
        missing = [f for f in REQUIRED_FIGURES if getattr(spec, f) is None]
        if missing:
            fail(f"{where}: a profile without base must give every required figure; missing: "
                 f"{', '.join(missing)} (or start from a built-in with base: NAME)")
    for figure in spec.sources or {}:
        if figure not in FIGURES:
            fail(f"{where}.sources: unknown figure {excerpt(figure, 40)} (figures: {', '.join(FIGURES)})")
        if getattr(spec, figure) is None:
            fail(f"{where}.sources.{figure}: the profile does not set {figure}, so it has no source to give")
    try:  # a safety net: the field rules above are DeviceProfile's own (ProfileSpec derives them)
        build_profile(name, spec)
    except InputError as err:
        fail(f"{where}: {err}")


def examples_per_task(dataset: str, n_tasks: int, max_per_class: int | None = None) -> int:
    """At least how many training examples each task of `dataset` has (the smallest class, times its classes)."""
    per_class = TRAIN_PER_CLASS[dataset] if max_per_class is None else min(max_per_class, TRAIN_PER_CLASS[dataset])
    return per_class * (NUM_CLASSES[dataset] // n_tasks)


def learner_bytes(dataset: str, backbone: str, width: int | None, buffer_size: int, method: str) -> tuple[int, int]:
    """(model, full replay buffer) bytes of one device's learner, measured without allocating either.

    The model is built on torch's meta device, which records shapes only.
    """
    shape, classes = INPUT_SHAPES[dataset], NUM_CLASSES[dataset]
    with torch.device("meta"):
        model = build_backbone(backbone, shape, classes, width)
    values = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    return 4 * values, buffer_bytes(buffer_size, shape, classes, with_logits=method in ("der", "derpp"))


def memory_limit_bytes() -> int:
    """What one run may plan to use: MEMORY_SHARE of this machine's physical memory (8 GiB if unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = 8 << 30
    return int(MEMORY_SHARE * total)


def check_memory(s: Scenario, fail) -> None:
    """The fleet's memory, estimated before anything is built, must fit this machine.

    The simulation keeps every device's saved state (weights, last gradients,
    replay buffer) in memory, and one learner per CPU trains at once (weights,
    gradients, saved gradients and masks: four model copies, plus its buffer).
    """
    model, buffer = learner_bytes(s.dataset.name, s.train.backbone, s.train.width, s.method.buffer_size,
                                  s.method.name)
    workers = min(s.fleet.devices, os.cpu_count() or 1) + 1  # the server's evaluator holds one more
    need = s.fleet.devices * (2 * model + buffer) + workers * (4 * model + buffer)
    limit = memory_limit_bytes()
    if need > limit:
        culprit = (f"method.buffer_size {s.method.buffer_size}" if buffer > model
                   else f"train.width {s.train.width}" if s.train.width is not None
                   else f"train.backbone {s.train.backbone}")
        fail(f"{culprit}: the run would need about {need / 1e9:,.1f} GB ({s.fleet.devices} devices, each with a "
             f"{model / 1e6:,.1f} MB model and a {buffer / 1e6:,.1f} MB replay buffer), more than the "
             f"{limit / 1e9:,.1f} GB (half of this machine's memory) a run may use")


def _devices_per_round(per_round: int | float | None, devices: int) -> int:
    """The count behind federation.devices_per_round: all, a count, or a fraction of the fleet."""
    if per_round is None:
        return devices
    if isinstance(per_round, float):
        return max(1, round(per_round * devices))
    return per_round
