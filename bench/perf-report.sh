#!/usr/bin/env bash
# Reproduces the README's performance section end to end:
#   1. installs redis-server, redis-tools (redis-benchmark, redis-cli), jq and libclang-dev
#      with apt if any is missing;
#   2. builds `meridian` and `meridian-bench` in release mode;
#   3. starts a redis-server (appendonly yes, appendfsync everysec) and a single Meridian node,
#      each on a free loopback port with its data in a temp dir;
#   4. runs redis-benchmark (-t set,get) at each pipeline depth against each server, one after
#      the other, then meridian-bench (compare mode: SET only, GET only, and a 9:1 zipf mix);
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
#   BENCH_OUT=DIR            output directory (default bench/results/<timestamp>)
#   BENCH_B=meridian         the second server: `meridian`, or `redis` (a second redis-server,
#                            to try the script without a meridian binary)
#   MERIDIAN_ARGS="..."      extra flags for `meridian` (default: --appendfsync everysec)
#   SKIP_BUILD=1             use the binaries already built
#   CARGO_TARGET_DIR         default /work/target if that directory exists, else ./target
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
N=${BENCH_N:-1000000}
CLIENTS=${BENCH_CLIENTS:-50}
KEYS=${BENCH_KEYS:-100000}
DATA=${BENCH_DATA:-64}
PIPELINES=${BENCH_PIPELINES:-"1 16"}
B_KIND=${BENCH_B:-meridian}
MERIDIAN_ARGS=${MERIDIAN_ARGS:---appendfsync everysec}
OUT=${BENCH_OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -d /work/target ]; then CARGO_TARGET_DIR=/work/target; else CARGO_TARGET_DIR=$ROOT/target; fi
fi
export CARGO_TARGET_DIR
TARGET=$CARGO_TARGET_DIR
BENCH_BIN=$TARGET/release/meridian-bench
MERIDIAN_BIN=$TARGET/release/meridian

