#!/usr/bin/env bash
# Starts one Meridian node (installs build dependencies first if missing). With no arguments:
# region `local`, RESP on 127.0.0.1:6379, data in ./data. Any flags go to `meridian`.
set -euo pipefail
cd "$(dirname "$0")/.."
./tests/deps.sh
. ./tests/target-dir.sh
exec cargo run --release --bin meridian -- "$@"
