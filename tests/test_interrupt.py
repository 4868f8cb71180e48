"""Ctrl-C ends a real `fleet run` (Flower on Ray) within seconds and leaves nothing running."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import binding_deadline_scenario
from fleet.run.processes import alive, descendants

pytestmark = pytest.mark.e2e

# a run stops in about 1.4 s on an idle 2-core machine; the bound catches a hang, not a slow machine
STOP_LIMIT_S = 30.0


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler in this process while a test runs: code that an earlier test ran
    in-process (Ray, Flower) may leave another one, and a child started under an ignored SIGINT
    inherits the ignoring (this made the SIGINT tests fail in full-suite runs only)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def session_members(sid: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live, non-zombie process in session `sid` (orphans included)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.add((int(entry.name), int(fields[19])))
    return found


def wait_for(predicate, timeout_s: float, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def test_sigint_ends_the_run_keeps_its_rounds_and_leaves_no_process(tmp_path, scenario_file, default_sigint):
    out = tmp_path / "out"
    scenario = scenario_file("tiny", dataset={"name": "synthetic"}, fleet={"devices": 2},
                             stream={"rounds_per_task": 20}, method={"name": "er", "buffer_size": 20},
                             train={"local_epochs": 1, "width": 4}, federation={"min_available": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # its own session, so that every process it starts (orphans too) can be found, and killed if this fails
    proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "run", str(scenario), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    rounds = out / "rounds.csv"
    try:
        assert wait_for(lambda: rounds.exists() and len(rounds.read_text().splitlines()) >= 2
                        or proc.poll() is not None, 240), "no round finished in 240 s"
        assert proc.poll() is None, proc.communicate()
        started = descendants(proc.pid) | session_members(proc.pid)
        assert started, "the run started no process (no Ray?)"
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            stdout, stderr = proc.communicate(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:  # say what the run was doing, not only that it was slow
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail(f"the run did not end within {STOP_LIMIT_S} s of SIGINT; its stderr ended:\n{stderr[-3000:]}")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert took < STOP_LIMIT_S
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "fleet: interrupted"
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(rounds.open()))
    assert summary["status"] == "interrupted"
    assert summary["rounds_completed"] == len(rows) >= 1
    assert [int(r["round"]) for r in rows] == list(range(1, len(rows) + 1))
    # nothing it started is left: neither its descendants seen before the signal nor anything in its session
    assert wait_for(lambda: not any(alive(p) for p in started) and not session_members(proc.pid), 5), \
        sorted(p for p in started if alive(p))


def rows_without_wall_clock(path: Path) -> list[dict]:
    clocks = ("wall_s", "measured_compute_s")  # this machine's clocks, not the simulation's
    return [{k: v for k, v in row.items() if k not in clocks} for row in csv.DictReader(path.open())]


def summary_without_wall_clock(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("wall_s", "wall_breakdown_s")}


def test_a_run_killed_after_round_k_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    """SIGKILL (no chance to clean up) mid-run, then `fleet run --resume`: the same rows, summary and devices.

    Three devices, two sampled a round (the server's draws), SparCL-ER with
    TDM masks, a deadline that cuts training short or fits none of it, and
    failures mid-round (the world's clock and keyed draws; devices that crash
    or decline keep their earlier state files): all of it must carry over.
    """
    kill_and_resume(tmp_path, binding_deadline_scenario(tmp_path / "resumable.yaml", "resumable", rounds=7))


def test_an_asynchronous_run_killed_mid_buffer_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    """The same in asynchronous mode (FedBuff): killed with updates in flight and the buffer part full, it
    resumes from the last version (the world replays its log, the updates in flight come from the
    checkpoint) to the same versions, arrivals and model; some updates come too stale and are dropped."""
    scenario = binding_deadline_scenario(tmp_path / "buffered.yaml", "buffered", rounds=7)
    text = scenario.read_text().replace("stream: {rounds_per_task: 2}", "stream: {task_every_s: 0.05}")
    text = text.replace("devices_per_round: 2}", "devices_per_round: 2, mode: async, buffer_size: 2, "
                        "max_staleness: 0, concurrency: 3}")
    scenario.write_text(text)
    straight, _ = kill_and_resume(tmp_path, scenario)
    arrivals = list(csv.DictReader((straight / "arrivals.csv").open()))
    assert {r["status"] for r in arrivals} >= {"ok", "late", "failed"} and len(arrivals) >= 14


def kill_and_resume(tmp_path: Path, scenario: Path) -> tuple[Path, Path]:
    """Run `scenario` straight, and again killed after its third checkpoint and resumed: the same results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    fleet = [sys.executable, "-m", "fleet.cli", "run"]
    done = subprocess.run([*fleet, str(scenario), "--out", str(straight), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr  # 1: a starved fleet is a finding, not a crash

    proc = subprocess.Popen([*fleet, str(scenario), "--out", str(killed), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker_path = killed / "summary.json"  # written atomically after each round's row and checkpoint

    def checkpointed() -> int:
        return json.loads(marker_path.read_text())["rounds_completed"] if marker_path.exists() else 0

    try:
        # wait for the marker, not for rounds.csv: a round's row is written before its checkpoint and marker,
        # so a kill in between stops the run after the round before
        assert wait_for(lambda: checkpointed() >= 3 or proc.poll() is not None, 240), "round 3 did not finish in 240 s"
        assert proc.poll() is None
        started = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the run itself only: its watchdog must end the rest
        proc.wait(5)
        assert wait_for(lambda: not any(alive(p) for p in started), 15), sorted(p for p in started if alive(p))
    finally:
        if proc.poll() is None or session_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    marker = json.loads(marker_path.read_text())  # written each round: SIGKILL leaves it
    assert marker["status"] == "running" and marker["rounds_completed"] >= 3
    resumed = subprocess.run([*fleet, "--resume", str(killed), "--quiet"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == done.returncode, resumed.stderr
    assert rows_without_wall_clock(killed / "rounds.csv") == rows_without_wall_clock(straight / "rounds.csv")
    assert summary_without_wall_clock(killed / "summary.json") == summary_without_wall_clock(
        straight / "summary.json")
    assert (killed / "devices.csv").read_text() == (straight / "devices.csv").read_text()
    assert not (killed / "checkpoint").exists()  # a complete run keeps its model, not its checkpoint
    assert (killed / "model.npz").read_bytes() == (straight / "model.npz").read_bytes()
    if (straight / "arrivals.csv").exists():
        assert (killed / "arrivals.csv").read_text() == (straight / "arrivals.csv").read_text()
    return straight, killed


def test_a_signal_landing_on_another_thread_interrupts_a_main_thread_blocked_in_a_join(default_sigint):
    """The kernel may deliver Ctrl-C to any thread; Flower's simulation blocks the main thread in a
    join without a timeout, so without the relay the interrupt waited for the end of the run."""
    from fleet.run.signals import relay_signals

    release = threading.Event()
    blocked = threading.Thread(target=release.wait)
    blocked.start()

    def send() -> None:
        time.sleep(0.3)
        signal.pthread_kill(blocked.ident, signal.SIGINT)  # to the other thread, not the main one
        time.sleep(10.0)
        release.set()  # the join's natural end, long after

    undo = relay_signals()
    threading.Thread(target=send, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            blocked.join()
        assert time.monotonic() - started < 5.0
    finally:
        undo()
        release.set()
        blocked.join()
