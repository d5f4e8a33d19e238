# shellcheck shell=bash source-path=SCRIPTDIR
# Shared shell functions of the benchmark scripts (perf-report.sh, memory-report.sh,
# cluster-report.sh). Sourced, never run; bash only.
#
# Usage, at the top of a script (after `set -euo pipefail`):
#   HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   ROOT=$(dirname "$HERE")
#   OUT=...                      # the results directory
#   # shellcheck source=lib.sh
#   . "$HERE/lib.sh"
#   use_target_dir                # sets and exports CARGO_TARGET_DIR
#   cleanup_on_exit               # stops what the script started on exit, failure or Ctrl-C
#
# What the functions read: ROOT (the workspace root), OUT (results; logs are kept in $OUT/logs),
# WORK (a temp dir, see make_work), BENCH_NAME; redis_bench also CLIENTS, N, KEYS and DATA.
# What they set: PIDS (the servers started and not yet stopped), SERVER_PID (the last one),
# PORT (free_port's answer), USED_PORTS, WORK.

# The prefix of log lines: the script's name without .sh unless set before sourcing.
BENCH_NAME=${BENCH_NAME:-$(basename "$0" .sh)}

# ---------------------------------------------------------------- logging

# log MSG...: one line on stderr, prefixed with the script's name.
log() { echo "$BENCH_NAME: $*" >&2; }

# die MSG...: logs "error: MSG" and exits 1 (the EXIT trap then cleans up).
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------- setup

# use_target_dir: CARGO_TARGET_DIR as tests/target-dir.sh picks it (MERIDIAN_TARGET_DIR, default
# /work/target, when that directory exists), else $ROOT/target; exported.
use_target_dir() {
  # shellcheck source=../tests/target-dir.sh
  . "$ROOT/tests/target-dir.sh"
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  export CARGO_TARGET_DIR
}

# install_deps COMMAND:PACKAGE...: installs with apt (sudo unless root) the packages whose
# command is missing; then, unless SKIP_BUILD is set, what building needs (tests/deps.sh).
install_deps() {
  local missing=() spec pkg
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 && continue
    pkg=${spec#*:}
    case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  done
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing with apt: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # The Debian package starts a system redis-server on 6379; we never use that one.
  [ -n "${SKIP_BUILD:-}" ] || "$ROOT/tests/deps.sh"
}

# cargo_build MSG PACKAGE...: logs MSG and runs `cargo build --release -p PACKAGE...` in the
# workspace root, cargo's output on stderr; dies if cargo is missing.
cargo_build() {
  local msg=$1 args=() pkg
  shift
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with https://rustup.rs"
  log "$msg"
  for pkg in "$@"; do args+=(-p "$pkg"); done
  (cd "$ROOT" && cargo build --release "${args[@]}" >&2)
}

# build_meridian: builds `meridian` (release) unless SKIP_BUILD is set; dies unless $MERIDIAN_BIN
# is then an executable.
build_meridian() {
  if [ -n "${SKIP_BUILD:-}" ]; then
    log "SKIP_BUILD set: using $MERIDIAN_BIN"
  else
    cargo_build "building meridian (release)" meridian-server
  fi
  [ -x "$MERIDIAN_BIN" ] || die "$MERIDIAN_BIN missing"
}

# make_work TAG: a fresh temp dir ${TMPDIR:-/tmp}/meridian-TAG.XXXXXX in WORK (removed on exit,
# its *.log files kept in $OUT/logs).
make_work() { WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-$1.XXXXXX"); }

# ---------------------------------------------------------------- ports and servers

USED_PORTS=" "
# free_port: sets PORT to a random loopback port a server can bind: not handed out before in this
# run (several can be picked before any is bound), no TCP or UDP socket on it (ss; without ss,
# nothing answers a TCP connect), and below the kernel's ephemeral range when that starts above
# 21000: a client's socket in TIME_WAIT on a port makes a listener's bind fail with "Address
# already in use", and a busy machine has thousands of them in that range.
free_port() {
  local p span=30000 eph
  eph=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)
  if [ -n "$eph" ] && [ "$eph" -gt 21000 ]; then span=$((eph - 20000)); fi
  for _ in $(seq 100); do
    p=$(((RANDOM << 15 | RANDOM) % span + 20000))
    case $USED_PORTS in *" $p "*) continue ;; esac
    if command -v ss >/dev/null 2>&1; then
      [ -z "$(ss -Htuan "sport = :$p" 2>/dev/null)" ] || continue
    elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      continue
    fi
    USED_PORTS="$USED_PORTS$p "
    # shellcheck disable=SC2034 # PORT is the answer, read by the caller
    PORT=$p
    return 0
  done
  die "no free port found"
}

