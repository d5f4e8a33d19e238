#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Issue 2's memory and restart figures, end to end:
#   1. installs redis-server, redis-tools and python3 with apt if any is missing;
#   2. builds `meridian` in release mode (unless SKIP_BUILD);
#   3. starts a redis-server (appendonly yes, appendfsync everysec) and a Meridian node with
#      `--hot-cache-mb 64` (block cache and memtables at their defaults), one after the other,
#      each on a free loopback port with its data in a temp dir;
#   4. writes exactly MEM_KEYS (2,000,000) keys `key:0 … key:N-1` with 100-byte values
#      (random hex, seeded: the same bytes for both servers) through `redis-cli --pipe`;
#   5. records DBSIZE, RSS (VmRSS) right after the load and after a settle, peak RSS (VmHWM),
#      the data directory's size and, for Meridian, INFO memory's breakdown;
#   6. SIGKILLs the server, starts it again on the same data and measures the time until PING
#      answers and `GET key:<N-1>` returns its value (polled every 10 ms);
#   7. prints a markdown table and writes it with the raw outputs and server logs under
#      bench/results/<timestamp>/ (memory.md); stops everything it started.
#
# Environment (all optional):
#   MEM_KEYS=2000000        keys written
#   MEM_VALUE=100           value size in bytes
#   MEM_HOT_CACHE_MB=64     meridian --hot-cache-mb
#   MEM_SETTLE=10           seconds between "after load" and "settled"
#   MEM_SERVERS="redis meridian"   which servers, in that order
#   MERIDIAN_ARGS="..."     extra flags for `meridian` (default: --appendfsync everysec)
#   BENCH_OUT=DIR           output directory (default bench/results/<timestamp>-memory)
#   SKIP_BUILD=1            use the binary already built
#   CARGO_TARGET_DIR        as tests/target-dir.sh picks it (default /work/target if present)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
KEYS=${MEM_KEYS:-2000000}
VALUE=${MEM_VALUE:-100}
HOT_CACHE_MB=${MEM_HOT_CACHE_MB:-64}
SETTLE=${MEM_SETTLE:-10}
SERVERS=${MEM_SERVERS:-"redis meridian"}
MERIDIAN_ARGS=${MERIDIAN_ARGS:---appendfsync everysec}
OUT=${BENCH_OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-memory}

# shellcheck source=lib.sh
. "$HERE/lib.sh"
use_target_dir
MERIDIAN_BIN=$CARGO_TARGET_DIR/release/meridian
cleanup_on_exit

# ---------------------------------------------------------------- servers
# launch KIND DIR PORT: starts the server in the background (no wait); sets SERVER_PID.
launch() {
  local kind=$1 dir=$2 port=$3
  case $kind in
    redis) launch_redis "$dir" "$port" "$dir/redis.log" ;;
    meridian) launch_meridian "$dir" "$port" "$dir/meridian.log" --hot-cache-mb "$HOT_CACHE_MB" ;;
  esac
}

logfile() { if [ "$1" = redis ]; then echo "$2/redis.log"; else echo "$2/meridian.log"; fi; }

