"""A package face whose names load on first use (PEP 562), for the faces that a small, quick process
imports: the run's watchdog (which must be watching within milliseconds) and `fleet device` on a
Raspberry Pi (where every module costs memory). Imports nothing from the rest of fleet."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name in `homes` is imported from its module when first
    asked for."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(homes[name]), name)

    return __getattr__
