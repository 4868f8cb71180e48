"""Files the project did not write stay data, and its outputs never land outside their folder.

A crafted CIFAR-10 batch or device state file must not run code (the payload
would create a marker file; it must not exist afterwards) and must give one
clear line; output files replace a planted symlink instead of writing through
it; a folder that holds a run is refused without --force; a stopped run says
how it ended and leaves no process behind.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.data import load_stream
from clients.errors import InputError
from clients.sparcl.config import LearnerConfig, TrainConfig
from clients.sparcl.learner import Learner
from fleet.run import processes, signals
from fleet.cli import main
from fleet.outputs import RoundsCsv, check_output_dir, plot_accuracy, prepare_output_dir, write_json, write_text


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cifar_folder(folder: Path, poisoned: dict | None = None) -> Path:
    """Five tiny train batches and a test batch; `poisoned` replaces data_batch_1's contents."""
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(5):
        batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [2 * b, 2 * b + 1],
                 b"batch_label": b"training batch", b"filenames": [b"a.png", b"b.png"]}
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(
        {b"data": np.zeros((10, 3072), dtype=np.uint8), b"labels": list(range(10))}, protocol=4))
    if poisoned is not None:
        (folder / "data_batch_1").write_bytes(pickle.dumps(poisoned, protocol=2))
    return folder


# --------------------------------------------------------------------------- CIFAR pickles


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    folder = cifar_folder(tmp_path)
    batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    stream = load_stream("cifar10", data_dir=folder)
    assert sum(len(t.y_train) for t in stream.tasks) == 10


def test_a_crafted_cifar_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "marker"
    folder = cifar_folder(tmp_path / "data", poisoned={b"data": Payload(marker), b"labels": [0, 1]})
    with pytest.raises(InputError) as err:
        load_stream("cifar10", data_dir=folder)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and "data_batch_1" in message and "system" in message


@pytest.mark.parametrize("payload", [
    pickle.dumps(Payload(Path("/nonexistent/marker"))),          # os.system via REDUCE
    b"cbuiltins\neval\n(S'1+1'\ntR.",                              # builtins.eval, protocol 0
    b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.",
    b"(S'touch x'\nios\nsystem\n.",                                 # INST opcode
    b"\x80\x02\x82\x01.",                                          # EXT1 extension code
    b"\x80\x02P1\n.",                                              # persistent id (protocol 0 opcode)
    b"\x80\x02]q\x00.",                                            # a list, not a dict
    b"garbage",
])
def test_any_forbidden_pickle_is_a_one_line_error(tmp_path, payload):
    folder = cifar_folder(tmp_path)
    (folder / "data_batch_1").write_bytes(payload)
    with pytest.raises(InputError, match="is not a CIFAR-10 batch") as err:
        load_stream("cifar10", data_dir=folder)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_an_oversized_cifar_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import clients.data

    folder = cifar_folder(tmp_path)
    monkeypatch.setattr(clients.data, "_CIFAR_MAX_BYTES", 100)
    with pytest.raises(InputError, match="more than the 100"):
        load_stream("cifar10", data_dir=folder)


# --------------------------------------------------------------------------- device state


def small_learner() -> Learner:
    return Learner(LearnerConfig(width=4, train=TrainConfig(epochs_per_task=2)), (1, 8, 8), 10)


def test_device_state_round_trips_through_weights_only_loading():
    stream = load_stream("synthetic")
    a = small_learner()
    task = stream.tasks[0]
    a.begin_task(task.task_id, task.classes, task.x_train, task.y_train)
    a.train_epoch()
    blob = a.to_bytes()
    torch.load(io.BytesIO(blob), weights_only=True)  # the file itself is plain data
    b = small_learner()
    b.load_bytes(blob)
    assert isinstance(b.removal.active, np.ndarray) and np.array_equal(b.removal.active, a.removal.active)
    assert b.removal.tracker.last.dtype == np.int8 and b.removal.tracker.learned.dtype == bool
    assert b.rng.bit_generator.state == a.rng.bit_generator.state
    assert vars(b.counters) == vars(a.counters)
    assert all(torch.equal(b.model.state_dict()[k], v) for k, v in a.model.state_dict().items())


