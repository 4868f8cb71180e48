"""The one exception type for bad user input, and a safe way to quote bad values.

Anything a user can get wrong (a dataset name, a missing folder, a sparsity out
of range) raises InputError with a one-line message naming the culprit; the CLI
prints it and exits with status 2, never a traceback.
"""

from __future__ import annotations

import reprlib


class InputError(ValueError):
    """Bad user input; str(err) is a one-line message naming the culprit."""


class _Short(reprlib.Repr):
    """reprlib with small limits, and big integers described instead of printed."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 4
        self.maxdeque = self.maxarray = 4
        self.maxstring = self.maxother = limit
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a 5,000-digit integer raises; its size is what matters
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


def excerpt(value: object, limit: int = 60) -> str:
    """A one-line rendering of `value`, at most `limit` characters, cheap however big the value is.

    repr() of a hostile value (an expanded YAML anchor bomb, a 5,000-digit
    integer, a megabyte of text) can take minutes, exhaust memory or raise;
    this looks at no more of the value than it prints.
    """
    try:
        text = _Short(limit).repr(value)
    except Exception:  # a value whose own __repr__ fails is still reported, by its type
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."
