#!/usr/bin/env bash
# RPC throughput and fan-out: one standalone `agentwire serve` (SQLite) against the cluster of
# scripts/cluster.sh (PostgreSQL, three nodes, HAProxy), with benches/scripts/cluster-bench.mjs.
# Prints a markdown table; columns:
#
#   standalone   agentwire serve without --cluster, SQLite on disk
#   node         one cluster node directly (it owns the instances it is asked for)
#   forwarded    another node, the instances being owned by the first: every frame tunnelled
#   front        HAProxy in front of the three nodes (instances spread by the path hash)
#
#   benches/scripts/cluster-bench.sh [cluster-bench.mjs options, e.g. --seconds 5]
#
# Environment: CARGO_TARGET_DIR, AGENTWIRE_BIN (a built agentwire instead of building), LEASE_TTL (default 10s, the node's default), CLUSTER_DIR
# (default $CARGO_TARGET_DIR/cluster-bench). About 2 minutes after the build.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
cluster="$repo/scripts/cluster.sh"
export CLUSTER_DIR="${CLUSTER_DIR:-$target/cluster-bench}"
export LEASE_TTL="${LEASE_TTL:-10s}"
export CLUSTER_MODE=on

if [ -z "${AGENTWIRE_BIN:-}" ]; then
  (cd "$repo" && cargo build --release -q -p agentwire --bin agentwire)
  export AGENTWIRE_BIN="$target/release/agentwire"
fi
[ -d "$repo/runtime/interop/node_modules/ws" ] \
  || (cd "$repo/runtime/interop" && npm install --no-audit --no-fund --no-save --loglevel=error)

data="$(mktemp -d)"
log="$(mktemp)"
pid=""
cleanup() {
  [ -z "$pid" ] || kill "$pid" 2> /dev/null || true
  "$cluster" down > /dev/null 2>&1 || true
  rm -rf "$data" "$log"
}
trap cleanup EXIT

"$AGENTWIRE_BIN" serve --addr 127.0.0.1:0 --data "$data" 2> "$log" &
pid=$!
standalone=""
for _ in $(seq 1 100); do
  standalone="$(sed -n 's#.*\(listening on\|demo at\) http://\([^ /]*\).*#\2#p' "$log" | head -1)"
  [ -n "$standalone" ] && break
  sleep 0.1
done
[ -n "$standalone" ] || { cat "$log"; echo "agentwire serve did not start"; exit 1; }

"$cluster" down > /dev/null
"$cluster" up > /dev/null
# shellcheck disable=SC1091
. "$CLUSTER_DIR/cluster.env"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); lease $LEASE_TTL" >&2
node "$repo/benches/scripts/cluster-bench.mjs" "$@" \
  "standalone=$standalone" "node=$N1_ADDR" "forwarded=$N2_ADDR@$N1_ADDR" "front=${FRONT_URL#http://}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
