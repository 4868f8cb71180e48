#!/usr/bin/env bash
# The "Plug in a Raspberry Pi" steps (docs/how-to/raspberry-pi.md), tried on this machine with loopback in place of the
# Pi: certificates, the coordinator, two devices (device 0 real, device 1 a stand-in), a submitted
# run of scenarios/pi_pair.yaml; after round 4 device 1 is killed and restarted, and its state
# folder is shown before and after. Writes results/deployment_trial.txt (every command and what it
# printed) and results/deployment_trial/ (the run). About 3 minutes; every process it starts is
# stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET=$PWD/.venv/bin/fleet
OUT=results/deployment_trial
WORK=$(mktemp -d /tmp/fleet-trial-XXXXXX)   # certificates, coordinator and device folders
export FLWR_HOME=$WORK/flwr                 # the user's own ~/.flwr stays untouched
PORT=${PORT:-19092}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 3
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "\$ $*"; }
background() {  # background NAME COMMAND...: in its own process group, output to $WORK/NAME.log
  local name=$1; shift
  say "$* &"
  setsid "$@" > "$WORK/$name.log" 2>&1 &
  LAST=$!
  disown "$LAST"
  PIDS+=("$LAST")
}
wait_for() {  # wait_for FILE TEXT
  until grep -aq "$2" "$1" 2>/dev/null; do sleep 1; done
}
device() {  # device ID EXTRA...
  local id=$1; shift
  background "device-$id" "$FLEET" device --superlink "127.0.0.1:$PORT" --device-id "$id" --devices 2 \
    --state-dir "$WORK/pi-$id/state" --ca "$WORK/certs/ca.crt" --key "$WORK/certs/node-$id.key" \
    --port "$((PORT + 10 + id))" --threads 1 "$@"
}
rows() { [[ -f $OUT/rounds.csv ]] && tail -n +2 "$OUT/rounds.csv" | wc -l || echo 0; }

rm -rf "$OUT" "$OUT.txt"
exec > >(sed -u "s|$WORK|<work>|g" | tee "$OUT.txt") 2>&1
  echo "# coordinator"
  say fleet certs certs --host 127.0.0.1 --nodes 2; "$FLEET" certs "$WORK/certs" --host 127.0.0.1 --nodes 2
  background coordinator "$FLEET" coordinator --certs "$WORK/certs" --host 127.0.0.1 --port "$PORT" \
    --home "$WORK/coordinator"
  wait_for "$WORK/coordinator.log" "coordinator ready"
  grep -av "INFO\|WARNING\|^ " "$WORK/coordinator.log"

  echo; echo "# the devices (on a Pi: copy ca.crt and its node-<id>.key there first)"
  device 0 --profile rpi4
  device 1 --profile rpi4 --stand-in
  DEVICE1=$LAST
  wait_for "$WORK/device-0.log" "SuperNode ID"; wait_for "$WORK/device-1.log" "SuperNode ID"
  grep -ah "torch\|^\\$" "$WORK/device-0.log"

  echo; echo "# the run"
  background submit "$FLEET" submit scenarios/pi_pair.yaml --out "$OUT"
  until (( $(rows) >= 4 )); do sleep 1; done
  echo; echo "# after round 4: device 1's newest state, then it is killed (SIGKILL) and restarted"
  say fleet state pi-1/state; "$FLEET" state "$WORK/pi-1/state"
  say "kill -KILL <device 1's SuperNode and its wrapper>"  # a crash: no goodbye to the coordinator
  pkill -KILL -P "$DEVICE1" || true; kill -KILL -- "-$DEVICE1"
  device 1 --profile rpi4 --stand-in
  started=$(date +%s)
  until grep -aq "^run .*: " "$WORK/submit.log"; do sleep 1; done
  grep "sparcl-fleet: \|^run " "$WORK/submit.log" | sed 's/^.*sparcl-fleet: /  /'
  echo; echo "# device 1's state at the end (it went on from the state above, not from scratch)"
  say fleet state pi-1/state; "$FLEET" state "$WORK/pi-1/state"
  grep -ah "refused\|SuperNode ID" "$WORK/device-1.log" | sed 's/^.*INFO[^:]*: */  /'
  echo "  restart to end of run: $(( $(date +%s) - started )) s"
  echo; echo "# measured next to modelled (device_rounds.csv; device 0 real, device 1 a stand-in)"
  column -s, -t < "$OUT/device_rounds.csv" | cut -c1-200
