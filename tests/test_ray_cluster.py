"""`fleet run --ray-address`: the same simulation on an existing two-node Ray cluster, clients on both nodes.

A Ray cluster of more than one node binds every interface, so the test runs
it in namespaces of its own (`unshare -rn --pid --fork --mount-proc`): a
network namespace whose only interface is loopback, so the head and the worker
node (real `ray start` processes) can be reached from 127.0.0.1 only; and a
PID namespace, so `ray stop` sees (and stops) this cluster alone, never a Ray
that something else on the machine runs, and the kernel ends whatever is left
when the namespace's first process exits. Skipped, with the reason, where
these namespaces are not allowed.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
UNSHARE = ["unshare", "-rn", "--pid", "--fork", "--mount-proc"]


def namespaces_allowed() -> bool:
    try:
        probe = subprocess.run([*UNSHARE, "sh", "-c", "ip link set lo up && pgrep -x sh >/dev/null"],
                               capture_output=True, timeout=10)
        return probe.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not namespaces_allowed(),
                    reason="needs `unshare -rn --pid` (user, network and PID namespaces) and `ip` to bring up loopback")
def test_two_rounds_on_a_two_node_cluster_place_clients_on_both_nodes(tmp_path, scenario_file):
    out = tmp_path / "out"
    scenario = scenario_file("cluster", dataset={"name": "synthetic"}, fleet={"devices": 4},
                             stream={"rounds_per_task": 1}, train={"local_epochs": 1, "width": 4},
                             federation={"rounds": 2, "devices_per_round": 4})
    ray = Path(sys.executable).with_name("ray")
    # one CPU per node and per client: the two clients that train at once must be on different nodes;
    # a watcher notes the parent raylet of every Flower client actor while the run goes on
    script = textwrap.dedent(f"""\
        set -u
        ip link set lo up
        export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=1
        scratch=$(mktemp -d /tmp/fleet-rc-XXXXXX)  # short: Ray's socket paths must stay under 108 bytes
        trap 'rm -rf "$scratch"' EXIT
        {ray} start --head --node-ip-address=127.0.0.1 --port=6391 --num-cpus=1 --include-dashboard=false \\
            --disable-usage-stats --temp-dir="$scratch" > {tmp_path}/head.log 2>&1 || exit 11
        {ray} start --address=127.0.0.1:6391 --node-ip-address=127.0.0.1 --num-cpus=1 \\
            --disable-usage-stats > {tmp_path}/worker.log 2>&1 || exit 12
        echo "raylets $(pgrep -d, -x raylet)"
        ( while true; do ps -eo ppid=,args= | awk '/ClientAppActor/ && !/awk/ {{print "actor-parent", $1}}';
          sleep 0.5; done ) > {tmp_path}/actors.txt &
        watcher=$!
        {sys.executable} -m fleet.cli run {scenario} --ray-address 127.0.0.1:6391 --quiet
        code=$?
        kill $watcher
        {ray} stop --force >/dev/null 2>&1
        exit $code
        """)
    proc = subprocess.Popen([*UNSHARE, "bash", "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    raylets = {int(p) for p in stdout.split("raylets ", 1)[1].split()[0].split(",")}
    parents = {int(line.split()[1]) for line in (tmp_path / "actors.txt").read_text().splitlines()}
    assert len(raylets) == 2 and raylets <= parents, (raylets, parents)
    rows = list(csv.DictReader((out / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2] and all(int(r["accepted"]) == 4 for r in rows), \
        lost_replies(rows, out, stderr)
    # both nodes stopped: nothing of the namespace is left in this session
    leftover = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftover, leftover


def lost_replies(rows: list[dict], out: Path, stderr: str) -> str:
    """Why a round accepted fewer than all: each round's counts, the run's rejections and the end of its log."""
    counts = [{k: r[k] for k in ("round", "sampled", "replies", "accepted", "rejected", "failed", "timed_out",
                                 "dropped", "statuses")} for r in rows]
    summary = json.loads((out / "summary.json").read_text())
    return f"{counts}\nrejections: {summary['rejections']}\nnotes: {summary['notes']}\nstderr: {stderr[-3000:]}"
