#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Reproduces the README's performance section end to end:
#   1. installs redis-server, redis-tools (redis-benchmark, redis-cli), jq and libclang-dev
#      with apt if any is missing;
#   2. builds `meridian` and `meridian-bench` in release mode;
#   3. starts a redis-server (appendonly yes, appendfsync everysec) and a single Meridian node,
#      each on a free loopback port with its data in a temp dir;
#   4. runs redis-benchmark (-t set,get) at each pipeline depth against each server, one after
#      the other, $BENCH_ROUNDS times (the table gives the medians and each round's ratio:
#      this machine's speed drifts by ±20 % within minutes), then meridian-bench (compare
#      mode, once: SET only, GET only, and a 9:1 zipf mix);
#   5. prints a markdown table (rps, p99, ratio meridian/redis) and writes it, the raw
#      outputs, the JSON reports and the SVG plots under bench/results/<timestamp>/;
#   6. stops everything it started (also on Ctrl-C or failure).
#
# Environment (all optional):
#   BENCH_N=1000000          requests per redis-benchmark test and per meridian-bench run
#   BENCH_CLIENTS=50         connections (-c)
#   BENCH_KEYS=100000        key space (-r)
#   BENCH_DATA=64            value size in bytes (-d)
#   BENCH_PIPELINES="1 16"   pipeline depths (-P)
#   BENCH_ROUNDS=3           redis-benchmark rounds (both servers in each)
#   BENCH_TIMEOUT_S=600      a redis-benchmark run is killed after this many seconds (and the
#                            report stops): it spins forever once its server is gone
#   BENCH_OUT=DIR            output directory (default bench/results/<timestamp>)
#   BENCH_B=meridian         the second server: `meridian`, or `redis` (a second redis-server,
#                            to try the script without a meridian binary)
#   MERIDIAN_ARGS="..."      extra flags for `meridian` (default: --appendfsync everysec)
#   SKIP_BUILD=1             use the binaries already built
#   BENCH_MAX_BUSY=10        warn when the machine is busier than this (%) before the run
#   BENCH_REQUIRE_IDLE=1     stop instead of warning
#   CARGO_TARGET_DIR         as tests/target-dir.sh picks it (default /work/target if present,
#                            else ./target)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
N=${BENCH_N:-1000000}
CLIENTS=${BENCH_CLIENTS:-50}
KEYS=${BENCH_KEYS:-100000}
DATA=${BENCH_DATA:-64}
PIPELINES=${BENCH_PIPELINES:-"1 16"}
ROUNDS=${BENCH_ROUNDS:-3}
B_KIND=${BENCH_B:-meridian}
MERIDIAN_ARGS=${MERIDIAN_ARGS:---appendfsync everysec}
OUT=${BENCH_OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}

# shellcheck source=lib.sh
. "$HERE/lib.sh"
use_target_dir
TARGET=$CARGO_TARGET_DIR
BENCH_BIN=$TARGET/release/meridian-bench
MERIDIAN_BIN=$TARGET/release/meridian
cleanup_on_exit

# ---------------------------------------------------------------- setup
build() {
  if [ -n "${SKIP_BUILD:-}" ]; then
    log "SKIP_BUILD set: using binaries in $TARGET/release"
  elif [ "$B_KIND" = meridian ]; then
    cargo_build "building (release, target dir $TARGET)" meridian-bench meridian-server
  else
    cargo_build "building (release, target dir $TARGET)" meridian-bench
  fi
  [ -x "$BENCH_BIN" ] || die "$BENCH_BIN missing"
  if [ "$B_KIND" = meridian ]; then
    [ -x "$MERIDIAN_BIN" ] || die "$MERIDIAN_BIN missing (or run with BENCH_B=redis)"
  fi
}

# ---------------------------------------------------------------- measurements
ROWS=()
# row TOOL TEST PIPELINE A_RPS B_RPS A_P99 B_P99 NOTE
row() {
  local r
  r=$(ratio "$5" "$4")
  ROWS+=("| $1 | $2 | $3 | $(fmt "$4") | $(fmt "$5") | $r | $(ms "$6") | $(ms "$7") | $8 |")
}
fmt() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
ms() { awk -v x="$1" 'BEGIN { if (x == "-") print x; else printf "%.3f", x }'; }

# redis_benchmark NAME PORT PIPELINE ROUND: CSV into $OUT/redis-benchmark-NAME-P<p>-r<round>.csv
redis_benchmark() {
  local name=$1 port=$2 p=$3 r=$4
  log "round $r: redis-benchmark -> $name, -P $p, -n $N"
  redis_bench "$port" "$p" "$OUT/redis-benchmark-$name-P$p-r$r.csv" \
    "$OUT/redis-benchmark-$name-P$p-r$r.err"
}

