"""Scenario files: one YAML file describes a whole fleet experiment.

A scenario is parsed into frozen dataclasses (one per YAML section, field names
equal to the YAML keys) and validated strictly: anything wrong raises
`clients.errors.InputError` with ONE line that names the file and the dotted
path of the culprit, e.g.

    scenarios/quickstart.yaml: unknown key 'federation.round' (did you mean 'rounds'?)

Parsing is two steps. `_build` turns a mapping into a dataclass generically,
from the field type hints (int, float, str, bool, X | None, dict[str, int],
nested dataclasses) plus per-field rules in the field metadata (choices and
bounds); `_resolve` then fills the defaults that depend on other sections and
checks the combinations that no single field can.

Conventions:

- bool is never accepted as a number; an int is accepted where a float is
  expected (and stored as float); floats must be finite.
- A section written as an empty header (`sparcl:` with nothing under it) means
  "all defaults".
- Fields whose default is derived from other sections (`output`,
  `fleet.profiles`, `federation.rounds`, `federation.devices_per_round`,
  `federation.min_available`) may be written as null to mean "derive it".
- Relative paths (`output`, `dataset.data_dir`) are relative to the working
  directory, not to the scenario file.
- `profiles:` names the scenario's own device profiles (ProfileSpec): a
  built-in `base` with the figures it names changed, or every required figure
  from scratch. A built-in name cannot be reused (say `base: rpi4` under a new
  name), so a name in `fleet.profiles` always means one thing.

Bounds (a scenario file is untrusted input): the file must be a regular file of
at most MAX_SCENARIO_BYTES; YAML nesting, alias expansion, integers and strings
are bounded while parsing, before anything is built; `name` is one path
component (it names runs/<name>); counts and sizes are checked against the data
(every device needs an example of every task) and this machine's memory.
Error messages quote a bad value through `clients.errors.excerpt`, never repr().

Build scenarios through `load_scenario`, `parse_scenario` or
`Scenario.with_overrides`: constructing the dataclasses directly skips both
validation and the derived defaults.
"""

from __future__ import annotations

import copy
import difflib
import math
import operator
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, NoReturn, Union, get_args, get_origin, get_type_hints

import torch
import yaml

from clients.accounting import buffer_bytes
from clients.backbones import BACKBONES, NORMS, build_backbone, resolved_backbone
from clients.budget import KERNELS, KernelModel, check_speedup_table
from clients.cl.methods import METHODS, MethodConfig
from clients.data import DATASETS, DEFAULT_DATA_DIRS, IDX_DATASETS, require_data_dir
from clients.device import MASK_POLICIES, device_offset, task_of
from clients.wire import VALUE_DTYPES
from clients.errors import InputError, excerpt
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.learner import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.tdm import GRANULARITIES, TDMConfig
from fleet.world import (
    AVAILABILITY_MODELS,
    BUDGETS,
    BudgetProfile,
    DEFAULT_PLAN_QUANTILE,
    DeviceProfile,
    FIGURES,
    MEASURED_COMPACTION_SPEEDUP,
    PAPER_SPARSE_SPEEDUP,
    PROFILES,
    PROFILE_SOURCES,
    REQUIRED_FIGURES,
)
from server.buffered import MODES
from server.strategy import AGGREGATIONS, NORM_STATISTICS, PLAIN_WEIGHTS

