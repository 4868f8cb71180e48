"""benchmarks/capacity_table.py on hand-made arm reports, and benchmarks/fmnist_capacity.sh end to end (tiny)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("capacity_table", PROJECT / "benchmarks" / "capacity_table.py")
capacity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capacity)

MACHINE = {"host": "box", "cpu": "Some CPU", "torch": "2.0", "threads": 1, "device": "cpu"}


def run(variant: str, seed: int, class_il: float, flops: float, cpu: float, live: int) -> dict:
    return {"variant": variant, "seed": seed, "class_il": class_il, "train_flops": flops, "live_weights": live,
            "cpu_s": cpu, "wall_s": 2 * cpu}


def arm(width: int, sparsity: float, seed: int, figures: dict[str, tuple], narrow: int = 9, device: str = "cpu",
        machine: dict | None = None) -> dict:
    """A `fleet bench sparcl` report of one seed: figures[variant] = (class_il, flops, cpu, live)."""
    return {"config": {"dataset": "fashion-mnist", "width": width, "sparsity": sparsity, "seeds": [seed],
                       "epochs": 20, "narrow_width": narrow, "device": device, "max_per_class": 300,
                       "ablation": "tdm,full", "recalibrate_norms": True, "controls": True},
            "machine": machine or MACHINE,
            "runs": [run(v, seed, *f) for v, f in figures.items()]}


# seed 0 and 1 at width 32, sparsity 0.9: (Class-IL, FLOPs, CPU s, live weights)
SEED0 = {"dense": (73.0, 1000.0, 300.0, 69120), "tdm": (71.0, 120.0, 300.0, 6912), "full": (72.0, 100.0, 250.0, 6912),
         "static": (70.0, 110.0, 280.0, 6912), "dense-narrow": (69.0, 105.0, 50.0, 6480)}
SEED1 = {"dense": (74.0, 1000.0, 320.0, 69120), "tdm": (72.0, 120.0, 300.0, 6912), "full": (71.0, 100.0, 200.0, 6912),
         "static": (72.5, 110.0, 300.0, 6912), "dense-narrow": (70.0, 95.0, 60.0, 6480)}


def rows_of(*reports: dict) -> list[dict]:
    return [row for report in reports for row in capacity.flatten(report)]


def test_each_masked_arm_is_paired_per_seed_against_each_other_control():
    rows = capacity.table_rows(rows_of(arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, SEED1)))
    keyed = {(r["arm"], r["control"]): r for r in rows}
    assert list(keyed) == [("full", "dense"), ("full", "static"), ("full", "dense-narrow"),
                           ("tdm", "dense"), ("tdm", "static"), ("tdm", "dense-narrow"),
                           ("static", "dense"), ("static", "dense-narrow")]  # the static mask is no control of itself
    d = keyed[("full", "dense")]
    # full minus dense: -1 and -3; dense over full: FLOPs 10 and 10, CPU 1.2 and 1.6
    assert (d["delta_median"], d["delta_min"], d["delta_max"]) == (-2.0, -3.0, -1.0)
    assert d["flops_ratio"] == 10.0 and d["time_ratio"] == pytest.approx(1.4) and d["time"] == "cpu"
    assert (d["seeds"], d["control_width"], d["arm_class_il"], d["control_class_il"]) == ("0 1", "32", 71.5, 73.5)
    s = keyed[("full", "static")]
    assert (s["delta_median"], s["delta_min"], s["delta_max"]) == (0.25, -1.5, 2.0)
    n = keyed[("full", "dense-narrow")]
    assert (n["delta_median"], n["control_width"]) == (2.0, "9") and n["flops_ratio"] == pytest.approx(1.0)
    assert n["time_ratio"] == pytest.approx((0.2 + 0.3) / 2)  # the narrow network is faster: below 1
    assert keyed[("tdm", "dense")]["delta_median"] == -2.0
    assert n["machines"] == "box: Some CPU, torch 2.0"


def test_an_arm_trained_on_a_gpu_is_timed_on_the_wall_clock_and_names_its_gpu():
    gpu = {**MACHINE, "gpu": "NVIDIA H100", "device": "cuda"}
    rows = capacity.table_rows(rows_of(arm(64, 0.9, 0, SEED0, device="cuda", machine=gpu)))
    d = next(r for r in rows if (r["arm"], r["control"]) == ("full", "dense"))
    assert d["time"] == "wall" and d["time_ratio"] == pytest.approx(600 / 500)
    assert d["machines"] == "box: NVIDIA H100, torch 2.0"


def test_the_target_names_what_misses():
    rows = capacity.table_rows(rows_of(arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, SEED1)))
    assert capacity.meets_target(rows, 32) == (  # above the static mask at the median, below it on seed 0
        "missed: median -2.00 vs dense (target >= -1); +0.25 vs the static mask, a seed at -1.50; "
        "2 seeds (target 5)")
    good0 = {**SEED0, "full": (72.5, 100.0, 250.0, 6912)}
    good1 = {**SEED1, "full": (74.0, 100.0, 200.0, 6912)}
    rows = capacity.table_rows(rows_of(arm(32, 0.9, 0, good0), arm(32, 0.9, 1, good1)))
    assert capacity.meets_target(rows, 32) == "missed: 2 seeds (target 5)"  # a median of two is no finding
    five = [arm(32, 0.9, s, good0 if s % 2 == 0 else good1) for s in range(5)]
    assert capacity.meets_target(capacity.table_rows(rows_of(*five)), 32) == "met"
    cheap = {**SEED0, "full": (72.5, 101.0, 250.0, 6912), "static": (75.0, 110.0, 280.0, 6912)}
    rows = capacity.table_rows(rows_of(arm(32, 0.9, 0, cheap)))
    assert capacity.meets_target(rows, 32) == (
        "missed: FLOPs 9.9x fewer (target 10x); -2.50 vs the static mask; 1 seed (target 5)")
    assert capacity.meets_target(rows, 64) == "not all controls ran"


def test_the_curve_has_one_line_per_method_and_dense_spans_every_width_it_ran():
    s95 = {**SEED0, "full": (60.0, 60.0, 250.0, 3456), "tdm": (61.0, 70.0, 250.0, 3456),
           "static": (59.0, 65.0, 250.0, 3456), "dense-narrow": (65.0, 62.0, 30.0, 3000)}
    reports = [arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, SEED1), arm(32, 0.95, 0, s95, narrow=7)]
    points = capacity.curve_points(rows_of(*reports))
    keys = [(p["method"], p["sparsity"], p["width"]) for p in points]
    assert keys == [("dense", 0.0, 7), ("dense", 0.0, 9), ("dense", 0.0, 32), ("full", 0.9, 32), ("full", 0.95, 32),
                    ("static", 0.9, 32), ("static", 0.95, 32), ("tdm", 0.9, 32), ("tdm", 0.95, 32)]
    dense32 = points[2]  # seed 0's dense run appears in both sparsities' arms: counted once
    assert (dense32["seeds"], dense32["class_il"], dense32["class_il_min"], dense32["class_il_max"]) == \
        ("0 1", 73.5, 73.0, 74.0)
    assert (points[1]["train_flops"], points[1]["live_weights"]) == (100.0, 6480)
    assert points[4]["class_il"] == 60.0 and points[4]["seeds"] == "0"


def test_the_choice_at_a_budget_is_the_front_of_class_il_against_cost():
    """Walking up the cost, a network is chosen only where it beats every cheaper one; a tie in cost goes to the
    better Class-IL, a tie in Class-IL to the cheaper network."""
    points = capacity.curve_points(rows_of(arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, SEED1)))
    assert capacity.choice_rows(points) == []  # two seeds: no answer for a user (5 by default)
    rows = capacity.choice_rows(points, min_seeds=2)
    flops = [(r["method"], r["width"], r["from"], r["class_il"]) for r in rows if r["budget"] == "train_flops"]
    assert flops == [("full", 32, 100.0, 71.5), ("dense", 32, 1000.0, 73.5)]  # w9 ties at 100 FLOPs, lower
    cpu = [(r["method"], r["width"], r["from"]) for r in rows if r["budget"] == "cpu_s"]
    assert cpu == [("dense", 9, 55.0), ("full", 32, 225.0), ("dense", 32, 310.0)]  # tdm: 71.5 at 300 s, no gain
    text = capacity.format_choice(rows)
    assert "| 0.00 TFLOPs | SparCL-DER++ 0.9, width 32 | 71.50 [71.00, 72.00] |  | 6,912 | 0 1 |" in text
    assert "| 0.9 CPU min | dense DER++, width 9 | 69.50 [69.00, 70.00] |  | 6,480 | 0 1 |" in text
    # dense 32 over SparCL 32, seed by seed: 73 - 72 and 74 - 71
    assert "| dense DER++, width 32 | 73.50 [73.00, 74.00] | +2.00 [+1.00, +3.00] | 69,120 | 0 1 |" in text


def test_each_step_up_the_front_says_what_it_buys_paired_by_seed_and_whether_its_sign_holds():
    """A costlier pick whose median is higher may still lose on a seed: its gain over the pick before, seed by
    seed, says whether the step is a finding or the cheaper pick is as good."""
    flip = {**SEED1, "full": (74.5, 100.0, 200.0, 6912)}  # seed 1: SparCL above dense, seed 0 below
    points = capacity.curve_points(rows_of(arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, flip)))
    rows = [r for r in capacity.choice_rows(points, min_seeds=2) if r["budget"] == "train_flops"]
    assert [(r["method"], r["gain_seeds"]) for r in rows] == [("full", None), ("dense", 2)]
    dense = rows[1]  # median 73.5 over 73.25, but 73 - 72 = +1 and 74 - 74.5 = -0.5
    assert (dense["gain_median"], dense["gain_min"], dense["gain_max"], dense["gain_holds"]) == (0.25, -0.5, 1.0, False)
    assert capacity.gain_text(dense) == "+0.25 [-0.50, +1.00], sign changes"
    assert capacity.gain_text(rows[0]) == ""
    held = capacity.gain_over({"by_seed": {0: 73.0, 1: 74.0}}, {"by_seed": {0: 72.0, 1: 71.0, 2: 60.0}})
    assert held == {"gain_median": 2.0, "gain_min": 1.0, "gain_max": 3.0, "gain_seeds": 2, "gain_holds": True}
    assert capacity.gain_text({**held, "seeds": "0 1"}) == "+2.00 [+1.00, +3.00]"  # the seeds both ran
    one = capacity.gain_over({"by_seed": {0: 73.0, 1: 74.0}}, {"by_seed": {0: 72.0}})
    assert one["gain_holds"] is False  # one pair shows no sign that holds
    assert capacity.gain_text({**one, "seeds": "0 1"}) == "+1.00 [+1.00, +1.00], too few pairs, 1 of 2 seeds paired"


def test_a_step_between_points_of_two_machines_is_not_paired():
    """On another CPU a seed's run is another run: the FLOPs front may step from one machine's network to
    another's, and then no seed pairs (the CPU-time fronts are per machine already)."""
    other = {**MACHINE, "cpu": "Other CPU"}
    wide = {k: (v[0] + 1.0, v[1] * 4, v[2] * 4, v[3] * 4) for k, v in SEED0.items()}
    points = capacity.curve_points(rows_of(arm(32, 0.9, 0, SEED0), arm(64, 0.9, 0, wide, machine=other)))
    rows = [r for r in capacity.choice_rows(points, min_seeds=1) if r["budget"] == "train_flops"]
    crossing = [r for r in rows if r["width"] == 64 and rows.index(r) > 0
                and rows[rows.index(r) - 1]["width"] == 32]
    assert crossing and all(r["gain_seeds"] == 0 for r in crossing)
    assert capacity.gain_text(crossing[0]) == "not paired: its seeds ran on another machine"


