"""`fleet coordinator`, `fleet device` and `fleet submit`: thin wrappers over Flower's own
deployment commands (flower-superlink, flwr supernode register, flower-supernode, flwr run),
which print every command they run.

- The coordinator runs a SuperLink with TLS and SuperNode authentication (only devices
  whose public key is registered may join), registers the keys `fleet certs` made, and
  writes a connection named `sparcl-fleet` into the Flower configuration file
  ($FLWR_HOME/config.toml, default ~/.flwr) for `flwr` and `fleet submit`.
- A device runs a SuperNode with its device id, fleet size, state folder (where its
  continual-learning state survives a restart), data folder and profile in its node config.
  Before it connects it checks, in a child process, that torch trains the scenario's network
  at batch 1 and at its batch on the ClientApp's thread count: PyPI's torch 2.13 for aarch64
  dies with "Illegal instruction" on a Raspberry Pi's ARMv8.0 cores when it runs threaded.
- `submit` runs `flwr run` on this project (pyproject.toml's [tool.flwr.app]) with the
  scenario and output folder, follows its log, and exits non-zero unless the run
  finished as completed (`flwr run --stream` exits 0 either way).

`--insecure` drops TLS and authentication: anyone who reaches the port can join and read
the model. It is for a laptop's loopback only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from clients.errors import InputError
from fleet.run import stop_group

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


# --------------------------------------------------------------------------- coordinator


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
    return [*argv, "--ssl-ca-certfile", str(c.certs / "ca.crt"), "--ssl-certfile", str(c.certs / "server.crt"),
            "--ssl-keyfile", str(c.certs / "server.key"), "--enable-supernode-auth"]


def connection_entry(c: Coordinator) -> dict:
    """The Flower configuration file's entry for this coordinator (loopback when it listens on all)."""
    host = "127.0.0.1" if c.host in ("0.0.0.0", "::") else c.host
    entry = {"address": f"{host}:{c.port}"}
    if c.insecure:
        entry["insecure"] = True
    else:
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


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the wrapper dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


STOP_GRACE_S = 10.0  # a SuperLink or SuperNode gets this long to end after SIGTERM


# --------------------------------------------------------------------------- device


@dataclass(frozen=True)
class Device:
    superlink: str                 # HOST:PORT of the coordinator
    device_id: int
    devices: int                   # the fleet's size (num-partitions)
    state_dir: Path
    ca: Path | None = None         # the coordinator's ca.crt
    key: Path | None = None        # this device's node-<id>.key
    data_dir: Path | None = None
    profile: str | None = None     # what hardware it is (reported; the scenario models it)
    real: bool = True              # False: a stand-in on the coordinator, timed by its profile's model
    port: int = 9094               # this SuperNode's local API (127.0.0.1 only)
    home: Path | None = None       # its FLWR_HOME (default: <state_dir>/flwr)
    insecure: bool = False
    threads: int | None = None     # torch threads its rounds train on; None: the scenario's train.threads
    scenario: Path | None = None   # the scenario whose network the torch check trains (None: pi_pair.yaml)
    rejoin_wait_s: float = 120.0   # how long a refused device keeps trying to join


JOINED_S = 30.0        # a SuperNode that ran longer than this had joined: its exit is not a refusal
REJOIN_PAUSE_S = 5.0


def node_config(d: Device) -> str:
    """`--node-config` text: TOML values, strings quoted (JSON strings are valid TOML basic strings)."""
    values = {"partition-id": d.device_id, "num-partitions": d.devices, "state-dir": str(d.state_dir),
              "real": d.real}
    if d.data_dir is not None:
        values["data-dir"] = str(d.data_dir)
    if d.profile:
        values["profile"] = d.profile
    if d.threads is not None:
        values["threads"] = d.threads
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def supernode_command(d: Device) -> list[str]:
    argv = [tool("flower-supernode"), "--superlink", d.superlink, "--host", "127.0.0.1", "--port", str(d.port),
            "--node-config", node_config(d)]
    if d.insecure:
        return [*argv, "--insecure"]
    return [*argv, "--root-certificates", str(d.ca), "--auth-supernode-private-key", str(d.key)]


