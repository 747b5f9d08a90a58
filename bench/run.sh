#!/usr/bin/env bash
# `make bench`: the relay against the bundled mock vendor, side by side with the mock alone
# (direct, the floor) and nginx as a plain reverse proxy, all on 127.0.0.1, in one run.
# Prints one table and the targets of issue 6 with PASS/FAIL. See docs/benchmarks.md.
#
# Knobs (environment), full-run defaults in brackets:
#   BENCH_SECONDS        measured seconds per load phase [10]
#   BENCH_WARMUP         unmeasured seconds of load before each phase [2]
#   BENCH_HOLD_STREAMS   hold-test sizes, space-separated; 0 skips the hold test ["1000 5000"]
#   BENCH_HOLD_AFTER     seconds after a hold test before the "after" RSS sample [10]
#   BENCH_TARGETS        targets to run, in order ["direct nginx relay-openai relay-anthropic"]
#   BENCH_NGINX          auto: use nginx, installing it with apt-get when missing; 0: skip [auto]
#   BENCH_LOADGEN_THREADS  tokio workers of the load generator [1]
#   BENCH_RELAY_LOG      the relay's RELAY_LOG; info writes its access line per request [info]
#   BENCH_KEEP           1: keep the temp dir (configs, logs) [0]
#   BENCH_MICRO          1: also run the plugin-boundary micro-benchmarks (host/benches) [1]
#   BENCH_PHASES         load phases of every target, in order; empty runs none (the hold
#                        test is BENCH_HOLD_STREAMS) ["ns32 ns256 stream"]
#   BENCH_RELAY_BIN      the relay binary measured [target/release/relay]
#   BENCH_PLUGIN_DIR     the adapters it loads (*.wasm) [plugins.d]
#                        These two compare builds: run the script alternately with an
#                        older binary and its adapters, and with the current ones.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_HOLD_STREAMS=${BENCH_HOLD_STREAMS:-"1000 5000"}
BENCH_HOLD_AFTER=${BENCH_HOLD_AFTER:-10}
BENCH_TARGETS=${BENCH_TARGETS:-"direct nginx relay-openai relay-anthropic"}
BENCH_NGINX=${BENCH_NGINX:-auto}
BENCH_LOADGEN_THREADS=${BENCH_LOADGEN_THREADS:-1}
BENCH_RELAY_LOG=${BENCH_RELAY_LOG:-info}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_MICRO=${BENCH_MICRO:-1}
BENCH_PHASES=${BENCH_PHASES-"ns32 ns256 stream"}
BENCH_RELAY_BIN=${BENCH_RELAY_BIN:-$ROOT/target/release/relay}
BENCH_PLUGIN_DIR=${BENCH_PLUGIN_DIR:-$ROOT/plugins.d}

# The workloads of issue 6.
readonly CONCURRENCY_LOW=32
readonly CONCURRENCY_HIGH=256
# Streams in flight during the streaming phase: the same as the latency phase.
readonly STREAM_CONCURRENCY=32
# Content chunks per streamed reply.
readonly STREAM_CHUNKS=20
# The prompt makes the mock's reply 96 characters, which it splits into exactly 20 chunks.
readonly PROMPT="Please write a short answer about the weather in Lisbon."
# One slow stream lasts about this long: 20 chunks at about one per second.
readonly HOLD_STREAM_MS=20000
# The mock pauses before every event but the first, so the pause is the stream length over
# the gaps: OpenAI sends 23 events (role, 20 chunks, finish, [DONE]), Anthropic 26
# (message_start, content_block_start, ping, 20 deltas, content_block_stop, message_delta,
# message_stop).
readonly OPENAI_GAP_MS=$((HOLD_STREAM_MS / 22))
readonly ANTHROPIC_GAP_MS=$((HOLD_STREAM_MS / 25))
# SSE data events a complete stream has at least, as the client sees it: 20 content chunks
# and [DONE] (the role and finish chunks come on top).
readonly MIN_STREAM_EVENTS=21
# Connections (and hold-test streams) being opened at once: below the 128-connection
# listen backlog the relay and the mock get from tokio, so no SYN is dropped and retried
# 1 s later.
readonly CONNECT_RAMP=64
# Bound on one slow stream: three times its length.
readonly HOLD_TIMEOUT_S=60
# Bound on a server's start (the relay's first start compiles the adapters; a busy
# 2-core machine can take many seconds).
readonly START_TIMEOUT_S=120
# Idle vendor connections the relay keeps: above the highest concurrency, so the load
# phases reuse connections instead of opening one per request.
readonly POOL_MAX_IDLE=512
# Open files per process: the relay holds two sockets per stream of the hold test.
readonly FD_LIMIT=65536
# Seconds a stopped server gets to exit before SIGKILL.
readonly STOP_GRACE_S=5
# Seconds between starting a server and sampling its idle RSS.
readonly IDLE_SETTLE_S=1
# Pause between phases, so one phase's closing connections do not land in the next.
readonly PHASE_PAUSE_S=1
# Bound on installing nginx.
readonly INSTALL_TIMEOUT_S=600

