#!/usr/bin/env bash
# Cluster gate of the agentwire runtime: starts a local cluster with scripts/cluster.sh
# (PostgreSQL 15, three `agentwire serve --cluster` nodes, HAProxy in front), then
#
# 1. when ../shared/agents-client exists beside the repository: its run.mjs (27 checks with
#    --idle 15, must report 0 failed) through the HAProxy front, and compare.mjs against its
#    golden transcript (must report a match); the harness files are copied at run time into
#    the git-ignored runtime/cluster/.shared/, which resolves runtime/interop's packages
#    through a node_modules link;
# 2. always: check.mjs (forwarding, fencing, hibernation move, failover under load);
#
# and stops the cluster (on any exit; the logs of every process are printed on failure).
# Needs PostgreSQL 15 (/usr/lib/postgresql/15/bin or PG_BIN), haproxy and Node 20.
# About 90 s after the release build.
#
# Environment: AGENTWIRE_BIN (a built agentwire to use instead of building the release one),
# LEASE_TTL (default 3s), IDLE_TIMEOUT (the nodes' --idle-timeout; unset: the
# default 10s, which the golden comparison needs: with a shorter one the instance hibernates
# while the harness's sockets are idle and they get extra `cf_agent_mcp_servers` frames on
# wake), CLUSTER_DIR (default $CARGO_TARGET_DIR/cluster-check), INSTANCES (failover clients, 50).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
cluster="$repo/scripts/cluster.sh"

# A state directory of its own, so that a cluster started by hand is left alone.
export CLUSTER_DIR="${CLUSTER_DIR:-$target/cluster-check}"
export LEASE_TTL="${LEASE_TTL:-3s}"
export NODE_ARGS="${IDLE_TIMEOUT:+--idle-timeout $IDLE_TIMEOUT }${NODE_ARGS:-}"
export CLUSTER_MODE=on

if [ -z "${AGENTWIRE_BIN:-}" ]; then
  echo "-- building agentwire (release)"
  (cd "$repo" && cargo build --release -p agentwire --bin agentwire)
  export AGENTWIRE_BIN="$target/release/agentwire"
fi
"$AGENTWIRE_BIN" serve --help | grep -q -- '--cluster' \
  || { echo "$AGENTWIRE_BIN serve has no --cluster flag"; exit 1; }

interop="$repo/runtime/interop"
if [ ! -d "$interop/node_modules/agents" ] || [ "$interop/package-lock.json" -nt "$interop/node_modules/.package-lock.json" ]; then
  echo "-- npm install in runtime/interop (agents 0.32.0, ws; versions from package-lock.json)"
  (cd "$interop" && npm install --no-audit --no-fund --no-save --loglevel=error)
fi
[ -e "$here/node_modules" ] || ln -s ../interop/node_modules "$here/node_modules"

rm -rf "$here/run"
mkdir -p "$here/run"
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -d "$CLUSTER_DIR/logs" ]; then
    echo "-- failed (exit $rc): logs of the cluster (last 60 lines each)"
    for f in "$CLUSTER_DIR"/logs/*.log; do
      echo "===== $f"
      tail -60 "$f"
    done
  fi
  "$cluster" down > /dev/null 2>&1 || true
  exit "$rc"
}
trap finish EXIT
"$cluster" down > /dev/null # what an interrupted earlier run left

echo "-- scripts/cluster.sh up (lease $LEASE_TTL${NODE_ARGS:+, node flags: $NODE_ARGS})"
"$cluster" up | tee "$here/run/up.log"
front="$(tail -1 "$here/run/up.log" | sed -n 's#^front: http://##p')"
[ -n "$front" ] || { echo "no front address from cluster.sh up"; exit 1; }

shared="$repo/../shared/agents-client"
if [ -d "$shared" ]; then
  echo "-- shared harness through the front ($front): run.mjs --idle 15, then compare.mjs"
  rm -rf "$here/.shared"
  mkdir -p "$here/.shared"
  cp "$shared"/*.mjs "$shared"/golden-transcript.jsonl "$here/.shared/"
  node "$here/.shared/run.mjs" "http://$front" CounterAgent golden --idle 15 \
    --record "$here/run/transcript.jsonl" | tee "$here/run/harness.log"
  grep -q '^27 passed, 0 failed$' "$here/run/harness.log"
  # The golden run was recorded against 127.0.0.1:8787: the port is written as 8787.
  sed "s#//$front/#//127.0.0.1:8787/#g" "$here/run/transcript.jsonl" > "$here/run/transcript-8787.jsonl"
  node "$here/.shared/compare.mjs" "$here/.shared/golden-transcript.jsonl" "$here/run/transcript-8787.jsonl"
else
  echo "-- ../shared/agents-client not found: shared harness skipped"
fi

echo "-- check.mjs: forwarding, fencing, hibernation move, failover"
node "$here/check.mjs" --instances "${INSTANCES:-50}"