# wait_ping PORT NAME PID LOG: waits until PING answers PONG (30 s); dies, with LOG's last lines,
# if the process PID exits first or time runs out.
wait_ping() {
  local port=$1 name=$2 pid=$3 logf=$4
  for _ in $(seq 300); do
    [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logf" >&2 || true
      die "$name exited before answering PING"
    fi
    sleep 0.1
  done
  tail -n 20 "$logf" >&2 || true
  die "$name did not answer PING on port $port within 30 s"
}

# track PID: records a background server (PIDS, SERVER_PID) so cleanup stops it.
track() {
  SERVER_PID=$1
  PIDS+=("$SERVER_PID")
}

# launch_redis DIR PORT LOG: redis-server in the background (no wait) with AOF, appendfsync
# everysec, no RDB, its files in DIR, logging to LOG.
launch_redis() {
  local dir=$1 port=$2 logf=$3
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
    --appendonly yes --appendfsync everysec --daemonize no --logfile "$logf" &
  track $!
}

# launch_meridian DIR PORT LOG [FLAG...]: one Meridian node (MERIDIAN_BIN) in the background (no
# wait), data in DIR/data, output appended to LOG; flags: FLAG... then $MERIDIAN_ARGS.
launch_meridian() {
  local dir=$1 port=$2 logf=$3
  shift 3
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # MERIDIAN_ARGS is a list of flags
  "$MERIDIAN_BIN" --bind 127.0.0.1 --port "$port" --data-dir "$dir/data" "$@" ${MERIDIAN_ARGS:-} \
    >>"$logf" 2>&1 &
  track $!
}

# start_redis DIR PORT LOG: launch_redis, then waits until it answers PING.
start_redis() {
  launch_redis "$@"
  wait_ping "$2" redis-server "$SERVER_PID" "$3"
}

# start_meridian DIR PORT LOG [FLAG...]: launch_meridian, then waits until it answers PING.
start_meridian() {
  launch_meridian "$@"
  wait_ping "$2" meridian "$SERVER_PID" "$3"
}

# ---------------------------------------------------------------- stopping and cleanup

PIDS=()
WORK=""
ON_CLEANUP=()  # commands cleanup runs after the servers are stopped, before logs are kept
LOG_DEPTH=2    # how deep below WORK cleanup looks for *.log files (never inside */data/*)
LOG_PREFIX_DIR="" # set: a kept log is named <its directory>-<name> (nodes' logs share names)

# forget_pid PID: drops PID from PIDS once it is reaped (so cleanup never signals a reused id).
forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# stop_pids PID...: SIGTERM to each, then waits up to 10 s for each, SIGKILLs one that is still
# running, reaps it and forgets it.
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop on SIGTERM within 10 s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
  done
}

# keep_logs: copies WORK's *.log files (LOG_DEPTH deep, none under a data/ directory) into
# $OUT/logs, named as LOG_PREFIX_DIR says.
keep_logs() {
  local f name
  mkdir -p "$OUT/logs"
  while IFS= read -r f; do
    name=$(basename "$f")
    [ -z "$LOG_PREFIX_DIR" ] || name="$(basename "$(dirname "$f")")-$name"
    cp "$WORK/$f" "$OUT/logs/$name" 2>/dev/null || true
  done < <(cd "$WORK" && find . -maxdepth "$LOG_DEPTH" -name '*.log' -not -path '*/data/*' 2>/dev/null)
}

# cleanup: stops every server in PIDS, runs ON_CLEANUP, keeps the logs and removes WORK.
cleanup() {
  local cmd
  stop_pids "${PIDS[@]}"
  for cmd in "${ON_CLEANUP[@]}"; do "$cmd"; done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    keep_logs
    rm -rf "$WORK"
  fi
}

# cleanup_on_exit: runs cleanup on exit; Ctrl-C and SIGTERM exit (130) through it.
cleanup_on_exit() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# ---------------------------------------------------------------- measurements and reports

