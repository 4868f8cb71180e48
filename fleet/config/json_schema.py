"""The scenario's JSON Schema, derived from the schema itself: the dataclasses' type hints, their
field rules (choices and bounds) and their defaults.

Editors read it (every shipped scenario names it on a `yaml-language-server`
line) to complete and check keys as they are typed; `fleet schema` prints it.
It is a guide for editors: the builder stays the judge, for the combinations a
schema cannot state (a Dirichlet alpha, counts that sum to the fleet, memory).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from fleet.config.builder import is_section
from fleet.config.scenario import Scenario

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "scenario.schema.json"  # beside the shipped scenarios
BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file."""
    definitions: dict[str, Any] = {}
    schema = _object(Scenario, definitions)
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_FILE, "title": "sparcl-fleet scenario", **schema,
            "$defs": dict(sorted(definitions.items()))}


def schema_text() -> str:
    """The schema as the file `fleet schema` writes: indented JSON with a final newline."""
    return json.dumps(scenario_schema(), indent=2) + "\n"


def dotted_keys(cls: type = Scenario, prefix: str = "") -> list[str]:
    """Every key the schema knows, dotted (`federation.mode`); a named table (`budgets`, `profiles`)
    lists its entries' keys under `<name>` (`profiles.<name>.base`)."""
    keys = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        dotted = f"{prefix}{f.name}"
        keys.append(dotted)
        tp = _without_none(hints[f.name])
        if is_section(tp):
            keys += dotted_keys(tp, f"{dotted}.")
        elif get_origin(tp) is dict and is_section(get_args(tp)[1]):
            keys += dotted_keys(get_args(tp)[1], f"{dotted}.<name>.")
    return keys


def _object(cls: type, definitions: dict[str, Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    properties = {f.name: _field(f, hints[f.name], definitions) for f in fields(cls)}
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):  # dataclasses invent a signature
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    return out


def _field(f, tp: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    out = _type(tp, definitions)
    rules = f.metadata
    if "choices" in rules:
        out = _with_rule(out, {"enum": list(rules["choices"])})
    bounds = {BOUNDS[k]: v for k, v in rules.items() if k in BOUNDS}
    if bounds:
        out = _with_rule(out, bounds)
    if f.default is not MISSING:
        default = f.default
        out["default"] = list(default) if isinstance(default, tuple) else default
    return out


def _with_rule(schema: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    """A rule applies to the value, never to null (the builder skips rules for None)."""
    if "anyOf" in schema:
        options = [o if o == {"type": "null"} else {**o, **rule} for o in schema["anyOf"]]
        return {**schema, "anyOf": options}
    return {**schema, **rule}


def _type(tp: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    if is_section(tp):
        definitions.setdefault(tp.__name__, None)
        if definitions[tp.__name__] is None:
            definitions[tp.__name__] = _object(tp, definitions)
        # an empty section header (`sparcl:` alone) is null: all defaults
        return {"anyOf": [{"$ref": f"#/$defs/{tp.__name__}"}, {"type": "null"}]}
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        options = [_type(o, definitions) for o in get_args(tp) if o is not NoneType]
        if NoneType in get_args(tp):
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is dict:
        key_type, value_type = get_args(tp)
        out: dict[str, Any] = {"type": "object", "additionalProperties": _type(value_type, definitions)}
        if key_type is not str:  # YAML keys that are numbers (a speed-up table's sparsities)
            out["propertyNames"] = {"pattern": r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"}
        return out
    if tp in TYPES:
        return {"type": TYPES[tp]}
    raise TypeError(f"the scenario schema uses a type JSON Schema is not told about: {tp!r}")


def _without_none(tp: Any) -> Any:
    if get_origin(tp) in (Union, UnionType):
        options = [o for o in get_args(tp) if o is not NoneType]
        return options[0] if len(options) == 1 else tp
    return tp
