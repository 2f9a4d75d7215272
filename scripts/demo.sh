#!/usr/bin/env bash
# The assignment, end to end: four nodes on UDP ports 3000-3003, the default client, the
# four database files; then the same with node 3003 down. Runs in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ports=(3000 3001 3002 3003)
start_timeout=${FBA_DEMO_TIMEOUT:-30}   # seconds to wait for a node to listen

# Whether UDP port $1 is bound by some process (Linux: /proc/net/udp{,6}; else ss, if any).
port_busy() {
  local hex
  hex=$(printf '%04X' "$1")
  if [ -r /proc/net/udp ]; then
    awk -v p="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == p) found = 1 } END { exit !found }' \
      /proc/net/udp /proc/net/udp6 2>/dev/null
  elif command -v ss >/dev/null; then
    [ -n "$(ss -Hun "sport = :$1" 2>/dev/null)" ]
  else
    return 1
  fi
}

# Refuses to start when another process holds one of the ports (a node left running?).
check_ports() {
  local port
  for port in "${ports[@]}"; do
    if port_busy "$port"; then
      echo "demo.sh: UDP port $port is already in use (an fba_server left running?); stop it and run the demo again" >&2
      exit 1
    fi
  done
}
check_ports

echo "=== building (cargo build --release)"
cargo build --release --bins
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stop; rm -rf "$work"' EXIT

# Waits (at most $start_timeout s) until node $1 prints its "listening on" line.
wait_listening() {
  local port=$1 deadline=$((SECONDS + start_timeout))
  until grep -q "listening on" "$work/node$port.log" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo.sh: node $port did not start within ${start_timeout}s; its log:" >&2
      cat "$work/node$port.log" >&2 || true
      exit 1
    fi
    sleep 0.05
  done
}

# Waits (at most $start_timeout s) until node $1's database equals node 3000's.
wait_same_db() {
  local port=$1 deadline=$((SECONDS + start_timeout))
  until [ "$(cat "$work/assignment3_$port.db" 2>/dev/null)" = "$(cat "$work/assignment3_3000.db")" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo.sh: node $port did not reach node 3000's database within ${start_timeout}s" >&2
      exit 1
    fi
    sleep 0.05
  done
}

run() {
  local title=$1; shift
  echo "=== $title"
  rm -f "$work"/assignment3_* "$work"/*.log   # a fresh cluster: no database, ledger or journal
  for port in "$@"; do
    "$bin/fba_server" "$port" --data-dir "$work" > "$work/node$port.log" 2>&1 &
    pids+=($!)
  done
  for port in "$@"; do wait_listening "$port"; done
  (cd "$work" && "$bin/fba_client" 3000)
  for port in "$@"; do wait_same_db "$port"; done
  (cd "$work" && "$bin/fba_client" 3000 status --all) || true   # exit 3 when a node is down
  stop
  for port in "${ports[@]}"; do
    printf 'cat assignment3_%s.db  ' "$port"
    if [ -f "$work/assignment3_$port.db" ]; then cat "$work/assignment3_$port.db"; echo; else echo "(node down: no file)"; fi
  done
  echo "--- first protocol lines of node 3001:"
  grep -m 12 -E "\] (recv|send|EXTERNALIZE|apply|db) " "$work/node3001.log" || true
  echo
}

run "four nodes" 3000 3001 3002 3003
run "node 3003 down" 3000 3001 3002
