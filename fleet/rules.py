"""Field rules: one way to state and check the bounds of a setting, wherever the setting lives.

A field declares its rules in its metadata (`rule(default, gt=0, le=1)`, or
`choices=`); the scenario's builder checks them on what a YAML file gives, and a
dataclass built in code (a device or budget profile) checks them on itself with
`check_fields`. So a bound is written once: a scenario's `profiles:` section
derives its fields, rules included, from DeviceProfile's.

Imports nothing from the rest of fleet: the world, the configuration and the
benchmarks all stand on it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any

from clients.errors import InputError, excerpt

SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
COMPARE = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def rule(default: Any = MISSING, **rules: Any) -> Any:
    """A dataclass field with validation rules: choices=, ge=, gt=, le=, lt=.

    Rules apply to the parsed value and are skipped when it is None.
    """
    if default is MISSING:
        return field(metadata=rules)
    return field(default=default, metadata=rules)


def range_text(low: tuple | None, high: tuple | None) -> str:
    """A range as a message says it: `>= 1`, `< 1`, `in (0, 1]`."""
    if low and high:
        left = "[" if low[0] == "ge" else "("
        right = "]" if high[0] == "le" else ")"
        return f"in {left}{low[1]}, {high[1]}{right}"
    bound = low or high
    assert bound is not None, "a range needs a bound"
    return f"{SYMBOLS[bound[0]]} {bound[1]}"


def rule_error(value: Any, rules: Mapping[str, Any]) -> str | None:
    """What is wrong with `value` under `rules` (the words after "<key> must be"), or None."""
    if value is None:
        return None
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        return f"one of {', '.join(choices)}; got {excerpt(value)}"
    low = ("ge", rules["ge"]) if "ge" in rules else ("gt", rules["gt"]) if "gt" in rules else None
    high = ("le", rules["le"]) if "le" in rules else ("lt", rules["lt"]) if "lt" in rules else None
    if (low and not COMPARE[low[0]](value, low[1])) or (high and not COMPARE[high[0]](value, high[1])):
        return f"{range_text(low, high)}, got {excerpt(value)}"
    return None


def flag(name: str) -> str:
    """The command-line flag that sets a field: `ddr_presentations` -> `--ddr-presentations`."""
    return "--" + name.replace("_", "-")


def check_fields(obj: Any, owner: str | None = None) -> None:
    """A dataclass built in code meets its fields' rules: a number field holds a finite number (not a
    bool), a text field text, and every value its choices and bounds; else one line naming the owner
    and the field. Without an owner the settings came from the command line, and the line names the
    field's flag (`--batch must be ...`)."""
    assert is_dataclass(obj)
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{owner}: {f.name}" if owner else flag(f.name)
        kind = (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")).split(" | ")[0]
        if value is None and "None" in str(f.type):
            continue
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not math.isfinite(value)):
            raise InputError(f"{name} must be a finite number, got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise InputError(f"{name} must be text, got {value!r}")
        problem = rule_error(value, f.metadata)
        if problem:
            raise InputError(f"{name} must be {problem}")
