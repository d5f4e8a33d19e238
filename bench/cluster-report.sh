#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Issue 3's performance figures in one run, one target after the other:
#   1. installs redis-server and redis-tools with apt if missing; builds `meridian` (release)
#      unless SKIP_BUILD;
#   2. redis-server (appendonly yes, appendfsync everysec), then one Meridian node, then a
#      three-node region (config/region-3.toml with its ports replaced by free ones, started
#      with config/local-cluster.sh); each is stopped before the next starts;
#   3. against each target — redis, single, the region's leader, one of its followers — and
#      each pipeline depth: `redis-benchmark --csv -t set,get -c 50 -n $N -r 100000 -d 64 -P p`;
#   4. prints a markdown table (rps, p50, p99, error replies) and the ratios issue 3 asks for,
#      and writes them (figures.md), the raw CSVs and the logs under bench/results/;
#   5. stops everything it started (the region with `local-cluster.sh down`), also on failure.
#
# Environment (all optional):
#   BENCH_N=300000          requests per redis-benchmark test
#   BENCH_CLIENTS=50        connections (-c)
#   BENCH_KEYS=100000       key space (-r)
#   BENCH_DATA=64           value size (-d)
#   BENCH_PIPELINES="1 16"  pipeline depths (-P)
#   MERIDIAN_ARGS="..."     flags for the single node (default: the region's [server] settings,
#                           --appendfsync everysec --hot-cache-mb 64)
#   BENCH_OUT=DIR           output directory (default bench/results/<timestamp>-cluster)
#   SKIP_BUILD=1            use the binary already built
#   CARGO_TARGET_DIR        as tests/target-dir.sh picks it (default /work/target if present)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
N=${BENCH_N:-300000}
CLIENTS=${BENCH_CLIENTS:-50}
KEYS=${BENCH_KEYS:-100000}
DATA=${BENCH_DATA:-64}
PIPELINES=${BENCH_PIPELINES:-"1 16"}
MERIDIAN_ARGS=${MERIDIAN_ARGS:---appendfsync everysec --hot-cache-mb 64}
OUT=${BENCH_OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-cluster}
TOPOLOGY=$ROOT/config/region-3.toml
CLUSTER_SH=$ROOT/config/local-cluster.sh

# shellcheck source=lib.sh
. "$HERE/lib.sh"
use_target_dir
MERIDIAN_BIN=$CARGO_TARGET_DIR/release/meridian
cleanup_on_exit

# ---------------------------------------------------------------- the region we started
CLUSTER_DIR=""
# stop_cluster: `local-cluster.sh down` on the region, if one is up.
stop_cluster() {
  [ -n "$CLUSTER_DIR" ] || return 0
  "$CLUSTER_SH" down "$CLUSTER_DIR" || log "local-cluster.sh down failed"
  CLUSTER_DIR=""
}
ON_CLEANUP+=(stop_cluster)
# Keep the nodes' logs (<work>/cluster/<node>/node.log) as <node>-node.log.
LOG_DEPTH=3
LOG_PREFIX_DIR=1

# ---------------------------------------------------------------- setup
# raft PORT FIELD: a field of MERIDIAN RAFT (a flat map: key line, value line).
raft() { redis-cli -p "$1" MERIDIAN RAFT | awk -v f="$2" 'p == f { print; exit } { p = $0 }'; }

# start_region: the three-node region on six free ports; sets LEADER_PORT and FOLLOWER_PORT.
start_region() {
  local topo=$WORK/region-3.toml old p name region addr port region_name=""
  cp "$TOPOLOGY" "$topo"
  for old in 7001 7002 7003 7101 7102 7103; do
    free_port
    p=$PORT
    sed -i "s/127\.0\.0\.1:$old\"/127.0.0.1:$p\"/" "$topo"
  done
  grep -qE '127\.0\.0\.1:7[01]0[123]"' "$topo" && die "a port of $TOPOLOGY was not replaced"
  CLUSTER_DIR=$WORK/cluster
  if ! MERIDIAN_BIN=$MERIDIAN_BIN "$CLUSTER_SH" up "$topo" "$CLUSTER_DIR" \
    >"$OUT/cluster-up.txt" 2>"$OUT/cluster-up.err"; then
    tail -n 20 "$OUT/cluster-up.err" >&2
    die "local-cluster.sh up failed (node logs: $OUT/logs after cleanup)"
  fi
  LEADER_PORT=""
  FOLLOWER_PORT=""
  while read -r name region addr; do
    port=${addr##*:}
    region_name=$region
    case $(raft "$port" role) in
      leader) LEADER_PORT=$port; LEADER_NAME=$name ;;
      follower) [ -n "$FOLLOWER_PORT" ] || { FOLLOWER_PORT=$port; FOLLOWER_NAME=$name; } ;;
    esac
  done <"$OUT/cluster-up.txt"
  if [ -z "$LEADER_PORT" ] || [ -z "$FOLLOWER_PORT" ]; then
    die "no leader/follower found: $(cat "$OUT/cluster-up.txt")"
  fi
  log "region $region_name: leader $LEADER_NAME on $LEADER_PORT, follower $FOLLOWER_NAME on $FOLLOWER_PORT"
  probe_follower
}

# probe_follower: a SET through the follower is readable on the leader and the follower.
probe_follower() {
  local v="probe-$$-$RANDOM" got
  got=$(redis-cli -p "$FOLLOWER_PORT" SET bench:probe "$v")
  [ "$got" = OK ] || die "SET through the follower answered: $got"
  got=$(redis-cli -p "$LEADER_PORT" GET bench:probe)
  [ "$got" = "$v" ] || die "leader GET after a follower SET answered: $got"
  got=$(redis-cli -p "$FOLLOWER_PORT" GET bench:probe)
  [ "$got" = "$v" ] || die "follower GET after its own SET answered: $got"
}

