"""`fleet run --dry-run`: a device's round worked out from the accounting, and the world run without training."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fleet.cli import main
from fleet.run.dryrun import DeviceBook, StepCost, round_work
from fleet.run.runner import BASE_COLUMNS


def cost(memory_per_example: int = 1000, draws: int = 1) -> StepCost:
    return StepCost(train_flops_per_example=2.0, kernel_flops_per_example=10.0, batch=10, draw=5, draws=draws,
                    buffer=100, memory=lambda batch, draw, buffer: memory_per_example * (batch + draw) + buffer)


def test_an_unlimited_round_trains_every_epoch_with_its_replay_draws():
    book = DeviceBook(seen=3)  # three examples in the buffer: the first draw takes all three
    work, book = round_work(cost(), task=0, examples=25, epochs=2, book=book, plan={})
    draws = 3 + 5 * 5  # six steps (ceil(25 / 10) an epoch); the buffer holds 13 after the first
    assert work.status == "ok" and work.steps == 6 and work.kernel_flops == 10.0 * (2 * 25 + draws)
    assert work.train_flops == 2.0 * (2 * 25 + draws)
    assert book.seen == 3 + 50  # the buffer fills with the current task's examples


def test_a_compute_budget_cuts_the_round_to_whole_steps():
    work, _ = round_work(cost(draws=0), 0, examples=100, epochs=1, book=DeviceBook(), plan={"compute-flops": 250.0})
    assert work.status == "ok" and work.kernel_flops == 200.0  # two steps of 10 examples at 10 FLOPs each


def test_a_budget_that_fits_no_step_declines():
    work, _ = round_work(cost(draws=0), 0, examples=100, epochs=1, book=DeviceBook(), plan={"compute-flops": 50.0})
    assert work.status == "declined" and "fits no step" in work.reason and work.kernel_flops == 0


def test_a_failure_before_the_budget_ends_the_round_as_failed():
    work, _ = round_work(cost(draws=0), 0, examples=100, epochs=1, book=DeviceBook(),
                         plan={"compute-flops": 900.0, "fail-after-flops": 300.0})
    assert work.status == "failed" and work.kernel_flops == 300.0


def test_memory_shrinks_the_batch_then_declines_when_nothing_fits():
    shrunk, _ = round_work(cost(), 0, examples=40, epochs=1, book=DeviceBook(), plan={"memory-bytes": 10_000.0})
    assert shrunk.status == "ok" and shrunk.adapted and shrunk.memory_bytes <= 10_000
    none, _ = round_work(cost(), 0, examples=40, epochs=1, book=DeviceBook(), plan={"memory-bytes": 10.0})
    assert none.status == "declined" and "memory budget" in none.reason


def test_a_dry_run_writes_a_runs_records_without_accuracy(tmp_path, capsys):
    scenario = tmp_path / "s.yaml"
    out = tmp_path / "out"
    scenario.write_text("""name: dry
