"""`fleet coordinator`: Flower's SuperLink with TLS and SuperNode authentication (only devices whose
public key is registered may join); it registers the keys `fleet certs` made and writes a connection
named `sparcl-fleet` into the Flower configuration file ($FLWR_HOME/config.toml, default ~/.flwr) for
`flwr` and `fleet submit`. `--insecure` drops TLS and authentication: loopback trials only.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from clients.errors import InputError
from fleet.run import stop_group
from fleet.deploy.flower import (
    CONNECTION,
    DEFAULT_PORT,
    DeploymentError,
    STOP_GRACE_S,
    check_address,
    die_with_parent,
    existing_file,
    flower_env,
    flwr_home,
    show,
    tool,
)


@dataclass(frozen=True)
class Coordinator:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    certs: Path | None = None      # from `fleet certs`; None only with insecure
    home: Path = Path("coordinator")  # the SuperLink's FLWR_HOME: its database and installed apps
    insecure: bool = False


def superlink_command(c: Coordinator) -> list[str]:
    argv = [tool("flower-superlink"), "--host", c.host, "--port", str(c.port),
            "--database", str(c.home / "superlink.db"), "--disable-runtime-dependency-installation"]
    if c.insecure:
        return [*argv, "--insecure"]
    assert c.certs is not None  # None only with insecure
    return [*argv, "--ssl-ca-certfile", str(c.certs / "ca.crt"), "--ssl-certfile", str(c.certs / "server.crt"),
            "--ssl-keyfile", str(c.certs / "server.key"), "--enable-supernode-auth"]


def connection_entry(c: Coordinator) -> dict:
    """The Flower configuration file's entry for this coordinator (loopback when it listens on all)."""
    host = "127.0.0.1" if c.host in ("0.0.0.0", "::") else c.host
    entry: dict[str, str | bool] = {"address": f"{host}:{c.port}"}
    if c.insecure:
        entry["insecure"] = True
    else:
        assert c.certs is not None  # None only with insecure
        entry["root-certificates"] = str(c.certs / "ca.crt")
    return entry


def write_connection(entry: dict, home: Path | None = None) -> Path:
    """Add (or replace) the `sparcl-fleet` connection in the Flower configuration file, keeping the rest."""
    import tomli_w

    path = (home or flwr_home()) / "config.toml"
    config = tomllib.loads(path.read_text()) if path.exists() else {}
    superlink = config.setdefault("superlink", {})
    superlink[CONNECTION] = entry
    superlink.setdefault("default", CONNECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(config))
    os.replace(tmp, path)
    return path


def node_keys(certs: Path) -> list[Path]:
    return sorted(certs.glob("node-*.pub"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))


def register(key: Path) -> str:
    """Register one SuperNode public key; a key already registered is fine."""
    argv = [tool("flwr"), "supernode", "register", str(key), CONNECTION]
    show(argv)
    done = subprocess.run(argv, capture_output=True, text=True, env=flower_env())
    text = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and "already in use" not in text:
        raise DeploymentError(f"registering {key.name} failed: {text.splitlines()[-1] if text else done.returncode}")
    return "already registered" if done.returncode else "registered"


def wait_for_port(host: str, port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeploymentError(f"flower-superlink exited with status {process.returncode} (see its log above)")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise DeploymentError(f"flower-superlink did not open {host}:{port} within {timeout_s:.0f} s")


def run_coordinator(c: Coordinator) -> int:
    """Start the SuperLink, register the devices' keys, and serve until Ctrl-C or SIGTERM."""
    if not c.insecure:
        if c.certs is None:
            raise InputError("--certs is required (a folder from `fleet certs`), or --insecure for loopback trials")
        for name in ("ca.crt", "server.crt", "server.key"):
            existing_file(c.certs / name, f"--certs {name}")
    c.home.mkdir(parents=True, exist_ok=True)
    argv = superlink_command(c)
    show(argv)
    superlink = subprocess.Popen(argv, env=flower_env(FLWR_HOME=str(c.home.resolve())),
                                 start_new_session=True, preexec_fn=die_with_parent)
    try:
        host, _ = check_address(connection_entry(c)["address"], "--host")
        wait_for_port(host, c.port, superlink)
        print(f"wrote connection '{CONNECTION}' to {write_connection(connection_entry(c))}", flush=True)
        if not c.insecure:
            assert c.certs is not None  # checked above
            keys = node_keys(c.certs)
            for key in keys:
                print(f"{key.name}: {register(key)}", flush=True)
            if not keys:
                print(f"no node-*.pub in {c.certs}: register devices with `flwr supernode register KEY.pub "
                      f"{CONNECTION}`", flush=True)
        print(f"coordinator ready on {c.host}:{c.port}; submit a scenario with `fleet submit SCENARIO`", flush=True)
        return superlink.wait()
    finally:
        stop_group(superlink, STOP_GRACE_S)