def test_a_gpu_run_has_no_cpu_time_to_choose_by():
    gpu = arm(32, 0.9, 0, SEED0, device="cuda")
    points = capacity.curve_points(rows_of(gpu))
    assert all(p["cpu_s"] is None for p in points)
    assert {r["budget"] for r in capacity.choice_rows(points, min_seeds=1)} == {"train_flops"}


def test_cpu_time_is_a_budget_per_machine_and_never_pooled_across_two():
    """Seconds on one CPU say nothing of another's: each machine gets its own CPU budget, and a point whose
    seeds ran on two machines has no CPU time (its FLOPs still count)."""
    other = {**MACHINE, "cpu": "Other CPU"}
    points = capacity.curve_points(rows_of(arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, SEED1, machine=other),
                                           arm(16, 0.9, 0, SEED0, narrow=4, machine=other)))
    mixed = {(p["method"], p["width"]): p for p in points}
    assert mixed[("full", 32)]["cpu_s"] is None and mixed[("full", 32)]["train_flops"] == 100.0
    assert mixed[("full", 16)]["cpu_s"] == 250.0 and mixed[("full", 16)]["machines"] == "box: Other CPU, torch 2.0"
    rows = capacity.choice_rows(points, min_seeds=1)
    assert {r["machines"] for r in rows if r["budget"] == "cpu_s"} == {"box: Other CPU, torch 2.0"}
    assert {r["cpu"] for r in rows if r["budget"] == "cpu_s"} == {"Other CPU"}  # what the docs' table names
    assert mixed[("full", 32)]["cpu"] == ""  # two CPUs: no CPU time, and none named
    text = capacity.format_choice(rows)
    assert "Budget: CPU seconds on dense kernels (zeros multiplied), box: Other CPU, torch 2.0" in text
    assert "Some CPU" not in text  # none of its points ran all their seeds there