readonly MOCK_KEY="sk-demo-upstream"
readonly CLIENT_KEY="sk-bench-client"
readonly RELAY=$BENCH_RELAY_BIN
readonly DEMO="$ROOT/target/release/demo-upstream"
readonly LOADGEN_DIR="$ROOT/target/bench-loadgen"
readonly LOADGEN="$LOADGEN_DIR/release/loadgen"
readonly OUT_DIR="$ROOT/target/bench"

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

for p in $BENCH_PHASES; do
  [[ $p =~ ^(ns$CONCURRENCY_LOW|ns$CONCURRENCY_HIGH|stream)$ ]] ||
    die "BENCH_PHASES: unknown phase '$p' (ns$CONCURRENCY_LOW, ns$CONCURRENCY_HIGH, stream)"
done
for f in "$RELAY" "$DEMO" "$BENCH_PLUGIN_DIR/openai.wasm" "$BENCH_PLUGIN_DIR/anthropic.wasm"; do
  [[ -e $f ]] || die "$f is missing: run 'make build' first (make bench does)"
done

say "== building the load generator (bench/loadgen)"
cargo build --release --locked --quiet --manifest-path bench/loadgen/Cargo.toml --target-dir "$LOADGEN_DIR"

# --- processes: every one this script starts is recorded and stopped on any exit --------
PIDS=()
TMP=""
forget() { local p=$1 i; for i in "${!PIDS[@]}"; do [[ ${PIDS[$i]} == "$p" ]] && unset 'PIDS[i]'; done; return 0; }
stop() {
  local pid=$1 i
  if kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < STOP_GRACE_S * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do stop "$p"; done
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ $BENCH_KEEP == 1 ]]; then say "bench: kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# spawn LOG CMD...: start a server in the background; its pid is in $LAST.
spawn() { local log=$1; shift; "$@" >"$log" 2>&1 & LAST=$!; PIDS+=("$LAST"); }
# The load generator runs in the background and is waited for, so Ctrl-C and SIGTERM reach
# the traps at once instead of after it finishes.
lg() {
  local p rc=0
  "$LOADGEN" --threads "$BENCH_LOADGEN_THREADS" "$@" & p=$!
  PIDS+=("$p")
  wait "$p" || rc=$?
  forget "$p"
  return "$rc"
}
now_us() { local t=$EPOCHREALTIME; printf '%s' "${t//[.,]/}"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/relay-bench.XXXXXX")
# nginx's workers run as nobody and must reach their temp dirs inside.
chmod 755 "$TMP"
RESULTS="$TMP/results.tsv"
: >"$RESULTS"
# record TARGET KEY VALUE
record() { printf '%s\t%s\t%s\n' "$1" "$2" "${3//$'\t'/ }" >>"$RESULTS"; }
note() { say "bench: note: $2"; record "$1" note "$2"; }

# --- limits -------------------------------------------------------------------------------
ulimit -n "$FD_LIMIT" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
HOLDS=()
for n in $BENCH_HOLD_STREAMS; do
  [[ $n =~ ^[0-9]+$ ]] || die "BENCH_HOLD_STREAMS: '$n' is not a number of streams"
  ((n > 0)) || continue
  # The relay needs a client and a vendor socket per stream, plus its own few.
  if ((2 * n + 256 > FDS)); then
    note meta "hold test of $n streams skipped: open-file limit is $FDS (raise it: ulimit -n)"
  else
    HOLDS+=("$n")
  fi
done

# --- nginx ----------------------------------------------------------------------------------
NGINX=""
find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; }; }
if [[ " $BENCH_TARGETS " == *" nginx "* ]]; then
  if [[ $BENCH_NGINX == 0 ]]; then
    note nginx "nginx not run (BENCH_NGINX=0)"
  else
    NGINX=$(find_nginx || true)
    if [[ -z $NGINX && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      say "== installing nginx with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      timeout "$INSTALL_TIMEOUT_S" apt-get install -y --no-install-recommends nginx >"$TMP/apt.log" 2>&1 ||
        { timeout "$INSTALL_TIMEOUT_S" apt-get update >>"$TMP/apt.log" 2>&1 &&
          timeout "$INSTALL_TIMEOUT_S" apt-get install -y --no-install-recommends nginx >>"$TMP/apt.log" 2>&1; } ||
        say "bench: apt-get could not install nginx (last lines: $(tail -n 2 "$TMP/apt.log" | tr '\n' ' '))"
      NGINX=$(find_nginx || true)
    fi
    [[ -n $NGINX ]] || note nginx "nginx not available (not installed; installing needs root and apt-get)"
  fi
fi

# --- what this run is -----------------------------------------------------------------------
# The knobs the caller set (the script's own defaults are not exported, so not listed).
knobs=""
for k in BENCH_SECONDS BENCH_WARMUP BENCH_HOLD_STREAMS BENCH_HOLD_AFTER BENCH_TARGETS BENCH_NGINX \
  BENCH_LOADGEN_THREADS BENCH_RELAY_LOG BENCH_PHASES BENCH_RELAY_BIN BENCH_PLUGIN_DIR; do
  v=$(printenv "$k" || true)
  [[ -z $v ]] || knobs+="$k=$(printf '%q' "$v") "
done
record meta command "${knobs}bash bench/run.sh (make bench runs it after make build)"
record meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
record meta machine "$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), \
$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), \
Linux $(uname -r)"
record meta "load average at start" "$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $RELAY == "$ROOT/target/release/relay" ]]; then
  record meta relay "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD \
    2>/dev/null || echo ' (with uncommitted changes)')"
else
  record meta relay "$RELAY, adapters from $BENCH_PLUGIN_DIR"
fi
[[ -n $NGINX ]] && record meta nginx "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
record meta "per load phase" "${BENCH_WARMUP} s warm-up, ${BENCH_SECONDS} s measured"
record meta hold_after_s "$BENCH_HOLD_AFTER"
for p in $BENCH_PHASES; do
  case $p in
    ns*) record meta "phase.$p" "non-stream c=${p#ns}" ;;
    stream) record meta phase.stream "stream $STREAM_CHUNKS chunks c=$STREAM_CONCURRENCY" ;;
  esac
