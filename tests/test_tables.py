"""benchmarks/tables.py on hand-made bench reports and `fleet compare` folders: unlearned tasks, one seed's
components, the mixed-fleet table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("tables", PROJECT / "benchmarks" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def run(variant: str, diagonal: list[float]) -> dict:
    """A run whose Task-IL matrix has this diagonal and 99s below it (old tasks kept well)."""
    return {"variant": variant, "task_il_matrix": [[99.0] * i + [d] for i, d in enumerate(diagonal)]}


def test_a_task_is_unlearned_only_when_its_own_row_leaves_it_below_the_line():
    assert tables.unlearned(run("full", [98.0, 52.6, 97.0]))
    assert not tables.unlearned(run("full", [98.0, 90.0, 97.0]))
    # forgetting later (a low entry off the diagonal) is not failing to learn
    assert not tables.unlearned({"task_il_matrix": [[98.0], [40.0, 97.0]]})


def test_the_table_counts_runs_by_dataset_arm_and_batching(tmp_path, monkeypatch):
    loader = {"config": {"dataset": "fashion-mnist"},
              "runs": [run("full", [98.0, 49.9]), run("full", [98.0, 97.0]), run("dense", [99.0, 98.0])]}
    balanced = {"config": {"dataset": "fashion-mnist", "batches": "balanced"}, "runs": [run("full", [98.0, 97.0])]}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "loader.json").write_text(json.dumps(loader))
    (tmp_path / "balanced.json").write_text(json.dumps(balanced))
    (tmp_path / "summary.json").write_text(json.dumps({"rounds": 3}))  # not a bench report: skipped
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    rows = tables.unlearned_table().splitlines()[2:]
    assert rows == ["| fashion-mnist | DER++ (dense) | loader | 0 (0%) | 1 |",
                    "| fashion-mnist | SparCL-DER++, all three | balanced | 0 (0%) | 1 |",
                    "| fashion-mnist | SparCL-DER++, all three | loader | 1 (50%) | 2 |"]


def seed_run(variant: str, seed: int, class_il: float) -> dict:
    return {"variant": variant, "seed": seed, "class_il": class_il, "task_il": 97.0,
            "class_il_matrix": [[90.0], [60.0, 65.0], [50.0, 70.0, class_il]]}


def test_one_seed_is_gathered_from_an_arm_and_its_later_ablation(tmp_path, monkeypatch):
    arm = {"runs": [seed_run("dense", 1, 74.0), seed_run("full", 1, 68.0), seed_run("dense", 2, 99.0)]}
    ablation = {"runs": [seed_run("dense", 1, 74.0), seed_run("tdm+ddr", 1, 70.5)]}
    (tmp_path / "arm.json").write_text(json.dumps(arm))
    (tmp_path / "ablation.json").write_text(json.dumps(ablation))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    rows = tables.seed_components(1, "arm.json", "ablation.json").splitlines()[2:]
    assert [r.split(" | ")[:3] for r in rows] == [["| DER++ (dense)", "74.00", "+0.00"],
                                                   ["| SparCL-DER++, all three", "68.00", "-6.00"],
                                                   ["| SparCL-DER++, TDM+DDR", "70.50", "-3.50"]]
    # task 0 falls from 90 to 50; task 1 ends above its best before (65 -> 70): ours -5, the authors' 0
    assert "| 17.50, 20.00 |" in rows[0]


def test_reports_that_disagree_on_a_seed_are_refused(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text(json.dumps({"runs": [seed_run("dense", 1, 74.0)]}))
    (tmp_path / "b.json").write_text(json.dumps({"runs": [seed_run("dense", 1, 73.9)]}))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    with pytest.raises(ValueError, match="b.json: dense seed 1 differs"):
        tables.seed_components(1, "a.json", "b.json")


def test_a_repeat_on_another_machine_is_set_beside_the_arm_run_by_run(tmp_path, monkeypatch):
    def report(cpu: str, figures: dict) -> dict:
        return {"machine": {"cpu": cpu}, "runs": [{**seed_run(v, 0, c), "task_il": 98.0} for v, c in figures.items()]}
    (tmp_path / "arm.json").write_text(json.dumps(report("AMD", {"dense": 72.47, "full": 70.0, "static": 67.81})))
    (tmp_path / "repeat.json").write_text(json.dumps(report("Intel", {"dense": 72.59, "static": 66.57})))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    rows = tables.machine_repeat("arm.json", "repeat.json").splitlines()
    assert rows[0].startswith("| run | Class-IL, AMD | Class-IL, Intel | difference |")
    assert rows[2:] == ["| DER++ (dense), seed 0 | 72.47 | 72.59 | +0.12 | 98.00 | 98.00 |",
                        "| static mask (the initial one, never changed), seed 0 | 67.81 | 66.57 | -1.24 | 98.00 "
                        "| 98.00 |"]
    with pytest.raises(ValueError, match="the arm's own machine"):
        tables.machine_repeat("arm.json", "arm.json")


def test_a_folder_repeated_on_another_machine_is_summed_up_per_variant(tmp_path, monkeypatch):
    def arm(cpu: str, seed: int, figures: dict) -> dict:
        runs = [{"variant": v, "seed": seed, "class_il": c} for v, c in figures.items()]
        return {"machine": {"cpu": cpu}, "runs": runs}
    for folder, cpu, shift in (("amd", "AMD", 0.0), ("xeon", "Intel", 1.0)):
        (tmp_path / folder / "arms").mkdir(parents=True)
        for seed, dense in ((0, 70.0), (1, 72.0), (2, 75.0)):
            report = arm(cpu, seed, {"dense": dense + shift * seed, "full": 60.0 - shift})
            (tmp_path / folder / "arms" / f"w16_s0.95_seed{seed}.json").write_text(json.dumps(report))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    rows = tables.machine_spread("amd", "xeon").splitlines()
    assert rows[0].startswith("| variant | Intel minus AMD, Class-IL [min, max] |")
    # dense moves 0, 1 and 2 points; its seeds lie 2, 0 and 3 from their median (72)
    assert rows[2:] == ["| DER++ (dense) | +1.00 [+0.00, +2.00] | 1.00 | 2.00 | 3 |",
                        "| SparCL-DER++, all three | -1.00 [-1.00, -1.00] | 1.00 | 0.00 | 3 |"]
    with pytest.raises(ValueError, match="not one repeat"):
        tables.machine_spread("amd", "amd")


def comparison(folder: Path, accuracy: dict[str, list[float]]) -> None:
    """A `fleet compare --seeds` folder as the command writes it: comparison.csv's uploads and paired.csv
    from fleet.run.compare's own summary of per-seed runs (their figures made up, their format real)."""
    from fleet.outputs.files import write_csv
    from fleet.run.compare import PAIRED_ORDER, paired_over_seeds, seeded

    rows = [{"profile": seeded(label, seed), "final_accuracy": acc, "final_accuracy_task_il": 99.0,
             "forgetting": 100.0 - acc, "forgetting_authors": 101.0 - acc, "upload_bytes": 2e6 * (i + 1)}
            for i, (label, values) in enumerate(accuracy.items()) for seed, acc in enumerate(values)]
    folder.mkdir()
    write_csv(folder / "comparison.csv", rows, ["profile", "final_accuracy", "upload_bytes"])
    summary = paired_over_seeds(rows, list(accuracy), range(3))
    write_csv(folder / "paired.csv", summary, sorted({k for r in summary for k in r}, key=PAIRED_ORDER.index))


