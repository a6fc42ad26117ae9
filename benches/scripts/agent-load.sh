#!/usr/bin/env bash
# Load test of the agent server: builds the `counter` example and the `agent_load` generator
# (release), starts the server on a temporary SQLite directory, runs the scenarios and prints a
# markdown table. About 2–4 minutes.
#
#   benches/scripts/agent-load.sh [SOCKETS]        # default 10000
#
# Environment: PORT (default 18787), CARGO_TARGET_DIR (default target), ROUNDS (5),
# RPC_SECONDS (3), SERVER_ARGS (extra arguments of the counter example).
set -euo pipefail
cd "$(dirname "$0")/../.."

SOCKETS=${1:-10000}
PORT=${PORT:-18787}
ROUNDS=${ROUNDS:-5}
RPC_SECONDS=${RPC_SECONDS:-3}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -q -p agentwire --example counter
cargo build --release -q -p agentwire-benches --bin agent_load

# Both sides need a descriptor per socket.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SOCKETS + 100)) ]; then
    echo "ulimit -n is $(ulimit -n): too low for $SOCKETS sockets" >&2
    exit 1
fi

SERVER_PIN=() LOAD_PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c 1) LOAD_PIN=(taskset -c 0)
fi

DATA=$(mktemp -d)
OUT=$(mktemp)
# shellcheck disable=SC2086
"${SERVER_PIN[@]}" "$TARGET/release/examples/counter" --addr "127.0.0.1:$PORT" --data "$DATA" \
    ${SERVER_ARGS:-} 2>/dev/null &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$DATA" "$OUT"
}
trap cleanup EXIT

for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done

LOAD=("${LOAD_PIN[@]}" "$TARGET/release/agent_load" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER")
"${LOAD[@]}" --instance fanout broadcast --sockets "$SOCKETS" --rounds "$ROUNDS" | tee -a "$OUT"
for k in 1 32; do
    "${LOAD[@]}" --instance "rpc$k" rpc --conns 100 --in-flight "$k" --seconds "$RPC_SECONDS" | tee -a "$OUT"
done

# The table, from the JSON lines (no jq needed).
field() { grep "\"scenario\":\"$1\"" "$OUT" | sed -n "${3:-1}p" | grep -o "\"$2\":[^,}]*" | cut -d: -f2 | tr -d '"'; }
echo
echo "| metric | value |"
echo "| --- | ---: |"
echo "| connect $SOCKETS sockets to one instance, all connect frames in | $(field connect connect_all_ms) ms ($(field connect failed) failed) |"
echo "| server memory per idle socket (VmRSS delta / sockets) | $(field connect server_bytes_per_idle_socket) B |"
echo "| broadcast of one state update ($(field broadcast-round frame_bytes) B frame) to $SOCKETS sockets, time to last delivery p50 / max of $ROUNDS | $(field broadcast last_delivery_p50_ms) / $(field broadcast last_delivery_max_ms) ms |"
for i in 1 2; do
    echo "| RPC \`add\` over 100 connections, $(field rpc in_flight "$i") in flight each: calls/s | $(field rpc calls_per_s "$i") |"
    echo "| … latency p50 / p99 | $(field rpc p50_ms "$i") / $(field rpc p99_ms "$i") ms |"
done
