"""The generic builder: a frozen dataclass from a mapping, checked field by field.

`build_dataclass` follows the field type hints (int, float, str, bool, X | None,
dict[str, int], nested dataclasses) and the per-field rules in the field metadata
(fleet.config.schema.rule: choices and bounds). Every failure is one line naming
the dotted path of the culprit; values are quoted through clients.errors.excerpt.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from types import NoneType, UnionType
from typing import Any, TypeGuard, Union, get_args, get_origin, get_type_hints


from clients.errors import excerpt
from fleet.config.reader import MAX_INT
from fleet.config.schema import MAX_TEXT
from fleet.rules import rule_error


def build_dataclass(cls: type, data: Any, path: str, fail) -> Any:
    """Build dataclass `cls` from mapping `data`, checking keys, types and field rules."""
    if data is None and path:  # an empty section header: all defaults
        data = {}
    if not isinstance(data, Mapping):
        fail(f"{path} must be a mapping, got {_show(data)}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            shown = key_text(key)
            dotted = f"{path}.{shown}" if path else shown
            close = difflib.get_close_matches(shown, names, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(names)}"
            fail(f"unknown key '{dotted}' ({hint})")
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        dotted = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            values[f.name] = _coerce(data[f.name], hints[f.name], dotted, fail)
            _check_rules(values[f.name], f.metadata, dotted, fail)
        elif f.default is MISSING and f.default_factory is MISSING:
            fail(f"{dotted} is required")
    return cls(**values)


def is_section(tp: Any) -> TypeGuard[type]:
    """Whether a type hint is a section (a dataclass type), not a plain value."""
    return isinstance(tp, type) and is_dataclass(tp)


def _coerce(value: Any, tp: Any, path: str, fail) -> Any:
    """`value` checked against type hint `tp` (int->float widened); anything else fails."""
    if is_section(tp):
        return build_dataclass(tp, value, path, fail)
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        options = get_args(tp)
        if value is None and NoneType in options:
            return None
        for option in options:
            if option is not NoneType and _accepts(option, value):
                return _coerce(value, option, path, fail)
        kinds = [_describe(o) for o in options]
        fail(f"{path} must be {', '.join(kinds[:-1])} or {kinds[-1]}, got {_show(value)}")
    if origin is dict:
        if not isinstance(value, Mapping):
            fail(f"{path} must be {_describe(tp)}, got {_show(value)}")
        key_type, value_type = get_args(tp)
        return {_coerce(k, key_type, f"{path} key {excerpt(k, 40)}", fail):
                _coerce(v, value_type, f"{path}.{key_text(k)}", fail) for k, v in value.items()}
    if not _accepts(tp, value):
        hint = ""
        if tp is float and isinstance(value, str) and _parses_as_float(value):
            hint = " (YAML reads an exponent without a dot as text: write e.g. 3.0e-2)"
        fail(f"{path} must be {_describe(tp)}, got {_show(value)}{hint}")
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        fail(f"{path} must fit in 64 bits, got {excerpt(value)}")
    if tp is float:
        if not math.isfinite(value):
            fail(f"{path} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if len(value) > MAX_TEXT:
            fail(f"{path} is {len(value):,} characters long, more than {MAX_TEXT}: {excerpt(value, 40)}")
        if not value.isprintable():
            fail(f"{path} holds a control character (NUL, a newline or the like): {excerpt(value)}")
    return value


def _accepts(tp: Any, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if get_origin(tp) is dict or is_section(tp):
        return isinstance(value, Mapping)
    raise TypeError(f"scenario schema uses an unsupported type {tp!r}")


def _check_rules(value: Any, rules: Mapping[str, Any], path: str, fail) -> None:
    problem = rule_error(value, rules)
    if problem:
        fail(f"{path} must be {problem}")


def _describe(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", NoneType: "null"}
    return names.get(tp, "a mapping")


def kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return _describe(type(value)) if type(value) in (bool, int, float, str, NoneType) else type(value).__name__


def _show(value: Any) -> str:
    """A short one-line rendering of a bad value and its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{excerpt(value)} ({kind_of(value)})"


def key_text(key: Any) -> str:
    """A mapping key as it appears in a dotted path: plain if short and printable, else an excerpt."""
    if isinstance(key, str) and len(key) <= 40 and key.isprintable():
        return key
    return excerpt(key, 40)


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plain(value: Any) -> Any:
    """A deep, plain copy: mappings become dicts, lists stay lists."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return copy.deepcopy(value)
