"""Reading the command line: argparse with one-line errors, and the checks of values that argparse's
types cannot express (seeds, lists of positive integers, a Ray address, a writable report path).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from clients.errors import InputError, excerpt

MAX_MESSAGE = 300  # characters of an argparse message, which quotes the bad argument whole


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage dump), bounded, and exit 2."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        raise InputError(f"{self.prog}: {message}")


def parse_seeds(text: str) -> tuple[int, ...]:
    """Comma-separated seeds, each in [0, 2**32) like a scenario's seed."""
    from fleet.config import SEED_LIMIT

    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:  # also the text of an integer of more than 4,300 digits
        raise InputError(f"--seeds must be comma-separated integers, got {excerpt(text)}") from None
    if not seeds:
        raise InputError("--seeds must name at least one seed")
    if len(set(seeds)) != len(seeds):  # a paired median would count that seed twice
        raise InputError(f"--seeds names a seed twice: {excerpt(text)}")
    for seed in seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise InputError(f"--seeds: seed {excerpt(seed)} is outside [0, {SEED_LIMIT})")
    return seeds


def check_writable(path: Path) -> None:
    """Fail before hours of work if a report could not be written at the end."""
    import tempfile

    folder = path.parent
    if path.is_dir():
        raise InputError(f"--json '{path}' is a folder, not a file path")
    if not folder.is_dir():
        raise InputError(f"--json '{path}': folder '{folder}' does not exist")
    try:  # the report is written to a temporary file in this folder and renamed; try that much now
        os.rmdir(tempfile.mkdtemp(prefix=".fleet-probe-", dir=folder))
    except OSError as err:
        raise InputError(f"--json '{path}': folder '{folder}' is not writable ({err.strerror or err})") from None


def parse_positive_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{flag} must be comma-separated integers, got {excerpt(text)}") from None
    if not values or min(values) < 1 or max(values) > 65536:
        raise InputError(f"{flag} must name integers in [1, 65536], got {excerpt(text)}")
    return values


def check_ray_address(text: str) -> str:
    """HOST:PORT of a Ray cluster's head that answers, checked before any work (a bad one is one line)."""
    import socket

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray-address must be HOST:PORT of a Ray head node, got {excerpt(text)}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise InputError(f"--ray-address {excerpt(text)}: no Ray head answers there ({err.strerror or err})") from None
    return text


def add_scenario_run_options(parser: argparse.ArgumentParser, default_out: str, resumable: bool = False) -> None:
    """The options `run` and `compare` share."""
    parser.add_argument("scenario", nargs="?" if resumable else None, help="scenario YAML")
    parser.add_argument("--out", default=None, help=f"output folder (default: {default_out})")
    parser.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true",
                        help="replace the run an output folder already holds (refused without it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one scenario value, e.g. --set timing.budget=tight (repeatable)")


def add_timing_options(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The options of the commands that time training on this machine (calibrate, bench kernels)."""
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats of every measurement")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a simulated device gets one CPU)")
