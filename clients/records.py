"""The wire format in Flower records: flat numpy dicts to and from an ArrayRecord, and config flags.

Shared by the ClientApp and the server's strategy so that both sides convert
the same way (ArrayRecord takes `Array`s, not bare numpy arrays).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.app.typing import ConfigRecordValues, ConfigScalar


def to_arrays(flat: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in flat.items()})


def from_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def scalar(value: ConfigRecordValues) -> ConfigScalar:
    """A config record's value that must be one number, text or flag (what int() and float() take)."""
    if isinstance(value, list):
        raise TypeError(f"expected a single value, not the list {value!r}")
    return value


def config_flag(value: object) -> bool:
    """A yes/no value from a node or run config (TOML gives a bool; a command line may give text)."""
    return str(value).lower() in ("true", "1", "yes")
