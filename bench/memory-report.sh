#!/usr/bin/env bash
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

# shellcheck source=/dev/null # tests/target-dir.sh: sets CARGO_TARGET_DIR
. "$ROOT/tests/target-dir.sh"
MERIDIAN_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/meridian

log() { echo "memory-report: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes we started
PIDS=()
WORK=""
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop on SIGTERM within 10 s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}
# forget_pid PID: drop PID from PIDS once it is reaped (so cleanup never signals a reused id).
forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
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
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing with apt: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  [ -n "${SKIP_BUILD:-}" ] || "$ROOT/tests/deps.sh"
}

build() {
  if [ -n "${SKIP_BUILD:-}" ]; then
    log "SKIP_BUILD set: using $MERIDIAN_BIN"
  else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with https://rustup.rs"
    log "building meridian (release)"
    (cd "$ROOT" && cargo build --release -p meridian-server >&2)
  fi
  [ -x "$MERIDIAN_BIN" ] || die "$MERIDIAN_BIN missing"
}

# A free loopback TCP port: random, and nothing answers on it.
free_port() {
  local p
  for _ in $(seq 100); do
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
  local port=$1 name=$2 pid=$3 logf=$4
  for _ in $(seq 300); do
    [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logf" >&2 || true
      die "$name exited before answering PING"
    fi
    sleep 0.1
  done
  tail -n 20 "$logf" >&2 || true
  die "$name did not answer PING on port $port within 30 s"
}

# launch KIND DIR PORT: starts the server in the background (no wait); sets SERVER_PID.
launch() {
  local kind=$1 dir=$2 port=$3
  mkdir -p "$dir"
  case $kind in
    redis)
      redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
        --appendonly yes --appendfsync everysec --daemonize no \
        --logfile "$dir/redis.log" &
      ;;
    meridian)
      # shellcheck disable=SC2086 # MERIDIAN_ARGS is a list of flags
      "$MERIDIAN_BIN" --bind 127.0.0.1 --port "$port" --data-dir "$dir/data" \
        --hot-cache-mb "$HOT_CACHE_MB" $MERIDIAN_ARGS >>"$dir/meridian.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
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
# info PORT FIELD: a field of INFO.
info() { redis-cli -p "$1" INFO | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'; }
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
  port=$(free_port)
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
  stop_pid "$SERVER_PID"
}

# meridian_breakdown PORT RSS_KB: INFO memory fields beside the settled RSS.
meridian_breakdown() {
  local port=$1 rss_b=$(($2 * 1024)) hot mem blk cap
  hot=$(info "$port" hot_cache_bytes)
  mem=$(info "$port" rocksdb_memtable_bytes)
  blk=$(info "$port" rocksdb_block_cache_bytes)
  cap=$((HOT_CACHE_MB * 1024 * 1024))
  BREAKDOWN=(
    "| RSS (settled) | $(bmib "$rss_b") |"
    "| hot_cache_bytes (cap $HOT_CACHE_MB MiB; $(info "$port" hot_cache_entries) entries) | $(bmib "$hot") |"
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
  echo "$(redis-server --version | awk '{print $1, $2, $3}'), meridian $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?');"
  echo "redis-server: appendonly yes, appendfsync everysec, no RDB;"
  echo "meridian: one node, \`--hot-cache-mb $HOT_CACHE_MB ${MERIDIAN_ARGS}\`, block cache and memtables at their defaults."
  echo "Keys \`key:0…key:$((KEYS - 1))\` loaded with \`redis-cli --pipe\`; values are seeded random hex."
  echo "Restart: SIGKILL ${SETTLE} s after the load, start on the same data, time until PING answers"
  echo "and \`GET key:$((KEYS - 1))\` returns its value (10 ms polling)."
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
  install_deps
  build
  mkdir -p "$OUT"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-memory.XXXXXX")
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
