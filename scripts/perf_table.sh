#!/usr/bin/env bash
# The README's performance table, from one build: runs `fba_bench` once per row (4, 7 and
# 10 nodes; one client; 64 clients; client batches; one node down; one node paused; 5%
# loss; key files; a million wallets with a kill -9 restart) and prints a Markdown table.
# Usage: scripts/perf_table.sh [--quick]   (from the repository, after
# `cargo build --release`; about ten minutes, or one with --quick, which skips the
# million wallets and uses fewer requests)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=target/release/fba_bench
[ -x "$bench" ] || { echo "build first: cargo build --release" >&2; exit 2; }
quick=false
[ "${1:-}" = "--quick" ] && quick=true
scale() { if $quick; then echo $(( $1 / 10 )); else echo "$1"; fi; }

# One numeric field of the JSON report on standard input.
field() { grep -o "\"$1\": *[0-9.]*" | head -1 | sed 's/.*: *//'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
round() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }

echo "| row | command | operations/s | p50 ms | p99 ms | max ms | node peak RSS MiB | restart s |"
echo "|---|---|---|---|---|---|---|---|"
row() {
    local name=$1 env=$2
    shift 2
    local json
    json=$(env $env "$bench" "$@" --json 2>/dev/null) || { echo "| $name | \`$*\` | failed | | | | | |"; return; }
    local restart
    restart=$(echo "$json" | field restart_seconds)
    [ -n "$restart" ] && restart=$(awk -v x="$restart" 'BEGIN { printf "%.2f", x }')
    printf '| %s | `%s%s` | %s | %s | %s | %s | %s | %s |\n' "$name" "${env:+$env }" "fba_bench $*" \
        "$(round "$(echo "$json" | field operations_per_second)")" \
        "$(ms "$(echo "$json" | field p50_us)")" "$(ms "$(echo "$json" | field p99_us)")" \
        "$(ms "$(echo "$json" | field max_us)")" \
        "$(awk -v k="$(echo "$json" | field max_node_rss_kib)" 'BEGIN { printf "%.1f", k / 1024 }')" "$restart"
}

# A node SIGSTOPped 1 s into the run and resumed 2 s later (as scripts/pause_bench.sh).
paused_row() {
    local out json node
    out=$(mktemp)
    "$bench" --clients 64 --requests "$(scale 30000)" --json >"$out" 2>/dev/null &
    local pid=$!
    sleep 1
    node=$(pgrep -f "fba_server .*--quiet" | head -1 || true)
    if [ -n "$node" ]; then
        kill -STOP "$node"
        sleep 2
        kill -CONT "$node"
    fi
    wait "$pid" || true
    json=$(cat "$out")
    rm -f "$out"
    printf '| %s | `%s` | %s | %s | %s | %s | %s | |\n' "4 nodes, one paused 2 s" \
        "scripts/pause_bench.sh --clients 64 --requests $(scale 30000)" \
        "$(round "$(echo "$json" | field operations_per_second)")" \
        "$(ms "$(echo "$json" | field p50_us)")" "$(ms "$(echo "$json" | field p99_us)")" \
        "$(ms "$(echo "$json" | field max_us)")" \
        "$(awk -v k="$(echo "$json" | field max_node_rss_kib)" 'BEGIN { printf "%.1f", k / 1024 }')"
}

row "4 nodes, 1 client" "" --clients 1 --requests "$(scale 2000)"
row "4 nodes, 64 clients" "" --clients 64 --requests "$(scale 30000)"
row "4 nodes, 16 clients x 200-operation batches" "" --clients 16 --batch 200 --requests "$(scale 3000)"
row "4 nodes, one down" "" --clients 64 --down 1 --requests "$(scale 30000)"
paused_row
row "4 nodes, 5% loss on every link" "FBA_NET_FAULTS=loss=0.05" --clients 64 --requests "$(scale 20000)"
row "7 nodes, 64 clients" "" --nodes 7 --clients 64 --requests "$(scale 20000)"
row "10 nodes, 64 clients" "" --nodes 10 --clients 64 --requests "$(scale 20000)"
row "4 nodes keyed, 1 client" "" --authenticated --clients 1 --requests "$(scale 2000)"
row "4 nodes keyed, 64 clients" "" --authenticated --clients 64 --requests "$(scale 20000)"
row "4 nodes keyed, 16 x 200 batches" "" --authenticated --clients 16 --batch 200 --requests "$(scale 2000)"
row "100 wallets, kill -9 restart" "" --clients 64 --requests "$(scale 30000)" --restart
if ! $quick; then
    row "1,000,000 wallets, kill -9 restart" "" --clients 64 --requests 30000 --wallets 1000000 --restart
fi
