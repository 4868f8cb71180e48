"""Ends what a run started when the run itself is killed: SIGKILL leaves the run no chance to clean up.

`stopping(watch=True)` starts this as a small process joined to the run by a
pipe. While the run lives, the watchdog notes every process descended from it
(Ray's head, raylet, agents and workers) every half second, before a death
could orphan them. When the pipe closes, because the run ended however it
ended, it ends those still alive and removes the run's scratch folder (Ray's
session files). After a clean exit the run has ended them itself, so there is
nothing left to do.
"""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import cast

from fleet.run.processes import alive, descendants, end_processes

POLL_S = 0.5


def start(scratch: Path | None) -> subprocess.Popen:
    """The watchdog of this process; close its stdin (or die) to set it off."""
    return subprocess.Popen([sys.executable, "-m", "fleet.run.watchdog", str(os.getpid()), str(scratch or "")],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True)


def watch(parent: int, scratch: str) -> None:
    me = os.getpid()
    seen: set[tuple[int, int]] = set()
    stdin = cast(io.BufferedReader, sys.stdin.buffer)  # typeshed says BinaryIO; a pipe's is a BufferedReader
    while not select.select([sys.stdin], [], [], POLL_S)[0] or stdin.read1(1):
        seen = {p for p in seen | descendants(parent) if p[0] != me and alive(p)}
    end_processes({p for p in seen if alive(p)})
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the run handles it
    watch(int(sys.argv[1]), sys.argv[2])
