"""Scenario files: the shipped ones load, defaults and derived values, strict validation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from clients.errors import InputError
from clients.sparcl.config import LearnerConfig
from fleet.world import PROFILES
from clients.data import INPUT_SHAPES, NUM_CLASSES
from clients.device import device_offset, task_of
from fleet.config import Scenario, load_scenario, parse_scenario
from fleet.config.schema import FederationSpec

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- shipped scenarios


@pytest.mark.parametrize("name", ["quickstart.yaml", "noniid_staggered.yaml"])
def test_shipped_scenarios_load(name):
    s = load_scenario(SCENARIOS / name)
    assert isinstance(s, Scenario)
    assert s.fleet.devices == 10
    assert len(s.device_profiles()) == 10
    assert all(p in PROFILES for p in s.device_profiles())
    assert s.sparcl.sparsity == 0.9
    assert isinstance(s.learner_config(0), LearnerConfig)


def test_quickstart_values():
    s = load_scenario(SCENARIOS / "quickstart.yaml")
    assert s.name == "quickstart" and s.dataset.name == "digits"
    assert s.partition.scheme == "iid" and s.partition.alpha is None
    assert s.stream.rounds_per_task == 4 and s.train.local_epochs == 10
    assert s.method.name == "derpp"
    assert s.federation.devices_per_round == 10 and s.sample_size() == 10
    assert (s.federation.aggregation, s.federation.mask_policy) == ("mask-aware", "global")
    assert s.federation.rounds == s.stream.rounds_per_task * s.dataset.n_tasks == 20
    assert s.learner_config(0).label == "SparCL-DER++"
    assert s.learner_config(0).sparcl.tdm.sparsity == 0.9


def test_noniid_staggered_values():
    s = load_scenario(SCENARIOS / "noniid_staggered.yaml")
    assert (s.partition.scheme, s.partition.alpha) == ("dirichlet", 0.5)
    assert s.stream.stagger_rounds == 2
    assert s.federation.mask_policy == "local"
    assert s.federation.rounds == 4 * 5 + 2
    assert [s.device_offset(i) for i in range(10)] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    # the most-lagged device gets exactly rounds_per_task rounds on its last task
    r = s.stream.rounds_per_task
    assert s.task_of(9, s.federation.rounds) == 4
    assert s.task_of(9, s.federation.rounds - r + 1) == 4
    assert s.task_of(9, s.federation.rounds - r) == 3


# --------------------------------------------------------------------------- defaults


def test_defaults_filled():
    s = parse_scenario({"name": "mini"})
    assert s.seed == 0 and s.output == "runs/mini"
    assert (s.dataset.name, s.dataset.data_dir, s.dataset.n_tasks, s.dataset.max_per_class) == ("digits", None, 5, None)
    assert s.fleet.devices == 10 and s.fleet.profiles == {"rpi4": 10}
    assert s.stream.rounds_per_task == 3 and s.stream.stagger_rounds == 0
    assert s.method.name == "derpp" and s.method.buffer_size == 200 and s.method.mask_other_classes is False
    assert (s.train.local_epochs, s.train.batch_size, s.train.lr, s.train.backbone) == (2, 32, 0.03, "auto")
    assert s.sparcl.enabled and s.sparcl.tdm and s.sparcl.ddr and s.sparcl.dgm and s.sparcl.dgm_keep == 0.2
    f = s.federation
    assert (f.rounds, f.devices_per_round, f.min_available) == (15, 10, 2)
    assert (f.aggregation, f.mask_policy, f.resparsify, f.value_dtype, f.round_timeout_s) == (
        "mask-aware", "global", True, "float32", 600.0)
    assert s.timing.budget == "generous" and s.timing.deadline_s is None and s.round_deadline_s is None
    assert s.timing.keep_first is None and s.timing.offline_rate_per_s == 0.0


def test_derived_defaults_follow_other_sections():
    s = parse_scenario({"name": "d", "fleet": {"devices": 1}, "dataset": {"n_tasks": 2},
                        "stream": {"rounds_per_task": 4, "stagger_rounds": 3}, "timing": {"budget": "tight"}})
    assert s.fleet.profiles == {"rpi4": 1}
    assert s.federation.rounds == 4 * 2 + 3
    assert s.federation.devices_per_round == 1 and s.federation.min_available == 1
    assert s.round_deadline_s == 300.0
    assert parse_scenario({"name": "d", "timing": {"budget": "tight", "deadline_s": 5}}).round_deadline_s == 5.0


def test_empty_section_and_int_for_float():
    s = parse_scenario({"name": "e", "sparcl": None, "train": {"lr": 1}})
    assert s.sparcl.sparsity == 0.9
    assert s.train.lr == 1.0 and isinstance(s.train.lr, float)


def test_devices_per_round_fraction():
    s = parse_scenario({"name": "f", "federation": {"devices_per_round": 0.5}})
    assert s.federation.devices_per_round == 5 and s.sample_size() == 5
    assert parse_scenario({"name": "f", "federation": {"devices_per_round": 1.0}}).sample_size() == 10
    assert parse_scenario({"name": "f", "federation": {"devices_per_round": 0.01}}).sample_size() == 1
    assert parse_scenario({"name": "f", "federation": {"devices_per_round": 0.36}}).sample_size() == 4
    assert parse_scenario({"name": "f", "federation": {"devices_per_round": 1}}).sample_size() == 1


def test_device_profiles_interleaved_and_deterministic():
    s = parse_scenario({"name": "p", "fleet": {"devices": 10, "profiles": {"rpi4": 6, "rpi5": 3, "phone": 1}}})
    assert s.device_profiles() == ["rpi4", "rpi5", "rpi4", "rpi4", "rpi5", "rpi4", "phone", "rpi4", "rpi5", "rpi4"]
    s2 = parse_scenario({"name": "p", "fleet": {"devices": 3, "profiles": {"mcu": 0, "phone": 3}}})
    assert s2.device_profiles() == ["phone"] * 3


# --------------------------------------------------------------------------- learner config


def test_learner_config_mapping():
    s = parse_scenario({
        "name": "l",
        "stream": {"rounds_per_task": 4},
        "method": {"name": "er", "buffer_size": 50, "minibatch": 8},
        "train": {"local_epochs": 3, "batch_size": 16, "lr": 0.1, "backbone": "small-cnn", "width": 8},
        "sparcl": {"sparsity": 0.75, "dgm_keep": 0.5, "ddr": False},
    })
    cfg = s.learner_config(7)
    assert cfg.train.epochs_per_task == 12
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.seed) == (16, 0.1, 7)
    assert (cfg.method.name, cfg.method.buffer_size, cfg.method.minibatch) == ("er", 50, 8)
    assert (cfg.backbone, cfg.width) == ("small-cnn", 8)
    assert cfg.sparcl.tdm.sparsity == 0.75
    assert cfg.sparcl.ddr is None
    assert cfg.sparcl.dgm.keep == 0.5
    assert cfg.sparcl.components == "TDM+DGM"


def test_learner_config_dense():
    cfg = parse_scenario({"name": "dense", "sparcl": {"enabled": False}}).learner_config(0)
    assert not cfg.sparcl.enabled and cfg.label == "DER++"
    with pytest.raises(InputError):
        parse_scenario({"name": "x"}).learner_config(-1)


# --------------------------------------------------------------------------- overrides, round trip


def test_with_overrides():
    base = load_scenario(SCENARIOS / "quickstart.yaml")
    dense = base.with_overrides(**{"sparcl.enabled": False, "federation.aggregation": "fedavg",
                                   "timing.budget": "tight"})
    assert not dense.sparcl.enabled and dense.federation.aggregation == "fedavg"
    assert dense.timing.budget == "tight" and dense.round_deadline_s == 300.0
    assert base.sparcl.enabled and base.federation.aggregation == "mask-aware"  # untouched
    assert dense.with_overrides(seed=3).seed == 3 and not dense.with_overrides(seed=3).sparcl.enabled
    assert base.with_overrides({"train.lr": 0.1}).train.lr == 0.1
    assert base.with_overrides() == base


def test_with_overrides_rederives_defaults():
    s = parse_scenario({"name": "r"})
    assert s.with_overrides(**{"stream.rounds_per_task": 2}).federation.rounds == 10
    grown = s.with_overrides(**{"fleet.devices": 4})
    assert grown.fleet.profiles == {"rpi4": 4} and grown.federation.devices_per_round == 4
    half = parse_scenario({"name": "h", "federation": {"devices_per_round": 0.5}})
    assert half.with_overrides(**{"fleet.devices": 20}).federation.devices_per_round == 10
    assert s.with_overrides(name="other").output == "runs/other"


@pytest.mark.parametrize("changes, culprit", [
    ({"sparcl.sparsity": 1.0}, "sparcl.sparsity"),
    ({"federation.aggregation": "median"}, "federation.aggregation"),
    ({"federation.round": 3}, "federation.round"),
    ({"fleet.devices": 4}, "fleet.profiles"),           # quickstart's mix sums to 10
    ({"sparcl.tdm": False, "federation.mask_policy": "local"}, "federation.mask_policy"),
    ({"seed.x": 1}, "seed"),
])
def test_with_overrides_revalidates(changes, culprit):
    base = load_scenario(SCENARIOS / "quickstart.yaml")
    with pytest.raises(InputError) as err:
        base.with_overrides(changes)
    assert culprit in str(err.value) and "quickstart.yaml" in str(err.value)


@pytest.mark.parametrize("name", ["quickstart.yaml", "noniid_staggered.yaml"])
def test_to_dict_round_trip(name):
    s = load_scenario(SCENARIOS / name)
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert parse_scenario(yaml.safe_load(yaml.safe_dump(d))) == s
    assert parse_scenario(d).to_dict() == d


def test_to_dict_round_trip_fraction_and_dense():
    s = parse_scenario({"name": "t", "federation": {"devices_per_round": 0.5, "min_available": 1},
                        "sparcl": {"enabled": False}, "timing": {"keep_first": 3}})
    back = parse_scenario(s.to_dict())
    assert back == s and back.federation.devices_per_round == 5


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("server_round, offset, expected", [
    (1, 0, 0), (3, 0, 0), (4, 0, 1), (6, 0, 1), (7, 0, 2), (15, 0, 4), (16, 0, 4), (100, 0, 4),
    (1, 2, 0), (3, 2, 0), (5, 2, 0), (6, 2, 1), (17, 2, 4), (15, 2, 4), (14, 2, 3),
])
def test_task_of(server_round, offset, expected):
    assert task_of(0, server_round, rounds_per_task=3, n_tasks=5, offset=offset) == expected


def test_task_of_rejects_bad_input():
    with pytest.raises(InputError):
        task_of(0, 0, rounds_per_task=3, n_tasks=5, offset=0)
    with pytest.raises(InputError):
        task_of(0, 1, rounds_per_task=0, n_tasks=5, offset=0)


def test_device_offset():
    assert [device_offset(i, 10, 2) for i in range(10)] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert [device_offset(i, 5, 4) for i in range(5)] == [0, 1, 2, 3, 4]
    assert [device_offset(i, 3, 0) for i in range(3)] == [0, 0, 0]
    assert device_offset(0, 1, 5) == 0
    assert [device_offset(i, 5, 2) for i in range(5)] == [0, 0, 1, 2, 2]  # round half to even
    with pytest.raises(InputError):
        device_offset(10, 10, 2)


# --------------------------------------------------------------------------- malformed files

MALFORMED = [
    ("unknown top key", "name: x\nseeed: 1\n", ["seeed", "did you mean 'seed'"]),
    ("unknown nested key", "name: x\nfederation:\n  round: 3\n", ["federation.round", "did you mean 'rounds'"]),
    ("unknown key no suggestion", "name: x\nsparcl:\n  zzz: 1\n", ["sparcl.zzz", "valid keys"]),
    ("wrong type int", "name: x\nfleet:\n  devices: ten\n", ["fleet.devices", "integer"]),
    ("bool is not int", "name: x\nseed: true\n", ["seed", "integer"]),
    ("float is not int", "name: x\nstream:\n  rounds_per_task: 2.5\n", ["stream.rounds_per_task"]),
    ("wrong type bool", "name: x\nsparcl:\n  tdm: 1\n", ["sparcl.tdm", "true or false"]),
    ("exponent as text", "name: x\ntrain:\n  lr: 3e-2\n", ["train.lr", "3.0e-2"]),
    ("sparsity 1.0", "name: x\nsparcl:\n  sparsity: 1.0\n", ["sparcl.sparsity", "[0, 1)"]),
    ("dgm_keep 0", "name: x\nsparcl:\n  dgm_keep: 0\n", ["sparcl.dgm_keep", "(0, 1]"]),
    ("negative rounds", "name: x\nfederation:\n  rounds: -1\n", ["federation.rounds", ">= 1"]),
    ("zero lr", "name: x\ntrain:\n  lr: 0\n", ["train.lr", "> 0"]),
    ("infinite timeout", "name: x\nfederation:\n  round_timeout_s: .inf\n", ["federation.round_timeout_s", "finite"]),
    ("bad enum aggregation", "name: x\nfederation:\n  aggregation: median\n",
     ["federation.aggregation", "mask-aware, fedavg", "median"]),
    ("bad budget", "name: x\ntiming:\n  budget: lavish\n", ["timing.budget", "generous"]),
    ("bad method", "name: x\nmethod:\n  name: ewc\n", ["method.name", "derpp"]),
    ("profile counts mismatch", "name: x\nfleet:\n  devices: 10\n  profiles: {rpi4: 6, rpi5: 3}\n",
     ["fleet.profiles", "sum to 9", "10"]),
    ("unknown profile name", "name: x\nfleet:\n  devices: 2\n  profiles: {rpi4wifi: 2}\n",
     ["fleet.profiles", "rpi4wifi", "did you mean 'rpi4-wifi'", "jetson-nano"]),
    ("negative profile count", "name: x\nfleet:\n  devices: 2\n  profiles: {rpi4: 3, rpi5: -1}\n",
     ["fleet.profiles.rpi5", ">= 0"]),
    ("devices_per_round > devices", "name: x\nfleet:\n  devices: 4\nfederation:\n  devices_per_round: 5\n",
     ["federation.devices_per_round", "fleet.devices"]),
    ("fraction > 1", "name: x\nfederation:\n  devices_per_round: 1.5\n", ["federation.devices_per_round", "(0, 1]"]),
    ("min_available > devices", "name: x\nfleet:\n  devices: 1\nfederation:\n  min_available: 2\n",
     ["federation.min_available"]),
    ("dirichlet without alpha", "name: x\npartition:\n  scheme: dirichlet\n", ["partition.alpha", "dirichlet"]),
    ("alpha with iid", "name: x\npartition:\n  alpha: 0.5\n", ["partition.alpha", "iid"]),
    ("yaml syntax error", "name: x\nfleet:\n  devices: [10\n", ["YAML syntax error", "line"]),
    ("duplicate key", "name: x\nseed: 1\nseed: 2\n", ["YAML error", "duplicate key 'seed'", "line 3"]),
    ("top level a list", "- name: x\n", ["top level", "a list"]),
    ("empty file", "", ["top level", "empty"]),
    ("section not a mapping", "name: x\ntrain: fast\n", ["train", "mapping"]),
    ("missing name", "seed: 1\n", ["name", "required"]),
    ("mnist without data_dir", "name: x\ndataset:\n  name: mnist\n", ["dataset.data_dir", "mnist"]),
    ("cifar10 missing folder", "name: x\ndataset:\n  name: cifar10\n  data_dir: /nonexistent/cifar\n",
     ["dataset.data_dir", "/nonexistent/cifar"]),
    ("n_tasks 3", "name: x\ndataset:\n  n_tasks: 3\n", ["dataset.n_tasks", "10 classes"]),
    ("keep_first > sampled", "name: x\nfederation:\n  devices_per_round: 3\ntiming:\n  keep_first: 4\n",
     ["timing.keep_first"]),
    ("local masks without sparcl", "name: x\nsparcl:\n  enabled: false\nfederation:\n  mask_policy: local\n",
     ["federation.mask_policy", "sparcl"]),
    ("local masks without tdm", "name: x\nsparcl:\n  tdm: false\nfederation:\n  mask_policy: local\n",
     ["federation.mask_policy", "tdm"]),
    ("sparcl on with nothing", "name: x\nsparcl:\n  tdm: false\n  ddr: false\n  dgm: false\n", ["sparcl.enabled"]),
]


@pytest.mark.parametrize("text, fragments", [(t, f) for _, t, f in MALFORMED], ids=[i for i, _, _ in MALFORMED])
def test_malformed_scenario(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_scenario(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load_scenario(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err.value)


def test_mnist_with_existing_folder(tmp_path):
    (tmp_path / "mnist").mkdir()
    s = parse_scenario({"name": "m", "dataset": {"name": "mnist", "data_dir": str(tmp_path / "mnist")}})
    assert s.dataset.data_dir == str(tmp_path / "mnist")


def test_source_defaults_in_parse_scenario():
    with pytest.raises(InputError, match=r"^<scenario>: unknown key 'bogus'"):
        parse_scenario({"name": "x", "bogus": 1})
    with pytest.raises(InputError, match=r"^here\.yaml: "):
        parse_scenario([], source="here.yaml")


def test_spec_dataclasses_are_frozen():
    s = parse_scenario({"name": "x"})
    with pytest.raises(AttributeError):
        s.seed = 1  # type: ignore[misc]
    assert isinstance(s.federation, FederationSpec)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path):
    assert isinstance(load_scenario(path), Scenario)


def test_the_memory_scenario_binds_on_its_pi_4s_and_not_under_its_roomier_budget():
    """On a board shared with other services the Pi 4 (598 MiB after the runtime) gets 5% of it: less than
    a full round's peak (batch 32 and DER++'s two draws of 32), so its memory policy must shrink; the Pi 5
    and the balanced budget fit it whole. The learner is built from the scenario alone (no data)."""
    from clients.sparcl.learner import Learner
    from fleet.run.dryrun import fitted, step_cost
    from fleet.run.runner import device_spec, make_world
    from fleet.world.timing import MIB

    base = load_scenario(SCENARIOS / "fmnist_memory.yaml")
    spec = device_spec(base)
    shape, classes = INPUT_SHAPES[base.dataset.name], NUM_CLASSES[base.dataset.name]
    learner = Learner(spec.learner.with_device("cpu"), shape, classes)
    for budget, pi4_shrinks in (("balanced", False), ("shared-board", True)):
        scenario = replace(base, timing=replace(base.timing, budget=budget))
        world = make_world(scenario)
        cost = step_cost(spec, learner, world.kernels)
        for profile, name in zip(world.profiles, scenario.device_profiles()):
            fit = fitted(cost, profile.memory_mb * MIB, base.method.buffer_size)
            assert fit.declined is None
            shrinks = (fit.batch, fit.draw, fit.buffer) != (cost.batch, cost.draw, base.method.buffer_size)
            assert shrinks == (pi4_shrinks and name == "rpi4"), (budget, name, fit)
