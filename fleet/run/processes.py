"""The processes a run starts, read from /proc, and the one way they are ended: SIGTERM, a grace
period, then SIGKILL.

A process is named by (pid, start time), so a later process that reuses a pid
is never mistaken for it. Linux only (/proc); elsewhere nothing is found.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

GRACE_S = 3.0  # how long a leftover process gets to end after SIGTERM before SIGKILL


def descendants(root: int | None = None) -> set[tuple[int, int]]:
    """(pid, start time) of every live descendant of `root` (default: this process); empty without /proc.

    The start time tells a process from a later one that reuses its pid.
    """
    root = os.getpid() if root is None else root
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in _proc_entries():
        pid, ppid, start, state, _ = entry
        if state != "Z":
            children.setdefault(ppid, []).append((pid, start))
    found: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child[0])
    return found


def alive(process: tuple[int, int]) -> bool:
    """Whether this very process (same pid, same start time) still runs (a zombie does not count)."""
    stat = _stat(process[0])
    return stat is not None and stat[2] == process[1] and stat[3] != "Z"


def end_processes(processes: set[tuple[int, int]], grace_s: float = GRACE_S) -> None:
    """SIGTERM each process still alive, wait up to grace_s for it to end, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [p for p in processes if alive(p)]
        for pid, _ in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [p for p in left if alive(p)]
        if not left:
            return


def stop_group(process: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """End a child started in a session of its own (start_new_session) with everything in its process
    group, then reap it."""
    if process.poll() is None:
        end_processes({(pid, start) for pid, _, start, _, group in _proc_entries() if group == process.pid},
                      grace_s)
    process.wait()


def _proc_entries() -> Iterator[tuple[int, int, int, str, int]]:
    proc = Path("/proc")
    try:
        names = [p.name for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return
    for name in names:
        stat = _stat(int(name))
        if stat is not None:
            yield stat


def _stat(pid: int) -> tuple[int, int, int, str, int] | None:
    """(pid, ppid, start time, state, process group) from /proc/<pid>/stat, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return pid, int(fields[1]), int(fields[19]), fields[0], int(fields[2])
