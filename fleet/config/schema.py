"""The scenario's schema: one frozen dataclass per YAML section, field names equal to the YAML keys.

Each field carries its type hint and, in its metadata, its rules (`rule`:
choices and bounds), which the builder in fleet.config.scenario checks
generically; the bounds below cap what any scenario may ask for.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, make_dataclass, replace
from typing import TYPE_CHECKING, Any, get_type_hints


from clients.backbones import BACKBONES, NORMS
from clients.batching import BATCHINGS
from clients.budget import KERNELS
from clients.cl.methods import METHODS, MethodConfig
from clients.data import DATASETS, IDX_DATASETS
from clients.device import MASK_POLICIES
from clients.wire import VALUE_DTYPES
from clients.sparcl.tdm import GRANULARITIES
from fleet.world import (
    DEFAULT_PLAN_QUANTILE,
    DeviceProfile,
    FIGURES,
    PROFILES,
    PROFILE_SOURCES,
)
from fleet.rules import rule
from server.buffered import MODES
from server.strategy import AGGREGATIONS, NORM_STATISTICS, PLAIN_WEIGHTS


# Bounds on what a scenario may ask for; each is far above any sensible run.
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
    # how an epoch is cut into batches: "loader" as PyTorch's DataLoader and the reference (a small
    # remainder last), "balanced" as many steps in sizes within one example (clients.batching)
    batches: str = rule("loader", choices=BATCHINGS)
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
    # Devices connected before a round starts, on the deployment engine; the
    # simulation engine always waits for its whole fleet. Default min(2, devices).
    min_available: int | None = rule(None, ge=1)
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


def _profile_spec() -> type:
    """ProfileSpec: DeviceProfile's figures, each optional, with DeviceProfile's own rules, so a bound is
    written once and a bad value is reported at its dotted path."""
    hints = get_type_hints(DeviceProfile)
    figures = [(f.name, hints[f.name] | None, rule(None, **f.metadata)) for f in fields(DeviceProfile)
               if f.name != "name"]

    def given(self) -> dict[str, Any]:
        """The figures this profile sets itself."""
        return {f: getattr(self, f) for f in FIGURES if getattr(self, f) is not None}

    spec = make_dataclass("ProfileSpec", [("base", str | None, None), *figures,
                                          ("sources", dict[str, str] | None, None)],  # figure -> its source
                          frozen=True, namespace={"given": given, "__module__": __name__})
    spec.__doc__ = ("A user-named device profile: a built-in `base` with the figures it names changed, or (no "
                    "base) every required figure from scratch. Its fields are DeviceProfile's, each optional "
                    "(None: not given, the base's figure or DeviceProfile's default), with the same rules; "
                    "`sources` records where the figures it sets come from, for `fleet profiles --sources`.")
    return spec


if TYPE_CHECKING:  # what _profile_spec builds, as a type checker should see it
    class ProfileSpec:
        base: str | None
        sources: dict[str, str] | None

        def given(self) -> dict[str, Any]: ...

        def __getattr__(self, figure: str) -> Any: ...
else:
    ProfileSpec = _profile_spec()


# A user profile's name: it labels devices.csv rows and plots, so short and plain.
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def figure_source(name: str, spec: ProfileSpec, figure: str) -> str:
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
