#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Issue 3's performance figures in one run, one target after the other, in rounds:
#   1. installs redis-server and redis-tools with apt if missing; builds `meridian` (release)
#      unless SKIP_BUILD;
#   2. redis-server (appendonly yes, appendfsync everysec), then one Meridian node, then a
#      three-node region (config/region-3.toml with its ports replaced by free ones, started
#      with config/local-cluster.sh); each is stopped before the next starts;
#   3. against each target — redis, single, the region's leader, one of its followers — and
#      each pipeline depth: `redis-benchmark --csv -t set,get -c 50 -n $N -r 100000 -d 64 -P p`;
#      then, against redis, single and the leader, a `-t get` run once the servers are idle
#      ("GET, settled": without the work the SETs left behind, which in a region of three
#      nodes on these two cores is three nodes' write-back, flushes and compactions), and a
#      `-t set` run at the first depth over the keys those runs wrote ("SET, keys existing":
#      the first SET run, on fresh servers, writes each of the -r keys new once, at the
#      defaults about a third of its requests, which costs a region three times);
#   4. repeats 2-3 $BENCH_ROUNDS times with fresh servers (this machine's speed drifts by ±20 %
#      within minutes, so one run proves little);
#   5. prints a markdown table (median rps, p50, p99 of the rounds, error replies) and the
#      ratios issue 3 asks for (of the medians, and each round's), and writes them
#      (figures.md), the raw CSVs and the logs under bench/results/;
#   6. stops everything it started (the region with `local-cluster.sh down`), also on failure.
#
# Environment (all optional):
#   BENCH_N=300000          requests per redis-benchmark test
#   BENCH_CLIENTS=50        connections (-c)
#   BENCH_KEYS=100000       key space (-r)
#   BENCH_DATA=64           value size (-d)
#   BENCH_PIPELINES="1 16"  pipeline depths (-P)
#   BENCH_ROUNDS=3          rounds (every target in each)
#   MERIDIAN_ARGS="..."     flags for the single node (default: the region's [server] settings,
#                           --appendfsync everysec --hot-cache-mb 256)
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
# The depth of the "SET, keys existing" run: the first one.
WARM_P=${PIPELINES%% *}
ROUNDS=${BENCH_ROUNDS:-3}
MERIDIAN_ARGS=${MERIDIAN_ARGS:---appendfsync everysec --hot-cache-mb 256}
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

