# Shared by the benchmark scripts: `run OUT fleet-arguments...` runs one fleet command into
# OUT (replacing an earlier result) and writes OUT.txt, which starts with the exact command.
FLEET=${FLEET:-.venv/bin/fleet}

run() {
  local out=$1; shift
  local cmd=("$FLEET" "$@" --out "$out" --force --quiet)
  mkdir -p "$out"
  { echo "\$ ${cmd[*]}"; "${cmd[@]}"; } > "$out.txt"
  cat "$out.txt"
}
