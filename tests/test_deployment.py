"""Flower's deployment engine on loopback, as real processes (no mocks): `fleet coordinator`
(a SuperLink with TLS and SuperNode authentication), two `fleet device` SuperNodes and
`fleet submit`. A device whose key was never registered is refused; a device killed
mid-run leaves the run to finish with the other, and once restarted it resumes its task
stream from its state folder. Every process the test starts is stopped by it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients import state_store
from fleet.deploy import make_certs
from fleet.run.processes import descendants

pytestmark = [pytest.mark.e2e, pytest.mark.deployment]

SCENARIO = """
name: deployed
seed: 0
dataset: {name: digits, n_tasks: 5, max_per_class: 30}
fleet: {devices: 2, profiles: {rpi4: 2}}
stream: {rounds_per_task: 2}
train: {local_epochs: 2, batch_size: 16, width: 8}
federation: {rounds: 5, devices_per_round: 2, min_available: 1, round_timeout_s: 150}
timing: {offline_rate_per_s: 0.0}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def data_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


class Fleet:
    """The processes of one deployment, each in its own session, all ended by `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "FLWR_HOME": str(root / "cli"), "FLWR_TELEMETRY_ENABLED": "0"}
        self.processes: dict[str, subprocess.Popen] = {}
        self.seen: set[tuple[int, int]] = set()

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("a")
        process = subprocess.Popen([sys.executable, "-m", "fleet.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                   env=self.env, start_new_session=True, cwd=Path(__file__).parents[1])
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()

    def track(self) -> None:
        for process in self.processes.values():
            self.seen |= {(process.pid, 0)} | descendants(process.pid)

    def kill(self, name: str) -> None:
        """A crash: SIGKILL the device's SuperNode and everything under it, then its wrapper."""
        self.track()
        process = self.processes[name]
        for pid, _ in descendants(process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def close(self) -> None:
        self.track()
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def alive(pids: set[tuple[int, int]]) -> list[int]:
    return [pid for pid, _ in pids if Path(f"/proc/{pid}").exists()
            and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]


@pytest.fixture
def deployment(tmp_path):
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()
        wait_for(lambda: not alive(fleet.seen - {(p.pid, 0) for p in fleet.processes.values()}), 20,
                 "every process of the deployment to end")


@pytest.mark.skipif(shutil.which("flower-superlink", path=str(Path(sys.executable).parent)) is None,
                    reason="flwr's deployment commands are not installed next to this Python")
def test_secured_devices_join_an_unregistered_one_is_refused_and_a_killed_one_resumes(deployment, tmp_path):
    started = time.perf_counter()
    certs, stranger = tmp_path / "certs", tmp_path / "stranger"
    make_certs(certs, [], 2)      # node-0, node-1: registered by the coordinator
    make_certs(stranger, [], 1)   # its node-0.key was never registered
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    port = free_port()
    deployment.start("coordinator", "coordinator", "--certs", str(certs), "--port", str(port),
                     "--home", str(tmp_path / "coordinator"))
    wait_for(lambda: "coordinator ready" in deployment.log("coordinator"), 60, "the coordinator")
    assert "node-0.pub: registered" in deployment.log("coordinator")

    def device(i: int, key: Path, *extra: str) -> subprocess.Popen:
        return deployment.start(f"device-{i}", "device", "--superlink", f"127.0.0.1:{port}", "--device-id", str(i),
                                "--devices", "2", "--state-dir", str(tmp_path / f"state-{i}"), "--ca",
                                str(certs / "ca.crt"), "--key", str(key), "--port", str(free_port()),
                                "--threads", "1", *extra)

    intruder = deployment.start("stranger", "device", "--superlink", f"127.0.0.1:{port}", "--device-id", "1",
                                "--devices", "2", "--state-dir", str(tmp_path / "state-x"), "--ca",
                                str(certs / "ca.crt"), "--key", str(stranger / "node-0.key"),
                                "--port", str(free_port()), "--rejoin-wait", "0")
    device(0, certs / "node-0.key", "--profile", "rpi4")
    device(1, certs / "node-1.key", "--stand-in")
    assert intruder.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in deployment.log("stranger")
    for i in (0, 1):
        wait_for(lambda i=i: "SuperNode ID" in deployment.log(f"device-{i}"), 60, f"device {i} to connect")

    out = tmp_path / "out"
    submit = deployment.start("submit", "submit", str(tmp_path / "scenario.yaml"), "--out", str(out))
    wait_for(lambda: len(data_rows(out / "rounds.csv")) >= 2, 240, "two rounds")
    states = tmp_path / "state-1"
    (folder,) = states.glob("*/device-1")  # one subfolder per run
    saved = state_store.describe(state_store.load_state(folder.parent, 1, 3))
    deployment.kill("device-1")
    device(1, certs / "node-1.key", "--stand-in")  # back at once, with a new node id and an empty context
    assert submit.wait(timeout=420) == 0, deployment.log("submit")[-2000:]
    wall_s = time.perf_counter() - started

    summary = json.loads((out / "summary.json").read_text())
    rounds = data_rows(out / "rounds.csv")
    per_device = data_rows(out / "device_rounds.csv")
    assert summary["status"] == "complete" and summary["rounds_completed"] == 5
    assert all(int(r["accepted"]) >= 1 for r in rounds)  # device 0 carried every round
    # a crash, not a goodbye: the coordinator still held device 1's connection and refused it at first;
    # its messages wait under its registered node id, or come back as errors if its heartbeat ran out first
    assert "the coordinator refused this device" in deployment.log("device-1")
    real = [r for r in per_device if r["device"] == "0"]
    assert len(real) == 5 and all(r["real"] == "1" and float(r["measured_compute_s"]) > 0
                                  and int(r["measured_peak_rss_bytes"]) > 2**20 for r in real)
    after = [int(r["round"]) for r in per_device if r["device"] == "1" and r["status"] == "ok"]
    assert after[:2] == [1, 2] and max(after) >= 4 and all(r["real"] == "0" for r in per_device if r["device"] == "1")
    final = state_store.describe(state_store.load_state(folder.parent, 1, 6))
    # resumed, not restarted: it went on from the saved task position, buffer and work
    assert final["task"] >= saved["task"] and final["steps"] > saved["steps"]
    assert final["buffer_seen"] > saved["buffer_seen"] and final["examples"] > saved["examples"]
    print(f"deployment test: {wall_s:.0f} s wall")
