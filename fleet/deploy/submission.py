"""`fleet submit`: `flwr run` of this project (pyproject.toml's [tool.flwr.app]) with the scenario and
output folder; it follows the run's log and exits non-zero unless the run finished as completed
(`flwr run --stream` exits 0 either way)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from clients.errors import InputError
from fleet.deploy.flower import CONNECTION, PROJECT_DIR, flower_env, show, tool


def run_command(scenario: Path, out: Path, connection: str, resume: bool, force: bool) -> list[str]:
    config = {"scenario": str(scenario), "out": str(out), "resume": resume, "force": force}
    return [tool("flwr"), "run", str(PROJECT_DIR), connection, "--stream",
            "--run-config", " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())]


def run_status(run_id: int, connection: str) -> str:
    argv = [tool("flwr"), "list", connection, "--run-id", str(run_id), "--format", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=flower_env())
    try:
        return str(json.loads(done.stdout)["runs"][0]["status"])
    except (ValueError, KeyError, IndexError):
        return f"unknown ({(done.stdout + done.stderr).strip()[-200:]})"


def submit(scenario: Path, out: Path, connection: str = CONNECTION, resume: bool = False,
           force: bool = False) -> int:
    """Submit the scenario to the coordinator, stream its log, and return 0 only if it completed."""
    if not (PROJECT_DIR / "pyproject.toml").is_file():
        raise InputError(f"`fleet submit` needs the project folder with its pyproject.toml ({PROJECT_DIR})")
    argv = run_command(scenario.resolve(), out.resolve(), connection, resume, force)
    show(argv)
    run_id = None
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_DIR,
                          env=flower_env()) as flwr:
        assert flwr.stdout is not None  # stdout=PIPE
        for line in flwr.stdout:
            print(line, end="", flush=True)
            found = re.search(r"Successfully started run (\d+)", line)
            run_id = int(found.group(1)) if found and run_id is None else run_id
    if run_id is None:
        print(f"fleet: error: the run was not started (flwr run exited with {flwr.returncode})", file=sys.stderr)
        return 1
    status = run_status(run_id, connection)
    print(f"run {run_id}: {status}", flush=True)
    return 0 if status == "finished:completed" else 1