done
for n in "${HOLDS[@]}"; do record meta "phase.hold$n" "hold $n slow streams"; done

NS_BODY='{"model":"bench-fast","messages":[{"role":"user","content":"'"$PROMPT"'"}]}'
STREAM_BODY='{"model":"bench-fast","stream":true,"messages":[{"role":"user","content":"'"$PROMPT"'"}]}'
SLOW_BODY='{"model":"bench-slow","stream":true,"messages":[{"role":"user","content":"'"$PROMPT"'"}]}'

# wait_port PORT: until something accepts connections there.
wait_port() {
  local i
  for ((i = 0; i < START_TIMEOUT_S * 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.01
  done
  die "nothing listens on 127.0.0.1:$1 after $START_TIMEOUT_S s"
}

# start_mock TARGET VENDOR PORT: the mock vendor, ready; its pid in $MOCK_PID. The OpenAI
# mock is probed with a real request, timed from spawn (direct's start-up figure).
start_mock() {
  local target=$1 vendor=$2 port=$3 t0
  t0=$(now_us)
  spawn "$TMP/mock-$target.log" "$DEMO" --listen "127.0.0.1:$port" --vendor "$vendor" \
    --chunks "$STREAM_CHUNKS" --chunk-delay-ms 0
  MOCK_PID=$LAST MOCK_TARGET=$target MOCK_VENDOR=$vendor MOCK_PORT=$port
  if [[ $vendor == openai ]]; then
    local key=mock_startup_ms
    [[ $target == direct ]] && key=startup_ms
    lg wait-ok --url "http://127.0.0.1:$port/v1/chat/completions" --header "authorization: Bearer $MOCK_KEY" \
      --body "$NS_BODY" --record "$RESULTS" --target "$target" --key "$key" --since-us "$t0" \
      --timeout "$START_TIMEOUT_S"
  else
    wait_port "$port"
  fi
}

# fresh_mock: replace the running mock with a new one on the same port. The mock keeps
# every request it receives (for the tests' assertions), so its memory and per-request
# work grow with the requests served: a fresh one per phase keeps the floor flat and the
# run's memory bounded. Servers in front of it drop their idle connections to the old one.
fresh_mock() {
  stop "$MOCK_PID"
  spawn "$TMP/mock-$MOCK_TARGET.log" "$DEMO" --listen "127.0.0.1:$MOCK_PORT" --vendor "$MOCK_VENDOR" \
    --chunks "$STREAM_CHUNKS" --chunk-delay-ms 0
  MOCK_PID=$LAST
  wait_port "$MOCK_PORT"
  sleep "$PHASE_PAUSE_S"
}

# wait_ready TARGET PORT KEY BEARER T0: record the time from T0 (spawn) to the first 200.
wait_ready() {
  lg wait-ok --url "http://127.0.0.1:$2/v1/chat/completions" --header "authorization: Bearer $4" \
    --body "$NS_BODY" --record "$RESULTS" --target "$1" --key "$3" --since-us "$5" --timeout "$START_TIMEOUT_S"
}

idle_rss() {
  sleep "$IDLE_SETTLE_S"
  lg rss --pid "$2" --record "$RESULTS" --target "$1" --key idle_rss_kib
}

# run_phases TARGET URL PID AUTH SLOW: every workload against one target, each with a
# fresh mock. PID is the server measured (`mock` for the mock itself). SLOW is the header
# that paces the mock for the hold test, for targets that pass client headers on (the
# relay does not: its slow channel sets it).
run_phases() {
  local target=$1 url=$2 pid=$3 auth=$4 slow=$5 c n
  local args=()
  # Start the next phase's mock and set its arguments (bash's dynamic scope: this sees
  # and sets run_phases' locals).
  next_phase() {
    fresh_mock
    local server=$pid
    [[ $pid == mock ]] && server=$MOCK_PID
    args=(--url "$url" --header "$auth" --pid "$server" --record "$RESULTS" --target "$target")
  }
  local phase
  for phase in $BENCH_PHASES; do
    next_phase
    case $phase in
      ns*)
        c=${phase#ns}
        say "-- $target: non-stream, concurrency $c"
        lg load "${args[@]}" --body "$NS_BODY" --phase "ns$c" --concurrency "$c" --ramp "$CONNECT_RAMP" \
          --warmup "$BENCH_WARMUP" --seconds "$BENCH_SECONDS" || note "$target" "non-stream c=$c phase failed"
        ;;
      stream)
        say "-- $target: streams of $STREAM_CHUNKS chunks, concurrency $STREAM_CONCURRENCY"
        lg load "${args[@]}" --body "$STREAM_BODY" --stream --min-events "$MIN_STREAM_EVENTS" --phase stream \
          --concurrency "$STREAM_CONCURRENCY" --ramp "$CONNECT_RAMP" --warmup "$BENCH_WARMUP" \
          --seconds "$BENCH_SECONDS" || note "$target" "stream phase failed"
        ;;
    esac
  done
  local pace=()
  [[ -n $slow ]] && pace=(--header "$slow")
  for n in "${HOLDS[@]}"; do
    next_phase
    say "-- $target: hold $n slow streams (~$((HOLD_STREAM_MS / 1000)) s each, then ${BENCH_HOLD_AFTER} s idle)"
    lg hold "${args[@]}" "${pace[@]}" --body "$SLOW_BODY" --stream --min-events "$MIN_STREAM_EVENTS" \
      --phase "hold$n" --streams "$n" --ramp "$CONNECT_RAMP" --timeout "$HOLD_TIMEOUT_S" --after "$BENCH_HOLD_AFTER" ||
      note "$target" "hold $n phase failed"
  done
}

target_direct() {
  local port
  port=$(lg free-ports 1)
  start_mock direct openai "$port"
  idle_rss direct "$MOCK_PID"
  run_phases direct "http://127.0.0.1:$port/v1/chat/completions" mock "authorization: Bearer $MOCK_KEY" \
    "x-mock-chunk-delay-ms: $OPENAI_GAP_MS"
  stop "$MOCK_PID"
}

# nginx as a plain reverse proxy: keep-alive both ways, unbuffered (as SSE needs), the
# default access log; the client's headers (the mock's key, the pacing) pass through.
target_nginx() {
  [[ -n $NGINX ]] || return 0
  local ports mock port dir t0 pid
  mapfile -t ports < <(lg free-ports 2)
  mock=${ports[0]} port=${ports[1]} dir=$TMP/nginx
  start_mock nginx openai "$mock"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $FDS;
events { worker_connections 16384; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # The relay does not cap requests per connection either.
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$mock;
        keepalive $POOL_MAX_IDLE;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }
    }
}
EOF
  if ! "$NGINX" -t -q -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" 2>"$dir/test.log"; then
    note nginx "nginx refused the bench config: $(tail -n 2 "$dir/test.log" | tr '\n' ' ')"
    stop "$MOCK_PID"
    return 0
  fi
  t0=$(now_us)
  spawn "$dir/stderr.log" "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf"
  pid=$LAST
  if wait_ready nginx "$port" startup_ms "$MOCK_KEY" "$t0"; then
    idle_rss nginx "$pid"
    run_phases nginx "http://127.0.0.1:$port/v1/chat/completions" "$pid" "authorization: Bearer $MOCK_KEY" \
      "x-mock-chunk-delay-ms: $OPENAI_GAP_MS"
  else
    note nginx "nginx did not serve: $(tail -n 2 "$dir/error.log" 2>/dev/null | tr '\n' ' ')"
  fi
  stop "$pid"
  stop "$MOCK_PID"
}

