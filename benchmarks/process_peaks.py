"""Peak memory of the processes a device runs, sampled from /proc until SIGTERM or SIGINT.

    python benchmarks/process_peaks.py OUT.json NAME=PID [NAME=PID ...]

Every 0.5 s it walks the process tree under each PID (a device's `fleet device` wrapper, or the
shell that starts it) and records, per role, the highest VmHWM (the kernel's own peak of the
resident set) seen for any process in that role: `wrapper` (fleet device), `supernode`
(flower-supernode), `superexec` (flower-superexec), `clientapp` (flwr-clientapp: one per
round, its peak while it trains) and `torch-check` (the check's child). Under QEMU user mode a
guest process is a host qemu-aarch64 process, so its figure includes QEMU's own share (the
translated code and the emulator), which a real board would not spend. On exit it writes
{NAME: {role: {"peak_mib": .., "processes": n}}} to OUT.json.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

ROLES = (("flwr-clientapp", "clientapp"), ("flower-superexec", "superexec"), ("flower-supernode", "supernode"),
         ("stage(", "torch-check"), ("fleet device", "wrapper"), ("fleet.cli device", "wrapper"))


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def role(pid: int) -> str | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    words = cmd.split()
    program = words[1] if len(words) > 1 and words[0].endswith("-binfmt-P") else words[0] if words else ""
    if program.rsplit("/", 1)[-1] in ("bash", "sh", "unshare", "chroot", "env", "setsid"):
        return None  # a shell or launcher whose command line names the program it starts
    for needle, name in ROLES:
        if needle in cmd:
            return name
    return None


def hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not all("=" in a and a.split("=", 1)[1].isdigit() for a in argv[1:]):
        print("usage: process_peaks.py OUT.json NAME=PID [NAME=PID ...]", file=sys.stderr)
        return 2
    out, roots = Path(argv[0]), {a.split("=", 1)[0]: int(a.split("=", 1)[1]) for a in argv[1:]}
    peaks: dict[str, dict[str, float]] = {name: {} for name in roots}
    seen: dict[str, dict[str, set[int]]] = {name: {} for name in roots}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        tree = children()
        for name, root in roots.items():
            todo, found = [root], []
            while todo:
                pid = todo.pop()
                found.append(pid)
                todo.extend(tree.get(pid, []))
            for pid in found:
                r, mib = role(pid), hwm_mib(pid)
                if r is None or mib is None:
                    continue
                peaks[name][r] = max(peaks[name].get(r, 0.0), mib)
                seen[name].setdefault(r, set()).add(pid)
        time.sleep(0.5)
    out.write_text(json.dumps({name: {r: {"peak_mib": round(v, 1), "processes": len(seen[name][r])}
                                      for r, v in sorted(peaks[name].items())} for name in roots}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
