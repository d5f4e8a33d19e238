#!/usr/bin/env bash
# The test command: installs missing system packages, builds everything in release mode
# (tests start the real `meridian` binary), runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
./tests/deps.sh --with-redis-server
. ./tests/target-dir.sh
cargo build --release --workspace --bins
cargo test --release --workspace -- --test-threads="${TEST_THREADS:-4}"
