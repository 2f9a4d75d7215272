#!/usr/bin/env bash
# The assignment, end to end: four nodes on UDP ports 3000-3003, the default client, the
# four database files; then the same with node 3003 down. Runs in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bins
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stop; rm -rf "$work"' EXIT

run() {
  local title=$1; shift
  echo "=== $title"
  rm -f "$work"/assignment3_* "$work"/*.log   # a fresh cluster: no database, ledger or journal
  for port in "$@"; do
    "$bin/fba_server" "$port" --data-dir "$work" > "$work/node$port.log" 2>&1 &
    pids+=($!)
  done
  for port in "$@"; do
    until grep -q "listening on" "$work/node$port.log" 2>/dev/null; do sleep 0.05; done
  done
  (cd "$work" && "$bin/fba_client" 3000)
  for port in "$@"; do
    until [ "$(cat "$work/assignment3_$port.db" 2>/dev/null)" = "$(cat "$work/assignment3_3000.db")" ]; do sleep 0.05; done
  done
  stop
  for port in 3000 3001 3002 3003; do
    printf 'cat assignment3_%s.db  ' "$port"
    if [ -f "$work/assignment3_$port.db" ]; then cat "$work/assignment3_$port.db"; echo; else echo "(node down: no file)"; fi
  done
  echo "--- first protocol lines of node 3001:"
  grep -m 12 -E "recv|send|EXTERNALIZE|apply|db " "$work/node3001.log" || true
  echo
}

run "four nodes" 3000 3001 3002 3003
run "node 3003 down" 3000 3001 3002
