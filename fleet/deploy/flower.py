"""What the deployment commands share: Flower's tools and configuration, one error type, the project's
folder, and how a child process is started and ended."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from pathlib import Path

from clients.errors import InputError


CONNECTION = "sparcl-fleet"
PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 9092


class DeploymentError(RuntimeError):
    """A Flower process failed to start or answer; str(err) is one line."""




def tool(name: str) -> str:
    """A Flower command from this Python's environment, else from PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise InputError(f"'{name}' is not installed: pip install 'flwr[simulation]==1.41.0'")
    return found


def flower_env(**extra: str) -> dict[str, str]:
    """The environment for Flower's processes: no telemetry, and this Python's scripts first on PATH
    (the SuperLink and SuperNode start `flower-superexec` by name)."""
    path = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
    return {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PATH": path, **extra}


def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def check_address(address: str, flag: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"{flag} must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def existing_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise InputError(f"{what} '{path}' does not exist (make it with `fleet certs`)")
    return p


def show(argv: list[str]) -> None:
    print("$ " + " ".join(_quote(a) for a in argv), flush=True)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the wrapper dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


STOP_GRACE_S = 10.0  # a SuperLink or SuperNode gets this long to end after SIGTERM
