#!/usr/bin/env bash
# Installs what building and testing Meridian needs on a fresh Debian machine:
# libclang-dev (RocksDB's bindgen), redis-tools (redis-cli, redis-benchmark for the tests)
# and, with --with-redis-server, redis-server (the reference the bench tests compare against;
# not installed for `config/run-node.sh`, where a distribution redis would take port 6379).
# Does nothing when all are present.
set -euo pipefail
missing=()
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
if [ "${1:-}" = "--with-redis-server" ]; then
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
