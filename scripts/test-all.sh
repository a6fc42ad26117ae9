#!/usr/bin/env bash
# Runs every test of the project: unit, integration, vector and fuzz-corpus replay tests
# (`cargo test`), then the conformance and interop suites that need extra tools, which this
# script installs into the project (git-ignored) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

# A throwaway PostgreSQL 15 for the cluster tests of `cargo test` (runtime/tests/cluster.rs
# reads AGENTWIRE_TEST_POSTGRES), in a state directory of its own, stopped and removed on exit.
export CLUSTER_TEST_DIR="${CARGO_TARGET_DIR:-target}/cluster-test"
echo "== PostgreSQL for the cluster tests (scripts/cluster.sh pg-up)"
trap 'CLUSTER_DIR="$CLUSTER_TEST_DIR" scripts/cluster.sh down > /dev/null 2>&1 || true' EXIT
pg_env="$(CLUSTER_DIR="$CLUSTER_TEST_DIR" scripts/cluster.sh pg-up)"
eval "$pg_env"

echo "== cargo test (workspace, all features)"
cargo test --workspace --all-features

# ----- agentwire-ws: Autobahn 1-10 in both roles (golden-gated) and interop with real peers -----
# kosoku goes into the git-ignored .venv/, Node packages into ws-codec/interop/node_modules/,
# Chromium comes from Debian (installed only if /usr/bin/chromium is missing). ~1 min after build.
echo "== agentwire-ws: Autobahn 1-10, server and client roles, vs ws-codec/autobahn/expected-results.json"
scripts/autobahn.sh both
echo "== agentwire-ws: interop (Node ws client/server, headless Chromium)"
scripts/ws-interop.sh --chromium

# ----- agentwire (runtime): the counter example against the real npm `agents` AgentClient -----
# Own checks always; the shared 27-check harness and the golden comparison when ../shared exists.
echo "== agentwire: interop with AgentClient (runtime/interop/run.sh)"
runtime/interop/run.sh

# ----- agentwire (runtime): cluster mode (PostgreSQL, three nodes, HAProxy) -----
# scripts/cluster.sh with PostgreSQL 15 and HAProxy from Debian (installed if missing): the
# shared harness through the front when ../shared exists, then forwarding, fencing of a frozen
# node, hibernation onto another node, and failover of 50 busy instances after a kill -9.
echo "== agentwire: cluster (runtime/cluster/run.sh)"
runtime/cluster/run.sh

# ----- agentwire (runtime): the demo page of `agentwire serve` in headless Chromium -----
# Two browser contexts: counter sync, chat presence and messages, a streamed task, and a
# server restart on the same port and data dir that the page must ride out by itself.
# playwright-core into runtime/e2e/node_modules/ (git-ignored), Chromium from Debian.
echo "== agentwire: browser end-to-end (runtime/e2e/run.sh)"
runtime/e2e/run.sh
