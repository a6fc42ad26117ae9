#!/usr/bin/env bash
# Interop tests of agentwire-ws with real peers: Node ws (client and server) and, with
# --chromium, headless Chromium's native WebSocket against examples/echo_std.
# usage: scripts/ws-interop.sh [--chromium]
# Env: TARGET_DIR (cargo target dir).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
CARGO_TARGET_DIR="$TARGET_DIR" cargo build -q --release -p agentwire-ws --features deflate --example echo_std --example client
cd "$root/ws-codec/interop"
[ -d node_modules/ws ] || npm ci --no-audit --no-fund --loglevel=error
echo "== Node ws interop"
timeout 180 node node.mjs "$TARGET_DIR/release/examples"
if [ "${1:-}" = "--chromium" ]; then
  if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq chromium) >/dev/null
  fi
  echo "== Chromium interop"
  timeout 180 node chromium.mjs "$TARGET_DIR/release/examples"
fi
