#!/usr/bin/env bash
# How long a follower takes to catch up after a partition heals, in rounds:
#   1. starts config/region-3.toml with config/local-cluster.sh (its fixed ports 7001-7003 and
#      7101-7103 must be free; certificates, data and logs under a temporary directory);
#   2. each round cuts one follower off both ways (`MERIDIAN WAN SET <node> PARTITION` on all
#      three nodes), INCRs a key on the leader every 50 ms for CUT_S seconds, heals
#      (`MERIDIAN WAN CLEAR`) and prints the time until the follower's `applied_index` reaches
#      the leader's `commit_index` at the heal;
#   3. stops the region (also on failure).
# Usage: bench/partition-recovery.sh [CUT_S=5] [ROUNDS=6]
# Environment: MERIDIAN_BIN (default: the release binary as local-cluster.sh finds it);
#   KEEP=1 leaves the region running and its directory (logs) in place.
set -euo pipefail

CUT=${1:-5}
ROUNDS=${2:-6}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DIR=$(mktemp -d /tmp/meridian-partition.XXXXXX)
[ -n "${KEEP:-}" ] || trap '"$ROOT/config/local-cluster.sh" down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

"$ROOT/config/local-cluster.sh" up "$ROOT/config/region-3.toml" "$DIR" >"$DIR/up.out" 2>&1 || {
  cat "$DIR/up.out" >&2
  exit 1
}
ms() { echo $(($(date +%s%N) / 1000000)); }
# raft PORT FIELD: a field of MERIDIAN RAFT (a flat map: key line, value line).
raft() { redis-cli -p "$1" MERIDIAN RAFT | awk -v f="$2" 'p == f { print; exit } { p = $0 }'; }
LEADER="" FOLLOWER=""
for port in 7001 7002 7003; do
  case $(raft "$port" role) in
    leader) LEADER=$port ;;
    follower) FOLLOWER=$port ;;
  esac
done
[ -n "$LEADER" ] && [ -n "$FOLLOWER" ] || { echo "no leader or follower" >&2; exit 1; }
CUT_NODE=n$((FOLLOWER - 7000))
OTHERS=()
for port in 7001 7002 7003; do [ "$port" = "$FOLLOWER" ] || OTHERS+=("$port"); done
echo "leader :$LEADER, follower $CUT_NODE (:$FOLLOWER) cut off for ${CUT}s per round"

for round in $(seq "$ROUNDS"); do
  for port in "${OTHERS[@]}"; do
    redis-cli -p "$FOLLOWER" MERIDIAN WAN SET "n$((port - 7000))" PARTITION >/dev/null
    redis-cli -p "$port" MERIDIAN WAN SET "$CUT_NODE" PARTITION >/dev/null
  done
  end=$(($(ms) + CUT * 1000))
  while [ "$(ms)" -lt "$end" ]; do
    redis-cli -p "$LEADER" INCR partition-recovery >/dev/null
    sleep 0.05
  done
  target=$(raft "$LEADER" commit_index)
  for port in "${OTHERS[@]}" "$FOLLOWER"; do redis-cli -p "$port" MERIDIAN WAN CLEAR >/dev/null; done
  healed=$(ms)
  outcome=""
  while :; do
    applied=$(raft "$FOLLOWER" applied_index)
    if [ -n "$applied" ] && [ "$applied" -ge "$target" ]; then
      outcome="caught up in $(($(ms) - healed)) ms"
      break
    fi
    if [ $(($(ms) - healed)) -gt 30000 ]; then
      outcome="NOT caught up after 30 s (applied $applied of $target)"
      break
    fi
    sleep 0.02
  done
  echo "round $round: $outcome (leader's commit index $target, follower's term $(raft "$FOLLOWER" term))"
  sleep 1
done
