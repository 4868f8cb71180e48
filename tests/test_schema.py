"""The scenario's JSON Schema (`fleet schema`): derived from the schema, shipped beside the scenarios,
named by each of them for editors, and every key it knows documented in docs/reference/scenario-guide.md."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from fleet.cli import main
from fleet.config import SCHEMA_FILE, dotted_keys, load_scenario, schema_text

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
TABLES = ("budgets", "profiles")  # named tables: their entries' keys are documented under one example name


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "scenarios" / SCHEMA_FILE).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_the_one_the_code_derives():
    assert (ROOT / "scenarios" / SCHEMA_FILE).read_text() == schema_text(), \
        "scenarios/scenario.schema.json is stale: run `fleet schema --out scenarios/scenario.schema.json`"


def test_fleet_schema_prints_it_and_writes_it(tmp_path, capsys):
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == schema_text()
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").read_text() == schema_text()


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_names_the_schema_and_meets_it(path):
    assert path.read_text().splitlines()[0] == f"# yaml-language-server: $schema={SCHEMA_FILE}"
    assert list(validator().iter_errors(yaml.safe_load(path.read_text()))) == []
    load_scenario(path, simulate=False)  # and the builder agrees


@pytest.mark.parametrize("change, culprit", [
    ({"federation": {"round": 3}}, "round"),                     # a typo of a key
    ({"federation": {"mode": "batch"}}, "batch"),                 # not a choice
    ({"train": {"lr": 0}}, "0"),                                 # lr > 0
    ({"seed": True}, "True"),                                    # a bool is not an integer
    ({"budgets": {"mine": {"compute_scale": -1}}}, "-1"),         # inside a named table
    ({"profiles": {"my-pi": {"base": "rpi4", "memory": 5}}}, "memory"),
])
def test_the_schema_refuses_what_the_builder_refuses(change, culprit):
    data = {"name": "x", **change}
    errors = list(validator().iter_errors(data))
    assert errors and any(culprit in e.message for e in errors)


def test_empty_sections_and_derived_nulls_meet_the_schema():
    data = {"name": "x", "sparcl": None, "output": None, "federation": {"rounds": None, "devices_per_round": 0.5},
            "timing": {"speedup": {0.9: 2.3}}}
    assert list(validator().iter_errors(json.loads(json.dumps(data)))) == []


def documented_keys() -> set[str]:
    """The keys the scenario guide documents: its schema block, and the profile figures' table."""
    text = (ROOT / "docs" / "reference" / "scenario-guide.md").read_text()
    block = re.search(r"## Schema\n.*?```yaml\n(.*?)```", text, re.S).group(1)
    keys: set[str] = set()

    def walk(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            keys.add(dotted)
            if prefix.count(".") == 0 and key in TABLES and isinstance(value, dict):
                for entry in value.values():
                    walk(entry, f"{dotted}.<name>.")
            elif isinstance(value, dict) and key not in ("profiles", "speedup", "compaction_speedup", "sources"):
                walk(value, f"{dotted}.")

    walk(yaml.safe_load(block), "")
    table = re.search(r"\| figure \| unit, bound \| meaning \|\n\|---\|---\|---\|\n((?:\|.*\n)+)", text).group(1)
    for row in table.splitlines():
        keys |= {f"profiles.<name>.{name}" for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    return keys


def test_every_key_the_schema_knows_is_documented_and_every_documented_key_exists():
    known, documented = set(dotted_keys()), documented_keys()
    assert sorted(known - documented) == [], "keys the schema knows that the scenario guide does not document"
    assert sorted(documented - known) == [], "keys the scenario guide documents that the schema does not know"
