"""Budget profiles and the kernel model in scenario YAML: what is accepted, and one line for what is not."""

from __future__ import annotations

import pytest

from fleet.cli import main
from fleet.world import PAPER_SPARSE_SPEEDUP
from fleet.config import parse_scenario

BASE = {"name": "b", "dataset": {"name": "synthetic"}, "fleet": {"devices": 2, "profiles": {"rpi4": 2}}}


def scenario(**sections):
    return parse_scenario({**BASE, **sections}, source="s.yaml")


def test_named_budgets_add_to_and_replace_the_built_ins():
    s = scenario(budgets={"tight": {"compute_scale": 0.2, "deadline_s": 9.0}, "mine": {"memory_scale": 0.3}},
                 timing={"budget": "tight"})
    assert s.budget_profile().compute_scale == 0.2 and s.round_deadline_s == 9.0
    assert s.budget_profile().memory_scale == 1.0  # a field not named keeps the budget default
    assert {"generous", "tight", "starved", "mine"} <= set(s.budget_profiles())
    assert scenario(budgets={"mine": {}}, timing={"budget": "mine"}).budget_profile().name == "mine"


def test_kernel_model_from_the_scenario():
    assert scenario().kernel_model().kind == "dense"
    sparse = scenario(timing={"kernels": "sparse"}).kernel_model()
    assert sparse.speedup == PAPER_SPARSE_SPEEDUP
    own = scenario(timing={"kernels": "sparse", "speedup": {0.5: 1.2, 0.9: 1.8}}).kernel_model()
    assert own.speedup == ((0.5, 1.2), (0.9, 1.8))


@pytest.mark.parametrize("sections,culprit", [
    ({"budgets": {"tight": {"compute_scale": -0.5}}}, "budgets.tight.compute_scale must be > 0"),
    ({"budgets": {"tight": {"bandwidth_scale": 0}}}, "budgets.tight.bandwidth_scale must be > 0"),
    ({"budgets": {"tight": {"deadline_s": 0.0}}}, "budgets.tight.deadline_s must be > 0"),
    ({"budgets": {"tight": {"memory": 0.5}}}, "unknown key 'budgets.tight.memory'"),
    ({"timing": {"budget": "tigth"}}, "timing.budget: unknown budget profile 'tigth' (did you mean 'tight'?"),
    ({"timing": {"kernels": "sparse", "speedup": {0.95: 3.1, 0.9: 2.3}}},
     "timing.speedup: sparsities must be increasing"),
    ({"timing": {"kernels": "sparse", "speedup": {0.9: 3.1, 0.95: 2.3}}},
     "timing.speedup: speed-ups must not fall as sparsity grows"),
    ({"timing": {"kernels": "sparse", "speedup": {0.9: -1.0}}}, "timing.speedup: speed-up -1.0"),
    ({"timing": {"kernels": "magic"}}, "timing.kernels must be one of dense, sparse"),
    ({"fleet": {"devices": 2, "profiles": {"rpi9": 2}}}, "unknown device profile 'rpi9'"),
])
def test_bad_budget_values_get_one_line_naming_the_field(tmp_path, capsys, sections, culprit):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections}, sort_keys=False))  # keep the order written
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and culprit in err[0], err
