"""`fleet device`: this machine as one device of the fleet, a Flower SuperNode with its device id,
fleet size, state folder (where its continual-learning state survives a restart), data folder and
profile in its node config.

Before it connects it checks, in a child process, that torch trains the scenario's network at batch 1
and at its batch on the ClientApp's thread count: PyPI's torch 2.13 for aarch64 dies with "Illegal
instruction" on a Raspberry Pi's ARMv8.0 cores when it runs threaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clients.errors import InputError
from fleet.deploy.flower import (
    PROJECT_DIR,
    STOP_GRACE_S,
    check_address,
    die_with_parent,
    existing_file,
    flower_env,
    show,
    tool,
)
from fleet.run import stop_group


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
            "and a Raspberry Pi 4 or Zero 2 W is ARMv8.0); install Debian's torch as docs/how-to/raspberry-pi.md says "
            "(apt-get install python3-torch), or start this device with --threads 1")
    if done.returncode < 0:
        raise InputError(f"the torch check died with {signal_name(-done.returncode)} {at} on {on}: torch does not "
                         "run on this device as installed (see docs/how-to/raspberry-pi.md)")
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
