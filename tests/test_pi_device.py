"""What a Raspberry Pi device needs (issue 23), without a Pi: the torch check that reports a child's
signal death in one line, the thread count handed to the ClientApp, a round timeout paced by the
planned work, and torch 1.13's weights-only loads (Debian's torch on the Pi)."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.config import parse_config_args

import fleet.deploy.device as device_module
import fleet.deploy.flower as flower
from clients import app as client_app
from clients import torch_compat
from clients.errors import InputError
from fleet.cli import main
from fleet.deploy.device import Device, check_torch, node_config
from server.app import PacedGrid
from server.strategy import ROUND_TIMEOUT_SLACK, ServerConfig, SparseFedAvg

pytestmark = pytest.mark.deployment

DIES_OF_SIGILL = """
import os, signal
print("stage: small-cnn batch 1 forward", flush=True)
os.kill(os.getpid(), signal.SIGILL)
"""


def test_a_child_that_dies_of_sigill_is_one_line_naming_the_cause_and_the_fix(monkeypatch):
    monkeypatch.setattr(device_module, "CHECK", DIES_OF_SIGILL)
    with pytest.raises(InputError) as caught:
        check_torch(threads=2)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the torch check died with SIGILL (illegal instruction) at "
                              "'small-cnn batch 1 forward' on 2 threads: this torch build runs instructions this "
                              "CPU lacks")
    assert "apt-get install python3-torch" in message and "--threads 1" in message


def test_other_signal_deaths_and_errors_are_one_line_too(monkeypatch):
    monkeypatch.setattr(device_module, "CHECK", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(InputError, match=r"^the torch check died with SIGSEGV before it started on 1 thread: "):
        check_torch(threads=1)
    monkeypatch.setattr(device_module, "CHECK", "print('stage: import torch'); raise ImportError('no torch here')")
    with pytest.raises(InputError, match=r"^the torch check failed at 'import torch': ImportError: no torch here$"):
        check_torch(threads=1)


def test_the_check_trains_the_scenarios_network_at_batch_1_and_its_batch(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\ndataset: {name: digits}\ntrain: {batch_size: 8, width: 16}\n")
    line = check_torch(scenario, threads=1)
    assert line.startswith(f"torch {torch.__version__} on ")
    assert "small-cnn (width 16) trains at batch 1 and 8 on 1 thread, " in line and line.endswith(" s CPU")
    scenario.write_text("name: s\ndataset: {name: digits}\ntrain: {batch_size: 8, width: 16, threads: 2}\n")
    assert " on 2 threads, " in check_torch(scenario)  # no --threads: the scenario's, as the ClientApp
    with pytest.raises(InputError, match=r"^--scenario '.*nope.yaml' does not exist"):
        check_torch(tmp_path / "nope.yaml", threads=1)


def test_the_device_command_checks_torch_before_it_connects(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_module, "CHECK", DIES_OF_SIGILL)
    started = []
    monkeypatch.setattr(device_module, "supernode_command", lambda d: started.append(d) or ["false"])
    code = main(["device", "--superlink", "127.0.0.1:1", "--device-id", "0", "--devices", "1", "--state-dir",
                 str(tmp_path), "--insecure", "--threads", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and not started  # no SuperNode started
    assert err[-1].startswith("fleet: error: the torch check died with SIGILL (illegal instruction)")


def test_threads_travel_in_the_node_config_and_are_set_once_in_the_client_app(tmp_path, monkeypatch):
    d = Device(superlink="127.0.0.1:9092", device_id=0, devices=2, state_dir=tmp_path, threads=1)
    assert parse_config_args([node_config(d)])["threads"] == 1
    assert "threads" not in parse_config_args([node_config(Device("127.0.0.1:9092", 0, 2, tmp_path))])
    calls = []
    monkeypatch.setattr(client_app, "_threads_set", False)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "threads": 1}, state=RecordDict(),
                      run_config={})
    client_app.set_threads(context)
    client_app.set_threads(context)
    assert calls == [1]
    import yaml

    from fleet.run import device_spec
    from fleet.config import parse_scenario

    sent = device_spec(parse_scenario(yaml.safe_load("name: t\ntrain: {threads: 2}\n"))).to_json()
    assert client_app.device_spec_for({"device-spec": sent}, context).threads == 1  # the device's, not the 2 sent
    context.node_config.pop("threads")
    assert client_app.device_spec_for({"device-spec": sent}, context).threads == 2


def test_the_round_waits_for_the_slowest_planned_device_with_slack():
    strategy = SparseFedAvg(ServerConfig(rounds=1, devices_per_round=2, min_available=1, round_timeout_s=300.0))
    plans = {0: {"gflops": 3.57, "download-s": 0.01}, 1: {"gflops": 0.9, "download-s": 0.5}}
    assert strategy.paced_timeout(plans) == 300.0  # no work known yet: the scenario's timeout
    strategy.round_work = {0: 1e12, 1: 1e11}
    # device 0: 1e12 / 3.57e9 = 280.1 s; device 1: 2 x 0.5 + 1e11 / 0.9e9 = 112.1 s
    assert strategy.paced_timeout(plans) == pytest.approx(ROUND_TIMEOUT_SLACK * (0.02 + 1e12 / 3.57e9))
    assert strategy.paced_timeout({2: {"gflops": 3.57}}) == pytest.approx(ROUND_TIMEOUT_SLACK * 5.5e11 / 3.57e9)


def test_the_paced_grid_stretches_training_waits_only(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)

    class Grid:
        def send_and_receive(self, messages, *, timeout=None):
            self.timeout = timeout
            return []

        def get_node_ids(self):
            return [7]

    strategy = SparseFedAvg(ServerConfig(rounds=1, devices_per_round=1, min_available=1))
    strategy.round_timeout_s = 1234.0
    grid = PacedGrid(Grid(), strategy)
    train = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=7, message_type=MessageType.TRAIN)
    query = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=7, message_type=MessageType.QUERY)
    grid.send_and_receive([train], timeout=300.0)
    assert grid._grid.timeout == 1234.0
    grid.send_and_receive([query], timeout=120.0)
    assert grid._grid.timeout == 120.0 and grid.get_node_ids() == [7]


def test_the_restricted_unpickler_reads_plain_data_and_refuses_other_globals():
    torch_compat.RestrictedUnpickler.allowed = torch_compat.allowed_globals(torch)
    data = {"lr": 0.1, "blob": b"\x00\x01", "steps": [1, 2], "seen": (3.5, None)}
    assert torch_compat.RestrictedUnpickler(io.BytesIO(pickle.dumps(data, protocol=2))).load() == data

    class Evil:
        def __reduce__(self):
            return (subprocess.call, (["true"],))

    with pytest.raises(pickle.UnpicklingError, match=r"^weights-only load refuses the global \w+\.call$"):
        torch_compat.RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil(), protocol=2))).load()


def test_torch_1_13_weights_only_loads_of_a_learner_state_work_through_the_compat_layer():
    """Runs under Debian's torch 1.13 where this machine has it (python3-torch), else skips."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.startswith("1."):
        pytest.skip("Debian's python3-torch (1.13) is not installed for /usr/bin/python3")
    code = textwrap.dedent("""
        import io, sys, torch
        sys.path.insert(0, sys.argv[1])
        state = {"w": torch.ones(2), "lr": 0.5, "raw": b"xy"}
        buf = io.BytesIO(); torch.save(state, buf)
        try:
            torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
            print("plain 1.13 loads it")
        except Exception as err:
            print("plain 1.13 refuses:", str(err)[-40:])
        from clients import torch_compat
        assert torch_compat.install()
        out = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
        assert out["lr"] == 0.5 and out["raw"] == b"xy" and out["w"].tolist() == [1.0, 1.0]
        print("compat loads it")
    """)
    done = subprocess.run(["/usr/bin/python3", "-c", code, str(flower.PROJECT_DIR)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.splitlines()[-1] == "compat loads it"
    assert "refuses" in done.stdout.splitlines()[0], done.stdout


def test_install_changes_nothing_on_torch_2():
    assert torch_compat.torch_major(torch.__version__) >= 2 and torch_compat.install() is False
    assert torch_compat.torch_major("1.13.0a0+gitunknown") == 1


def test_the_device_pins_follow_the_machine():
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((flower.PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]

    def pins(machine):
        env = {"platform_machine": machine, "python_version": "3.11", "python_full_version": "3.11.2",
               "sys_platform": "linux", "platform_system": "Linux", "extra": ""}
        return {r.name: r for r in map(Requirement, deps) if r.marker is None or r.marker.evaluate(env)}

    x86, arm = pins("x86_64"), pins("aarch64")
    assert str(x86["torch"].specifier) == "==2.13.0" and x86["flwr"].extras == {"simulation"}
    assert str(x86["flwr"].specifier) == "==1.41.0" == str(arm["flwr"].specifier)
    assert sum(1 for d in deps if d.startswith("flwr")) == 1  # `flwr run` refuses a second declaration
    from flwr.supercore.fab_format_version import _get_flwr_requirement  # what `flwr run` checks

    assert str(_get_flwr_requirement(tomllib.loads((flower.PROJECT_DIR / "pyproject.toml").read_text()))) \
        == "flwr[simulation]==1.41.0"
    assert arm["torch"].specifier.contains("1.13.0a0+gitunknown")  # Debian bookworm's python3-torch
    assert not arm["numpy"].specifier.contains("2.0.0") and arm["numpy"].specifier.contains("1.26.4")
    assert sys.version_info >= (3, 11)