dataset: {name: synthetic}
fleet: {devices: 40, profiles: {rpi4: 20, rpi-zero2w: 10, phone: 10}}
stream: {rounds_per_task: 2}
train: {local_epochs: 1, width: 4}
federation: {rounds: 6, devices_per_round: 0.5}
timing: {budget: tight, deadline_s: 0.02, offline_rate_per_s: 5}
""")
    assert main(["run", str(scenario), "--dry-run", "--out", str(out), "--quiet"]) in (0, 1)
    assert "dry run (no training, no accuracy; training FLOPs an upper bound, time and energy estimated)" \
        in capsys.readouterr().out
    rows = list(csv.DictReader((out / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == list(range(1, 7))
    assert set(BASE_COLUMNS) <= set(rows[0])
    assert all(r["class_il_accuracy"] == "" and r["acc_task_0"] == "" for r in rows)
    assert all(int(r["sampled"]) == int(r["replies"]) > 0 for r in rows)
    statuses = {s.split(":")[1] for r in rows for s in r["statuses"].split("|") if s}
    assert {"ok", "failed"} <= statuses  # the deadline and the failures bite
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["final_accuracy"] is None and summary["forgetting"] is None
    assert summary["rounds_completed"] == 6 and summary["train_flops"] > 0 and summary["energy_j"] > 0
    assert (out / "timeline.png").stat().st_size > 0 and (out / "devices.csv").exists()
    assert not (out / "accuracy.png").exists()


def test_a_large_rounds_timeline_keeps_every_kind_of_outcome():
    from fleet.outputs.plots import timeline_rows
    from fleet.world.rounds import DeviceOutcome

    outcomes = [DeviceOutcome(d, "late" if d == 500 else "ok" if d % 3 else "failed", 0, 1, 1, 0, 0, 1)
                for d in range(1000)]
    rows = timeline_rows(outcomes, limit=40)
    assert len(rows) <= 40 and {d.status for d in rows} == {"ok", "failed", "late"}
    assert [d.device_id for d in rows] == sorted({d.device_id for d in rows})
    assert timeline_rows(outcomes[:10], limit=40) == outcomes[:10]


def test_a_fleet_that_never_comes_online_says_so_in_one_line(tmp_path, capsys):
    """Devices that are never online in the run: its one-line error names availability, not the model."""
    from fleet.cli import main

    path = tmp_path / "away.yaml"
    path.write_text(f"""name: away
output: {tmp_path / 'out'}
dataset: {{name: synthetic}}
fleet: {{devices: 2, profiles: {{far: 2}}}}
profiles:
  far: {{base: rpi4, availability_model: bernoulli, availability: 0.000001}}
federation: {{rounds: 3}}
""")
    assert main(["run", str(path), "--dry-run", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fleet: error: no device was online in any of the 3 rounds")
    rows = list(csv.DictReader((tmp_path / "out" / "rounds.csv").open()))
    assert [int(r["online"]) for r in rows] == [0, 0, 0]


def test_a_fleet_away_for_days_is_waited_for_on_the_clock(tmp_path):
    """On/off devices that start away: the round waits until the first comes back (the clock used to stay
    at 0 for ever), then it trains."""
    from fleet.run import dry_run
    from fleet.config import parse_scenario

    scenario = parse_scenario({"name": "away", "dataset": {"name": "synthetic"},
                               "fleet": {"devices": 2, "profiles": {"far": 2}},
                               "profiles": {"far": {"base": "phone", "availability_model": "onoff", "mean_on_s": 1e6,
                                                    "mean_off_s": 1e6, "failure_prob": 0.0}},
                               "federation": {"rounds": 4}, "seed": 3}, source="away")
    dry_run(scenario, tmp_path / "dry")
    rows = list(csv.DictReader((tmp_path / "dry" / "rounds.csv").open()))
    online = [int(r["online"]) for r in rows]
    assert online[0] == 0 and any(online)  # away at first, then one is back
    waited = float(rows[0]["sim_time_s"])
    assert waited > 1000.0 and float(rows[1]["sim_start_s"]) == waited


def test_a_board_that_cannot_hold_the_runtime_declines_in_a_dry_run_as_it_does_for_real(tmp_path):
    """A Pi Zero 2 W has no memory left after the runtime: a real device declines every round (its memory
    policy fits nothing) and the strategy books a decline; the dry run books the same, not out of memory."""
    from fleet.run import dry_run
    from fleet.config import parse_scenario

    scenario = parse_scenario({"name": "zero", "dataset": {"name": "synthetic"},
                               "fleet": {"devices": 2, "profiles": {"rpi4": 1, "rpi-zero2w": 1}},
                               "federation": {"rounds": 3}}, source="zero")
    summary = dry_run(scenario, tmp_path / "dry")
    assert summary["statuses"]["declined"] == 3 and summary["statuses"]["oom"] == 0
    devices = list(csv.DictReader((tmp_path / "dry" / "devices.csv").open()))
    assert [(r["profile"], r["declined"], r["ok"]) for r in devices] == [("rpi4", "0", "3"), ("rpi-zero2w", "3", "0")]


def test_an_asynchronous_run_that_stops_between_versions_books_its_last_arrivals_per_device(tmp_path):
    """Boards that cannot hold the runtime decline every version: the run stops before a version, with no
    row, and devices.csv still adds up to summary.json (declines, energy, idle energy)."""
    from fleet.run import dry_run
    from fleet.config import parse_scenario

    scenario = parse_scenario({"name": "zeros", "dataset": {"name": "synthetic"},
                               "fleet": {"devices": 3, "profiles": {"rpi-zero2w": 3}}, "stream": {"task_every_s": 60},
                               "federation": {"rounds": 3, "mode": "async", "buffer_size": 2}}, source="zeros")
    summary = dry_run(scenario, tmp_path / "dry")
    assert summary["rounds_completed"] == 0 and any("every device declined" in n for n in summary["notes"])
    devices = list(csv.DictReader((tmp_path / "dry" / "devices.csv").open()))
    assert sum(int(d["declined"]) for d in devices) == summary["declined"] == 3
    for key in ("energy_j", "idle_energy_j"):
        assert math.fsum(float(d[key]) for d in devices) == pytest.approx(summary[key], rel=1e-12)
    assert summary["energy_j"] > 0  # the downloads before each decline


def dry_run_of(tmp_path, scenario_text: str) -> tuple[Path, list[dict], dict]:
    """`fleet run --dry-run` of this scenario (it must succeed): the output folder, its rounds and summary."""
    scenario, out = tmp_path / "s.yaml", tmp_path / "out"
    scenario.write_text(scenario_text)
    assert main(["run", str(scenario), "--dry-run", "--out", str(out), "--quiet"]) == 0
    return out, list(csv.DictReader((out / "rounds.csv").open())), json.loads((out / "summary.json").read_text())


def test_an_over_selected_dry_run_samples_more_and_keeps_the_first_arrivals(tmp_path):
    """12 devices, 4 a round over-selected 1.5x: 6 sampled each round, at most 4 kept, the rest late (no deadline,
    so the round closes at the fourth arrival) and their work counted as wasted."""
    _, rows, summary = dry_run_of(tmp_path, """name: over
