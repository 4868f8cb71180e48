"""`fleet calibrate`: real timed training on the scenario's model, written as a profile a scenario can use."""

from __future__ import annotations

import csv

import pytest
import yaml

from fleet.cli import main
from fleet.config import load_scenario


def cal_scenario(scenario_file):
    return scenario_file("cal", dataset={"name": "synthetic"}, fleet={"devices": 2},
                         train={"width": 4, "batch_size": 8})


def test_calibrate_times_training_and_writes_a_profile_a_scenario_runs_with(tmp_path, scenario_file, capsys):
    out = tmp_path / "cal"
    assert main(["calibrate", str(cal_scenario(scenario_file)), "--out", str(out), "--batches", "4,8",
                 "--repeats", "2", "--seconds", "0.05", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "scenario batch    8" in printed and "GFLOP/s sustained (base rpi4)" in printed
    rows = list(csv.DictReader((out / "calibration.csv").open()))
    assert len(rows) == 2 * 2 * 3  # repeats x batches x (dense, masked, scenario)
    assert all(float(r["kernel_flops"]) > 0 and float(r["cpu_seconds"]) > 0 for r in rows)
    (name, entry), = yaml.safe_load((out / "profile.yaml").read_text())["profiles"].items()
    assert entry["base"] == "rpi4" and entry["efficiency"] == 1.0 and entry["peak_gflops"] > 0
    assert "fleet calibrate" in entry["sources"]["peak_gflops"]
    calibrated = load_scenario(out / "scenario.yaml")
    profile = calibrated.resolved_device_profiles()[0]
    assert profile.name == name and profile.train_flops_per_s == pytest.approx(entry["peak_gflops"] * 1e9)
    assert profile.memory_mb == calibrated.device_profile_table()["rpi4"].memory_mb  # the rest is the base's


@pytest.mark.parametrize("flags,culprit", [
    (["--batches", "0,8"], "--batches"),
    (["--batches", "x"], "--batches"),
    (["--batches", "4"], "batch size 8 must be among --batches"),
    (["--base", "toaster"], "--base 'toaster'"),
    (["--repeats", "0"], "--repeats"),
])
def test_bad_calibrate_flags_fail_in_one_line(tmp_path, scenario_file, capsys, flags, culprit):
    code = main(["calibrate", str(cal_scenario(scenario_file)), "--out", str(tmp_path / "cal"), "--seconds", "0.01",
                 "--quiet", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and culprit in err[0], err
