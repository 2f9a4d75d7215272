#!/usr/bin/env bash
# One node paused mid-benchmark: runs `fba_bench ARGS...` (default: 64 clients, 20,000
# requests), SIGSTOPs one of its nodes 1 s in, SIGCONTs it 2 s later, and prints the
# benchmark's throughput and latency lines (the max is the longest a client waited).
# Usage: scripts/pause_bench.sh [fba_bench args...]   (from the repository, after
# `cargo build --release`)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=target/release/fba_bench
[ -x "$bench" ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ $# -gt 0 ] || set -- --clients 64 --requests 20000
out=$(mktemp)
"$bench" "$@" >"$out" 2>&1 &
pid=$!
sleep 1
node=$(pgrep -f "fba_server .*--quiet" | head -1 || true)
if [ -z "$node" ]; then
    wait "$pid" || true
    echo "no fba_server of the benchmark was found" >&2
    exit 1
fi
kill -STOP "$node"
sleep 2
kill -CONT "$node"
wait "$pid"
grep -E "requests in|latency" "$out"
rm -f "$out"