dataset: {name: synthetic}
fleet: {devices: 12, profiles: {rpi4: 6, phone: 6}}
stream: {rounds_per_task: 2}
train: {local_epochs: 1, width: 4}
federation: {rounds: 4, devices_per_round: 4, over_select: 1.5}
timing: {budget: generous}
""")
    assert all(int(r["sampled"]) <= 6 and int(r["accepted"]) <= 4 for r in rows)
    assert int(rows[0]["sampled"]) == 6 and int(rows[0]["accepted"]) == 4 and int(rows[0]["n_late"]) == 2
    assert summary["wasted_train_flops"] > 0


def test_an_asynchronous_dry_run_runs_the_buffered_loop_without_training(tmp_path):
    """Versions of K = 2 applied updates each, arrivals reported, nothing trained; updates from the accounting."""
    out, rows, summary = dry_run_of(tmp_path, """name: drybuf
dataset: {name: synthetic}
fleet: {devices: 6, profiles: {rpi4: 3, rpi5: 3}}
stream: {task_every_s: 0.5}
train: {local_epochs: 1, width: 4}
federation: {rounds: 5, mode: async, buffer_size: 2, max_staleness: 1, concurrency: 4}
timing: {budget: tight, deadline_s: 0.05}
""")
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4, 5] and all(int(r["accepted"]) == 2 for r in rows)
    assert all(r["class_il_accuracy"] == "" for r in rows)
    arrivals = list(csv.DictReader((out / "arrivals.csv").open()))
    applied = [a for a in arrivals if a["status"] == "ok"]
    assert len(applied) == 10 and all(int(a["staleness"]) <= 1 for a in applied)
    assert all(float(a["weight"]) == pytest.approx(1 / math.sqrt(1 + int(a["staleness"]))) for a in applied)
    assert summary["mode"] == "async" and summary["arrivals"]["applied"] == 10 and summary["train_flops"] > 0
    assert summary["sim_time_s"] == pytest.approx(float(rows[-1]["sim_time_s"]))
    assert (out / "staleness.png").stat().st_size > 0 and not (out / "timeline.png").exists()
