#!/usr/bin/env bash
# Starts or stops every node of a topology on this machine.
#
#   config/local-cluster.sh up TOPOLOGY [DIR]   certificates, data and logs under DIR
#                                              (default: ./cluster/<topology name>);
#                                              waits until every region has a leader and
#                                              prints one line per node: NAME REGION HOST:PORT
#   config/local-cluster.sh down [DIR]          stops exactly the processes `up` started
#                                              (default: every cluster under ./cluster)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

bin() {
  . "$root/tests/target-dir.sh"
  local target="${CARGO_TARGET_DIR:-$root/target}"
  if [ -z "${MERIDIAN_BIN:-}" ]; then
    "$root/tests/deps.sh"
    (cd "$root" && cargo build --release --bin meridian >&2)
    MERIDIAN_BIN="$target/release/meridian"
  fi
  echo "$MERIDIAN_BIN"
}

# Whether PID is the node whose data directory is DATA (a pid file may outlive its process,
# and the number be reused by another): its command line must name that directory.
ours() {
  local pid="$1" data="$2"
  [ -r "/proc/$pid/cmdline" ] && tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$data"
}

up() {
  local topo="${1:-}" dir="${2:-}"
  [ -n "$topo" ] || { echo "usage: $0 up TOPOLOGY [DIR]" >&2; exit 2; }
  [ -f "$topo" ] || { echo "no such topology file: $topo" >&2; exit 2; }
  [ -n "$dir" ] || dir="$PWD/cluster/$(basename "$topo" .toml)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local meridian; meridian="$(bin)"
  # The copy's `certs = "certs"` resolves next to it, so every run keeps its own CA.
  cp "$topo" "$dir/topology.toml"
  "$meridian" certs --config "$dir/topology.toml" --out "$dir/certs" >&2
  local lines; lines="$("$meridian" nodes --config "$dir/topology.toml")"
  while read -r name region resp; do
    mkdir -p "$dir/$name"
    if [ -f "$dir/$name/pid" ] && ours "$(cat "$dir/$name/pid")" "$dir/$name/data"; then
      echo "$name is already running (pid $(cat "$dir/$name/pid"))" >&2
      continue
    fi
    # Appended, so a restarted node's log keeps what came before (a crash's last lines).
    echo "--- local-cluster.sh: starting $name at $(date -u +%FT%TZ)" >>"$dir/$name/node.log"
    RUST_LOG="${RUST_LOG:-meridian=info,meridian_server=info,geo=info,openraft=warn}" \
      nohup "$meridian" --config "$dir/topology.toml" --node "$name" --data-dir "$dir/$name/data" \
      >>"$dir/$name/node.log" 2>&1 &
    echo $! >"$dir/$name/pid"
  done <<<"$lines"
  # Wait until every node answers and knows a leader.
  local deadline=$((SECONDS + 60))
  while read -r name region resp; do
    local host="${resp%:*}" port="${resp##*:}"
    until [ "$(redis-cli -h "$host" -p "$port" MERIDIAN RAFT 2>/dev/null | awk 'p=="leader_id"{print; exit} {p=$0}' | grep -E '^[0-9]+$')" != "" ]; do
      if [ $SECONDS -ge $deadline ]; then
        echo "timed out waiting for $name ($resp) to see a leader; log: $dir/$name/node.log" >&2
        exit 1
      fi
      sleep 0.2
    done
  done <<<"$lines"
  echo "$lines"
}

down() {
  local dir="${1:-}"
  local pidfile
  # Without DIR: every cluster `up` started under ./cluster.
  local pattern="$dir/*/pid"
  [ -n "$dir" ] || pattern="$PWD/cluster/*/*/pid"
  # SIGTERM to every node first (they stop together), then wait for each, 5 s at most.
  # Only a process whose command line names the node's data directory is signalled.
  local stopping=()
  for pidfile in $pattern; do
    [ -f "$pidfile" ] || continue
    local pid node; pid="$(cat "$pidfile")"
    node="$(cd "$(dirname "$pidfile")" && pwd)"
    if ours "$pid" "$node/data"; then
      kill -TERM "$pid" 2>/dev/null || true
      stopping+=("$pid:$node/data")
    fi
    rm -f "$pidfile"
  done
  local entry
  for entry in "${stopping[@]+"${stopping[@]}"}"; do
    local pid="${entry%%:*}" data="${entry#*:}"
    for _ in $(seq 50); do ours "$pid" "$data" || break; sleep 0.1; done
    if ours "$pid" "$data"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) echo "usage: $0 up TOPOLOGY [DIR] | down [DIR]" >&2; exit 2 ;;
esac