# The torch check runs in a child process, so that a crash is reported, not fatal, and so that the
# wrapper, which stays beside the SuperNode for the whole run, never holds torch in its memory.
# It trains the scenario's own network (backbone and width) at batch 1 and at the configured
# batch, forward and backward, on the thread count the ClientApp will use: PyPI's torch 2.13 for
# aarch64 dies with SIGILL in threaded BLAS on a Raspberry Pi's ARMv8.0 cores only with more
# than one thread and a large enough layer (a width-8 model on batch 16 did not trigger it).
CHECK = """
import os, platform, sys, time
scenario_path, threads = sys.argv[1], int(sys.argv[2])
def stage(text):
    print("stage: " + text, flush=True)
stage("import torch")
import torch
from clients import torch_compat
torch_compat.install()
from clients.backbones import build_backbone, resolved_backbone
from clients.data import INPUT_SHAPES, NUM_CLASSES
from fleet.config import load_scenario
stage("read the scenario " + scenario_path)
s = load_scenario(scenario_path, simulate=False)
# the ClientApp trains on --threads where the device sets it, else on the scenario's train.threads
torch.set_num_threads(threads if threads > 0 else getattr(s.train, "threads", None) or torch.get_num_threads())
print(f"threads: {torch.get_num_threads()}", flush=True)
shape, classes = INPUT_SHAPES[s.dataset.name], NUM_CLASSES[s.dataset.name]
name = resolved_backbone(s.train.backbone, shape[0])
model = build_backbone(s.train.backbone, shape, classes, s.train.width)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
t = time.process_time()
for batch in sorted({1, s.train.batch_size}):
    stage(f"{name} batch {batch} forward")
    loss = torch.nn.functional.cross_entropy(model(torch.randn(batch, *shape)), torch.randint(0, classes, (batch,)))
    stage(f"{name} batch {batch} backward")
    loss.backward()
    opt.step()
    opt.zero_grad()
width = f"width {s.train.width}" if s.train.width else "default width"
n = torch.get_num_threads()
print(f"torch {torch.__version__} on {platform.machine()}: {name} ({width}) trains at batch 1 and "
      f"{s.train.batch_size} on {n} thread{'s' * (n != 1)}, {time.process_time() - t:.2f} s CPU", flush=True)
"""

DEFAULT_CHECK_SCENARIO = PROJECT_DIR / "scenarios" / "pi_pair.yaml"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def check_torch(scenario: Path | None = None, threads: int | None = None) -> str:
    """Train the scenario's network one step at batch 1 and at its batch, in a child process on `threads`
    (None: the scenario's train.threads, as the ClientApp then does); its last line, or InputError with
    one line saying why."""
    scenario = Path(scenario or DEFAULT_CHECK_SCENARIO)
    if not scenario.is_file():
        raise InputError(f"--scenario '{scenario}' does not exist (the torch check trains that scenario's network)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", CHECK, str(scenario.resolve()), str(threads or 0)],
                          capture_output=True, text=True, cwd=PROJECT_DIR, env=env)
    lines = done.stdout.strip().splitlines()
    stages = [line[len("stage: "):] for line in lines if line.startswith("stage: ")]
    at = f"at '{stages[-1]}'" if stages else "before it started"
    counts = [int(line.split()[1]) for line in lines if line.startswith("threads: ")]
    n = threads or (counts[-1] if counts else None)
    on = f"{n} thread{'s' * (n != 1)}" if n else "the scenario's train.threads"
    if done.returncode == -signal.SIGILL:
        raise InputError(
            f"the torch check died with SIGILL (illegal instruction) {at} on {on}: this torch build runs "
            "instructions this CPU lacks (PyPI's torch 2.13 for aarch64 uses ARMv8.1 atomics in threaded BLAS, "
            "and a Raspberry Pi 4 or Zero 2 W is ARMv8.0); install Debian's torch as the README says "
            "(apt-get install python3-torch), or start this device with --threads 1")
    if done.returncode < 0:
        raise InputError(f"the torch check died with {signal_name(-done.returncode)} {at} on {on}: torch does not "
                         "run on this device as installed (see the README's Raspberry Pi steps)")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise InputError(f"the torch check failed {at}: {last}")
    return lines[-1] if lines else "torch check: ok"


def run_device(d: Device) -> int:
    """Check torch, then run the SuperNode until it ends (Ctrl-C or SIGTERM stop it, and it dies with us).

    A device that restarts soon after a crash is refused at first: the SuperLink holds
    its previous connection until two heartbeats are missed (about a minute), and a
    key may be connected once. It tries again every few seconds for `rejoin_wait_s`.
    """
    check_address(d.superlink, "--superlink")
    if not d.insecure:
        if d.ca is None or d.key is None:
            raise InputError("--ca and --key are required (from `fleet certs`), or --insecure for loopback trials")
        existing_file(d.ca, "--ca")
        existing_file(d.key, "--key")
    if not 0 <= d.device_id < d.devices:
        raise InputError(f"--device-id must be in [0, {d.devices}), got {d.device_id}")
    if d.threads is not None and d.threads < 1:
        raise InputError(f"--threads must be >= 1, got {d.threads}")
    print(check_torch(d.scenario, d.threads), flush=True)
    d.state_dir.mkdir(parents=True, exist_ok=True)
    home = d.home or d.state_dir / "flwr"
    home.mkdir(parents=True, exist_ok=True)
    env = flower_env(FLWR_HOME=str(home.resolve()))
    if d.threads is not None:  # torch reads it when a ClientApp process starts
        env["OMP_NUM_THREADS"] = str(d.threads)
    argv = supernode_command(d)
    give_up = time.monotonic() + d.rejoin_wait_s
    while True:
        show(argv)
        began = time.monotonic()
        node = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=die_with_parent)
        try:
            code = node.wait()
        finally:
            stop_group(node, STOP_GRACE_S)
        if code == 0 or time.monotonic() - began > JOINED_S or time.monotonic() > give_up:
            return code
        print(f"the coordinator refused this device (it may still hold its previous connection for about a "
              f"minute, or this key is not registered); trying again for {give_up - time.monotonic():.0f} s",
              flush=True)
        time.sleep(REJOIN_PAUSE_S)


# --------------------------------------------------------------------------- submit


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