# The relay with one adapter, in front of that vendor's mock. It is started twice with the
# same data_dir: the first start compiles the adapters into the cache, the second is the
# one measured (start-up with the adapters cached) and loaded.
target_relay() {
  local adapter=$1 target=relay-$1 ports mock port dir base gap t0 pid
  mapfile -t ports < <(lg free-ports 2)
  mock=${ports[0]} port=${ports[1]} dir=$TMP/$target
  start_mock "$target" "$adapter" "$mock"
  if [[ $adapter == openai ]]; then
    base="http://127.0.0.1:$mock/v1" gap=$OPENAI_GAP_MS
  else
    base="http://127.0.0.1:$mock" gap=$ANTHROPIC_GAP_MS
  fi
  mkdir -p "$dir"
  cat >"$dir/relay.toml" <<EOF
listen = "127.0.0.1:$port"
plugin_dir = "$TMP/plugins"
data_dir = "data"

# Generous: the bench measures, it does not test the bounds.
[timeouts]
response_header = 120
stream_idle = 120
total = 300

[limits]
pool_max_idle_per_host = $POOL_MAX_IDLE
shutdown_grace = 1

[[channel]]
name = "bench-fast"
adapter = "$adapter"
base_url = "$base"
api_key = "$MOCK_KEY"
models = ["bench-fast"]

# The hold test's channel: the mock paces its stream to ~20 s.
[[channel]]
name = "bench-slow"
adapter = "$adapter"
base_url = "$base"
api_key = "$MOCK_KEY"
models = ["bench-slow"]
headers = { "x-mock-chunk-delay-ms" = "$gap" }

[[token]]
name = "bench"
key = "$CLIENT_KEY"
models = ["*"]
EOF
  t0=$(now_us)
  spawn "$dir/relay-first.log" "$RELAY" serve --config "$dir/relay.toml"
  pid=$LAST
  if ! wait_ready "$target" "$port" cold_startup_ms "$CLIENT_KEY" "$t0"; then
    note "$target" "the relay did not serve: $(tail -n 3 "$dir/relay-first.log" | tr '\n' ' ')"
    stop "$pid"
    stop "$MOCK_PID"
    return 0
  fi
  stop "$pid"
  t0=$(now_us)
  spawn "$dir/relay.log" "$RELAY" serve --config "$dir/relay.toml"
  pid=$LAST
  if wait_ready "$target" "$port" startup_ms "$CLIENT_KEY" "$t0"; then
    idle_rss "$target" "$pid"
    run_phases "$target" "http://127.0.0.1:$port/v1/chat/completions" "$pid" "authorization: Bearer $CLIENT_KEY" ""
  else
    note "$target" "the relay did not serve on its second start: $(tail -n 3 "$dir/relay.log" | tr '\n' ' ')"
  fi
  stop "$pid"
  stop "$MOCK_PID"
}