# rb_rows: the redis-benchmark rows, medians of the rounds; the note gives each round's ratio.
rb_rows() {
  local p t r fa fb a_rps b_rps a_p99 b_p99 ratios
  for p in $PIPELINES; do
    for t in SET GET; do
      a_rps="" b_rps="" a_p99="" b_p99="" ratios=""
      for r in $(seq "$ROUNDS"); do
        fa="$OUT/redis-benchmark-redis-server-P$p-r$r.csv"
        fb="$OUT/redis-benchmark-$B_LABEL-P$p-r$r.csv"
        a_rps+=" $(csv "$fa" $t rps)" b_rps+=" $(csv "$fb" $t rps)"
        a_p99+=" $(csv "$fa" $t p99_latency_ms)" b_p99+=" $(csv "$fb" $t p99_latency_ms)"
        ratios+="${ratios:+ / }$(ratio "$(csv "$fb" $t rps)" "$(csv "$fa" $t rps)")"
      done
      row redis-benchmark "$t" "$p" "$(echo "$a_rps" | median)" "$(echo "$b_rps" | median)" \
        "$(echo "$a_p99" | median)" "$(echo "$b_p99" | median)" "medians of $ROUNDS rounds; per round: $ratios"
    done
  done
}

# mbench NAME ARGS...: meridian-bench compare; JSON + plots as $OUT/NAME.json; exit status kept.
mbench() {
  local name=$1 rc=0
  shift
  log "meridian-bench $name"
  "$BENCH_BIN" compare --a "127.0.0.1:$A_PORT" --a-label redis-server \
    --b "127.0.0.1:$B_PORT" --b-label "$B_LABEL" \
    -c "$CLIENTS" -r "$KEYS" -d "$DATA" -n "$N" -q --json "$OUT/$name.json" "$@" \
    >"$OUT/$name.txt" 2>"$OUT/$name.err" || rc=$?
  cat "$OUT/$name.txt"
  return $rc
}

# mrow NAME TEST PIPELINE RC: a table row from a compare JSON (op ALL).
mrow() {
  local f="$OUT/$1.json" note=""
  case $4 in
    0) ;;
    1) note="server errors: see $1.txt" ;;
    *) row meridian-bench "$2" "$3" 0 0 - - "bench failed: see $1.err"; return ;;
  esac
  row meridian-bench "$2" "$3" \
    "$(jq '.a.total.rps' "$f")" "$(jq '.b.total.rps' "$f")" \
    "$(jq '.a.total.latency_ms.p99' "$f")" "$(jq '.b.total.latency_ms.p99' "$f")" "$note"
}

main() {
  install_deps redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools jq:jq
  build
  check_idle
  mkdir -p "$OUT"
  make_work perf

  free_port
  A_PORT=$PORT
  start_redis "$WORK/redis" "$A_PORT" "$WORK/redis/redis-$A_PORT.log"
  free_port
  B_PORT=$PORT
  if [ "$B_KIND" = redis ]; then
    B_LABEL="redis-server-2"
    start_redis "$WORK/redis2" "$B_PORT" "$WORK/redis2/redis-$B_PORT.log"
  else
    B_LABEL="meridian"
    start_meridian "$WORK/meridian" "$B_PORT" "$WORK/meridian/meridian-$B_PORT.log"
  fi
  log "redis-server on $A_PORT, $B_LABEL on $B_PORT; results in $OUT"

  local p r rc
  for r in $(seq "$ROUNDS"); do
    for p in $PIPELINES; do
      redis_benchmark redis-server "$A_PORT" "$p" "$r"
      redis_benchmark "$B_LABEL" "$B_PORT" "$p" "$r"
    done
  done
  rb_rows
  for p in $PIPELINES; do
    rc=0; mbench "set-P$p" -P "$p" --ratio 0:1 || rc=$?; mrow "set-P$p" SET "$p" $rc
    rc=0; mbench "get-P$p" -P "$p" --ratio 1:0 || rc=$?; mrow "get-P$p" GET "$p" $rc
  done
  local last=${PIPELINES##* }
  rc=0
  mbench "mix-zipf-P$last" -P "$last" --ratio 9:1 --dist zipf --zipf-exponent 0.99 --preload || rc=$?
  mrow "mix-zipf-P$last" "GET:SET 9:1 zipf 0.99" "$last" $rc

  {
    echo "## Performance: $B_LABEL vs redis-server"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(cpu_model)),"
    echo "$(versions);"
    echo "-c $CLIENTS -n $N -r $KEYS -d $DATA; redis-server with appendonly yes, appendfsync everysec;"
    if [ "$B_KIND" = meridian ]; then
      echo "meridian: one node, \`${MERIDIAN_ARGS:-default flags}\`; clients and servers share this machine's cores."
    else
      echo "$B_LABEL: a second redis-server, same settings (dry run without meridian)."
    fi
    echo "${IDLE_NOTE^}."
    echo
    echo "| tool | test | -P | redis-server rps | $B_LABEL rps | $B_LABEL/redis | redis p99 ms | $B_LABEL p99 ms | note |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
  } >"$OUT/summary.md"
  echo
  cat "$OUT/summary.md"
  echo
  log "wrote $OUT/summary.md (tables, JSON and SVG plots in $OUT)"
}

main "$@"