# ---------------------------------------------------------------- load and measurements
# gen_load FILE: the RESP stream `SET key:i <value>` for i in 0..KEYS-1; FILE.last holds the
# last key's value. Values are seeded random hex, so both servers get the same bytes.
gen_load() {
  log "generating $KEYS SET commands ($VALUE-byte values)"
  python3 - "$KEYS" "$VALUE" "$1" <<'EOF'
import random, sys
n, size, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(42)
v = b""
with open(path, "wb") as f:
    buf = []
    for i in range(n):
        k = b"key:%d" % i
        v = rng.randbytes(size // 2 + 1).hex()[:size].encode()
        buf.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
        if len(buf) >= 10000:
            f.write(b"".join(buf))
            buf.clear()
    f.write(b"".join(buf))
with open(path + ".last", "wb") as f:
    f.write(v)
EOF
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
# proc_kb PID FIELD: a /proc/PID/status field in kB (VmRSS, VmHWM).
proc_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
du_kb() { du -sk "$1" | cut -f1; }

# load NAME PORT FILE: pipes FILE through redis-cli --pipe; sets LOAD_MS; fails on any error.
load() {
  local name=$1 port=$2 file=$3 t0 out
  log "loading $KEYS keys into $name"
  t0=$(now_ms)
  out=$(redis-cli -p "$port" --pipe --pipe-timeout 120 <"$file" 2>&1) || die "$name load failed: $out"
  LOAD_MS=$(( $(now_ms) - t0 ))
  echo "$out" >"$OUT/load-$name.txt"
  echo "$out" | grep -q "errors: 0, replies: $KEYS" || die "$name load: $(echo "$out" | tail -n 1)"
}

# serving PORT: PING answers PONG and GET of the last key returns its value.
serving() {
  local reply
  reply=$(printf 'PING\nGET key:%d\n' $((KEYS - 1)) | redis-cli -p "$1" 2>/dev/null) || return 1
  [ "$reply" = "$(printf 'PONG\n%s' "$EXPECTED")" ]
}

# restart KIND DIR PORT: SIGKILL, start again on the same data, time until serving (10 ms poll).
restart() {
  local kind=$1 dir=$2 port=$3 t0 deadline
  kill -KILL "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  forget_pid "$SERVER_PID"
  echo "---- restart after SIGKILL ----" >>"$(logfile "$kind" "$dir")"
  t0=$(now_ms)
  deadline=$((SECONDS + 600))
  launch "$kind" "$dir" "$port"
  until serving "$port"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      tail -n 20 "$(logfile "$kind" "$dir")" >&2 || true
      die "$kind exited during restart"
    fi
    [ $SECONDS -lt $deadline ] || die "$kind did not serve key:$((KEYS - 1)) within 600 s of a restart"
    sleep 0.01
  done
  RESTART_MS=$(( $(now_ms) - t0 ))
}

ROWS=()
BREAKDOWN=()
# measure KIND: one server's whole run (start, load, settle, restart, stop).
measure() {
  local kind=$1 dir="$WORK/$1" port rss_idle dbsize rss_load rss_settled hwm disk dbsize_restart rss_restart
  free_port
  port=$PORT
  launch "$kind" "$dir" "$port"
  wait_ping "$port" "$kind" "$SERVER_PID" "$(logfile "$kind" "$dir")"
  rss_idle=$(proc_kb "$SERVER_PID" VmRSS)
  log "$kind on port $port (pid $SERVER_PID), idle RSS $(mib "$rss_idle") MiB"
  load "$kind" "$port" "$WORK/load.resp"
  dbsize=$(redis-cli -p "$port" DBSIZE)
  rss_load=$(proc_kb "$SERVER_PID" VmRSS)
  redis-cli -p "$port" INFO >"$OUT/info-$kind-after-load.txt"
  log "$kind: $dbsize keys in $(secs "$LOAD_MS") s, RSS $(mib "$rss_load") MiB; settling ${SETTLE} s"
  sleep "$SETTLE"
  rss_settled=$(proc_kb "$SERVER_PID" VmRSS)
  hwm=$(proc_kb "$SERVER_PID" VmHWM)
  redis-cli -p "$port" INFO >"$OUT/info-$kind-settled.txt"
  if [ "$kind" = meridian ]; then meridian_breakdown "$port" "$rss_settled"; fi
  disk=$(du_kb "$dir")
  log "$kind: settled RSS $(mib "$rss_settled") MiB, peak $(mib "$hwm") MiB; SIGKILL and restart"
  restart "$kind" "$dir" "$port"
  dbsize_restart=$(redis-cli -p "$port" DBSIZE)
  rss_restart=$(proc_kb "$SERVER_PID" VmRSS)
  log "$kind: serving again after $(secs "$RESTART_MS") s, DBSIZE $dbsize_restart"
  ROWS+=("| $kind | $dbsize | $(secs "$LOAD_MS") | $(mib "$rss_idle") | $(mib "$rss_load") | $(mib "$rss_settled") | $(mib "$hwm") | $(mib "$disk") | $(secs "$RESTART_MS") | $dbsize_restart | $(mib "$rss_restart") |")
  stop_pids "$SERVER_PID"
}

# meridian_breakdown PORT RSS_KB: INFO memory fields beside the settled RSS.
meridian_breakdown() {
  local port=$1 rss_b=$(($2 * 1024)) hot mem blk cap
  hot=$(info_field "$port" hot_cache_bytes)
  mem=$(info_field "$port" rocksdb_memtable_bytes)
  blk=$(info_field "$port" rocksdb_block_cache_bytes)
  cap=$((HOT_CACHE_MB * 1024 * 1024))
  BREAKDOWN=(
    "| RSS (settled) | $(bmib "$rss_b") |"
    "| hot_cache_bytes (cap $HOT_CACHE_MB MiB; $(info_field "$port" hot_cache_entries) entries) | $(bmib "$hot") |"
    "| rocksdb_memtable_bytes | $(bmib "$mem") |"
    "| rocksdb_block_cache_bytes | $(bmib "$blk") |"
    "| RSS − (hot cache + memtables + block cache) | $(bmib $((rss_b - hot - mem - blk))) |"
    "| **RSS − hot cache cap (fixed overhead)** | **$(bmib $((rss_b - cap)))** |"
  )
}
bmib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

report() {
  echo "## Memory and restart: $KEYS keys × $VALUE-byte values"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GB RAM,"
  echo "$(versions);"
  echo "redis-server: appendonly yes, appendfsync everysec, no RDB;"
  echo "meridian: one node, \`--hot-cache-mb $HOT_CACHE_MB ${MERIDIAN_ARGS}\`, block cache and memtables at their defaults."
  echo "Keys \`key:0…key:$((KEYS - 1))\` loaded with \`redis-cli --pipe\`; values are seeded random hex."
  echo "Restart: SIGKILL ${SETTLE} s after the load, start on the same data, time until PING answers"
  echo "and \`GET key:$((KEYS - 1))\` returns its value (10 ms polling)."
  echo "${IDLE_NOTE^}."
  echo
  echo "| server | keys | load s | RSS idle MiB | RSS after load MiB | RSS settled MiB | peak RSS MiB | data dir MiB | restart-to-serving s | keys after restart | RSS after restart MiB |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ ${#BREAKDOWN[@]} -gt 0 ]; then
    echo
    echo "Meridian's memory (settled, INFO memory):"
    echo
    echo "| | MiB |"
    echo "|---|---|"
    printf '%s\n' "${BREAKDOWN[@]}"
  fi
}

main() {
  install_deps redis-server:redis-server redis-cli:redis-tools python3:python3
  build_meridian
  check_idle
  mkdir -p "$OUT"
  make_work memory
  gen_load "$WORK/load.resp"
  EXPECTED=$(cat "$WORK/load.resp.last")
  local kind
  for kind in $SERVERS; do
    case $kind in redis | meridian) measure "$kind" ;; *) die "unknown server $kind" ;; esac
  done
  report >"$OUT/memory.md"
  echo
  cat "$OUT/memory.md"
  echo
  log "wrote $OUT/memory.md (INFO dumps, pipe outputs and server logs beside it)"
}

main "$@"