def test_check_says_complete_incomplete_or_other_settings(tmp_path, capsys):
    path = tmp_path / "w32_s0.9_seed0.json"
    expect = {"width": "32", "sparsity": "0.90", "seeds": "[0]", "dataset": "fashion-mnist", "max_per_class": "300",
              "ablation": "tdm,full", "recalibrate_norms": "true"}
    assert capacity.check_arm(path, expect) == 1  # absent
    path.write_text(json.dumps(arm(32, 0.9, 0, SEED0))[:-20])
    assert capacity.check_arm(path, expect) == 1  # cut short
    path.write_text(json.dumps(arm(32, 0.9, 0, {k: v for k, v in SEED0.items() if k != "dense-narrow"})))
    assert capacity.check_arm(path, expect) == 1  # a control missing
    path.write_text(json.dumps(arm(32, 0.9, 0, SEED0)))
    assert capacity.check_arm(path, expect) == 0
    assert capacity.check_arm(path, {**expect, "epochs": "10"}) == 2
    assert "epochs is 20, not 10" in capsys.readouterr().err
    assert capacity.main(["--check", str(path), "--expect", "width=32", "--expect", "ablation=tdm,full"]) == 0


def test_the_table_script_writes_the_table_the_points_and_the_plot(tmp_path, capsys):
    arms = tmp_path / "arms"
    arms.mkdir()
    for seed, figures in ((0, SEED0), (1, SEED1)):
        (arms / f"w32_s0.90_seed{seed}.json").write_text(json.dumps(arm(32, 0.9, seed, figures)))
    assert capacity.main([str(tmp_path), "--min-seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 32 | SparCL-DER++ 0.9 | 71.50 | -2.00 [-3.00, -1.00] | 10.00x, 1.40x cpu | +0.25 [-1.50, +2.00] | " \
           "+2.00 [+1.00, +3.00] (w9) | 1.00x, 0.25x cpu | 0 1 |" in out
    assert "target at width 32 (SparCL-DER++ 0.90): missed: median -2.00 vs dense (target >= -1)" in out
    with open(tmp_path / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and table[0]["arm"] == "full" and float(table[0]["delta_median"]) == -2.0
    with open(tmp_path / "points.csv") as f:
        assert len(list(csv.DictReader(f))) == 5  # dense at 32 and 9, full, tdm, static
    with open(tmp_path / "choice.csv") as f:
        assert [(r["budget"], r["method"]) for r in csv.DictReader(f)] == [
            ("train_flops", "full"), ("train_flops", "dense"), ("cpu_s", "dense"), ("cpu_s", "full"),
            ("cpu_s", "dense")]
    assert (tmp_path / "capacity.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.usefixtures("one_thread")
def test_the_capacity_script_runs_end_to_end_and_resumes(tmp_path):
    """The tiny setting: digits, width 4, one seed, one epoch, one sparsity; then run again: nothing reruns."""
    env = {**os.environ, "DATASET": "digits", "WIDTHS": "4", "SEEDS": "0", "EPOCHS": "1", "MAX_PER_CLASS": "20",
           "SPARSITIES": "0.9", "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(["bash", "benchmarks/fmnist_capacity.sh"], cwd=PROJECT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "arms" / "w4_s0.9_seed0.json").read_text())
    assert {r["variant"] for r in report["runs"]} == {"dense", "tdm", "full", "static", "dense-narrow"}
    assert set(report["machine"]) >= {"host", "cpu", "torch"} and report["config"]["recalibrate_norms"]
    assert (tmp_path / "arms" / "w4_s0.9_seed0.txt").read_text().startswith("$ .venv/bin/fleet bench sparcl ")
    assert "| 4 | SparCL-DER++ 0.9 |" in first.stdout and "| 4 | TDM only 0.9 |" in first.stdout
    for name in ("table.csv", "points.csv", "capacity.png", "table.txt"):
        assert (tmp_path / name).exists()
    stamp = (tmp_path / "arms" / "w4_s0.9_seed0.json").stat().st_mtime_ns
    again = subprocess.run(["bash", "benchmarks/fmnist_capacity.sh"], cwd=PROJECT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "w4_s0.9_seed0: complete, skipped" in again.stdout
    assert (tmp_path / "arms" / "w4_s0.9_seed0.json").stat().st_mtime_ns == stamp
    other = subprocess.run(["bash", "benchmarks/fmnist_capacity.sh"], cwd=PROJECT, env={**env, "EPOCHS": "2"},
                           capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "epochs is 1, not 2" in other.stderr


def test_arms_under_other_settings_pair_variant_by_variant_with_the_baseline():
    """--baseline: the same variant, width, sparsity and seed under two settings (e.g. the authors' and ours)."""
    other = {k: (v[0] - 2.0 - seed, *v[1:]) for seed, figures in ((0, SEED0),) for k, v in figures.items()}
    rows = rows_of(arm(32, 0.9, 0, other))
    baseline = rows_of(arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, SEED1))
    got = {r["variant"]: (r["delta_median"], r["seeds"]) for r in capacity.settings_rows(rows, baseline)}
    assert got == {v: (-2.0, "0") for v in ("dense", "dense-narrow", "full", "static", "tdm")}
    assert "| 32 | 0.9 | full | 70.00 | 72.00 | -2.00 [-2.00, -2.00] | 0 |" in capacity.format_settings(
        capacity.settings_rows(rows, baseline), "authors")


def test_a_baseline_pairs_only_runs_made_on_the_same_machine():
    """A seed's run on another CPU is another run: the pair is left out, and a second baseline folder (the
    baseline's arms repeated on that CPU) supplies the pair."""
    xeon = {**MACHINE, "cpu": "Other CPU"}
    rows = rows_of(arm(32, 0.9, 0, {k: (v[0] + 1.0, *v[1:]) for k, v in SEED0.items()}, machine=xeon),
                   arm(32, 0.9, 1, {k: (v[0] + 2.0, *v[1:]) for k, v in SEED1.items()}))
    here = rows_of(arm(32, 0.9, 0, SEED0), arm(32, 0.9, 1, SEED1))
    got = {r["variant"]: (r["delta_median"], r["seeds"]) for r in capacity.settings_rows(rows, here)}
    assert got == {v: (2.0, "1") for v in ("dense", "dense-narrow", "full", "static", "tdm")}  # seed 0: no pair
    there = rows_of(arm(32, 0.9, 0, SEED0, machine=xeon))
    got = {r["variant"]: (r["delta_median"], r["seeds"]) for r in capacity.settings_rows(rows, here + there)}
    assert got == {v: (1.5, "0 1") for v in ("dense", "dense-narrow", "full", "static", "tdm")}
