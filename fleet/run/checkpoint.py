"""Per-round checkpoints of a run, so that `fleet run --resume DIR` continues where it stopped.

After each finished round k the run writes DIR/checkpoint/:

* `global-<k>.npz`: the global weights and masks (numpy; read without pickle);
* `flight-<k>.npz`: in asynchronous mode, the updates still in flight at version k
  (trained, not yet arrived: server.buffered.BufferedFedAvg.flight_arrays);
* `state.json`: round k, the strategy's totals and random generator, the
  world's snapshot (its clock, busy devices, and what failures are planned
  from; on/off availability replays from the keys), the ledger, every row of
  rounds.csv so far
  and the wall time spent; written last (renamed into place), so the newest
  state.json always names a complete checkpoint.

The devices write their own learner states, one file per round, under
DIR/checkpoint/devices (clients.state_store); a resumed run discards those of
rounds after k (in asynchronous mode, of dispatches after the checkpoint's).
Together with the keyed draws of the world, this is what lets a resumed run
reach exactly the rows and summary of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clients.errors import InputError
from fleet.outputs import RUN_FOLDERS, read_model, remove_tree, write_model, write_text

CHECKPOINT = RUN_FOLDERS[0]
STATE = "state.json"
DEVICES = "devices"
MAX_STATE_BYTES = 1 << 30
_GLOBAL = re.compile(r"global-(\d{1,9})\.npz")
_FLIGHT = re.compile(r"flight-(\d{1,9})\.npz")


@dataclass(frozen=True)
class Checkpoint:
    round: int
    state: dict                        # JSON: strategy, world, ledger, rows, wall_s
    weights: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    flight: dict[str, np.ndarray] = field(default_factory=dict)  # asynchronous mode's updates in flight


def checkpoint_dir(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINT


def device_state_dir(out_dir: Path) -> Path:
    """Where the simulated devices keep their learner states (absolute: Ray workers have their own cwd)."""
    return (checkpoint_dir(out_dir) / DEVICES).resolve()


def plain(value):
    """json.dumps default: numpy scalars become the Python int or float they hold (exactly)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_checkpoint(out_dir: Path, ckpt: Checkpoint) -> None:
    """Write the arrays, then state.json naming them, then drop older arrays."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(exist_ok=True)
    name = f"global-{ckpt.round}.npz"
    write_model(folder / name, ckpt.weights, ckpt.masks)
    named = {"round": ckpt.round, "global": name}
    if ckpt.flight:
        named["flight"] = flight = f"flight-{ckpt.round}.npz"
        write_model(folder / flight, ckpt.flight, {})
    write_text(folder / STATE, json.dumps({**named, **ckpt.state}, default=plain))
    for path in folder.iterdir():
        if (_GLOBAL.fullmatch(path.name) or _FLIGHT.fullmatch(path.name)) and path.name not in named.values():
            path.unlink(missing_ok=True)


def read_checkpoint(out_dir: Path) -> Checkpoint | None:
    """The last checkpoint in `out_dir` (None if the run finished no round); one-line errors if unreadable."""
    folder = checkpoint_dir(out_dir)
    path = folder / STATE
    if not os.path.lexists(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_STATE_BYTES:
                raise InputError(f"checkpoint '{path}' is over {MAX_STATE_BYTES} bytes")
            state = json.loads(f.read())
        name = state.pop("global")
        k = state.pop("round")
        flight_name = state.pop("flight", None)
        if not (isinstance(name, str) and _GLOBAL.fullmatch(name)) or type(k) is not int or k < 1:
            raise ValueError("it names no round or no global model")
        if flight_name is not None and not (isinstance(flight_name, str) and _FLIGHT.fullmatch(flight_name)):
            raise ValueError("it names no file of updates in flight")
        weights, masks = read_model(folder / name)
        flight = read_model(folder / flight_name)[0] if flight_name else {}
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"checkpoint in '{folder}' cannot be read: {err}") from None
    return Checkpoint(k, state, weights, masks, flight)


def remove_checkpoint(out_dir: Path) -> None:
    """Remove the checkpoint folder (a link there is unlinked, never followed)."""
    remove_tree(checkpoint_dir(out_dir))