log() { echo "perf-report: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes we started
PIDS=()
WORK=""
cleanup() {
  local pid i
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop on SIGTERM, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    # Keep the server logs with the results, drop the data.
    mkdir -p "$OUT/logs"
    find "$WORK" -maxdepth 2 -name '*.log' -exec cp {} "$OUT/logs/" \; 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- setup
install_deps() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  if [ -z "${SKIP_BUILD:-}" ]; then
    ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing with apt: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # The Debian package starts a system redis-server on 6379; we never use that one.
}

build() {
  if [ -n "${SKIP_BUILD:-}" ]; then
    log "SKIP_BUILD set: using binaries in $TARGET/release"
  else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with https://rustup.rs"
    log "building (release, target dir $TARGET)"
    local pkgs=(-p meridian-bench)
    [ "$B_KIND" = meridian ] && pkgs+=(-p meridian-server)
    (cd "$ROOT" && cargo build --release "${pkgs[@]}")
  fi
  [ -x "$BENCH_BIN" ] || die "$BENCH_BIN missing"
  if [ "$B_KIND" = meridian ]; then
    [ -x "$MERIDIAN_BIN" ] || die "$MERIDIAN_BIN missing (or run with BENCH_B=redis)"
  fi
}

# A free loopback TCP port: random, and nothing answers on it.
free_port() {
  local p i
  for i in $(seq 100); do
    p=$(( (RANDOM << 15 | RANDOM) % 30000 + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# wait_ping PORT NAME PID LOG: until PING answers PONG (30 s), or the process died.
wait_ping() {
  local port=$1 name=$2 pid=$3 logf=$4 i
  for i in $(seq 300); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ]; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logf" >&2 || true
      die "$name exited before answering PING"
    fi
    sleep 0.1
  done
  tail -n 20 "$logf" >&2 || true
  die "$name did not answer PING on port $port within 30 s"
}

# start_redis DIR PORT: redis-server with AOF (everysec), like the README's reference setup.
start_redis() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
    --appendonly yes --appendfsync everysec --daemonize no \
    --logfile "$dir/redis-$port.log" &
  PIDS+=($!)
  wait_ping "$port" "redis-server" "$!" "$dir/redis-$port.log"
}

# start_meridian DIR PORT: one Meridian node (region `local`).
start_meridian() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # MERIDIAN_ARGS is a list of flags
  "$MERIDIAN_BIN" --bind 127.0.0.1 --port "$port" --data-dir "$dir/data" $MERIDIAN_ARGS \
    >"$dir/meridian-$port.log" 2>&1 &
  PIDS+=($!)
  wait_ping "$port" "meridian" "$!" "$dir/meridian-$port.log"
}

# ---------------------------------------------------------------- measurements
ROWS=()
# row TOOL TEST PIPELINE A_RPS B_RPS A_P99 B_P99 NOTE
row() {
  local ratio
  ratio=$(awk -v a="$4" -v b="$5" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "n/a" }')
  ROWS+=("| $1 | $2 | $3 | $(fmt "$4") | $(fmt "$5") | $ratio | $(ms "$6") | $(ms "$7") | $8 |")
}
fmt() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
ms() { awk -v x="$1" 'BEGIN { if (x == "-") print x; else printf "%.3f", x }'; }

# redis_benchmark NAME PORT PIPELINE: CSV into $OUT/redis-benchmark-NAME-P<p>.csv
redis_benchmark() {
  local name=$1 port=$2 p=$3 f="$OUT/redis-benchmark-$1-P$3.csv"
  log "redis-benchmark -> $name, -P $p, -n $N"
  redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -c "$CLIENTS" -n "$N" -r "$KEYS" \
    -d "$DATA" -P "$p" --csv >"$f" 2>"$OUT/redis-benchmark-$name-P$p.err"
}

# csv FILE TEST COLUMN: a field of redis-benchmark's CSV (2 = rps, 7 = p99 ms).
csv() {
  awk -F, -v t="\"$2\"" -v c="$3" '$1 == t { gsub(/"/, "", $c); print $c }' "$1"
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
  install_deps
  build
  mkdir -p "$OUT"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-perf.XXXXXX")

  A_PORT=$(free_port)
  start_redis "$WORK/redis" "$A_PORT"
  B_PORT=$(free_port)
  while [ "$B_PORT" = "$A_PORT" ]; do B_PORT=$(free_port); done
  if [ "$B_KIND" = redis ]; then
    B_LABEL="redis-server-2"
    start_redis "$WORK/redis2" "$B_PORT"
  else
    B_LABEL="meridian"
    start_meridian "$WORK/meridian" "$B_PORT"
  fi
  log "redis-server on $A_PORT, $B_LABEL on $B_PORT; results in $OUT"

  local p rc
  for p in $PIPELINES; do
    redis_benchmark redis-server "$A_PORT" "$p"
    redis_benchmark "$B_LABEL" "$B_PORT" "$p"
    local fa="$OUT/redis-benchmark-redis-server-P$p.csv" fb="$OUT/redis-benchmark-$B_LABEL-P$p.csv"
    for t in SET GET; do
      row redis-benchmark "$t" "$p" "$(csv "$fa" $t 2)" "$(csv "$fb" $t 2)" \
        "$(csv "$fa" $t 7)" "$(csv "$fb" $t 7)" ""
    done
  done
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
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(awk -F: '/model name/ { sub(/^ /, "", $2); print $2; exit }' /proc/cpuinfo)),"
    echo "$(redis-server --version | awk '{print $1, $2, $3}'), meridian $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?');"
    echo "-c $CLIENTS -n $N -r $KEYS -d $DATA; redis-server with appendonly yes, appendfsync everysec;"
    if [ "$B_KIND" = meridian ]; then
      echo "meridian: one node, \`${MERIDIAN_ARGS:-default flags}\`; clients and servers share this machine's cores."
    else
      echo "$B_LABEL: a second redis-server, same settings (dry run without meridian)."
    fi
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