def test_the_mixed_fleet_table_reads_what_fleet_compare_writes(tmp_path, monkeypatch):
    comparison(tmp_path / "mixed_fleet", {"stock_clients=0": [96.0, 97.0, 98.0],
                                          "stock_clients=1": [95.0, 90.0, 98.5]})
    comparison(tmp_path / "mixed_fleet-weight", {"plain_weight=in-mask": [95.0, 90.0, 98.5],
                                                 "plain_weight=examples": [94.0, 42.0, 97.5]})
    comparison(tmp_path / "mixed_fleet-absent", {"profiles={'rpi4': 3, 'rpi5': 1}": [96.0, 97.0, 98.0],
                                                 "profiles={'never-online': 1, 'rpi4': 3}": [96.5, 95.0, 97.0]})
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    rows = tables.mixed_fleet_table().splitlines()[2:]
    assert rows[0] == "| 4 SparCL-DER++ devices | 97.00 [96.00, 98.00] |  | 99.00 | 3.00 | 4.00 | 2.00 |"
    # seed by seed: -1, -7, +0.5
    assert rows[1].split(" | ")[1:3] == ["95.00 [90.00, 98.50]", "-1.00 [-7.00, +0.50] vs all-SparCL"]
    assert rows[2].split(" | ")[2] == "-1.00 [-48.00, -1.00] vs the row above"
    assert rows[3].endswith("| 4.00 |")  # its upload, seed 0
