"""Checkpoints and device state files: what a resumed run reads back is exactly what was written.

The end-to-end proof (kill a real run, resume it, compare with an
uninterrupted one) is in test_interrupt.py; these check the pieces: the state
store's rounds, the checkpoint's files, and that the strategy, the world and
the ledger continue after a snapshot exactly as they would have without one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from clients import state_store
from clients.errors import InputError
from fleet.run import processes
from fleet.run.checkpoint import Checkpoint, checkpoint_dir, read_checkpoint, remove_checkpoint, write_checkpoint
from fleet.cli import main
from fleet.world import BUDGETS, Ledger, SimWorld, get_profile
from fleet.outputs import folder_lock
from server.bookkeeping import DeviceReport
from server.strategy import ServerConfig, SparseFedAvg


# --------------------------------------------------------------------------- device state files


def test_a_device_resumes_from_its_newest_state_before_the_round(tmp_path):
    for r in (1, 3, 4):
        state_store.save_state(tmp_path, 7, r, f"after {r}".encode())
    assert state_store.state_rounds(tmp_path, 7) == [1, 3, 4]
    assert state_store.load_state(tmp_path, 7, 4) == b"after 3"
    assert state_store.load_state(tmp_path, 7, 9) == b"after 4"
    assert state_store.load_state(tmp_path, 7, 1) is None   # its first round
    assert state_store.load_state(tmp_path, 8, 5) is None   # another device, never trained


def test_prune_keeps_the_state_a_checkpoint_before_the_new_round_needs(tmp_path):
    for r in (2, 5, 6):
        state_store.save_state(tmp_path, 0, r, b"x")
    state_store.prune(tmp_path, 0, 5)   # the device just saved round 6
    assert state_store.state_rounds(tmp_path, 0) == [5, 6]
    state_store.discard_after(tmp_path, 0, 5)   # round 6 never finished for the run
    assert state_store.state_rounds(tmp_path, 0) == [5]


def test_a_state_file_is_replaced_not_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = state_store.device_folder(tmp_path, 0)
    folder.mkdir()
    (folder / "round-1.pt").symlink_to(victim)
    state_store.save_state(tmp_path, 0, 1, b"state")
    assert victim.read_bytes() == b"precious"
    assert not (folder / "round-1.pt").is_symlink() and (folder / "round-1.pt").read_bytes() == b"state"


def test_an_oversized_state_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    state_store.save_state(tmp_path, 0, 1, b"0123456789")
    monkeypatch.setattr(state_store, "MAX_STATE_BYTES", 9)
    with pytest.raises(InputError, match="10 bytes, over the 9 allowed"):
        state_store.load_state(tmp_path, 0, 2)


# --------------------------------------------------------------------------- the checkpoint's files


def checkpoint(round_: int = 3) -> Checkpoint:
    rng = np.random.default_rng(0)
    weights = {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "fc.bias": rng.standard_normal(10).astype(np.float32)}
    masks = {"conv.weight": (rng.random((4, 3, 3, 3)) < 0.3)}
    state = {"rows": [{"round": 1, "energy_j": np.float64(0.1) + 0.2, "n_ok": np.int64(5), "tasks": "0|1"}],
             "wall_s": 1.5}
    return Checkpoint(round_, state, weights, masks)


def test_a_checkpoint_reads_back_exactly(tmp_path):
    ckpt = checkpoint()
    write_checkpoint(tmp_path, ckpt)
    back = read_checkpoint(tmp_path)
    assert back.round == 3
    for name in ckpt.weights:
        assert back.weights[name].dtype == ckpt.weights[name].dtype
        np.testing.assert_array_equal(back.weights[name], ckpt.weights[name])
    np.testing.assert_array_equal(back.masks["conv.weight"], ckpt.masks["conv.weight"])
    row = back.state["rows"][0]
    assert row["energy_j"] == 0.1 + 0.2 and type(row["n_ok"]) is int  # numpy scalars: exact, their own type


def test_a_newer_checkpoint_replaces_the_older_arrays(tmp_path):
    write_checkpoint(tmp_path, checkpoint(3))
    write_checkpoint(tmp_path, checkpoint(4))
    assert sorted(p.name for p in checkpoint_dir(tmp_path).iterdir()) == ["global-4.npz", "state.json"]
    assert read_checkpoint(tmp_path).round == 4


def test_no_checkpoint_means_no_round_finished(tmp_path):
    assert read_checkpoint(tmp_path) is None


@pytest.mark.parametrize("damage", ["truncated-json", "missing-arrays", "pickled-arrays", "bad-round"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, damage):
    write_checkpoint(tmp_path, checkpoint())
    folder = checkpoint_dir(tmp_path)
    state = folder / "state.json"
    if damage == "truncated-json":
        state.write_text(state.read_text()[:40])
    elif damage == "missing-arrays":
        (folder / "global-3.npz").unlink()
    elif damage == "pickled-arrays":
        np.savez(folder / "global-3.npz", evil=np.array([object()], dtype=object))
    else:
        state.write_text(json.dumps({**json.loads(state.read_text()), "round": "3; rm -rf /"}))
    with pytest.raises(InputError) as err:
        read_checkpoint(tmp_path)
    assert "\n" not in str(err.value) and "checkpoint" in str(err.value)


def test_removing_a_linked_checkpoint_folder_keeps_its_target(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint").symlink_to(target)
    remove_checkpoint(out)
    assert not os.path.lexists(out / "checkpoint") and (target / "keep").read_text() == "mine"


# --------------------------------------------------------------------------- continuing after a snapshot


def test_the_strategy_continues_its_draws_and_totals_after_a_snapshot():
    config = ServerConfig(rounds=5, devices_per_round=2, min_available=1, seed=4)
    first = SparseFedAvg(config)
    first.rng.sample(range(10), 3)
    first.totals.upload_bytes, first.totals.notes, first.sim_time_s = 123, ["a note"], 9.5
    snap = json.loads(json.dumps(first.snapshot()))  # through JSON, as the checkpoint stores it
    second = SparseFedAvg(config)
    weights = {"w": np.ones(3, np.float32)}
    second.restore(snap, 2, weights, {})
    assert second.rng.sample(range(10), 3) == first.rng.sample(range(10), 3)
    assert asdict(second.totals) == asdict(first.totals) and second.sim_time_s == 9.5
    assert second.round_offset == 2 and second.global_weights is weights


def world() -> SimWorld:
    profiles = [get_profile(p) for p in ("rpi4", "rpi-zero2w", "phone")]
    return SimWorld(profiles, BUDGETS["tight"], deadline_s=None, keep_first=None,
                    offline_rate_per_s=0.01, seed=1)


def settle(w: SimWorld, server_round: int) -> tuple:
    devices = w.free(w.online(server_round, [0, 1, 2]))
    w.plan(server_round, devices, 50_000)
    reports = [DeviceReport(d, 3e9 * (d + 1), 50_000, 40_000, 10_000_000) for d in devices]
    timing = w.settle(server_round, reports)
    return timing.sim_time_s, timing.energy_j, tuple(sorted(timing.statuses.items()))


def test_the_world_continues_exactly_after_a_snapshot():
    straight = world()
    expected = [settle(straight, r) for r in range(1, 7)]
    first = world()
    got = [settle(first, r) for r in range(1, 4)]
    resumed = world()
    resumed.restore(json.loads(json.dumps(first.snapshot())))
    got += [settle(resumed, r) for r in range(4, 7)]
    assert got == expected


def test_the_ledger_continues_exactly_after_a_snapshot():
    w = world()
    straight, first = Ledger(["rpi4", "rpi-zero2w", "phone"]), Ledger(["rpi4", "rpi-zero2w", "phone"])
    for r in range(1, 5):
        devices = w.free(w.online(r, [0, 1, 2]))
        w.plan(r, devices, 50_000)
        reports = [DeviceReport(d, 3e9 * (d + 1), 50_000, 40_000, 10_000_000) for d in devices]
        timing = w.settle(r, reports)
        straight.add_round(r, timing, reports, {0})
        if r == 2:
            resumed = Ledger(["rpi4", "rpi-zero2w", "phone"])
            resumed.restore(json.loads(json.dumps(first.snapshot())))
            first = resumed
        first.add_round(r, timing, reports, {0})
    assert first.rows() == straight.rows()
    assert first.snapshot() == json.loads(json.dumps(straight.snapshot()))


# --------------------------------------------------------------------------- the watchdog, and --resume flags


def test_a_killed_run_leaves_no_process_and_no_scratch_folder(tmp_path):
    """SIGKILL gives the run no chance to clean up: its watchdog ends what it started."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = ("import subprocess, sys, time\n"
            "from pathlib import Path\n"
            "from fleet.run.signals import stopping\n"
            f"with stopping(lambda status: None, watch=True, scratch=Path({str(scratch)!r})):\n"
            "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "    print(child.pid, flush=True)\n"
            "    time.sleep(120)\n")
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[1])
    try:
        child = int(run.stdout.readline())
        stat = Path(f"/proc/{child}/stat").read_text()
        process = (child, int(stat[stat.rfind(")") + 2:].split()[19]))
        time.sleep(2 * 0.5 + 0.2)  # the watchdog has seen it
        os.kill(run.pid, signal.SIGKILL)
        run.wait(5)
        deadline = time.monotonic() + 10
        while (processes.alive(process) or scratch.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not processes.alive(process) and not scratch.exists()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_a_folder_in_use_by_a_run_is_refused_to_another(tmp_path):
    with folder_lock(tmp_path / "out"):
        with pytest.raises(InputError, match="in use by another fleet run"):
            with folder_lock(tmp_path / "out"):
                pass
    with folder_lock(tmp_path / "out"):  # released when the run ends
        pass


@pytest.mark.parametrize("args,message", [
    (["--resume", "{out}", "{scenario}"], "drop a scenario file"),
    (["--resume", "{out}", "--force"], "drop --force"),
    (["--resume", "{out}", "--set", "seed=3"], "drop --set"),
    (["--resume", "{tmp}/nothing-here"], "holds no run to resume"),
    ([], "give a scenario file, or --resume DIR"),
])
def test_resume_flags_are_checked_before_any_work(tmp_path, capsys, no_real_run, args, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scenario.yaml").write_text("name: t\ndataset: {name: synthetic}\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: t\ndataset: {name: synthetic}\n")
    argv = ["run", *[a.format(out=out, scenario=scenario, tmp=tmp_path) for a in args], "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_resuming_a_complete_run_does_nothing(tmp_path, capsys, no_real_run):
    (tmp_path / "scenario.yaml").write_text("name: t\ndataset: {name: synthetic}\n")
    (tmp_path / "summary.json").write_text(json.dumps({"status": "complete"}))
    assert main(["run", "--resume", str(tmp_path)]) == 0
    assert "complete run: nothing to resume" in capsys.readouterr().out