# redis_bench PORT PIPELINE CSV ERR [TESTS]: `redis-benchmark -t TESTS` (default set,get) with
# $CLIENTS connections, $N requests, $KEYS keys, $DATA-byte values, -P PIPELINE; CSV output to
# CSV, stderr to ERR. Killed after $BENCH_TIMEOUT_S seconds (default 600): redis-benchmark
# spins forever, a core at 100 %, once its server is gone.
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-600}
redis_bench() {
  timeout "$BENCH_TIMEOUT_S" redis-benchmark -h 127.0.0.1 -p "$1" -t "${5:-set,get}" -c "$CLIENTS" \
    -n "$N" -r "$KEYS" -d "$DATA" -P "$2" --csv >"$3" 2>"$4"
}

# csv FILE TEST COLUMN: a field of redis-benchmark's CSV, the column found by its header name
# (rps, p50_latency_ms, p99_latency_ms, ...).
csv() {
  awk -F, -v t="\"$2\"" -v c="\"$3\"" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
    $1 == t && col { v = $col; gsub(/"/, "", v); print v }' "$1"
}

# info_field PORT FIELD [SECTION]: a field of INFO (or INFO SECTION).
info_field() {
  redis-cli -h 127.0.0.1 -p "$1" INFO ${3:+"$3"} | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'
}

# ratio A B: A / B with two decimals ("n/a" when B is not positive).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# median: the median of the numbers on stdin (whitespace-separated; "-" when none).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# proc_ticks: "pid ticks comm" for every process: CPU ticks (user + system) used so far.
# One awk over every stat file (a process per pid would itself load the machine), reading each
# with getline so that a process gone since the glob is skipped instead of ending awk; the
# command name, in parentheses, may hold spaces (printed as '_'): the fixed fields follow its
# closing one.
proc_ticks() {
  awk 'BEGIN {
    for (i = 1; i < ARGC; i++) {
      if ((getline line < ARGV[i]) <= 0) continue
      close(ARGV[i])
      lp = index(line, " ("); rp = match(line, /\) [A-Za-z] /)
      if (!lp || !rp) continue
      split(substr(line, rp + 2), f, " ")
      comm = substr(line, lp + 2, rp - lp - 2); gsub(/ /, "_", comm)
      print substr(line, 1, lp - 1), f[12] + f[13], comm
    }
  }' /proc/[0-9]*/stat
}

# check_idle: samples the machine for one second before a report starts its servers and
# sets IDLE_NOTE (for the report's header) to how busy it was, naming the busiest processes.
# Above BENCH_MAX_BUSY percent (default 10) it warns: a leftover load skews every figure (a
# stray redis-benchmark spinning on a dead port once took a core for a whole session and
# halved redis-server's and Meridian's rates alike). BENCH_REQUIRE_IDLE=1 makes that an error.
check_idle() {
  local max=${BENCH_MAX_BUSY:-10} s0 s1 p0 p1 busy top
  s0=$(head -1 /proc/stat); p0=$(proc_ticks | sort -k1,1)
  sleep 1
  s1=$(head -1 /proc/stat); p1=$(proc_ticks | sort -k1,1)
  busy=$(printf '%s\n%s\n' "$s0" "$s1" | awk '
    { t = 0; for (i = 2; i <= NF; i++) t += $i; idle = $5 + $6 }
    NR == 1 { t0 = t; i0 = idle }
    NR == 2 { if (t > t0) printf "%d", 100 - 100 * (idle - i0) / (t - t0); else print 0 }')
  top=$(join <(echo "$p0") <(echo "$p1") | awk '$4 > $2 { print $4 - $2, $1, $3 }' | sort -rn |
    head -3 | awk -v hz="$(getconf CLK_TCK)" \
      '{ printf "%s%s (pid %s) %d %% of a core", sep, $3, $2, 100 * $1 / hz; sep = ", " }')
  IDLE_NOTE="the machine was ${busy} % busy in the second before the servers started"
  if [ "$busy" -le "$max" ]; then
    log "$IDLE_NOTE"
    return
  fi
  IDLE_NOTE="$IDLE_NOTE (${top:-no single process}): figures skewed"
  log "WARNING: $IDLE_NOTE"
  [ -z "${BENCH_REQUIRE_IDLE:-}" ] || die "machine busy (BENCH_REQUIRE_IDLE is set): stop the load above first"
}

# cpu_model: the CPU's model name.
cpu_model() { awk -F: '/model name/ { sub(/^ /, "", $2); print $2; exit }' /proc/cpuinfo; }

# versions: "Redis server v=X.Y.Z, meridian <commit>" for a report's header.
versions() {
  echo "$(redis-server --version | awk '{print $1, $2, $3}'), meridian $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
}
