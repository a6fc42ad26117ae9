#!/usr/bin/env bash
# Browser end-to-end test of `agentwire serve`: the demo page in headless Chromium (two browser
# contexts) for counter sync, chat with presence, a streamed task, and a server restart
# (kill, start again on the same port and data directory) the page must ride out by itself.
#
# Chromium is Debian's /usr/bin/chromium (installed with apt only when missing; no browser is
# ever downloaded by npm). playwright-core, pinned by package-lock.json, goes into the
# git-ignored runtime/e2e/node_modules/. demo.mjs starts and stops the server itself.
#
# About 15 s after the release build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

echo "-- building agentwire (release)"
(cd "$repo" && cargo build --release -p agentwire --bin agentwire)
bin="$target/release/agentwire"

if [ ! -x /usr/bin/chromium ]; then
  echo "-- installing chromium (apt)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq chromium) >/dev/null
fi

if [ ! -d "$here/node_modules/playwright-core" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  echo "-- npm ci (playwright-core; version from package-lock.json)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
echo "-- demo.mjs: the demo page in headless Chromium"
timeout 600 node "$here/demo.mjs" "$bin" "$data"