# The relay's environment: its access log as deployed (or as asked), and no timeout
# overrides from the caller's shell.
export RELAY_LOG=$BENCH_RELAY_LOG
unset RELAY_CONFIG RELAY_CONNECT_TIMEOUT RELAY_TLS_HANDSHAKE_TIMEOUT RELAY_RESPONSE_HEADER_TIMEOUT \
  RELAY_STREAM_IDLE_TIMEOUT RELAY_TIMEOUT
# The shipped adapters as they are now: a rebuild during the run does not reach the relay.
mkdir -p "$TMP/plugins"
cp "$BENCH_PLUGIN_DIR"/*.wasm "$TMP/plugins/"

for target in $BENCH_TARGETS; do
  say "== $target"
  case $target in
    direct) target_direct ;;
    nginx) target_nginx ;;
    relay-openai) target_relay openai ;;
    relay-anthropic) target_relay anthropic ;;
    *) die "unknown target '$target' (direct, nginx, relay-openai, relay-anthropic)" ;;
  esac
done

record meta "load average at end" "$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$OUT_DIR"
cp "$RESULTS" "$OUT_DIR/results.tsv"
say ""
"$LOADGEN" report "$RESULTS" | tee "$OUT_DIR/report.md"
say ""
say "bench: report saved to target/bench/report.md (raw figures: target/bench/results.tsv)"

if [[ $BENCH_MICRO == 1 ]]; then
  say ""
  say "== plugin boundary (cargo bench -p relay --bench plugin_boundary)"
  (cd "$ROOT" && cargo bench --locked -q -p relay --bench plugin_boundary) | tee "$OUT_DIR/plugin_boundary.md"
  say "bench: micro-benchmarks saved to target/bench/plugin_boundary.md"
fi
