"""Configuration: the scenario's schema, the bounded YAML reader, and the builder that validates a
scenario and fills its derived defaults (load_scenario, parse_scenario, Scenario.with_overrides).
"""

from fleet.config.json_schema import SCHEMA_FILE, dotted_keys, schema_text, scenario_schema
from fleet.config.reader import parse_yaml
from fleet.config.resolve import learner_bytes, memory_limit_bytes
from fleet.config.scenario import Scenario, load_scenario, parse_scenario
from fleet.config.schema import MAX_WIDTH, SEED_LIMIT

__all__ = [
    "MAX_WIDTH",
    "SCHEMA_FILE",
    "SEED_LIMIT",
    "Scenario",
    "dotted_keys",
    "learner_bytes",
    "load_scenario",
    "memory_limit_bytes",
    "parse_scenario",
    "parse_yaml",
    "scenario_schema",
    "schema_text",
]
