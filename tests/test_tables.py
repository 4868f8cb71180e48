"""benchmarks/tables.py: the count of runs that leave a task unlearned, on hand-made bench reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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
