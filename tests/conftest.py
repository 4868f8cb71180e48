"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clients import torch_compat

torch_compat.install()  # no-op on torch 2; the device side's tests also run on Debian's torch 1.13


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one thread; several threads spin badly on a loaded box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stream():
    """A small synthetic task stream (20 examples a class), built once per module: the learner tests' data."""
    from clients.data import load_stream

    return load_stream("synthetic", max_per_class=20)


@pytest.fixture
def task_identity(monkeypatch):
    """Flower stamps every Message with the running task's identity, which only a ServerApp process has:
    tests that build Messages in-process stand in for it."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


@pytest.fixture
def no_real_run(monkeypatch):
    """For tests that must fail before any work: a real run (Ray, minutes) would be a bug."""
    import fleet.run.runner

    def refuse(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(fleet.run.runner, "run_scenario", refuse)


@pytest.fixture
def scenario_file(tmp_path):
    """A factory: write_scenario(name, sections...) writes tmp_path/<name>.yaml, a scenario of those
    sections whose output is tmp_path/out unless given, and returns its path."""
    import yaml

    def write(name: str, **sections) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "output": str(tmp_path / "out"), **sections}, sort_keys=False))
        return path

    return write


def binding_deadline_scenario(path: Path, name: str, rounds: int) -> Path:
    """Three devices, two sampled a round, SparCL-ER with TDM masks, a deadline that cuts training short
    or fits none of it, and failures mid-round: a small fleet where every kind of outcome happens."""
    path.write_text(f"""name: {name}
dataset: {{name: synthetic}}
fleet: {{devices: 3}}
stream: {{rounds_per_task: 2}}
method: {{name: er, buffer_size: 20}}
train: {{local_epochs: 1, width: 4}}
federation: {{rounds: {rounds}, min_available: 3, devices_per_round: 2}}
timing: {{budget: tight, deadline_s: 0.03, offline_rate_per_s: 15}}
""")
    return path
