"""Run outputs on disk: rounds.csv (appended and flushed each round), CSV tables, summary.json, the model.

Every file is written under a fresh temporary name in its folder and renamed
over the target, so a reader never sees half a file, and a symlink planted at
the target is replaced, never followed (rename acts on the link itself).
rounds.csv is then appended with O_NOFOLLOW. A folder that already holds a run
is refused unless the caller forces it, and forcing removes that run's files
(by their names only), so no stale summary or plot stays beside a new run.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from clients.errors import InputError


# Files a run or a comparison writes into its folder; the first three mean "this folder holds a run".
RUN_MARKERS = ("summary.json", "rounds.csv", "comparison.csv")
RUN_FILES = (*RUN_MARKERS, "accuracy.png", "accuracy_time.png", "bytes.png", "timeline.png", "timeline_rounds.png",
             "staleness.png", "devices.csv", "device_rounds.csv", "arrivals.csv", "scenario.yaml", "comparison.png",
             "tradeoff.png", "paired.csv", "model.npz")
RUN_FOLDERS = ("checkpoint",)

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` when the block ends without error (and vanishes if it fails).

    It is a new file (mkstemp: O_CREAT | O_EXCL) in path's folder, fsynced, then
    renamed over `path`; a symlink at `path` is replaced, not followed.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the permissions a plain open would
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomic, never through a symlink (see `replacing`)."""
    with replacing(path) as f:
        f.write(text.encode("utf-8"))


def write_json(path: Path, payload: dict) -> None:
    """Atomic, never through a symlink: a temporary file renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(payload, indent=2, default=float))


def write_model(path: Path, weights: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> None:
    """The global model as numpy arrays (`weights:<name>`, `masks:<name>`): np.load reads it without pickle."""
    with replacing(path) as f:
        # allow_pickle named (its default): mypy would otherwise fear a `**` key could be it; none can, all are prefixed
        np.savez(f, allow_pickle=True, **{f"weights:{k}": v for k, v in weights.items()},
                 **{f"masks:{k}": v for k, v in masks.items()})


def read_model(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inverse of write_model (no pickle: object arrays are refused)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    weights = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("weights:")}
    masks = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("masks:")}
    return weights, masks


def remove_tree(path: Path) -> None:
    """Remove a folder and what it holds; a link (there or inside) is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


LOCK = ".fleet.lock"


@contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir` for one run: a second run (or a resume) into it is refused while this one lives.

    An flock on a file in the folder: the kernel releases it when the process
    ends however it ends (SIGKILL included), so a dead run never blocks a resume.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"output folder '{out_dir}' is in use by another fleet run") from None
        yield
    finally:
        os.close(fd)


def check_output_dir(out_dir: Path, *, force: bool) -> None:
    """Fail, before any work starts, if `out_dir` cannot take a run's files or holds a run and not `force`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder '{out_dir}' is a file, not a folder")
    if out_dir.is_dir() and not force:
        held = [name for name in RUN_MARKERS if os.path.lexists(out_dir / name)]
        if held:
            raise InputError(f"output folder '{out_dir}' already holds a run ({held[0]}): pass --force to "
                             "overwrite it, or choose another folder with --out")
    anchor = out_dir
    while not anchor.exists() and anchor != anchor.parent:  # the folder it would be created in
        anchor = anchor.parent
    if not anchor.is_dir():
        raise InputError(f"output folder '{out_dir}' cannot be created: '{anchor}' is not a folder")
    try:  # os.access says yes to root even on a read-only file system; trying says what is true
        os.rmdir(tempfile.mkdtemp(prefix=".fleet-probe-", dir=anchor))
    except OSError as err:
        raise InputError(f"output folder '{out_dir}' is not writable ('{anchor}': "
                         f"{err.strerror or err})") from None


def prepare_output_dir(out_dir: Path, *, force: bool) -> None:
    """Make `out_dir` ready for a new run: checked as check_output_dir, created, an earlier run's files removed.

    Only the files and folders a run writes (RUN_FILES, RUN_FOLDERS) are
    removed, by name; unlinking a symlink removes the link, never what it
    points to.
    """
    check_output_dir(out_dir, force=force)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            remove_tree(out_dir / name)
    except OSError as err:
        raise InputError(f"output folder '{out_dir}' cannot be prepared: {err.strerror or err}") from None


class RoundsCsv:
    """rounds.csv written one row at a time, so an interrupted run keeps every finished round.

    Appends are serialised with `close`: once a stopping run has closed the
    file, a round that finishes late in another thread adds nothing, so the
    file and the summary written at the stop agree.
    """

    def __init__(self, path: Path, columns: Sequence[str], rows: Sequence[dict] = ()) -> None:
        """A new file holding the header and `rows` (those of a resumed run)."""
        self.path = path
        self.columns = list(columns)
        self.rows: list[dict] = list(rows)
        self.closed = False
        self._lock = threading.Lock()
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(path, text.getvalue())

    def append(self, row: dict) -> None:
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        with self._lock:
            if self.closed:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
            with os.fdopen(fd, "wb") as f:
                f.write(line.getvalue().encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            self.rows.append(row)

    def close(self) -> None:
        """No more rows; waits for a row being written to finish."""
        with self._lock:
            self.closed = True


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A whole table at once, atomically and never through a symlink."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())
