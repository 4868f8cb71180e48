"""Scenario files: one YAML file describes a whole fleet experiment.

A scenario is parsed into frozen dataclasses (one per YAML section, field names
equal to the YAML keys) and validated strictly: anything wrong raises
`clients.errors.InputError` with ONE line that names the file and the dotted
path of the culprit, e.g.

    scenarios/quickstart.yaml: unknown key 'federation.round' (did you mean 'rounds'?)

Parsing is two steps. `build_dataclass` turns a mapping into a dataclass generically,
from the field type hints (int, float, str, bool, X | None, dict[str, int],
nested dataclasses) plus per-field rules in the field metadata (choices and
bounds); `resolve_scenario` then fills the defaults that depend on other sections and
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
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn, cast


from clients.budget import KernelModel
from clients.device import device_offset, task_of
from clients.errors import InputError, excerpt
from clients.sparcl.ddr import DDRConfig
from clients.sparcl.dgm import DGMConfig
from clients.sparcl.config import LearnerConfig, SparCLConfig, TrainConfig
from clients.sparcl.tdm import TDMConfig
from fleet.world import (
    BUDGETS,
    BudgetProfile,
    DeviceProfile,
    FIGURES,
    MEASURED_COMPACTION_SPEEDUP,
    PAPER_SPARSE_SPEEDUP,
    PROFILES,
    PROFILE_SOURCES,
)
from fleet.config.builder import build_dataclass, kind_of, plain
from fleet.config.reader import parse_yaml, read_scenario_text
from fleet.config.resolve import check_memory, resolve_scenario
from fleet.config.schema import (
    SEED_LIMIT,
    BudgetSpec,
    DatasetSpec,
    FederationSpec,
    FleetSpec,
    MethodSpec,
    PartitionSpec,
    ProfileSpec,
    ReportSpec,
    SparCLSpec,
    StreamSpec,
    TimingSpec,
    TrainSpec,
    build_profile,
    figure_source,
)
from fleet.rules import rule


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
            batches=self.train.batches,
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
            table[name] = {f: figure_source(name, spec, f) for f in FIGURES}
        return table

    @property
    def last_k(self) -> int:
        """Rounds the last-k mean accuracy covers (report.last_k, resolved when parsed)."""
        return int(cast(int, self.report.last_k))

    def sample_size(self) -> int:
        """Devices sampled per round (federation.devices_per_round, always a count once parsed)."""
        return int(cast(int, self.federation.devices_per_round))

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
        got = "an empty file" if data is None else kind_of(data)
        fail(f"the top level must be a mapping of sections (name, dataset, fleet, ...), got {got}")
    scenario = resolve_scenario(build_dataclass(Scenario, data, "", fail), fail)
    if simulate:
        check_memory(scenario, fail)
    try:
        scenario.learner_config(scenario.seed)  # the learner's own checks, as a safety net
    except InputError as err:
        fail(str(err))
    object.__setattr__(scenario, "_source", source)
    object.__setattr__(scenario, "_raw", plain(data))
    object.__setattr__(scenario, "_simulate", simulate)
    return scenario
