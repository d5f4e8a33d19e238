#!/usr/bin/env bash
# Issue 4's performance figures: cross-region visibility lag and what replication costs the
# writing region.
#
#   1. builds `meridian` and `meridian-bench` (release) unless SKIP_BUILD / MERIDIAN_BIN say not;
#   2. writes two topologies on free loopback ports (TCP and UDP):
#        geo:    regions eu and us of GEO_NODES nodes each, [[wan]] eu<->us GEO_DELAY_MS one way
#                (like config/geo-2x1.toml);
#        single: region eu alone, the same nodes (the same region without anything to ship to);
#      and starts each with `config/local-cluster.sh up TOPO DIR` when its turn comes;
#   3. geo: after a short warm-up run, `meridian-bench geo --write <eu leader> --read <us leader> --rate GEO_RATE
#      --duration GEO_DURATION`: the visibility lag from the SET on eu to the first GET on us
#      that sees it (p50/p99/max);
#   4. in-region write throughput: `redis-benchmark -t set -c 50 -P 16 -n 1000000 -r 100000
#      -d 64` on eu's leader with replication to us running (geo) and on the same region alone
#      (single), GEO_REPEAT times each, alternating; after each geo run, how long us took to
#      catch up (MERIDIAN REGIONS lag_entries back to 0), and the CPU time eu's leader spent
#      per SET (from /proc, until the node is idle again: in the geo runs after us caught up, so
#      shipping is counted; in both, the flushes and compactions the run caused);
#   5. prints a markdown table and writes it, the raw outputs, MERIDIAN REGIONS snapshots and
#      node logs under bench/results/<timestamp>-geo/;
#   6. stops every node it started (also on Ctrl-C or failure).
#
# Everything runs on one machine: us's node (applying eu's writes) shares the CPUs with eu's,
# so on a small machine the "with replication" figure also pays for the receiving region.
#
# Environment (all optional):
#   GEO_DELAY_MS=40        one-way emulated delay eu <-> us
#   GEO_NODES=1            nodes per region
#   GEO_RATE=10000         writes/s of the lag run
#   GEO_DURATION=10        seconds of the lag run
#   GEO_POLL_BATCH=65536   meridian-bench geo --poll-batch (large: the poller must not be the
#                          bottleneck at 10,000 writes/s)
#   GEO_N=1000000          requests per redis-benchmark run (long enough that each run includes
#                          the memtable flushes and compactions of steady writing)
#   GEO_CLIENTS=50         redis-benchmark -c
#   GEO_PIPELINE=16        redis-benchmark -P
#   GEO_KEYS=100000        redis-benchmark -r
#   GEO_DATA=64            value size (-d, --data-size)
#   GEO_WARMUP=3           seconds of an unmeasured lag run first (0: none); its p99/max are
#                          reported as the "cold" figures
#   GEO_REPEAT=3           redis-benchmark runs per configuration (the table shows the median)
#   GEO_WARM_N=200000      requests of an unmeasured redis-benchmark run on each fresh cluster before
#                          its measured one (then us's catch-up and eu's idle are awaited), so the
#                          figures are the steady state of running nodes, not their first seconds
#                          (links, caches and memtables still filling; 0: no warm-up run)
#   GEO_CATCH_UP_S=120     how long to wait for us to catch up after a throughput run
#   GEO_SETTLE_TICKS=2     after a throughput run (and us's catch-up), eu's leader counts as
#                          idle once it uses at most this many clock ticks in a second; its CPU
#                          is read then (at most GEO_SETTLE_MAX_S=20 s later)
#   GEO_WRITE_BUFFER_MB=16 write-buffer-mb of every node, in both configurations: a node's own
#                          default differs (4 alone, 16 with several regions), and the cost
#                          figure must compare replication, not memtable sizes ("": defaults)
#   GEO_WRITE_BACK_MS=     write-back-ms of every node, in both configurations (empty: each
#                          node's default, 1000; before ef4b483 a node of several regions never
#                          wrote back, and runs then set 0 in both so that the cost figure
#                          compared replication, not write-back)
#   GEO_PIN=1              pin eu's nodes to CPU 0 and us's nodes and every client (redis-benchmark,
#                          meridian-bench) to CPU 1 with taskset, so us's merging does not share a
#                          core with the writer it is measured against (closer to regions on their
#                          own machines; needs 2 or more CPUs)
#   BENCH_OUT=DIR          output directory (default bench/results/<timestamp>-geo)
#   MERIDIAN_BIN=PATH      use this meridian binary (no build of the server)
#   SKIP_BUILD=1           use the binaries already built
#   CARGO_TARGET_DIR       default /work/target if that directory exists, else ./target
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DELAY_MS=${GEO_DELAY_MS:-40}
NODES=${GEO_NODES:-1}
RATE=${GEO_RATE:-10000}
DURATION=${GEO_DURATION:-10}
POLL_BATCH=${GEO_POLL_BATCH:-65536}
N=${GEO_N:-1000000}
CLIENTS=${GEO_CLIENTS:-50}
PIPELINE=${GEO_PIPELINE:-16}
KEYS=${GEO_KEYS:-100000}
DATA=${GEO_DATA:-64}
REPEAT=${GEO_REPEAT:-3}
WARM_N=${GEO_WARM_N:-200000}
WARMUP=${GEO_WARMUP:-3}
WARM_P99=-
WARM_MAX=-
CATCH_UP_S=${GEO_CATCH_UP_S:-120}
SETTLE_TICKS=${GEO_SETTLE_TICKS:-2}
SETTLE_MAX_S=${GEO_SETTLE_MAX_S:-20}
PIN=${GEO_PIN:-}
WRITE_BUFFER_MB=${GEO_WRITE_BUFFER_MB-16}
WRITE_BACK_MS=${GEO_WRITE_BACK_MS-}
# Clients run on CPU 1 when pinning.
CLIENT_CPU=()
[ -n "$PIN" ] && CLIENT_CPU=(taskset -c 1)
# redis-benchmark is killed after this long: it spins forever once its server is gone.
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-600}
OUT=${BENCH_OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-geo}

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -d /work/target ]; then CARGO_TARGET_DIR=/work/target; else CARGO_TARGET_DIR=$ROOT/target; fi
fi
export CARGO_TARGET_DIR
BENCH_BIN=$CARGO_TARGET_DIR/release/meridian-bench
LOCAL_CLUSTER=$ROOT/config/local-cluster.sh

