#!/usr/bin/env bash
# An emulated Raspberry Pi 4 and Pi Zero 2 W join a loopback fleet beside an x86 device (issue 23).
#
# What it checks: the instruction set and the packaging. A Pi 4 (Cortex-A72) and a Zero 2 W
# (Cortex-A53) are ARMv8.0 cores without the ARMv8.1 atomics; QEMU's user mode, told the CPU model
# (QEMU_CPU=cortex-a72 / cortex-a53), refuses those instructions as the boards do (SIGILL). What it
# does not measure: a Pi's speed (an emulated round costs about 100x the CPU of a native one) or
# its memory (each guest process is a host QEMU process whose figure includes the emulator's own
# share); the figures it prints are labelled as emulation figures.
#
# Steps, all on 127.0.0.1:
#  1. An arm64 Debian bookworm root made with mmdebstrap, cached outside the repository
#     ($PI_ROOT, default /var/cache/sparcl-fleet/arm64-root; about 12 minutes and 1.3 GB the first
#     time), with the Debian packages the Pi steps of docs/how-to/raspberry-pi.md install (python3-venv, python3-pip,
#     python3-torch).
#  2. The project installed in it exactly as docs/how-to/raspberry-pi.md tells a Pi owner: a clone of this
#     repository's HEAD, `python3 -m venv --system-site-packages ~/fleet`, `pip install -e .`.
#  3. A Pi's /proc/cpuinfo and its CPU ID registers (MIDR_EL1) in /sys, bind-mounted over the
#     guest's: QEMU 7.2 shows the guest the host's x86 /proc/cpuinfo and no CPU ID in /sys, and
#     torch's CPU detection (the cpuinfo library) segfaulted on that under emulation.
#  4. The torch check of `fleet device` on both emulated CPUs, with Debian's torch (the how-to's)
#     and, where $PI_PYPI_TORCH holds PyPI's torch 2.13.0 for aarch64 with its CUDA packages
#     (about 4.7 GB; see below), with that torch on 2 threads (it dies with SIGILL, one line) and
#     on 1 (it passes).
#     Flower's SuperNode gives a ClientApp process 30 s to check in after it claims a task; an
#     emulated ClientApp takes longer on a busy host, so the emulated devices get 300 s (only
#     there: a .pth file in their venv, below).
#  5. A fleet: `fleet certs`, `fleet coordinator` (TLS, registered keys), device 0 on x86,
#     device 1 an emulated Pi 4, device 2 an emulated Zero 2 W; `fleet submit
#     scenarios/emulated_pi.yaml` (4 rounds); after round 2 the Pi 4's device is killed (SIGKILL)
#     and started again, and rejoins. The scenario models devices 0 and 1 as Pi 4s and device 2
#     as a Zero 2 W (with memory to train: the real board has none left). Peak memory per
#     process of each device (benchmarks/process_peaks.py: wrapper, SuperNode, SuperExec,
#     ClientApp, torch check).
#
# Needs root (chroot, mounts), qemu-user-static, binfmt-support and mmdebstrap (Debian packages),
# and binfmt_misc (it mounts it and enables qemu-aarch64 if it can). Writes results/emulated_pi.txt
# and results/emulated_pi/ (the run). Every process it starts is stopped when it ends. Run it alone:
# two emulated devices keep two cores busy for about 25 minutes.
#
#   PI_PYPI_TORCH=/var/cache/sparcl-fleet/pypi-torch-aarch64 benchmarks/emulated_pi.sh
#
# PyPI's aarch64 torch needs CUDA packages some of whose pinned versions are not published for
# aarch64; to reproduce the crash, install the wheel and its packages for aarch64 from the host:
#   pip install --no-deps --target $PI_PYPI_TORCH/torch --only-binary=:all: --python-version 3.11 \
#       --platform manylinux_2_28_aarch64 torch==2.13.0     (then the same for its requirements into
#       $PI_PYPI_TORCH/deps, nvidia-nccl-cu13 2.32.6 in place of 2.29.7)
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$PWD
FLEET=$PWD/.venv/bin/fleet
PYTHON=$PWD/.venv/bin/python
ROOT=${PI_ROOT:-/var/cache/sparcl-fleet/arm64-root}
PYPI_TORCH=${PI_PYPI_TORCH:-}
OUT=${OUT:-results/emulated_pi}
PORT=${PORT:-19192}
GUEST_HOME=/home/pi
WORK=$(mktemp -d /tmp/fleet-pi-XXXXXX)   # host side: certificates, coordinator, x86 device, logs
GUEST_WORK=$GUEST_HOME/run                # guest side: its certificates and state folders
export FLWR_HOME=$WORK/flwr
PIDS=()

