#!/usr/bin/env bash
# Linearizable reads over jittery links inside a region: how many are refused.
#   1. starts config/region-3.toml with config/local-cluster.sh (its fixed ports 7001-7003 and
#      7101-7103 must be free; certificates, data and logs under a temporary directory);
#   2. shapes every link between the nodes (`MERIDIAN WAN SET <node> DELAY 20 JITTER 15` on all
#      three: 5-35 ms each way, so some AppendEntries outlast openraft's one-heartbeat deadline);
#   3. for SECS seconds, one redis-cli loop per node sends `GET k` (a linearizable read: the
#      leader's from its lease or a read-index round, the followers' through a read-index
#      round) and prints per node how many were answered and how many refused;
#   4. stops the region (also on failure).
# Usage: bench/jittery-reads.sh [SECS=30]
# Environment: MERIDIAN_BIN (default: the release binary as local-cluster.sh finds it);
#   WAN (default "DELAY 20 JITTER 15").
set -euo pipefail

SECS=${1:-30}
WAN=${WAN:-DELAY 20 JITTER 15}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DIR=$(mktemp -d /tmp/meridian-jitter.XXXXXX)
trap '"$ROOT/config/local-cluster.sh" down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

"$ROOT/config/local-cluster.sh" up "$ROOT/config/region-3.toml" "$DIR" >"$DIR/nodes" 2>"$DIR/up.log" || { cat "$DIR/up.log" >&2; exit 1; }
names=$(awk '{print $1}' "$DIR/nodes")
ports=$(awk '{n = split($3, a, ":"); print a[n]}' "$DIR/nodes")
redis-cli -p "$(echo "$ports" | head -1)" SET k v >/dev/null
for p in $ports; do
  for n in $names; do
    # shellcheck disable=SC2086 # WAN is a list of words
    [ "$(redis-cli -p "$p" MERIDIAN WAN SET "$n" $WAN)" = OK ] || { echo "WAN SET failed" >&2; exit 1; }
  done
done
echo "links: $WAN; ${SECS}s of GET per node"
for p in $ports; do
  (
    end=$((SECONDS + SECS)) ok=0 refused=0
    while [ $SECONDS -lt $end ]; do
      out=$(redis-cli -p "$p" GET k 2>&1)
      if [ "$out" = v ]; then ok=$((ok + 1)); else refused=$((refused + 1)); echo "$out" >>"$DIR/errors.$p"; fi
    done
    role=$(redis-cli -p "$p" MERIDIAN RAFT | awk 'p=="role"{print; exit} {p=$0}')
    echo "port $p ($role): answered $ok, refused $refused"
  ) &
done
wait
cat "$DIR"/errors.* 2>/dev/null | sort | uniq -c | sed 's/^/  refusal: /' || true