# start_region ROUND: the three-node region on six free ports (its files in cluster-ROUND);
# sets LEADER_PORT and FOLLOWER_PORT.
start_region() {
  local topo=$WORK/region-3.toml old p name region addr port region_name=""
  cp "$TOPOLOGY" "$topo"
  for old in 7001 7002 7003 7101 7102 7103; do
    free_port
    p=$PORT
    sed -i "s/127\.0\.0\.1:$old\"/127.0.0.1:$p\"/" "$topo"
  done
  grep -qE '127\.0\.0\.1:7[01]0[123]"' "$topo" && die "a port of $TOPOLOGY was not replaced"
  CLUSTER_DIR=$WORK/cluster-$1
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
# Per round: RPS[target,test,P,round] (likewise P50, P99); ERRS[target,P] sums the rounds.
# After the rounds, RPS[target,test,P] (and P50, P99) hold the medians.
declare -A RPS P50 P99 ERRS SETTLE
NOTES=()

# errors PORT: the server's error replies so far.
errors() { info_field "$1" total_error_replies stats; }

# cpu_ticks PID...: the CPU time (user + system, in clock ticks) the processes used so far.
cpu_ticks() {
  local pid total=0 t
  for pid in "$@"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}

# wait_idle PID...: waits until the processes together have used at most 10 % of a core in
# each 200 ms for 1.4 s in a row (the work a write run left behind is done: the write-back of
# applied changes, which waits up to `write-back-ms`, 1 s, before it writes, then memtable
# flushes, compactions), 15 s at most; sets SETTLED_MS.
wait_idle() {
  local hz before after waited=0 quiet=0
  hz=$(getconf CLK_TCK)
  before=$(cpu_ticks "$@")
  while [ "$waited" -lt 15000 ] && [ "$quiet" -lt 1400 ]; do
    sleep 0.2
    waited=$((waited + 200))
    after=$(cpu_ticks "$@")
    if [ $(((after - before) * 1000 / hz)) -le 20 ]; then
      quiet=$((quiet + 200))
    else
      quiet=0
    fi
    before=$after
  done
  SETTLED_MS=$waited
}

# bench TARGET PORT ROUND [PID...]: redis-benchmark at every pipeline depth; fills
# RPS/P50/P99/ERRS. With the server's PIDs, each depth also gets a GET run after the servers
# have gone idle (test GET_SETTLED): the GET right after the SET run shares the cores with the
# work the SETs left behind, in a region on three nodes.
bench() {
  local target=$1 port=$2 r=$3 p f e0 e1 t
  shift 3
  for p in $PIPELINES; do
    f="$OUT/$target-P$p-r$r.csv"
    log "round $r: redis-benchmark -> $target (port $port), -P $p, -n $N"
    e0=$(errors "$port")
    redis_bench "$port" "$p" "$f" "$OUT/$target-P$p-r$r.err" \
      || die "redis-benchmark against $target failed: $(tail -n 3 "$OUT/$target-P$p-r$r.err")"
    e1=$(errors "$port")
    for t in SET GET; do
      RPS[$target,$t,$p,$r]=$(csv "$f" "$t" rps)
      P50[$target,$t,$p,$r]=$(csv "$f" "$t" p50_latency_ms)
      P99[$target,$t,$p,$r]=$(csv "$f" "$t" p99_latency_ms)
      [ -n "${RPS[$target,$t,$p,$r]}" ] || die "no $t row in $f"
    done
    ERRS[$target,$p]=$((${ERRS[$target,$p]:-0} + e1 - e0))
    [ $# -gt 0 ] || continue
    wait_idle "$@"
    SETTLE[$target,$p,$r]=$SETTLED_MS
    f="$OUT/$target-P$p-r$r-settled.csv"
    log "round $r: redis-benchmark -> $target, -P $p, GET after ${SETTLED_MS} ms of settling"
    redis_bench "$port" "$p" "$f" "$OUT/$target-P$p-r$r-settled.err" get \
      || die "redis-benchmark against $target failed: $(tail -n 3 "$OUT/$target-P$p-r$r-settled.err")"
    RPS[$target,GET_SETTLED,$p,$r]=$(csv "$f" GET rps)
    P50[$target,GET_SETTLED,$p,$r]=$(csv "$f" GET p50_latency_ms)
    P99[$target,GET_SETTLED,$p,$r]=$(csv "$f" GET p99_latency_ms)
    [ -n "${RPS[$target,GET_SETTLED,$p,$r]}" ] || die "no GET row in $f"
  done
  [ $# -gt 0 ] || return 0
  # SETs again, of keys that exist now, with the servers idle after the GET run.
  p=$WARM_P
  f="$OUT/$target-P$p-r$r-keys-existing.csv"
  log "round $r: redis-benchmark -> $target, -P $p, SET over existing keys"
  e0=$(errors "$port")
  redis_bench "$port" "$p" "$f" "$OUT/$target-P$p-r$r-keys-existing.err" set \
    || die "redis-benchmark against $target failed: $(tail -n 3 "$OUT/$target-P$p-r$r-keys-existing.err")"
  e1=$(errors "$port")
  ERRS[$target,$p]=$((${ERRS[$target,$p]:-0} + e1 - e0))
  RPS[$target,SET_EXISTING,$p,$r]=$(csv "$f" SET rps)
  P50[$target,SET_EXISTING,$p,$r]=$(csv "$f" SET p50_latency_ms)
  P99[$target,SET_EXISTING,$p,$r]=$(csv "$f" SET p99_latency_ms)
  [ -n "${RPS[$target,SET_EXISTING,$p,$r]}" ] || die "no SET row in $f"
}

# take_medians: RPS/P50/P99[target,test,P] = the median over the rounds.
take_medians() {
  local target t p r rps p50 p99
  for target in redis single leader follower; do
    for p in $PIPELINES; do
      for t in SET GET GET_SETTLED SET_EXISTING; do
        [ -n "${RPS[$target,$t,$p,1]:-}" ] || continue
        rps="" p50="" p99=""
        for r in $(seq "$ROUNDS"); do
          rps+=" ${RPS[$target,$t,$p,$r]}"
          p50+=" ${P50[$target,$t,$p,$r]}"
          p99+=" ${P99[$target,$t,$p,$r]}"
        done
        RPS[$target,$t,$p]=$(echo "$rps" | median)
        P50[$target,$t,$p]=$(echo "$p50" | median)
        P99[$target,$t,$p]=$(echo "$p99" | median)
      done
    done
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
meets() { awk -v r="$1" -v t="$2" 'BEGIN { if (t == "") print "-"; else if (r >= t) print "yes"; else print "**no**" }'; }

# ratio_row LABEL A_TARGET B_TARGET TEST P MIN: one row of the ratio table (of the medians,
# then each round's ratio).
ratio_row() {
  local r rounds="" i
  r=$(ratio "${RPS[$2,$4,$5]}" "${RPS[$3,$4,$5]}")
  for i in $(seq "$ROUNDS"); do
    rounds+="${rounds:+ / }$(ratio "${RPS[$2,$4,$5,$i]}" "${RPS[$3,$4,$5,$i]}")"
  done
  echo "| $1 | $5 | $r | $rounds | ${6:+≥ $6} | $(meets "$r" "$6") |"
}

report() {
  local target t t_name p r rounds
  echo "## Performance: redis-server, one Meridian node, a three-node region"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(cpu_model)),"
  echo "$(versions);"
  echo "\`redis-benchmark -t set,get -c $CLIENTS -n $N -r $KEYS -d $DATA\`, one target after the other,"
  echo "$ROUNDS rounds with fresh servers: medians of the rounds;"
  echo "redis-server: appendonly yes, appendfsync everysec; single: \`meridian $MERIDIAN_ARGS\`;"
  echo "region: config/region-3.toml (three voters, appendfsync everysec, hot-cache-mb 256) on free"
  echo "ports, leader $LEADER_NAME, follower $FOLLOWER_NAME. Clients and servers share this machine's cores."
  echo "${IDLE_NOTE^}."
  echo
  echo "| target | test | -P | rps (median) | rps per round | p50 ms | p99 ms | error replies |"
  echo "|---|---|---|---|---|---|---|---|"
  for target in redis single leader follower; do
    for p in $PIPELINES; do
      for t in SET GET GET_SETTLED SET_EXISTING; do
        [ -n "${RPS[$target,$t,$p,1]:-}" ] || continue
        rounds=""
        for r in $(seq "$ROUNDS"); do
          rounds+="${rounds:+ / }$(printf '%.0f' "${RPS[$target,$t,$p,$r]}")"
        done
        t_name=${t/GET_SETTLED/GET, settled}
        echo "| $target | ${t_name/SET_EXISTING/SET, keys existing} | $p | $(printf '%.0f' "${RPS[$target,$t,$p]}") | $rounds | ${P50[$target,$t,$p]} | ${P99[$target,$t,$p]} | ${ERRS[$target,$p]} |"
      done
    done
  done
  echo
  echo "| ratio (rps) | -P | of the medians | per round | target | meets |"
  echo "|---|---|---|---|---|---|"
  for p in $PIPELINES; do
    ratio_row "single / redis, SET" single redis SET "$p" 0.8
    ratio_row "single / redis, GET" single redis GET "$p" 1.0
    ratio_row "leader (3 nodes) / single, SET" leader single SET "$p" 0.5
    ratio_row "leader (3 nodes) / single, GET" leader single GET "$p" 1.0
    ratio_row "leader (3 nodes) / single, GET, settled" leader single GET_SETTLED "$p" 1.0
    ratio_row "single / redis, GET, settled" single redis GET_SETTLED "$p" ""
    ratio_row "follower / leader, SET" follower leader SET "$p" ""
    ratio_row "follower / leader, GET" follower leader GET "$p" ""
  done
  ratio_row "single / redis, SET, keys existing" single redis SET_EXISTING "$WARM_P" 0.8
  ratio_row "leader (3 nodes) / single, SET, keys existing" leader single SET_EXISTING "$WARM_P" 0.5
  echo
  echo "\"GET, settled\": a \`-t get\` run after the servers went idle (at most 10 % of a core in"
  echo "each 200 ms for 1.4 s in a row, 15 s at most) following the SET and GET runs; settling took"
  echo "(ms, each round):"
  for target in redis single leader; do
    for p in $PIPELINES; do
      rounds=""
      for r in $(seq "$ROUNDS"); do
        rounds+="${rounds:+ / }${SETTLE[$target,$p,$r]:-?}"
      done
      echo "$target -P $p: $rounds;"
    done
  done
  echo
  echo "\"SET, keys existing\": a \`-t set\` run at -P $WARM_P after the settled GET run, over the -r keys"
  echo "the runs before it wrote (the first SET run, on fresh servers, writes each key new once)."
  if [ ${#NOTES[@]} -gt 0 ]; then
    echo
    printf -- '- %s\n' "${NOTES[@]}"
  fi
}

main() {
  install_deps redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools
  build_meridian
  check_idle
  mkdir -p "$OUT"
  make_work cluster
  log "results in $OUT"

  local r
  for r in $(seq "$ROUNDS"); do
    free_port
    start_redis "$WORK/redis-$r" "$PORT" "$WORK/redis-$r/redis.log"
    bench redis "$PORT" "$r" "$SERVER_PID"
    stop_pids "$SERVER_PID"

    free_port
    start_meridian "$WORK/single-$r" "$PORT" "$WORK/single-$r/meridian.log"
    bench single "$PORT" "$r" "$SERVER_PID"
    stop_pids "$SERVER_PID"

    start_region "$r"
    FIRST_TERM=""
    leader_check "before the runs (round $r)"
    # shellcheck disable=SC2046 # one PID per word
    bench leader "$LEADER_PORT" "$r" $(cat "$CLUSTER_DIR"/*/pid)
    leader_check "during the leader runs (round $r)"
    bench follower "$FOLLOWER_PORT" "$r"
    leader_check "during the follower runs (round $r)"
    stop_cluster
  done
  take_medians

  report >"$OUT/figures.md"
  echo
  cat "$OUT/figures.md"
  echo
  log "wrote $OUT/figures.md (CSVs and logs beside it)"
}

main "$@"