die() { echo "emulated_pi.sh: $*" >&2; exit 1; }

# --------------------------------------------------------------------------- prerequisites
[[ $(id -u) == 0 ]] || die "needs root (chroot and bind mounts)"
command -v qemu-aarch64-static > /dev/null || die "qemu-aarch64-static is missing: apt-get install qemu-user-static binfmt-support"
if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2> /dev/null || die "binfmt_misc cannot be mounted here"
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64 > /dev/null 2>&1 || die "qemu-aarch64 is not registered with binfmt_misc (apt-get install binfmt-support)"
fi

if [[ ! -x $ROOT/usr/bin/python3 ]]; then
  command -v mmdebstrap > /dev/null || die "no arm64 root at $ROOT and no mmdebstrap to make one: apt-get install mmdebstrap"
  echo "making the arm64 root $ROOT (mmdebstrap, about 12 minutes)"
  mkdir -p "$(dirname "$ROOT")"
  rm -rf "$ROOT.tmp"
  mmdebstrap --arch=arm64 --variant=apt --include=python3,python3-venv,python3-pip,python3-torch,ca-certificates,procps \
    bookworm "$ROOT.tmp" http://deb.debian.org/debian
  mv "$ROOT.tmp" "$ROOT"
fi

# --------------------------------------------------------------------------- what the guest sees
# A Pi's /proc/cpuinfo and CPU ID registers, as many cores as this host lends (the emulation runs
# one guest thread on one host core, so a 4-core board would only oversubscribe 2 cores).
CORES=$(nproc)
identity() {  # identity DIR MODEL PART REVISION MIDR BOGOMIPS BOARD_REVISION
  local dir=$1 model=$2 part=$3 rev=$4 midr=$5 bogo=$6 board=$7 i
  mkdir -p "$dir/cpu"
  : > "$dir/cpuinfo"
  for ((i = 0; i < CORES; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: %s\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: %d\n\n' \
      "$i" "$bogo" "$part" "$rev" >> "$dir/cpuinfo"
    mkdir -p "$dir/cpu/cpu$i/regs/identification" "$dir/cpu/cpu$i/topology"
    printf '0x%016x\n' "$midr" > "$dir/cpu/cpu$i/regs/identification/midr_el1"
    printf '0x%016x\n' 0 > "$dir/cpu/cpu$i/regs/identification/revidr_el1"
    echo "$i" > "$dir/cpu/cpu$i/topology/core_id"
    echo 0 > "$dir/cpu/cpu$i/topology/physical_package_id"
    echo "$i" > "$dir/cpu/cpu$i/topology/thread_siblings_list"
    echo "0-$((CORES - 1))" > "$dir/cpu/cpu$i/topology/core_siblings_list"
  done
  printf 'Hardware\t: BCM2835\nRevision\t: %s\nSerial\t\t: 100000000emulated\nModel\t\t: %s\n' "$board" "$model" >> "$dir/cpuinfo"
  for f in online possible present; do echo "0-$((CORES - 1))" > "$dir/cpu/$f"; done
  echo "" > "$dir/cpu/offline"
  echo $((CORES - 1)) > "$dir/cpu/kernel_max"
}
identity "$WORK/pi4" "Raspberry Pi 4 Model B Rev 1.4" 0xd08 3 0x410fd083 108.00 c03114
identity "$WORK/zero2w" "Raspberry Pi Zero 2 W Rev 1.0" 0xd03 4 0x410fd034 38.40 902120

# guest CPU IDENTITY COMMAND...: run COMMAND in the arm64 root as that board, in a private mount
# namespace (the mounts vanish with it), in its own process group; the network is the host's (loopback).
guest() {
  local cpu=$1 ident=$2; shift 2
  local bind_pypi=""
  [[ -n $PYPI_TORCH ]] && bind_pypi="mkdir -p $ROOT/opt/pypi-torch && mount --bind $PYPI_TORCH $ROOT/opt/pypi-torch &&"
  unshare --mount --propagation private -- sh -c "
    mount -t proc proc $ROOT/proc && mount --rbind /sys $ROOT/sys && mount --rbind /dev $ROOT/dev &&
    mount --bind $ident/cpuinfo $ROOT/proc/cpuinfo && mount --bind $ident/cpu $ROOT/sys/devices/system/cpu &&
    $bind_pypi
    exec env -i QEMU_CPU=$cpu HOME=$GUEST_HOME PATH=$GUEST_HOME/fleet/bin:/usr/bin:/bin LANG=C.UTF-8 \
      ${GUEST_ENV:-} /usr/sbin/chroot $ROOT \"\$@\"" guest "$@"
}

tree() {  # tree PID: it and its descendants (a device's SuperNode runs in a session of its own)
  local child
  echo "$1"
  for child in $(ps -o pid= --ppid "$1" 2> /dev/null); do tree "$child"; done
}
cleanup() {
  local all=() pid
  kill -TERM ${SAMPLER:-} ${SAMPLER2:-} 2> /dev/null || true
  for pid in "${PIDS[@]}"; do all+=($(tree "$pid")); done
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2> /dev/null || true; done
  for pid in "${all[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
  sleep 3
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2> /dev/null || true; done
  for pid in "${all[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
  rm -rf "$WORK" "${ROOT:?}$GUEST_WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "\$ $*"; }
background() {  # background NAME COMMAND...: in its own process group, output to $WORK/NAME.log
  local name=$1; shift
  setsid "$@" > "$WORK/$name.log" 2>&1 &
  LAST=$!
  disown "$LAST"
  PIDS+=("$LAST")
}
wait_for() {  # wait_for FILE TEXT SECONDS
  local until=$((SECONDS + $3))
  until grep -aq "$2" "$1" 2> /dev/null; do
    ((SECONDS < until)) || die "waited $3 s for '$2' in $(basename "$1"): $(tail -3 "$1" 2> /dev/null | tr '\n' ' ')"
    sleep 2
  done
}
rows() { [[ -f $OUT/rounds.csv ]] && tail -n +2 "$OUT/rounds.csv" | wc -l || echo 0; }

rm -rf "$OUT" "$OUT.txt"
mkdir -p "$(dirname "$OUT")"
exec > >(sed -u "s|$WORK|<work>|g" | tee "$OUT.txt") 2>&1
echo "# emulated Raspberry Pi devices (QEMU user mode): an instruction-set and packaging check, not a"
echo "# measurement of a Pi's speed or memory; $(date -u +%Y-%m-%dT%H:%MZ), $(qemu-aarch64-static --version | head -1)"
echo "# host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

echo; echo "# 1. the Pi steps of docs/how-to/raspberry-pi.md in the arm64 root ($(du -sh --exclude=opt "$ROOT" 2> /dev/null | cut -f1) at $ROOT)"
rm -rf "${ROOT:?}$GUEST_HOME/sparcl-fleet"
mkdir -p "$ROOT$GUEST_HOME"
git clone -q --no-hardlinks "$PROJECT" "$ROOT$GUEST_HOME/sparcl-fleet"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
GUEST_ENV=""
if [[ -n ${PIP_CERT:-} && -f ${PIP_CERT:-} ]]; then  # a network behind an inspecting proxy: its CA bundle
  cp "$PIP_CERT" "$ROOT/etc/ssl/certs/host-bundle.crt"
  GUEST_ENV="PIP_CERT=/etc/ssl/certs/host-bundle.crt"
fi
say "python3 -m venv --system-site-packages ~/fleet   # once"
[[ -x $ROOT$GUEST_HOME/fleet/bin/pip ]] || guest cortex-a72 "$WORK/pi4" python3 -m venv --system-site-packages $GUEST_HOME/fleet
say "cd ~/sparcl-fleet && ~/fleet/bin/pip install -e ."
started=$SECONDS
guest cortex-a72 "$WORK/pi4" sh -c "cd $GUEST_HOME/sparcl-fleet && $GUEST_HOME/fleet/bin/pip install -q -e ." 2>&1 \
  | grep -v "^WARNING: Running pip as\|^\[notice\]" || true
echo "  ($((SECONDS - started)) s)"
cat > "$ROOT$GUEST_HOME/versions.py" << 'EOF'
import platform

import flwr
import numpy
import torch

where = torch.__file__.split("/torch/")[0]
print(f"  {platform.machine()}: torch {torch.__version__} from {where}, numpy {numpy.__version__}, flwr {flwr.__version__}")
EOF
guest cortex-a72 "$WORK/pi4" $GUEST_HOME/fleet/bin/python $GUEST_HOME/versions.py

# Flower's SuperNode gives a ClientApp process 30 s from the claim of its task to check in
# (flwr.supercore.corestate: HEARTBEAT_DEFAULT_INTERVAL), then refuses its token ("Runtime task-token
# authentication failed"). An emulated Python with Flower and torch takes 10 s to start on an idle
# core of this host and over 30 s on a busy one, so in the emulated devices only (their venv, this
# variable) the window is 300 s. How long a real Pi 4 or Zero 2 W takes is not measured here.
cat > "$ROOT$GUEST_HOME/fleet/lib/python3.11/site-packages/sparcl_emulation.py" << 'EOF'
"""benchmarks/emulated_pi.sh, emulated devices only: Flower's window for a ClientApp to check in."""
import importlib.abc
import importlib.util
import os
import sys

TARGET = "flwr.supercore.corestate.in_memory_corestate"
SECONDS = float(os.environ.get("SPARCL_EMULATED_CLAIM_S") or 0)


class Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.HEARTBEAT_DEFAULT_INTERVAL = SECONDS

        spec.loader.exec_module = exec_module
        return spec


if SECONDS > 0:
    sys.meta_path.insert(0, Patch())
EOF
echo "import sparcl_emulation" > "$ROOT$GUEST_HOME/fleet/lib/python3.11/site-packages/sparcl_emulation.pth"

echo; echo "# 2. fleet device's torch check (scenarios/emulated_pi.yaml's network) on each emulated CPU"
cat > "$ROOT$GUEST_HOME/check.py" << 'EOF'
import sys
from pathlib import Path

from clients.errors import InputError
from fleet.deploy.device import check_torch

try:
    print("  ok: " + check_torch(Path("scenarios/emulated_pi.yaml"), int(sys.argv[1])))
except InputError as err:
    print(f"  fleet: error: {err}")
    sys.exit(1)
EOF
check() {  # check CPU IDENT THREADS LABEL [PYTHONPATH]
  local cpu=$1 ident=$2 threads=$3 label=$4 path=${5:-} started=$SECONDS rc=0
  say "QEMU_CPU=$cpu ${path:+PYTHONPATH=<PyPI torch> }python -c 'check_torch(emulated_pi.yaml, threads=$threads)'   # $label"
  GUEST_ENV="${GUEST_ENV} ${path:+PYTHONPATH=$path}" guest "$cpu" "$ident" sh -c \
    "cd $GUEST_HOME/sparcl-fleet && exec $GUEST_HOME/fleet/bin/python $GUEST_HOME/check.py $threads" > "$WORK/check.log" 2>&1 || rc=$?
  tail -1 "$WORK/check.log"
  echo "  (exit $rc, $((SECONDS - started)) s)"
}
check cortex-a72 "$WORK/pi4" 2 "Pi 4, Debian's torch"
check cortex-a53 "$WORK/zero2w" 2 "Zero 2 W, Debian's torch"
if [[ -n $PYPI_TORCH ]]; then
  PYPI_PATH=/opt/pypi-torch/torch:/opt/pypi-torch/deps
  check cortex-a72 "$WORK/pi4" 2 "Pi 4, PyPI's torch 2.13.0, 2 threads" "$PYPI_PATH"
  check cortex-a72 "$WORK/pi4" 1 "Pi 4, PyPI's torch 2.13.0, 1 thread" "$PYPI_PATH"
  check cortex-a53 "$WORK/zero2w" 2 "Zero 2 W, PyPI's torch 2.13.0, 2 threads" "$PYPI_PATH"
  check cortex-a53 "$WORK/zero2w" 1 "Zero 2 W, PyPI's torch 2.13.0, 1 thread" "$PYPI_PATH"
  # the cause, not the fix: the same torch on 2 threads where QEMU emulates a CPU with the ARMv8.1 atomics
  check max "$WORK/pi4" 2 "QEMU's 'max' CPU (ARMv8.1 atomics and later), PyPI's torch 2.13.0, 2 threads" "$PYPI_PATH"
  say "QEMU_CPU=cortex-a72 PYTHONPATH=<PyPI torch> python -c 'import torch; conv2d'   # the host's x86 cpuinfo, no CPU ID in /sys"
  rc=0
  # in a shell of its own whose report of the signal goes to the log, not here
  bash -c "unshare --mount --propagation private -- sh -c \"mount -t proc proc $ROOT/proc && mount --rbind /sys $ROOT/sys &&
    mount --rbind /dev $ROOT/dev && mkdir -p $ROOT/opt/pypi-torch && mount --bind $PYPI_TORCH $ROOT/opt/pypi-torch &&
    exec env -i QEMU_CPU=cortex-a72 HOME=$GUEST_HOME PYTHONPATH=$PYPI_PATH OMP_NUM_THREADS=1 /usr/sbin/chroot $ROOT \
    $GUEST_HOME/fleet/bin/python -c 'import torch; torch.nn.Conv2d(1, 8, 3)(torch.randn(1, 1, 8, 8)); print(1)'\"; exit \$?" \
    > "$WORK/bare.log" 2>&1 || rc=$?
  grep -a "MIDR\|qemu:" "$WORK/bare.log" | sed 's/^/  /'
  echo "  (exit $rc$( ((rc > 128)) && echo ": killed by SIG$(kill -l $((rc - 128)))"))"
fi

echo; echo "# 3. the fleet: coordinator and device 0 on x86, device 1 an emulated Pi 4, device 2 an emulated Zero 2 W"
say fleet certs certs --host 127.0.0.1 --nodes 3
"$FLEET" certs "$WORK/certs" --host 127.0.0.1 --nodes 3 | sed 's/^/  /'
mkdir -p "$ROOT$GUEST_WORK"
for id in 1 2; do cp "$WORK/certs/ca.crt" "$WORK/certs/node-$id.key" "$ROOT$GUEST_WORK/"; done
say fleet coordinator --certs certs --host 127.0.0.1 --port $PORT
background coordinator "$FLEET" coordinator --certs "$WORK/certs" --host 127.0.0.1 --port "$PORT" --home "$WORK/coordinator"
wait_for "$WORK/coordinator.log" "coordinator ready" 60
grep -a "registered\|ready" "$WORK/coordinator.log" | sed 's/^/  /'

x86_device() {
  say "fleet device --device-id 0 --devices 3 --profile rpi4 --stand-in --threads 1 ..."
  background device-0 "$FLEET" device --superlink "127.0.0.1:$PORT" --device-id 0 --devices 3 \
    --state-dir "$WORK/x86/state" --ca "$WORK/certs/ca.crt" --key "$WORK/certs/node-0.key" --port $((PORT + 10)) \
    --profile rpi4 --stand-in --threads 1 --scenario scenarios/emulated_pi.yaml
  DEVICE0=$LAST
}
pi_device() {  # pi_device ID CPU IDENT PROFILE THREADS
  local id=$1 cpu=$2 ident=$3 profile=$4 threads=$5
  say "QEMU_CPU=$cpu ~/fleet/bin/fleet device --device-id $id --devices 3 --profile $profile --threads $threads ..."
  background "device-$id" bash -c "$(declare -f guest); ROOT=$ROOT GUEST_HOME=$GUEST_HOME PYPI_TORCH= \
    GUEST_ENV='$GUEST_ENV SPARCL_EMULATED_CLAIM_S=300' \
    guest $cpu $ident sh -c 'cd $GUEST_HOME/sparcl-fleet && exec $GUEST_HOME/fleet/bin/fleet device \
    --superlink 127.0.0.1:$PORT --device-id $id --devices 3 --state-dir $GUEST_WORK/state-$id --ca $GUEST_WORK/ca.crt \
    --key $GUEST_WORK/node-$id.key --port $((PORT + 10 + id)) --profile $profile --threads $threads \
    --scenario scenarios/emulated_pi.yaml --rejoin-wait 300'"
}
x86_device
pi_device 1 cortex-a72 "$WORK/pi4" rpi4 2
DEVICE1=$LAST
pi_device 2 cortex-a53 "$WORK/zero2w" rpi-zero2w 2
DEVICE2=$LAST
PEAKS=$WORK/peaks.json
setsid "$PYTHON" benchmarks/process_peaks.py "$PEAKS" "x86=$DEVICE0" "pi4=$DEVICE1" "zero2w=$DEVICE2" &
SAMPLER=$!
for id in 0 1 2; do wait_for "$WORK/device-$id.log" "SuperNode ID\|Starting Flower SuperNode\|fleet: error" 900; done
for id in 0 1 2; do
  echo "  device $id: $(grep -a "^torch \|fleet: error" "$WORK/device-$id.log" | head -1)"
  grep -aq "fleet: error" "$WORK/device-$id.log" && die "device $id did not start"
done

echo; echo "# the run (scenarios/emulated_pi.yaml, 4 rounds)"
say fleet submit scenarios/emulated_pi.yaml --out "$OUT"
background submit "$FLEET" submit scenarios/emulated_pi.yaml --out "$OUT"
until (($(rows) >= 2)); do
  grep -aq "^run .*: \|fleet: error" "$WORK/submit.log" && break
  sleep 5
done
grep -aq "fleet: error" "$WORK/submit.log" && die "fleet submit: $(grep -a "fleet: error" "$WORK/submit.log")"
echo "  after round 2: the Pi 4's device is killed (SIGKILL, a power cut) and started again"
say "kill -KILL <device 1: its wrapper, SuperNode, SuperExec and ClientApp (QEMU processes)>"
victims=($(tree "$DEVICE1"))
kill -KILL "${victims[@]}" 2> /dev/null || true
restarted=$SECONDS
pi_device 1 cortex-a72 "$WORK/pi4" rpi4 2
DEVICE1B=$LAST
setsid "$PYTHON" benchmarks/process_peaks.py "$WORK/peaks-restarted.json" "pi4-restarted=$DEVICE1B" &
SAMPLER2=$!
until grep -aq "^run .*: \|fleet: error" "$WORK/submit.log"; do sleep 5; done
grep -a "sparcl-fleet: \|^run " "$WORK/submit.log" | sed 's/^.*sparcl-fleet: /  /; s/^run /  run /'
echo "  device 1 after its restart:"
grep -a "refused\|SuperNode ID\|^torch " "$WORK/device-1.log" | sed 's/^.*INFO[^:]*: */    /; s/^torch/    torch/'
echo "  restart to end of run: $((SECONDS - restarted)) s"

kill -TERM "$SAMPLER" "$SAMPLER2" 2> /dev/null || true
wait "$SAMPLER" "$SAMPLER2" 2> /dev/null || true

echo; echo "# per device (device_rounds.csv; devices 1 and 2 emulated: their CPU seconds and memory are QEMU's)"
"$PYTHON" - "$OUT" "$PEAKS" "$WORK/peaks-restarted.json" << 'EOF'
import csv, json, statistics, sys
out, peaks = sys.argv[1], {}
for path in sys.argv[2:]:
    try:
        peaks.update(json.load(open(path)))
    except (OSError, ValueError):
        pass
rows = list(csv.DictReader(open(f"{out}/device_rounds.csv")))
summary = json.load(open(f"{out}/summary.json"))
names = {0: "x86 (stand-in, rpi4 profile)", 1: "emulated Pi 4 (cortex-a72)", 2: "emulated Zero 2 W (cortex-a53)"}
for d in (0, 1, 2):
    mine = [r for r in rows if int(r["device"]) == d]
    ok = [r for r in mine if r["status"] == "ok"]
    cpu = [float(r["measured_compute_s"]) for r in ok if r["measured_compute_s"]]
    rss = [int(r["measured_peak_rss_bytes"]) / 2**20 for r in ok if r["measured_peak_rss_bytes"]]
    print(f"  device {d}, {names[d]}: {len(ok)} of {len(mine)} rounds ok"
          + (f", training CPU per round median {statistics.median(cpu):.1f} s [{min(cpu):.1f}, {max(cpu):.1f}]" if cpu else "")
          + (f", ClientApp peak (getrusage) {max(rss):.0f} MiB" if rss else ""))
for name, roles in peaks.items():
    print(f"  peak memory, {name} (VmHWM, MiB" + (", QEMU's share included)" if name != "x86" else ")") + ": "
          + ", ".join(f"{r} {v['peak_mib']:.0f}" + (f" (max of {v['processes']})" if v["processes"] > 1 else "")
                      for r, v in roles.items()))
print(f"  run: {summary['status']}, {summary['rounds_completed']} rounds, final Class-IL {summary['final_accuracy']}, "
      f"failed replies {summary['failed_replies']}, timed out {summary.get('timed_out_replies', 0)}")
EOF
column -s, -t < "$OUT/device_rounds.csv" | cut -c1-220