# ---------------------------------------------------------------- measurements
declare -A RPS P50 P99 ERRS
NOTES=()

# errors PORT: the server's error replies so far.
errors() { info_field "$1" total_error_replies stats; }

# bench TARGET PORT: redis-benchmark at every pipeline depth; fills RPS/P50/P99/ERRS.
bench() {
  local target=$1 port=$2 p f e0 e1 t
  for p in $PIPELINES; do
    f="$OUT/$target-P$p.csv"
    log "redis-benchmark -> $target (port $port), -P $p, -n $N"
    e0=$(errors "$port")
    redis_bench "$port" "$p" "$f" "$OUT/$target-P$p.err" \
      || die "redis-benchmark against $target failed: $(tail -n 3 "$OUT/$target-P$p.err")"
    e1=$(errors "$port")
    for t in SET GET; do
      RPS[$target,$t,$p]=$(csv "$f" "$t" rps)
      P50[$target,$t,$p]=$(csv "$f" "$t" p50_latency_ms)
      P99[$target,$t,$p]=$(csv "$f" "$t" p99_latency_ms)
      [ -n "${RPS[$target,$t,$p]}" ] || die "no $t row in $f"
    done
    ERRS[$target,$p]=$((e1 - e0))
  done
}

# leader_check WHEN: records the term and leader; notes a change since the first check.
leader_check() {
  local id term
  id=$(raft "$LEADER_PORT" leader_id)
  term=$(raft "$LEADER_PORT" term)
  if [ -z "${FIRST_TERM:-}" ]; then
    FIRST_TERM=$term FIRST_LEADER=$id
  elif [ "$term" != "$FIRST_TERM" ] || [ "$id" != "$FIRST_LEADER" ]; then
    NOTES+=("leader changed $1: term $FIRST_TERM leader $FIRST_LEADER -> term $term leader $id")
    log "${NOTES[-1]}"
  fi
}

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
meets() { awk -v r="$1" -v t="$2" 'BEGIN { if (t == "") print "-"; else if (r >= t) print "yes"; else print "**no**" }'; }

# ratio_row LABEL A_TARGET B_TARGET TEST P MIN: one row of the ratio table.
ratio_row() {
  local r
  r=$(ratio "${RPS[$2,$4,$5]}" "${RPS[$3,$4,$5]}")
  echo "| $1 | $5 | $r | ${6:+≥ $6} | $(meets "$r" "$6") |"
}

report() {
  local target t p
  echo "## Performance: redis-server, one Meridian node, a three-node region"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(cpu_model)),"
  echo "$(versions);"
  echo "\`redis-benchmark -t set,get -c $CLIENTS -n $N -r $KEYS -d $DATA\`, one target after the other;"
  echo "redis-server: appendonly yes, appendfsync everysec; single: \`meridian $MERIDIAN_ARGS\`;"
  echo "region: config/region-3.toml (three voters, appendfsync everysec, hot-cache-mb 64) on free"
  echo "ports, leader $LEADER_NAME, follower $FOLLOWER_NAME. Clients and servers share this machine's cores."
  echo
  echo "| target | test | -P | rps | p50 ms | p99 ms | error replies |"
  echo "|---|---|---|---|---|---|---|"
  for target in redis single leader follower; do
    for p in $PIPELINES; do
      for t in SET GET; do
        echo "| $target | $t | $p | $(printf '%.0f' "${RPS[$target,$t,$p]}") | ${P50[$target,$t,$p]} | ${P99[$target,$t,$p]} | ${ERRS[$target,$p]} |"
      done
    done
  done
  echo
  echo "| ratio (rps) | -P | value | target | meets |"
  echo "|---|---|---|---|---|"
  for p in $PIPELINES; do
    ratio_row "single / redis, SET" single redis SET "$p" 0.8
    ratio_row "single / redis, GET" single redis GET "$p" 1.0
    ratio_row "leader (3 nodes) / single, SET" leader single SET "$p" 0.5
    ratio_row "leader (3 nodes) / single, GET" leader single GET "$p" 1.0
    ratio_row "follower / leader, SET" follower leader SET "$p" ""
    ratio_row "follower / leader, GET" follower leader GET "$p" ""
  done
  if [ ${#NOTES[@]} -gt 0 ]; then
    echo
    printf -- '- %s\n' "${NOTES[@]}"
  fi
}

main() {
  install_deps redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools
  build_meridian
  mkdir -p "$OUT"
  make_work cluster
  log "results in $OUT"

  free_port
  start_redis "$WORK/redis" "$PORT" "$WORK/redis/redis.log"
  bench redis "$PORT"
  stop_pids "$SERVER_PID"

  free_port
  start_meridian "$WORK/single" "$PORT" "$WORK/single/meridian.log"
  bench single "$PORT"
  stop_pids "$SERVER_PID"

  start_region
  leader_check "before the runs"
  bench leader "$LEADER_PORT"
  leader_check "during the leader runs"
  bench follower "$FOLLOWER_PORT"
  leader_check "during the follower runs"
  stop_cluster

  report >"$OUT/figures.md"
  echo
  cat "$OUT/figures.md"
  echo
  log "wrote $OUT/figures.md (CSVs and logs beside it)"
}

main "$@"