NUM_CLASSES = {name: 10 for name in DATASETS}  # every supported dataset has 10 classes
INPUT_SHAPES = {"digits": (1, 8, 8), "synthetic": (1, 8, 8), "mnist": (1, 28, 28),
                "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
# Training examples of the smallest class (the standard files; digits after its 70/30 split).
TRAIN_PER_CLASS = {"digits": 122, "synthetic": 60, "mnist": 5421, "fashion-mnist": 6000, "cifar10": 5000}

# Bounds on what a scenario may ask for; each is far above any sensible run.
MAX_SCENARIO_BYTES = 1 << 20   # a scenario is about 2 KB
MAX_YAML_DEPTH = 20            # a scenario nests 3 deep (fleet.profiles.rpi4)
MAX_YAML_NODES = 10_000        # values after YAML aliases are expanded (a scenario has about 60)
MAX_INT = 2**63 - 1            # every integer fits in 64 bits
MAX_TEXT = 4096                # characters in any string (PATH_MAX)
MAX_NAME = 100                 # characters in `name`
MAX_DEVICES = 10_000           # Flower's simulation holds every device's node and state in this process
MAX_ROUNDS = 100_000
MAX_WIDTH = 1 << 16            # keeps the size arithmetic in range; memory decides the real limit
SEED_LIMIT = 2**32             # device seeds are seed * 1000 + device, and torch takes seeds below 2**64
MEMORY_SHARE = 0.5             # a run may plan to use half of this machine's memory
FILE_DATASETS = (*IDX_DATASETS, "cifar10")  # read from dataset.data_dir; the others are built in
SCHEMES = ("iid", "dirichlet")
TRAIN_DEVICES = ("cpu", "cuda", "auto")


def rule(default: Any = MISSING, **rules: Any) -> Any:
    """A dataclass field with validation rules: choices=, ge=, gt=, le=, lt=.

    Rules apply to the parsed value and are skipped when it is None.
    """
    if default is MISSING:
        return field(metadata=rules)
    return field(default=default, metadata=rules)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DatasetSpec:
    name: str = rule("digits", choices=DATASETS)
    data_dir: str | None = None  # required for mnist / cifar10; the folder must exist
    n_tasks: int = rule(5, ge=1)  # must divide the dataset's 10 classes
    max_per_class: int | None = rule(None, ge=1)  # cap on training examples per class


@dataclass(frozen=True)
class FleetSpec:
    devices: int = rule(10, ge=1, le=MAX_DEVICES)
    profiles: dict[str, int] | None = None  # profile name -> count; default {rpi4: devices}
    stock_clients: int = rule(0, ge=0)     # the last this many devices run Flower's stock ClientApp

    def stock_devices(self) -> frozenset[int]:
        """Ids of the devices that run clients.stock (dense, plain Flower) instead of the learner."""
        return frozenset(range(self.devices - self.stock_clients, self.devices))


@dataclass(frozen=True)
class PartitionSpec:
    scheme: str = rule("iid", choices=SCHEMES)
    alpha: float | None = rule(None, gt=0)  # Dirichlet concentration, required iff dirichlet


@dataclass(frozen=True)
class StreamSpec:
    rounds_per_task: int = rule(3, ge=1)
    stagger_rounds: int = rule(0, ge=0)  # the last device runs this many rounds behind the first
    # tasks arrive on the simulated clock, one every this many seconds (None: every rounds_per_task rounds)
    task_every_s: float | None = rule(None, gt=0)


@dataclass(frozen=True)
class MethodSpec:
    """The rehearsal method; the same fields as clients.cl.methods.MethodConfig."""

    name: str = rule("derpp", choices=METHODS)
    buffer_size: int = rule(200, ge=0)
    minibatch: int = rule(32, ge=1)
    alpha: float = rule(0.1, ge=0)
    beta: float = rule(0.5, ge=0)
    # the current-task loss sees the task's own classes only (`fleet bench` does by default); off in a
    # fleet by default: on the quickstart it left the newest task at 66% Class-IL after 4 rounds (94% off)
    mask_other_classes: bool = False
    augment: bool | None = None  # random crop + flip; None: on for cifar10, as the reference runs it

    def config(self, dataset: str) -> MethodConfig:
        augment = dataset == "cifar10" if self.augment is None else self.augment
        return MethodConfig(**{**asdict(self), "augment": augment})


@dataclass(frozen=True)
class TrainSpec:
    local_epochs: int = rule(2, ge=1)  # epochs per round
    batch_size: int = rule(32, ge=1)
    lr: float = rule(0.03, gt=0)
    recalibrate_norms: bool = False  # recompute the norms' statistics at each task's end (Learner.recalibrate_norms)
    backbone: str = rule("auto", choices=BACKBONES)
    width: int | None = rule(None, ge=1, le=MAX_WIDTH)
    # where each device's learner trains: cpu, cuda, or auto (a GPU where its process sees one)
    device: str = rule("cpu", choices=TRAIN_DEVICES)
    # Ray resources each simulated device reserves: CPUs, and GPUs (a fraction shares one GPU)
    cpus_per_device: float = rule(1.0, gt=0)
    gpus_per_device: float = rule(0.0, ge=0)
    # torch threads each simulated device trains on (and the server evaluates on): fixed, so a
    # rerun is bit-identical wherever Ray places a device (clients.device.torch_threads)
    threads: int = rule(1, ge=1, le=256)
    # the backbone's normalisation: BatchNorm (running statistics) or GroupNorm (none to aggregate)
    norm: str = rule("batch", choices=NORMS)


@dataclass(frozen=True)
class SparCLSpec:
    enabled: bool = True
    sparsity: float = rule(0.9, ge=0, lt=1)
    tdm: bool = True  # task-aware dynamic masking (weight masks)
    ddr: bool = True  # dynamic data removal
    dgm: bool = True  # dynamic gradient masking
    dgm_keep: float = rule(0.2, gt=0, le=1)
    # TDM masks single weights, or whole output channels (the SmallCNN then trains compacted)
    granularity: str = rule("weight", choices=GRANULARITIES)
    # weight masks on SparseProp's sparse kernels where they time faster (optional extra, x86 only)
    sparse_kernels: bool = False


@dataclass(frozen=True)
class FederationSpec:
    rounds: int | None = rule(None, ge=1)  # default rounds_per_task * n_tasks + stagger_rounds
    # A count, or a fraction f in (0, 1] of the fleet (round(f * devices), at
    # least 1, as server.strategy rounds); default all devices. Parsing
    # resolves it to the count.
    devices_per_round: int | float | None = rule(None, gt=0)
    min_available: int | None = rule(None, ge=1)  # default min(2, devices)
    aggregation: str = rule("mask-aware", choices=AGGREGATIONS)
    mask_policy: str = rule("global", choices=MASK_POLICIES)
    resparsify: bool = True  # re-sparsify the global model after aggregation (ignored when dense)
    value_dtype: str = rule("float32", choices=VALUE_DTYPES)
    round_timeout_s: float = rule(600.0, gt=0)  # wall-clock safety net
    # a plain Flower client's projected update counts for its examples times the share of its
    # change inside the global mask ("in-mask"), or for its examples alone ("examples")
    plain_weight: str = rule("in-mask", choices=PLAIN_WEIGHTS)
    # BatchNorm statistics of the global model: averaged as the devices' training left them, or
    # recalibrated by each device on the model it sends (one counted forward pass over its data and
    # buffer) and pooled per batch (server.aggregate.pool_statistics); GroupNorm has none to recalibrate
    norm_statistics: str = rule("recalibrated", choices=NORM_STATISTICS)
    # sample this factor more of the free devices than devices_per_round (capped at all of them) and
    # close the round at the first devices_per_round updates to arrive; the rest are late (wasted work)
    over_select: float = rule(1.0, ge=1)
    # sync: rounds that wait for a deadline or every device; async: FedBuff (server.buffered), where devices
    # train whenever free and online and the server applies every buffer_size updates (a version: `rounds`
    # counts versions), dropping one more than max_staleness versions old, with at most `concurrency`
    # devices training at once (default devices_per_round); tasks must come on the clock (stream.task_every_s)
    mode: str = rule("sync", choices=MODES)
    buffer_size: int = rule(2, ge=1)
    max_staleness: int = rule(4, ge=0)
    concurrency: int | None = rule(None, ge=1)


@dataclass(frozen=True)
class ReportSpec:
    # final accuracy is also reported as the mean of the last k rounds (default min(3, rounds))
    last_k: int | None = rule(None, ge=1)


@dataclass(frozen=True)
class TimingSpec:
    budget: str = "generous"  # a built-in budget profile or one named under `budgets`
    deadline_s: float | None = rule(None, gt=0)  # simulated round deadline; overrides the budget's
    keep_first: int | None = rule(None, ge=1)  # aggregate only the first K updates to arrive
    offline_rate_per_s: float = rule(0.0, ge=0)  # rate of mid-round failures per simulated second
    kernels: str = rule("dense", choices=KERNELS)  # what a masked layer costs the devices (clients.budget)
    speedup: dict[float, float] | None = None  # sparse kernels: sparsity -> speed-up; default the paper's
    compaction_speedup: dict[float, float] | None = None  # channel masks: FLOPs sparsity -> speed-up
    server_ingress_mbps: float | None = rule(None, gt=0)  # the server link all uploads share; None: unlimited
    server_egress_mbps: float | None = rule(None, gt=0)  # the server link all downloads share; None: unlimited
    plan_quantile: float = rule(DEFAULT_PLAN_QUANTILE, gt=0, lt=1)  # share of rounds a jittery device may be late


@dataclass(frozen=True)
class BudgetSpec:
    """A user-named budget profile: scales of every device's compute, memory and bandwidth, and a deadline."""

    compute_scale: float = rule(1.0, gt=0)
    memory_scale: float = rule(1.0, gt=0)
    bandwidth_scale: float = rule(1.0, gt=0)
    deadline_s: float | None = rule(None, gt=0)


@dataclass(frozen=True)
class ProfileSpec:
    """A user-named device profile: a built-in `base` with the figures it names changed, or (no base) every
    required figure from scratch. Fields mirror fleet.world.profiles.DeviceProfile, with the same bounds, so a bad
    value is reported at its dotted path; None means "not given" (the base's figure, or DeviceProfile's default).
    `sources` records where the figures it sets come from, for `fleet profiles --sources`.
    """

    base: str | None = None
    peak_gflops: float | None = rule(None, gt=0)
    efficiency: float | None = rule(None, gt=0, le=1)
    memory_mb: float | None = rule(None, gt=0)
    downlink_mbps: float | None = rule(None, gt=0)
    uplink_mbps: float | None = rule(None, gt=0)
    downlink_latency_s: float | None = rule(None, ge=0)
    uplink_latency_s: float | None = rule(None, ge=0)
    active_w: float | None = rule(None, ge=0)
    radio_w: float | None = rule(None, ge=0)
    idle_w: float | None = rule(None, ge=0)
    availability: float | None = rule(None, gt=0, le=1)
    availability_model: str | None = rule(None, choices=AVAILABILITY_MODELS)
    mean_on_s: float | None = rule(None, gt=0)
    mean_off_s: float | None = rule(None, gt=0)
    failure_prob: float | None = rule(None, ge=0, lt=1)
    speed_jitter: float | None = rule(None, ge=0, le=1)
    downlink_w_per_mbps: float | None = rule(None, ge=0)
    uplink_w_per_mbps: float | None = rule(None, ge=0)
    tail_s: float | None = rule(None, ge=0)
    tail_w: float | None = rule(None, ge=0)
    sources: dict[str, str] | None = None  # figure -> where it comes from

    def given(self) -> dict[str, Any]:
        """The figures this profile sets itself."""
        return {f: getattr(self, f) for f in FIGURES if getattr(self, f) is not None}


# A user profile's name: it labels devices.csv rows and plots, so short and plain.
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def _figure_source(name: str, spec: ProfileSpec, figure: str) -> str:
    """Where a user profile's figure comes from: its own `sources`, else whether it set it or its base did."""
    if getattr(spec, figure) is not None:
        return (spec.sources or {}).get(figure) or f"set in the scenario's profiles.{name} (no source given)"
    if spec.base is not None:
        return f"from {spec.base}: {PROFILE_SOURCES[spec.base][figure]}"
    return "DeviceProfile default (not set in the scenario)"


def build_profile(name: str, spec: ProfileSpec) -> DeviceProfile:
    """A validated ProfileSpec as a DeviceProfile: its base's figures with its own in their place."""
    if spec.base is not None:
        return replace(PROFILES[spec.base], name=name, **spec.given())
    return DeviceProfile(name=name, **spec.given())


# --------------------------------------------------------------------------- the scenario


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int = rule(0, ge=0, lt=SEED_LIMIT)
    output: str | None = None  # default runs/<name>
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    fleet: FleetSpec = field(default_factory=FleetSpec)
    partition: PartitionSpec = field(default_factory=PartitionSpec)
    stream: StreamSpec = field(default_factory=StreamSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    sparcl: SparCLSpec = field(default_factory=SparCLSpec)
    federation: FederationSpec = field(default_factory=FederationSpec)
    timing: TimingSpec = field(default_factory=TimingSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    budgets: dict[str, BudgetSpec] | None = None  # named budget profiles (add to or replace the built-ins)
    profiles: dict[str, ProfileSpec] | None = None  # named device profiles (add to the built-ins)

    # parse_scenario also stores, outside the dataclass fields (so they take no
    # part in ==, repr, asdict or to_dict): `_source`, the name used in error
    # messages, and `_raw`, the mapping as given, from which with_overrides
    # re-derives the dependent defaults.

    @property
    def source(self) -> str:
        return getattr(self, "_source", "<scenario>")

    # -- the learner ---------------------------------------------------------
    def learner_config(self, seed: int) -> LearnerConfig:
        """The LearnerConfig of one device, seeded with `seed`.

        A task lasts rounds_per_task rounds of local_epochs epochs, so
        epochs_per_task = rounds_per_task * local_epochs (a device that is not
        sampled every round trains fewer).
        """
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"learner seed must be an integer >= 0, got {excerpt(seed)}")
        sp = self.sparcl
        if sp.enabled:
            sparcl = SparCLConfig(
                tdm=TDMConfig(sparsity=sp.sparsity, granularity=sp.granularity,
                              sparse_kernels=sp.sparse_kernels) if sp.tdm else None,
                ddr=DDRConfig() if sp.ddr else None,
                dgm=DGMConfig(keep=sp.dgm_keep) if sp.dgm else None,
            )
        else:
            sparcl = SparCLConfig.dense()
        train = TrainConfig(
            epochs_per_task=self.stream.rounds_per_task * self.train.local_epochs,
            batch_size=self.train.batch_size,
            lr=self.train.lr,
            seed=seed,
            recalibrate_norms=self.train.recalibrate_norms,
            device=self.train.device,
        )
        return LearnerConfig(method=self.method.config(self.dataset.name), sparcl=sparcl, train=train,
                             backbone=self.train.backbone, width=self.train.width, norm=self.train.norm)

    # -- the fleet -----------------------------------------------------------
    def device_profiles(self) -> list[str]:
        """One profile name per device, in device order, with a mix spread out.

        Smooth weighted round-robin over fleet.profiles: at each slot every
        name gains its count as credit, the name with the most credit is
        picked (ties: the earlier name in the mapping) and pays the total back.
        {rpi4: 6, rpi5: 3, phone: 1} gives rpi4 rpi5 rpi4 rpi4 rpi5 rpi4 phone
        rpi4 rpi5 rpi4. Deterministic for a given mapping (order included).
        """
        counts = {name: n for name, n in (self.fleet.profiles or {}).items() if n > 0}
        total = sum(counts.values())
        credit = dict.fromkeys(counts, 0)
        order: list[str] = []
        for _ in range(total):
            for name, n in counts.items():
                credit[name] += n
            pick = max(credit, key=credit.__getitem__)  # max keeps the first of equals
            credit[pick] -= total
            order.append(pick)
        return order

    def device_profile_table(self) -> dict[str, DeviceProfile]:
        """Every device profile this scenario can name: the built-ins, then its own `profiles:`."""
        own = {name: build_profile(name, spec) for name, spec in (self.profiles or {}).items()}
        return {**PROFILES, **own}

    def resolved_device_profiles(self) -> list[DeviceProfile]:
        """The DeviceProfile of each device, in device order (device_profiles() gives their names)."""
        table = self.device_profile_table()
        return [table[name] for name in self.device_profiles()]

    def profile_sources(self) -> dict[str, dict[str, str]]:
        """Profile -> figure -> where it comes from, for the built-ins and this scenario's own profiles."""
        table = {name: dict(sources) for name, sources in PROFILE_SOURCES.items()}
        for name, spec in (self.profiles or {}).items():
            table[name] = {f: _figure_source(name, spec, f) for f in FIGURES}
        return table

    @property
    def last_k(self) -> int:
        """Rounds the last-k mean accuracy covers (report.last_k, resolved when parsed)."""
        return int(self.report.last_k)

    def sample_size(self) -> int:
        """Devices sampled per round (federation.devices_per_round, always a count once parsed)."""
        return int(self.federation.devices_per_round)

    def budget_profiles(self) -> dict[str, BudgetProfile]:
        """The built-in budget profiles with this scenario's own (same name: the scenario's wins)."""
        own = {name: BudgetProfile(name, **asdict(b)) for name, b in (self.budgets or {}).items()}
        return {**BUDGETS, **own}

    def budget_profile(self) -> BudgetProfile:
        return self.budget_profiles()[self.timing.budget]

    def kernel_model(self) -> KernelModel:
        """The devices' kernels; sparse kernels default to the SparCL paper's phone figures, compacted
        (channel-masked) layers to the speed-ups `fleet bench kernels` measured here."""
        t = self.timing
        table = tuple(t.speedup.items()) if t.speedup else PAPER_SPARSE_SPEEDUP
        compaction = tuple(t.compaction_speedup.items()) if t.compaction_speedup else MEASURED_COMPACTION_SPEEDUP
        return KernelModel(t.kernels, table if t.kernels == "sparse" else (), compaction)

    @property
    def round_deadline_s(self) -> float | None:
        """The simulated round deadline: timing.deadline_s, else the budget's (None: wait for all)."""
        if self.timing.deadline_s is not None:
            return self.timing.deadline_s
        return self.budget_profile().deadline_s

    def device_offset(self, device: int) -> int:
        """How many rounds `device` runs behind device 0 (see device_offset)."""
        return device_offset(device, self.fleet.devices, self.stream.stagger_rounds)

    def task_of(self, device: int, server_round: int) -> int:
        """The task `device` trains at 1-based `server_round` (see task_of)."""
        return task_of(device, server_round, rounds_per_task=self.stream.rounds_per_task,
                       n_tasks=self.dataset.n_tasks, offset=self.device_offset(device))

    # -- variants and serialisation ------------------------------------------
    def with_overrides(self, changes: Mapping[str, Any] | None = None, /, **more: Any) -> Scenario:
        """A copy with some values replaced, re-validated from scratch.

        Keys are dotted paths: with_overrides(**{"sparcl.enabled": False,
        "federation.aggregation": "fedavg"}), or a mapping as the one
        positional argument. The changes apply to the scenario as written, so
        derived defaults (e.g. federation.rounds) follow the new values; None
        resets a field to its default.
        """
        all_changes = {**(changes or {}), **more}
        data = copy.deepcopy(getattr(self, "_raw", None) or self.to_dict())
        for key, value in all_changes.items():
            if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
                raise InputError(f"{self.source}: override key {excerpt(key)} must be a dotted path like "
                                 "'sparcl.enabled'")
            *parents, leaf = key.split(".")
            node = data
            for depth, part in enumerate(parents):
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif not isinstance(child, dict):
                    where = ".".join(parents[: depth + 1])
                    raise InputError(f"{self.source}: override {excerpt(key)}: {excerpt(where)} is not a section")
                node = child
            node[leaf] = copy.deepcopy(value)
        described = ", ".join(f"{excerpt(k, 40)}={excerpt(v, 40)}" for k, v in all_changes.items())
        return parse_scenario(data, source=f"{self.source} (with {described})" if described else self.source,
                              simulate=getattr(self, "_simulate", True))

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults resolved, as plain dicts/lists/scalars; parse_scenario reads it back.

        A user profile keeps only the fields it gives: null would read back the same, but a base
        with every figure listed as null would hide which ones the profile changes.
        """
        data = asdict(self)
        if data["profiles"]:
            data["profiles"] = {name: {k: v for k, v in spec.items() if v is not None}
                                for name, spec in data["profiles"].items()}
        return data


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (plain PyYAML keeps the last one silently) and bounds the document.

    Nesting is bounded while composing (PyYAML composes recursively, so deep
    nesting would end in RecursionError); the size of the document with every
    alias expanded is measured on the composed node graph, before any value is
    built (an anchor bomb of 300 bytes expands to a billion values); integers
    must fit in 64 bits (Python refuses to parse more than 4,300 digits anyway).
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooBig(f"nesting deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node


class _TooBig(yaml.constructor.ConstructorError):
    """A bound of _StrictLoader was exceeded (reported as a YAML error, not a syntax error)."""

    def __init__(self, problem: str, mark) -> None:
        super().__init__(None, None, problem, mark)


def _check_expansion(root: yaml.Node | None) -> None:
    """Fail if `root`, with its aliases expanded, nests too deep, holds too many nodes or contains itself.

    Each node's expanded size and height are computed once (an alias is the
    very node it names), so measuring takes time linear in the file.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes once expanded, height)
    open_nodes: set[int] = set()

    def fail(problem: str, node: yaml.Node) -> NoReturn:
        raise _TooBig(problem, node.start_mark)

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            fail("an alias refers to a node that contains it", node)
        if key not in measured:
            open_nodes.add(key)
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = []
            size, height = 1, 1
            for child in children:
                child_size, child_height = visit(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
                if size > MAX_YAML_NODES:
                    break
            open_nodes.discard(key)
            measured[key] = (size, height)
        size, height = measured[key]
        if size > MAX_YAML_NODES:
            fail(f"the document expands to more than {MAX_YAML_NODES:,} values (YAML aliases)", node)
        if depth + height - 1 > MAX_YAML_DEPTH:
            fail(f"nesting deeper than {MAX_YAML_DEPTH} levels (YAML aliases)", node)
        return size, height

    if root is not None:
        visit(root, 1)


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) or key is None:
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {excerpt(key, 40)}",
                                                        key_node.start_mark)
            seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


