#!/usr/bin/env bash
# End-to-end WebSocket echo over loopback: agentwire-ws (the echo_tokio example),
# tokio-tungstenite, fastwebsockets and a raw TCP echo floor, driven by `ws_e2e load`.
#
#   benches/scripts/ws-e2e.sh            # ~5 minutes; prints a markdown table
#   REPS=1 SCALE=0.3 benches/scripts/ws-e2e.sh   # quick smoke run
#
# Servers are pinned to CPU 1 (one tokio worker), the load generator to CPU 0, when
# `taskset` is available. Every configuration runs all four servers back to back (order
# rotated per repetition) so load drift on a shared machine hits them alike. Raw JSON lines
# go to $OUT (default target/ws-e2e.jsonl).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
REPS="${REPS:-3}"
SCALE="${SCALE:-1}"
OUT="${OUT:-$CARGO_TARGET_DIR/ws-e2e.jsonl}"

cargo build --release -q -p agentwire-ws --example echo_tokio
cargo build --release -q -p agentwire-benches --bin ws_e2e
BIN="$CARGO_TARGET_DIR/release/ws_e2e"
OURS="$CARGO_TARGET_DIR/release/examples/echo_tokio"

SRV=() LOADPIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  SRV=(taskset -c 1) LOADPIN=(taskset -c 0)
fi
ulimit -n 65536 2>/dev/null || true

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"${SRV[@]}" "$OURS" 127.0.0.1:9101 2>/dev/null & PIDS+=($!)
"${SRV[@]}" "$BIN" serve-tungstenite 127.0.0.1:9102 2>/dev/null & PIDS+=($!)
"${SRV[@]}" "$BIN" serve-fastws 127.0.0.1:9103 2>/dev/null & PIDS+=($!)
"${SRV[@]}" "$BIN" serve-tcp 127.0.0.1:9104 2>/dev/null & PIDS+=($!)
sleep 1

SERVERS=(agentwire-ws tokio-tungstenite fastwebsockets raw-tcp)
declare -A PORT=([agentwire-ws]=9101 [tokio-tungstenite]=9102 [fastwebsockets]=9103 [raw-tcp]=9104)
# conns:msgs-per-connection, sized for ~2-3 s per run at the rates seen here.
CONFIGS=(1:80000 10:20000 100:2500)
SIZES=(32 4096)

: >"$OUT"
for rep in $(seq 1 "$REPS"); do
  for cfg in "${CONFIGS[@]}"; do
    conns=${cfg%%:*}
    msgs=$(awk -v m="${cfg##*:}" -v s="$SCALE" 'BEGIN { printf "%d", m * s }')
    for size in "${SIZES[@]}"; do
      n=${#SERVERS[@]}
      for i in $(seq 0 $((n - 1))); do
        srv=${SERVERS[$(((i + rep) % n))]}
        extra=()
        [ "$srv" = raw-tcp ] && extra=(--masked-echo)
        line=$("${LOADPIN[@]}" "$BIN" load "ws://127.0.0.1:${PORT[$srv]}/" \
          --conns "$conns" --msgs "$msgs" --size "$size" "${extra[@]}")
        echo "{\"server\":\"$srv\",\"rep\":$rep,${line#\{}" | tee -a "$OUT" >&2
      done
    done
  done
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
order = ["agentwire-ws", "fastwebsockets", "tokio-tungstenite", "raw-tcp"]
groups = {}
for r in rows:
    groups.setdefault((r["size"], r["conns"], r["server"]), []).append(r)
def med(xs): return statistics.median(xs)
print("| size B | conns | server | msgs/s (median) | [min..max] | p50 µs | p99 µs | vs raw TCP | reps |")
print("|---:|---:|---|---:|---|---:|---:|---:|---:|")
for size, conns in sorted({(k[0], k[1]) for k in groups}):
    floor = med([r["msgs_per_s"] for r in groups.get((size, conns, "raw-tcp"), [])] or [float("nan")])
    for srv in order:
        g = groups.get((size, conns, srv))
        if not g:
            continue
        rate = [r["msgs_per_s"] for r in g]
        print(f"| {size} | {conns} | {srv} | {med(rate):.0f} | [{min(rate):.0f}..{max(rate):.0f}] "
              f"| {med([r['p50_us'] for r in g]):.1f} | {med([r['p99_us'] for r in g]):.1f} "
              f"| {100 * med(rate) / floor:.1f} % | {len(g)} |")
EOF