log() { echo "geo-report: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- clusters we started
WORK=""
UP_DIRS=()
cleanup() {
  local dir
  for dir in "${UP_DIRS[@]}"; do
    "$LOCAL_CLUSTER" down "$dir" >/dev/null 2>&1 || true
  done
  UP_DIRS=()
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    # Keep the node logs with the results, drop data and certificates.
    local f rel
    while IFS= read -r f; do
      rel=${f#"$WORK"/}
      mkdir -p "$OUT/logs/$(dirname "$rel")"
      cp "$f" "$OUT/logs/$rel" 2>/dev/null || true
    done < <(find "$WORK" -name node.log 2>/dev/null)
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- setup
command -v redis-benchmark >/dev/null 2>&1 || die "redis-benchmark not found (apt-get install redis-tools)"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found (apt-get install redis-tools)"
command -v jq >/dev/null 2>&1 || die "jq not found (apt-get install jq)"

if [ -z "${SKIP_BUILD:-}" ]; then
  pkgs=(-p meridian-bench)
  [ -n "${MERIDIAN_BIN:-}" ] || pkgs+=(-p meridian-server)
  log "building ${pkgs[*]} (release, target dir $CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release "${pkgs[@]}")
fi
MERIDIAN_BIN=${MERIDIAN_BIN:-$CARGO_TARGET_DIR/release/meridian}
export MERIDIAN_BIN
[ -x "$MERIDIAN_BIN" ] || die "$MERIDIAN_BIN missing"
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN missing"

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/meridian-geo-report.XXXXXX)

# A loopback port free for both TCP and UDP (QUIC peers use UDP), never handed out twice.
USED_PORTS=" "
free_port() {
  local p i
  for i in $(seq 200); do
    p=$(( (RANDOM << 15 | RANDOM) % 30000 + 20000 ))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if python3 - "$p" 2>/dev/null <<'EOF'
import socket, sys
p = int(sys.argv[1])
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", p))
    s.close()
EOF
    then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# write_topology FILE NAME REGION... : one region per argument, NODES nodes each, free ports;
# a [[wan]] delay between the first two regions when there are two.
write_topology() {
  local file=$1 name=$2 region i
  shift 2
  {
    printf '[cluster]\nname = "%s"\ncerts = "certs"\nwan_emulation = true\n' "$name"
    for region in "$@"; do
      printf '\n[[region]]\nname = "%s"\n' "$region"
      for i in $(seq "$NODES"); do
        printf '[[region.node]]\nname = "%s-%d"\nresp = "127.0.0.1:%d"\npeer = "127.0.0.1:%d"\n' \
          "$region" "$i" "$(free_port)" "$(free_port)"
      done
    done
    if [ $# -ge 2 ]; then
      printf '\n[[wan]]\na = "%s"\nb = "%s"\ndelay_ms = %d\n' "$1" "$2" "$DELAY_MS"
    fi
    if [ -n "${WRITE_BUFFER_MB}${WRITE_BACK_MS}" ]; then
      printf '\n[server]\n'
    fi
    if [ -n "${WRITE_BUFFER_MB}" ]; then
      printf 'write-buffer-mb = %d\n' "${WRITE_BUFFER_MB}"
    fi
    if [ -n "${WRITE_BACK_MS}" ]; then
      printf 'write-back-ms = %d\n' "${WRITE_BACK_MS}"
    fi
  } >"$file"
}

# up NAME TOPO: starts the topology under $WORK/NAME; its "name region host:port" lines go to
# $WORK/NAME.nodes.
up() {
  local name=$1 topo=$2 dir="$WORK/$1"
  UP_DIRS+=("$dir")
  "$LOCAL_CLUSTER" up "$topo" "$dir" >"$WORK/$name.nodes" 2>"$WORK/$name.up.err" ||
    { cat "$WORK/$name.up.err" >&2; die "starting $name failed"; }
  [ -z "$PIN" ] && return 0
  # GEO_PIN: eu's nodes on CPU 0, everything else on CPU 1 (every thread of each process).
  local node region _a cpu
  while read -r node region _a; do
    cpu=1
    [ "$region" = eu ] && cpu=0
    taskset -a -pc "$cpu" "$(cat "$dir/$node/pid")" >/dev/null || die "taskset failed for $node"
  done <"$WORK/$name.nodes"
}

down() {
  local dir="$WORK/$1" d keep=()
  "$LOCAL_CLUSTER" down "$dir" >/dev/null 2>&1 || true
  for d in "${UP_DIRS[@]}"; do [ "$d" = "$dir" ] || keep+=("$d"); done
  UP_DIRS=("${keep[@]+"${keep[@]}"}")
}

# field PORT FIELD: a field of MERIDIAN RAFT (a flat key/value list in RESP2).
raft_field() {
  redis-cli -h 127.0.0.1 -p "$1" MERIDIAN RAFT 2>/dev/null | awk -v f="$2" 'p == f { print; exit } { p = $0 }'
}

# leader NAME REGION: host:port of the region's leader (waits up to 30 s).
leader() {
  local name=$1 region=$2 i r addr
  for i in $(seq 150); do
    while read -r _ r addr; do
      [ "$r" = "$region" ] || continue
      if [ "$(raft_field "${addr##*:}" role)" = leader ]; then
        echo "$addr"
        return 0
      fi
    done <"$WORK/$name.nodes"
    sleep 0.2
  done
  die "no leader in region $region of $name"
}

# regions_row PORT REGION: "link lag_entries lag_ms acked_index" for REGION in MERIDIAN REGIONS.
regions_row() {
  redis-cli -h 127.0.0.1 -p "$1" MERIDIAN REGIONS 2>/dev/null | awk -v want="$2" '
    p == "region" { cur = $0 }
    cur == want && p == "link" { link = $0 }
    cur == want && p == "lag_entries" { lag = $0 }
    cur == want && p == "lag_ms" { ms = $0 }
    cur == want && p == "acked_index" { acked = $0 }
    { p = $0 }
    END { print link, lag, ms, acked }'
}

# wait_drained PORT REGION: seconds (0.1 s resolution, polled every 0.1 s) until REGION
# reports lag_entries 0 with the link up, or "timeout".
wait_drained() {
  local port=$1 region=$2 start now link lag _ms _acked
  start=$(date +%s%N)
  while :; do
    read -r link lag _ms _acked <<<"$(regions_row "$port" "$region")"
    now=$(date +%s%N)
    if [ "$link" = up ] && [ "$lag" = 0 ]; then
      awk -v ns=$((now - start)) 'BEGIN { printf "%.1f", ns / 1e9 }'
      return 0
    fi
    [ $(((now - start) / 1000000000)) -lt "$CATCH_UP_S" ] || { echo timeout; return 0; }
    sleep 0.1
  done
}

# set_load HOST:PORT REQUESTS LABEL OPTION: the redis-benchmark SET load on the node (on the
# clients' CPU when pinning), output per OPTION (--csv or -q), errors to $OUT/redis-benchmark-LABEL.err.
set_load() {
  local addr=$1 n=$2 label=$3 option=$4
  "${CLIENT_CPU[@]}" timeout "$BENCH_TIMEOUT_S" redis-benchmark -h "${addr%:*}" -p "${addr##*:}" \
    -t set -c "$CLIENTS" -P "$PIPELINE" -n "$n" -r "$KEYS" -d "$DATA" "$option" 2>"$OUT/redis-benchmark-$label.err" ||
    die "redis-benchmark ($label) failed: $(tail -n 3 "$OUT/redis-benchmark-$label.err")"
}

# throughput NAME RUN HOST:PORT: redis-benchmark SET on the node; prints rps.
throughput() {
  local name=$1 run=$2 addr=$3 f="$OUT/redis-benchmark-$1-$2.csv"
  set_load "$addr" "$N" "$name-$run" --csv >"$f"
  awk -F, '$1 == "\"SET\"" { gsub(/"/, "", $2); print $2 }' "$f"
}

# warm NAME HOST:PORT [REGION]: an unmeasured SET run of WARM_N requests on the node, then waits
# until REGION (if given) caught up and the node is idle again.
warm() {
  local name=$1 addr=$2 region=${3:-}
  [ "$WARM_N" -gt 0 ] || return 0
  set_load "$addr" "$WARM_N" "$name-warm" -q >/dev/null
  [ -n "$region" ] && wait_drained "${addr##*:}" "$region" >/dev/null
  settled_ticks "$name" "$addr" >/dev/null
}

# cpu_ticks NAME HOST:PORT: CPU time (user + system, clock ticks) the node of topology run NAME
# that serves HOST:PORT has used so far.
cpu_ticks() {
  local name=$1 addr=$2 node _r a
  while read -r node _r a; do
    if [ "$a" = "$addr" ]; then
      awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$(cat "$WORK/$name/$node/pid")/stat"
      return 0
    fi
  done <"$WORK/$name.nodes"
  die "no node serves $addr in $name"
}
# settled_ticks NAME HOST:PORT: waits until that node is idle again (its background work done:
# memtable flushes and compactions the run caused, shipping) and prints its CPU ticks then. Both
# configurations are measured this way, so neither leaves work it caused outside its window.
settled_ticks() {
  local name=$1 addr=$2 before after i
  after=$(cpu_ticks "$name" "$addr")
  for i in $(seq "$SETTLE_MAX_S"); do
    before=$after
    sleep 1
    after=$(cpu_ticks "$name" "$addr")
    [ $((after - before)) -le "$SETTLE_TICKS" ] && break
  done
  echo "$after"
}
# cpu_us_per_op TICKS OPS: microseconds of CPU per operation.
cpu_us_per_op() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }'; }

# median: the median of the numbers on stdin (this script does not use bench/lib.sh).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
fmt() { awk -v x="$1" 'BEGIN { if (x == "-" || x == "") print "-"; else printf "%.0f", x }'; }
ms() { awk -v x="$1" 'BEGIN { if (x == "-" || x == "" || x == "null") print "-"; else printf "%.1f", x }'; }

# ---------------------------------------------------------------- topologies
write_topology "$OUT/topology-geo.toml" geo-report eu us
write_topology "$OUT/topology-single.toml" geo-report-single eu

# ---------------------------------------------------------------- 1. visibility lag
log "geo: eu and us, $NODES node(s) each, $DELAY_MS ms one way"
up geo "$OUT/topology-geo.toml"
EU=$(leader geo eu)
US=$(leader geo us)
# The first seconds after a start are slower (links and caches warming up): a short run first,
# reported separately, then the measured one.
if [ "$WARMUP" -gt 0 ]; then
  log "warm-up: $RATE writes/s for $WARMUP s"
  "${CLIENT_CPU[@]}" "$BENCH_BIN" geo --write "$EU" --read "$US" --rate "$RATE" --duration "$WARMUP" \
    --poll-batch "$POLL_BATCH" --label us --json "$OUT/geo-warmup.json" --allow-errors \
    >"$OUT/geo-warmup.txt" 2>"$OUT/geo-warmup.err" || die "meridian-bench geo (warm-up) failed: $(tail -n 5 "$OUT/geo-warmup.err")"
  WARM_P99=$(jq -r '.geo.readers[0].lag_ms.p99' "$OUT/geo-warmup.json")
  WARM_MAX=$(jq -r '.geo.readers[0].lag_ms.max' "$OUT/geo-warmup.json")
  wait_drained "${EU##*:}" us >/dev/null
fi
log "lag: $RATE writes/s for $DURATION s on eu ($EU), read on us ($US)"
"${CLIENT_CPU[@]}" "$BENCH_BIN" geo --write "$EU" --read "$US" --rate "$RATE" --duration "$DURATION" \
  --poll-batch "$POLL_BATCH" --label us --json "$OUT/geo-lag.json" --allow-errors \
  >"$OUT/geo-lag.txt" 2>"$OUT/geo-lag.err" || die "meridian-bench geo failed: $(tail -n 5 "$OUT/geo-lag.err")"
cat "$OUT/geo-lag.txt" >&2
redis-cli -h "${EU%:*}" -p "${EU##*:}" MERIDIAN REGIONS >"$OUT/regions-after-lag.txt" 2>&1 || true
jqr() { jq -r "$1" "$OUT/geo-lag.json"; }
LAG_P50=$(jqr '.geo.readers[0].lag_ms.p50')
LAG_P99=$(jqr '.geo.readers[0].lag_ms.p99')
LAG_MAX=$(jqr '.geo.readers[0].lag_ms.max')
LAG_SEEN=$(jqr '.geo.readers[0].seen')
LAG_MISSING=$(jqr '.geo.readers[0].missing')
LAG_RATE=$(jqr '.geo.achieved_rate')
LAG_WRITES=$(jqr '.geo.writes')
LAG_WERR=$(jqr '.geo.write_errors')
LAG_SET_P99=$(jqr '.geo.write_latency_ms.p99')
LAG_ROUND=$(jqr '.geo.readers[0].mean_round_ms')
LAG_CAPPED=$(jqr '.geo.readers[0].capped_rounds')

# ---------------------------------------------------------------- 2. throughput, alternating
# Every start after the first gets a fresh directory (no data left from the run before).
DRAINED_AFTER_LAG=$(wait_drained "${EU##*:}" us)
log "us caught up ${DRAINED_AFTER_LAG}s after the lag run"
GEO_RPS=()
SINGLE_RPS=()
GEO_CPU=()
SINGLE_CPU=()
DRAIN=()
geo_name=geo
for run in $(seq "$REPEAT"); do
  order="geo single"
  [ $((run % 2)) -eq 0 ] && order="single geo"
  for what in $order; do
    if [ "$what" = geo ]; then
      if [ -z "$geo_name" ]; then
        geo_name=geo-$run
        up "$geo_name" "$OUT/topology-geo.toml"
      fi
      EU=$(leader "$geo_name" eu)
      warm "$geo_name" "$EU" us
      log "throughput run $run/$REPEAT: eu ($EU) replicating to us"
      ticks=$(cpu_ticks "$geo_name" "$EU")
      rps=$(throughput geo "$run" "$EU")
      drained=$(wait_drained "${EU##*:}" us)
      ticks=$(($(settled_ticks "$geo_name" "$EU") - ticks))
      GEO_CPU+=("$(cpu_us_per_op "$ticks" "$N")")
      redis-cli -h "${EU%:*}" -p "${EU##*:}" MERIDIAN REGIONS >"$OUT/regions-after-throughput-$run.txt" 2>&1 || true
      log "  $rps SET/s; us caught up ${drained}s after the run"
      GEO_RPS+=("$rps")
      DRAIN+=("$drained")
      down "$geo_name"
      geo_name=""
    else
      up "single-$run" "$OUT/topology-single.toml"
      SOLO=$(leader "single-$run" eu)
      warm "single-$run" "$SOLO"
      log "throughput run $run/$REPEAT: eu ($SOLO) alone"
      ticks=$(cpu_ticks "single-$run" "$SOLO")
      rps=$(throughput single "$run" "$SOLO")
      ticks=$(($(settled_ticks "single-$run" "$SOLO") - ticks))
      SINGLE_CPU+=("$(cpu_us_per_op "$ticks" "$N")")
      log "  $rps SET/s"
      SINGLE_RPS+=("$rps")
      down "single-$run"
    fi
  done
done

GEO_MED=$(echo "${GEO_RPS[*]}" | median)
SINGLE_MED=$(echo "${SINGLE_RPS[*]}" | median)
COST=$(awk -v g="$GEO_MED" -v s="$SINGLE_MED" 'BEGIN { if (s > 0 && g != "-") printf "%.1f", (1 - g / s) * 100; else print "-" }')
GEO_CPU_MED=$(echo "${GEO_CPU[*]}" | median)
SINGLE_CPU_MED=$(echo "${SINGLE_CPU[*]}" | median)
CPU_COST=$(awk -v g="$GEO_CPU_MED" -v s="$SINGLE_CPU_MED" 'BEGIN { if (g > 0 && s != "-") printf "%.1f", (1 - s / g) * 100; else print "-" }')
TARGET_LAG=$((DELAY_MS + 20))
verdict() { awk -v x="$1" -v lim="$2" 'BEGIN { if (x == "-" || x == "") print "-"; else if (x + 0 < lim + 0) print "met"; else print "**missed**" }'; }

# ---------------------------------------------------------------- report
{
  echo "### Geo replication (issue 4)"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(awk -F: '/model name/ { sub(/^ /, "", $2); print $2; exit }' /proc/cpuinfo)),"
  echo "meridian $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); regions eu and us of $NODES node(s) each on one machine,"
  echo "${DELAY_MS} ms one-way emulated delay between them (\`[[wan]]\`, applied to the QUIC datagrams)."
  if [ -n "$PIN" ]; then
    echo "Pinned (GEO_PIN=1): eu's nodes on CPU 0; us's nodes, redis-benchmark and meridian-bench on CPU 1."
  fi
  echo
  echo "| figure | value | target |"
  echo "|---|---:|---|"
  echo "| visibility lag eu → us, p50 | $(ms "$LAG_P50") ms | |"
  echo "| visibility lag eu → us, p99 | $(ms "$LAG_P99") ms | < $TARGET_LAG ms: $(verdict "$LAG_P99" "$TARGET_LAG") |"
  echo "| visibility lag eu → us, max | $(ms "$LAG_MAX") ms | |"
  echo "| cold: first ${WARMUP} s after the start, p99 / max | $(ms "$WARM_P99") / $(ms "$WARM_MAX") ms | |"
  echo "| lag run: writes on eu | $LAG_WRITES at $(fmt "$LAG_RATE")/s (target $RATE/s), $LAG_WERR errors, SET p99 $(ms "$LAG_SET_P99") ms | |"
  echo "| lag run: keys seen on us / missing | $LAG_SEEN / $LAG_MISSING | |"
  echo "| SET throughput on eu's leader, replicating to us | $(fmt "$GEO_MED") req/s | |"
  echo "| SET throughput on eu's leader, eu alone | $(fmt "$SINGLE_MED") req/s | |"
  echo "| throughput cost of replication, both regions on the same cores | $COST % | |"
  echo "| eu leader CPU per SET, replicating / alone (each until idle again) | $GEO_CPU_MED / $SINGLE_CPU_MED µs | |"
  echo "| throughput cost of replication on the writing region's CPU | $CPU_COST % | < 20 %: $(verdict "$CPU_COST" 20) |"
  echo "| us caught up after the lag run / after each throughput run | ${DRAINED_AFTER_LAG} s / ${DRAIN[*]} s | |"
  echo
  echo "Lag: \`meridian-bench geo --rate $RATE --duration $DURATION --poll-batch $POLL_BATCH\` (from the SET on"
  echo "eu's socket to the first GET on us that returns the key; polling round $(ms "$LAG_ROUND") ms on"
  echo "average, $LAG_CAPPED capped rounds). Throughput: \`redis-benchmark -t set -c $CLIENTS -P $PIPELINE"
  echo "-n $N -r $KEYS -d $DATA\`, median of $REPEAT run(s) each (geo: ${GEO_RPS[*]}; alone: ${SINGLE_RPS[*]}),"
  echo "each on a fresh cluster warmed by an unmeasured run of $WARM_N requests (GEO_WARM_N; us caught up, eu idle);"
  echo "every node in both configurations with write-buffer-mb ${WRITE_BUFFER_MB} and write-back-ms ${WRITE_BACK_MS} (empty: the node's default);"
  echo "the receiving region runs on the same cores, so the first cost figure also pays for us's merging;"
  echo "the CPU figure counts only eu's leader (CPU time from /proc from the start of the run until the"
  echo "node is idle again — shipping, flushes and compactions included — divided by the requests;"
  echo "each run: geo ${GEO_CPU[*]}, alone ${SINGLE_CPU[*]} µs; throughput on dedicated cores is inversely proportional to it). Raw outputs: \`${OUT#"$ROOT"/}\`."
} | tee "$OUT/summary.md"