def _bounded_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    """A YAML integer that fits in 64 bits; longer text is refused before it is parsed."""
    if len(node.value) > 70:  # 64 binary digits with a sign, a prefix and a few underscores
        raise _TooBig(f"integer of {len(node.value)} characters is too large (integers must fit in 64 bits)",
                      node.start_mark)
    value = loader.construct_yaml_int(node)
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise _TooBig(f"integer {excerpt(value, 30)} does not fit in 64 bits", node.start_mark)
    return value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)


def read_scenario_text(path: str | os.PathLike) -> str:
    """The text of the scenario file at `path`: a regular file of at most MAX_SCENARIO_BYTES, UTF-8.

    The file's type is checked before it is opened (a FIFO would block the
    open, /dev/zero would never end), and the read is bounded whatever the
    file turns out to be.
    """
    source = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{source}: scenario file not found") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{source}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    _check_regular(source, info)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(source, os.fstat(f.fileno()))  # the same file as the one checked
            data = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as err:
        raise InputError(f"{source}: cannot be read ({err.strerror or err})") from None
    if len(data) > MAX_SCENARIO_BYTES:
        raise InputError(f"{source}: is larger than {MAX_SCENARIO_BYTES:,} bytes, too large for a scenario file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: is not UTF-8 text") from None