@pytest.mark.parametrize("make", ["torch.save", "pickle", "legacy torch"])
def test_a_crafted_state_file_runs_no_code(tmp_path, make):
    marker = tmp_path / "marker"
    state = {"model": Payload(marker)}
    buf = io.BytesIO()
    if make == "pickle":
        buf.write(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, buf, _use_new_zipfile_serialization=make == "torch.save")
    with pytest.raises(InputError, match="device state is not a learner state") as err:
        small_learner().load_bytes(buf.getvalue())
    assert not marker.exists()
    assert "\n" not in str(err.value)


def test_a_truncated_state_file_is_a_one_line_error():
    blob = small_learner().to_bytes()
    with pytest.raises(InputError, match="device state is not a learner state"):
        small_learner().load_bytes(blob[: len(blob) // 2])


# --------------------------------------------------------------------------- outputs and symlinks


ROWS = [{"round": r, "class_il_accuracy": 50.0, "acc_task_0": 50.0, "upload_bytes": 1e6, "download_bytes": 2e6}
        for r in (1, 2)]


@pytest.mark.parametrize("name", ["accuracy.png", "summary.json", "rounds.csv", "scenario.yaml"])
def test_a_symlinked_output_file_is_replaced_not_followed(tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / name).symlink_to(victim)
    path = out / name
    if name == "accuracy.png":
        plot_accuracy(ROWS, 1, path, "t")
    elif name == "summary.json":
        write_json(path, {"a": 1})
    elif name == "rounds.csv":
        log = RoundsCsv(path, ["round"])
        log.append({"round": 1})
    else:
        write_text(path, "x: 1\n")
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and path.stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == [name]  # no temporary file left behind


def test_the_old_temporary_name_is_not_followed_either(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "summary.json.tmp").symlink_to(victim)
    write_json(tmp_path / "summary.json", {"a": 1})
    assert victim.read_text() == "precious" and json.loads((tmp_path / "summary.json").read_text()) == {"a": 1}


def test_rounds_csv_appends_refuse_a_symlink_planted_after_creation(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    log = RoundsCsv(tmp_path / "rounds.csv", ["round"])
    (tmp_path / "rounds.csv").unlink()
    (tmp_path / "rounds.csv").symlink_to(victim)
    with pytest.raises(OSError):
        log.append({"round": 1})
    assert victim.read_text() == "precious"


def test_output_files_get_ordinary_permissions(tmp_path):
    write_json(tmp_path / "summary.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_closed_rounds_csv_takes_no_more_rows(tmp_path):
    log = RoundsCsv(tmp_path / "rounds.csv", ["round"])
    log.append({"round": 1})
    log.close()
    log.append({"round": 2})
    assert log.rows == [{"round": 1}] and (tmp_path / "rounds.csv").read_text().split() == ["round", "1"]


# --------------------------------------------------------------------------- existing runs and --force


def scenario_file(tmp_path: Path, out: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\noutput: {out}\ndataset: {{name: synthetic}}\nfleet: {{devices: 2}}\n")
    return path


@pytest.mark.parametrize("marker", ["summary.json", "rounds.csv", "comparison.csv"])
def test_a_folder_holding_a_run_is_refused_without_force(tmp_path, capsys, marker, no_real_run):
    out = tmp_path / "out"
    out.mkdir()
    (out / marker).write_text("old")
    for args in (["run", str(scenario_file(tmp_path, out))], ["run", str(scenario_file(tmp_path, tmp_path / "x")),
                 "--out", str(out)], ["compare", str(scenario_file(tmp_path, out)), "--out", str(out)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "already holds a run" in err[0] and "--force" in err[0]
    assert (out / marker).read_text() == "old"


def test_a_variant_folder_holding_a_run_is_refused_without_force(tmp_path, capsys, no_real_run):
    out = tmp_path / "cmp"
    (out / "generous").mkdir(parents=True)
    (out / "generous" / "summary.json").write_text("{}")
    assert main(["compare", str(scenario_file(tmp_path, tmp_path / "x")), "--out", str(out)]) == 2
    assert "generous" in capsys.readouterr().err


def test_force_replaces_an_earlier_run_and_only_its_files(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("summary.json", "rounds.csv", "bytes.png"):
        (out / name).write_text("old")
    (out / "accuracy.png").symlink_to(victim)
    (out / "notes.txt").write_text("mine")
    seen = {}

    def fake_run(scenario, out_dir, *, on_round=None, verbose=False, client_app=None, force=False, resume=False,
                 ray_address=None):
        seen["force"] = force
        prepare_output_dir(out_dir, force=force)
        seen["left"] = sorted(p.name for p in out_dir.iterdir())
        summary = {"status": "complete", "method": "m", "final_accuracy": 1.0, "forgetting": 0.0,
                   "last_k": 1, "last_k_accuracy": 1.0, "final_accuracy_task_il": 1.0, "forgetting_authors": 0.0,
                   "rounds_completed": 1, "upload_bytes": 0, "sim_time_s": 0.0, "energy_j": 0.0,
                   "dropped_updates": 0, "rejected_updates": 0, "failed_replies": 0, "wasted_energy_j": 0.0,
                   "statuses": dict.fromkeys(("ok", "late", "failed", "oom", "declined", "offline", "adapted"), 0)}
        write_json(out_dir / "summary.json", summary)
        return summary

    import fleet.run.runner

    monkeypatch.setattr(fleet.run.runner, "run_scenario", fake_run)
    assert main(["run", str(scenario_file(tmp_path, out)), "--quiet", "--force"]) == 0, capsys.readouterr().err
    assert seen == {"force": True, "left": ["notes.txt"]}  # the old run's files gone, the user's file kept
    assert victim.read_text() == "precious"


def test_prepare_output_dir_refuses_a_run_folder_itself(tmp_path):
    (tmp_path / "rounds.csv").write_text("round\n1\n")
    with pytest.raises(InputError, match="already holds a run"):
        prepare_output_dir(tmp_path, force=False)
    assert (tmp_path / "rounds.csv").read_text() == "round\n1\n"
    check_output_dir(tmp_path, force=True)


def test_names_cannot_leave_the_output_folder():
    from fleet.run import safe_name
    from fleet.config import parse_scenario

    with pytest.raises(InputError, match="must not hold '/'"):
        parse_scenario({"name": "../../x"})
    assert parse_scenario({"name": "ok", "dataset": {"name": "synthetic"}, "fleet": {"devices": 2}}).output == "runs/ok"
    for label in ("..", ".", "../../etc", "a/b", "x" * 1000, ""):
        name = safe_name(label)
        assert "/" not in name and name not in ("", ".", "..") and len(name) <= 101


# --------------------------------------------------------------------------- stopping a run, without Ray


def test_stopping_records_the_status_and_ends_the_processes_it_started():
    statuses = []
    with pytest.raises(KeyboardInterrupt):
        with signals.stopping(statuses.append):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            grandchild_parent = subprocess.Popen(
                [sys.executable, "-c", "import subprocess, sys, time; "
                 "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
            time.sleep(0.5)
            started = processes.descendants()
            raise KeyboardInterrupt
    assert statuses == ["interrupted"]
    assert len(started) >= 3
    assert not any(processes.alive(p) for p in started)
    child.wait(5)
    grandchild_parent.wait(5)


@pytest.mark.parametrize("exc,status,raised", [
    (SystemExit(signal.SIGTERM), "interrupted", signals.Terminated),  # Ray's SIGTERM handler
    (signals.Terminated(), "interrupted", signals.Terminated),
    (RuntimeError("boom"), "failed", RuntimeError),
    (SystemExit(3), "failed", SystemExit),
])
def test_stopping_maps_how_a_run_ended(exc, status, raised):
    statuses = []
    with pytest.raises(raised):
        with signals.stopping(statuses.append):
            raise exc
    assert statuses == [status]


def test_stopping_says_nothing_when_the_block_completes():
    statuses = []
    with signals.stopping(statuses.append):
        pass
    assert statuses == []


def test_sigterm_inside_stopping_becomes_terminated():
    statuses = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(signals.Terminated):
        with signals.stopping(statuses.append):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert statuses == ["interrupted"] and signal.getsignal(signal.SIGTERM) == before
