#!/usr/bin/env bash
# Interop gate of the agentwire runtime: the `counter` example against the real npm `agents`
# 0.32.0 AgentClient (Node 20).
#
# 1. Always: check.mjs (this project's own checks; Node packages pinned by package-lock.json go
#    into runtime/interop/node_modules/, git-ignored).
# 2. When ../shared/agents-client exists beside the repository: its run.mjs (27 checks with
#    --idle 15, must report 0 failed) and compare.mjs against its golden transcript (must
#    report a match). The harness files are copied at run time into the git-ignored
#    runtime/interop/.shared/ so that they resolve this directory's node_modules.
#
# About a minute after the release build of the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

echo "-- building the counter example (release)"
(cd "$repo" && cargo build --release -p agentwire --example counter)
bin="$target/release/examples/counter"

if [ ! -d "$here/node_modules/agents" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  echo "-- npm install (agents 0.32.0, ws; versions from package-lock.json)"
  # `npm ci` refuses this lock file (npm leaves optional platform packages of a transitive
  # dependency out of it); `install --no-save` honours the lock and leaves it unchanged.
  (cd "$here" && npm install --no-audit --no-fund --no-save --loglevel=error)
fi

echo "-- check.mjs: AgentClient against the counter example"
node "$here/check.mjs" "$bin"

shared="$repo/../shared/agents-client"
if [ -d "$shared" ]; then
  echo "-- shared harness: run.mjs --idle 15, then compare.mjs against the golden transcript"
  rm -rf "$here/.shared" "$here/run"
  mkdir -p "$here/.shared" "$here/run"
  cp "$shared"/*.mjs "$shared"/golden-transcript.jsonl "$here/.shared/"
  data="$(mktemp -d)"
  "$bin" --addr 127.0.0.1:0 --data "$data" \
    2> "$here/run/server.log" &
  pid=$!
  trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
  addr=""
  for _ in $(seq 1 100); do
    addr="$(sed -n 's#.*listening on http://\([^ ]*\).*#\1#p' "$here/run/server.log" | head -1)"
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "counter example did not start"; cat "$here/run/server.log"; exit 1; }
  node "$here/.shared/run.mjs" "http://$addr" CounterAgent golden --idle 15 \
    --record "$here/run/transcript.jsonl" | tee "$here/run/run.log"
  grep -q '^27 passed, 0 failed$' "$here/run/run.log"
  # The golden run was recorded against 127.0.0.1:8787; the URLs are the only place the
  # port shows, so the free port used here is written as 8787 before comparing.
  sed "s#//$addr/#//127.0.0.1:8787/#g" "$here/run/transcript.jsonl" > "$here/run/transcript-8787.jsonl"
  node "$here/.shared/compare.mjs" "$here/.shared/golden-transcript.jsonl" "$here/run/transcript-8787.jsonl"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
else
  echo "-- ../shared/agents-client not found: shared harness skipped"
fi