def _check_regular(source: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{source}: is a directory, not a scenario file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{source}: is not a regular file (a FIFO, device or socket), not a scenario file")
    if info.st_size > MAX_SCENARIO_BYTES:
        raise InputError(f"{source}: is {info.st_size:,} bytes, more than the {MAX_SCENARIO_BYTES:,} a scenario "
                         "file may have")


def parse_yaml(text: str, *, source: str) -> Any:
    """YAML text to plain values, strictly and within the bounds above; errors are one InputError line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(err.problem or err.context or "invalid YAML").split())[:200]
        kind = "YAML error" if isinstance(err, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise InputError(f"{source}: {kind}{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{source}: YAML syntax error: {' '.join(str(err).split())[:200]}") from None
    except RecursionError:  # a safety net: the depth bound above should make this unreachable
        raise InputError(f"{source}: YAML nesting too deep") from None


def load_scenario(path: str | os.PathLike, *, simulate: bool = True) -> Scenario:
    """Read, parse and validate the scenario file at `path`.

    simulate: it is to run on Flower's simulation engine here, so the fleet's
    memory must fit this machine (a dry run trains nothing and skips that).
    """
    source = os.fspath(path)
    return parse_scenario(parse_yaml(read_scenario_text(path), source=source), source=source, simulate=simulate)


def parse_scenario(data: dict, *, source: str = "<scenario>", simulate: bool = True) -> Scenario:
    """Validate a scenario given as a mapping (a parsed YAML file) and fill its defaults."""

    def fail(message: str) -> NoReturn:
        raise InputError(f"{source}: {message}")

    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else _kind(data)
        fail(f"the top level must be a mapping of sections (name, dataset, fleet, ...), got {got}")
    scenario = _resolve(_build(Scenario, data, "", fail), fail)
    if simulate:
        _check_memory(scenario, fail)
    try:
        scenario.learner_config(scenario.seed)  # the learner's own checks, as a safety net
    except InputError as err:
        fail(str(err))
    object.__setattr__(scenario, "_source", source)
    object.__setattr__(scenario, "_raw", _plain(data))
    object.__setattr__(scenario, "_simulate", simulate)
    return scenario


# --------------------------------------------------------------------------- generic builder


def _build(cls: type, data: Any, path: str, fail) -> Any:
    """Build dataclass `cls` from mapping `data`, checking keys, types and field rules."""
    if data is None and path:  # an empty section header: all defaults
        data = {}
    if not isinstance(data, Mapping):
        fail(f"{path} must be a mapping, got {_show(data)}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            shown = _key_text(key)
            dotted = f"{path}.{shown}" if path else shown
            close = difflib.get_close_matches(shown, names, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(names)}"
            fail(f"unknown key '{dotted}' ({hint})")
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        dotted = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            values[f.name] = _coerce(data[f.name], hints[f.name], dotted, fail)
            _check_rules(values[f.name], f.metadata, dotted, fail)
        elif f.default is MISSING and f.default_factory is MISSING:
            fail(f"{dotted} is required")
    return cls(**values)


def _coerce(value: Any, tp: Any, path: str, fail) -> Any:
    """`value` checked against type hint `tp` (int->float widened); anything else fails."""
    if is_dataclass(tp):
        return _build(tp, value, path, fail)
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        options = get_args(tp)
        if value is None and NoneType in options:
            return None
        for option in options:
            if option is not NoneType and _accepts(option, value):
                return _coerce(value, option, path, fail)
        kinds = [_describe(o) for o in options]
        fail(f"{path} must be {', '.join(kinds[:-1])} or {kinds[-1]}, got {_show(value)}")
    if origin is dict:
        if not isinstance(value, Mapping):
            fail(f"{path} must be {_describe(tp)}, got {_show(value)}")
        key_type, value_type = get_args(tp)
        return {_coerce(k, key_type, f"{path} key {excerpt(k, 40)}", fail):
                _coerce(v, value_type, f"{path}.{_key_text(k)}", fail) for k, v in value.items()}
    if not _accepts(tp, value):
        hint = ""
        if tp is float and isinstance(value, str) and _parses_as_float(value):
            hint = " (YAML reads an exponent without a dot as text: write e.g. 3.0e-2)"
        fail(f"{path} must be {_describe(tp)}, got {_show(value)}{hint}")
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        fail(f"{path} must fit in 64 bits, got {excerpt(value)}")
    if tp is float:
        if not math.isfinite(value):
            fail(f"{path} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if len(value) > MAX_TEXT:
            fail(f"{path} is {len(value):,} characters long, more than {MAX_TEXT}: {excerpt(value, 40)}")
        if not value.isprintable():
            fail(f"{path} holds a control character (NUL, a newline or the like): {excerpt(value)}")
    return value


def _accepts(tp: Any, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if get_origin(tp) is dict or is_dataclass(tp):
        return isinstance(value, Mapping)
    raise TypeError(f"scenario schema uses an unsupported type {tp!r}")


def _check_rules(value: Any, rules: Mapping[str, Any], path: str, fail) -> None:
    if value is None:
        return
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        fail(f"{path} must be one of {', '.join(choices)}; got {excerpt(value)}")
    low = ("ge", rules["ge"]) if "ge" in rules else ("gt", rules["gt"]) if "gt" in rules else None
    high = ("le", rules["le"]) if "le" in rules else ("lt", rules["lt"]) if "lt" in rules else None
    compare = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
    if (low and not compare[low[0]](value, low[1])) or (high and not compare[high[0]](value, high[1])):
        fail(f"{path} must be {_range_text(low, high)}, got {excerpt(value)}")


def _range_text(low: tuple | None, high: tuple | None) -> str:
    symbol = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    if low and high:
        return f"in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    op, bound = low or high
    return f"{symbol[op]} {bound}"


def _describe(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", NoneType: "null"}
    return names.get(tp, "a mapping")


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return _describe(type(value)) if type(value) in (bool, int, float, str, NoneType) else type(value).__name__


def _show(value: Any) -> str:
    """A short one-line rendering of a bad value and its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{excerpt(value)} ({_kind(value)})"


def _key_text(key: Any) -> str:
    """A mapping key as it appears in a dotted path: plain if short and printable, else an excerpt."""
    if isinstance(key, str) and len(key) <= 40 and key.isprintable():
        return key
    return excerpt(key, 40)


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _plain(value: Any) -> Any:
    """A deep, plain copy: mappings become dicts, lists stay lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


# --------------------------------------------------------------------------- derived defaults, combinations


def _resolve(s: Scenario, fail) -> Scenario:
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
            fail(f"fleet.profiles: unknown device profile '{_key_text(name)}' ({hint}choose from: "
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
    if s.federation.rounds > MAX_ROUNDS:
        derived = "" if fe.rounds is not None else " (stream.rounds_per_task x dataset.n_tasks + stream.stagger_rounds)"
        fail(f"federation.rounds {s.federation.rounds} is more than {MAX_ROUNDS:,}{derived}")
    if s.timing.keep_first is not None and s.timing.keep_first > s.sample_size():
        fail(f"timing.keep_first {s.timing.keep_first} exceeds the {s.sample_size()} devices sampled per round "
             "(federation.devices_per_round)")
    if s.federation.mode == "async":
        _check_async(s, fail)
    elif s.federation.concurrency is not None:
        fail("federation.concurrency limits asynchronous training: it needs federation.mode async")
    return s


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
    where = f"profiles.{_key_text(name)}"
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
    try:  # a safety net: the field rules above mirror DeviceProfile's checks
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


def _check_memory(s: Scenario, fail) -> None:
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


__all__ = [
    "AGGREGATIONS",
    "MASK_POLICIES",
    "SCHEMES",
    "VALUE_DTYPES",
    "DatasetSpec",
    "FederationSpec",
    "FleetSpec",
    "MethodSpec",
    "PartitionSpec",
    "ProfileSpec",
    "Scenario",
    "SparCLSpec",
    "StreamSpec",
    "TimingSpec",
    "TrainSpec",
    "build_profile",
    "device_offset",
    "load_scenario",
    "parse_scenario",
    "task_of",
]
