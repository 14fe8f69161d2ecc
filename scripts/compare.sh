#!/usr/bin/env bash
# cachet beside nginx proxy_cache, Varnish, Apache Traffic Server and a minimal hyper server
# (examples/hyper_limit.rs: the limit for anything built on hyper), measured in ONE run on this
# machine. Every server is pinned to one core (taskset -c 0), wrk to the other (taskset -c 1,
# wrk -t1 -c64), all on loopback, all in front of the same `cachet origin` (pinned to core 1 with
# the load generator; only fills and the coalescing test reach it).
#
# Rows: hot hit 1 KiB (one URL), hot hit 64 KiB (one URL), a 1,000-key random mix of 1 KiB hits
# (scripts/compare/mix.lua, every key warmed first), and coalescing (200 concurrent requests for
# one cold key with 500 ms of origin latency: origin requests, waiter p50/p99). For each row and
# server: req/s, p50/p99, the server's CPU time per request (utime + stime of the server and all
# its processes from /proc/PID/stat, over the run; ticks of getconf CLK_TCK), and the ratio to each
# peer. Rows and servers are interleaved, once per run.
#
# Noise: each timed run first waits (bounded) for the whole machine to be quiet for 1 s. During
# the run, the busy time of core 0 beyond the server's own CPU time, of core 1 beyond wrk's and the
# origin's, of any other core, and steal time are measured from /proc/stat; a run with more than
# NOISE_PCT of any of these is noisy. A row shows the median of its clean runs, or of all its runs
# marked NOISY when none was clean; row/server pairs without a clean run are retried RETRY_NOISY
# times at the end. Numbers from one run are comparable with each other only: machines of this
# kind differ a lot.
#
# Table on stdout; JSON (versions, machine, every run) to bench/results/compare-<timestamp>.json.
#
#   scripts/compare.sh                 # full: 10 s per wrk run, 3 runs per row and server
#   QUICK=1 scripts/compare.sh         # smoke test: 2 s runs, 1 run each, no retries
#
# Environment: DURATION (wrk -d, default 10s; QUICK: 2s), RUNS (3; QUICK: 1), RETRY_NOISY (1;
# QUICK: 0), CONNS (64), PEERS ("nginx varnish trafficserver": leave one out to skip it),
# BACKENDS ("rwlock sharded moka"), LIMIT_MT=1 (also run hyper_limit on a multi-thread runtime),
# BASE_PORT (18700: the ports used are BASE_PORT .. BASE_PORT+40), QUIET_PCT (10: the whole
# machine's busy share over 1 s at or below which it counts as quiet), QUIET_WAIT (30 s; QUICK:
# 5 s: the longest wait for it), NOISE_PCT (5), SPREAD_PCT (10: clean runs further apart than
# this mark the row NOISY too), NO_BUILD=1 (use the binaries already in target/release).
#
# Installs what is missing from Debian's packages (nginx-light or nginx, varnish, trafficserver,
# wrk) with apt-get. Peer configurations are in scripts/compare/, filled in with this run's ports
# and directories; caches live in /dev/shm. Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CONF=$ROOT/scripts/compare
BENCH=(python3 "$CONF/bench.py")

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-2s}
  RUNS=${RUNS:-1}
  QUIET_WAIT=${QUIET_WAIT:-5}
  RETRY_NOISY=${RETRY_NOISY:-0}
else
  DURATION=${DURATION:-10s}
  RUNS=${RUNS:-3}
  QUIET_WAIT=${QUIET_WAIT:-30}
  RETRY_NOISY=${RETRY_NOISY:-1}
fi
CONNS=${CONNS:-64}
PEERS=${PEERS:-nginx varnish trafficserver}
BACKENDS=${BACKENDS:-rwlock sharded moka}
LIMIT_MT=${LIMIT_MT:-0}
BASE_PORT=${BASE_PORT:-18700}
QUIET_PCT=${QUIET_PCT:-10}
NOISE_PCT=${NOISE_PCT:-5}
SPREAD_PCT=${SPREAD_PCT:-10}
SERVER_CORE=0
CLIENT_CORE=1
COALESCE_N=200
COALESCE_LATENCY=500ms
MIX_KEYS=1000
export MIX_KEYS
CLK_TCK=$(getconf CLK_TCK)
export CLK_TCK

started=$(date -u -Iseconds)
say() { printf 'compare: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ $(uname -s) == Linux ]] || die "needs Linux (/proc, taskset)"
ncpu=$(nproc --all)
((ncpu >= 2)) || die "needs at least 2 cores (servers on core $SERVER_CORE, wrk on core $CLIENT_CORE); this machine has $ncpu"
((ncpu == 2)) || say "note: $ncpu cores; servers use core $SERVER_CORE and wrk core $CLIENT_CORE, the others stay idle"

# ---------------------------------------------------------------------------------------------
# Packages

sudo=()
[[ $EUID -eq 0 ]] || sudo=(sudo)
need=()
if ! command -v nginx >/dev/null; then
  if apt-cache show nginx-light >/dev/null 2>&1; then need+=(nginx-light); else need+=(nginx); fi
fi
[[ " $PEERS " != *" varnish "* ]] || command -v varnishd >/dev/null || need+=(varnish)
[[ " $PEERS " != *" trafficserver "* ]] || command -v traffic_server >/dev/null || need+=(trafficserver)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  say "installing from Debian's packages: ${need[*]}"
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${need[@]}" >&2; then
    "${sudo[@]}" apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${need[@]}" >&2
  fi
else
  say "nginx, varnish, trafficserver and wrk already installed"
fi

# ---------------------------------------------------------------------------------------------
# Build

BIN=$ROOT/target/release/cachet
LIMIT_BIN=$ROOT/target/release/examples/hyper_limit
if [[ ${NO_BUILD:-0} != 1 ]]; then
  say "cargo build --release --bin cachet --example hyper_limit"
  cargo build --release --bin cachet --example hyper_limit >&2
fi
[[ -x $BIN && -x $LIMIT_BIN ]] || die "missing $BIN or $LIMIT_BIN (build them, or drop NO_BUILD)"

# ---------------------------------------------------------------------------------------------
# Ports, directories, clean-up

ORIGIN_PORT=$BASE_PORT
LIMIT_PORT=$((BASE_PORT + 1))
LIMIT_MT_PORT=$((BASE_PORT + 2))
CACHET_PORT0=$((BASE_PORT + 10))
NGINX_PORT=$((BASE_PORT + 20))
VARNISH_PORT=$((BASE_PORT + 21))
VARNISH_ADMIN_PORT=$((BASE_PORT + 22))
ATS_PORT=$((BASE_PORT + 23))
for p in $(seq "$BASE_PORT" $((BASE_PORT + 40))); do
  if [[ -n $(ss -Hltn "sport = :$p" 2>/dev/null) ]]; then
    die "port $p is in use; pick another BASE_PORT"
  fi
done

work=$(mktemp -d /tmp/cachet-compare.XXXXXX)
shm=$(mktemp -d /dev/shm/cachet-compare.XXXXXX)
chmod 755 "$work" "$shm"
mkdir -p "$work/logs"
started_pids=()

# Children of a PID, recursively (nginx workers, the Varnish child, helper processes).
tree_of() {
  local pid=$1 child
  echo "$pid"
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do tree_of "$child"; done
}

cleanup() {
  local rc=$? pid i all=()
  trap - EXIT INT TERM
  if ((${#started_pids[@]})); then
    for pid in "${started_pids[@]}"; do mapfile -t -O "${#all[@]}" all < <(tree_of "$pid"); done
    for pid in "${started_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${all[@]}"; do
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${started_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  rm -rf "$work" "$shm"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# render TEMPLATE OUTPUT PORT: fills in @WORK@, @SHM@, @PORT@ and @ORIGIN_PORT@.
render() {
  sed -e "s#@WORK@#$work#g" -e "s#@SHM@#$shm#g" -e "s#@PORT@#$3#g" \
    -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" "$1" >"$2"
}

# The servers measured, in table order: name, port, PID.
names=()
ports=()
pids=()

# start NAME PORT COMMAND...: runs it in the background, logging to $work/logs/NAME.log.
start() {
  local name=$1 port=$2
  shift 2
  "$@" >"$work/logs/$name.log" 2>&1 &
  started_pids+=("$!")
  last_pid=$!
  last_name=$name
  last_port=$port
}

# ready PATH [SECONDS]: waits for the last started server to answer 200 on PATH.
ready() {
  local path=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 10; i++)); do
    if ! kill -0 "$last_pid" 2>/dev/null; then break; fi
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$last_port$path") == 200 ]]; then
      return 0
    fi
    sleep 0.1
  done
  say "$last_name did not come up on 127.0.0.1:$last_port (log follows)"
  tail -n 20 "$work/logs/$last_name.log" >&2 || true
  return 1
}

measured() {
  names+=("$last_name")
  ports+=("$last_port")
  pids+=("$last_pid")
}

# ---------------------------------------------------------------------------------------------
# Servers

say "work dir $work, caches in $shm; ports $BASE_PORT-$((BASE_PORT + 40)) on 127.0.0.1"
start origin "$ORIGIN_PORT" taskset -c "$CLIENT_CORE" "$BIN" origin --listen "127.0.0.1:$ORIGIN_PORT" --latency 50ms
ready "/_origin/stats" || die "the origin did not start"
origin_pid=$last_pid

start hyper-limit "$LIMIT_PORT" taskset -c "$SERVER_CORE" "$LIMIT_BIN" --listen "127.0.0.1:$LIMIT_PORT"
ready /hot1k || die "hyper_limit did not start"
measured
if [[ $LIMIT_MT == 1 ]]; then
  start hyper-limit-mt "$LIMIT_MT_PORT" taskset -c "$SERVER_CORE" "$LIMIT_BIN" --listen "127.0.0.1:$LIMIT_MT_PORT" --multi-thread
  ready /hot1k || die "hyper_limit --multi-thread did not start"
  measured
fi

port=$CACHET_PORT0
for backend in $BACKENDS; do
  start "cachet-$backend" "$port" taskset -c "$SERVER_CORE" "$BIN" serve --listen "127.0.0.1:$port" \
    --upstream "http://127.0.0.1:$ORIGIN_PORT" --backend "$backend" --capacity 256MiB --access-log off
  ready "/_ready?size=16&latency=0ms" || die "cachet --backend $backend did not start"
  measured
  port=$((port + 1))
done

skipped=()
if [[ " $PEERS " == *" nginx "* ]]; then
  mkdir -p "$work/nginx/tmp" "$shm/nginx"
  render "$CONF/nginx.conf" "$work/nginx/nginx.conf" "$NGINX_PORT"
  say "nginx: $(nginx -v 2>&1)"
  start nginx "$NGINX_PORT" taskset -c "$SERVER_CORE" nginx -p "$work/nginx/" -c "$work/nginx/nginx.conf"
  if ready "/_ready?size=16&latency=0ms"; then measured; else skipped+=("nginx (did not start: see above)"); fi
fi
if [[ " $PEERS " == *" varnish "* ]]; then
  mkdir -p "$work/varnish"
  render "$CONF/varnish.vcl" "$work/varnish/default.vcl" "$VARNISH_PORT"
  say "varnish: $(varnishd -V 2>&1 | head -n 1)"
  # -j none: no privilege separation, run as the invoking user; one thread pool (the default is
  # two); malloc storage only.
  start varnish "$VARNISH_PORT" taskset -c "$SERVER_CORE" varnishd -F -j none \
    -a "127.0.0.1:$VARNISH_PORT" -T "127.0.0.1:$VARNISH_ADMIN_PORT" -f "$work/varnish/default.vcl" \
    -s malloc,256m -n "$work/varnish/state" -p thread_pools=1
  if ready "/_ready?size=16&latency=0ms"; then measured; else skipped+=("varnish (did not start: see above)"); fi
fi
if [[ " $PEERS " == *" trafficserver "* ]]; then
  ats=$work/trafficserver
  mkdir -p "$ats"/{etc,data,var,run,log,cache} "$shm/trafficserver"
  # The packaged defaults for the files not kept here (body factory, plugin.config, ...).
  cp -r /etc/trafficserver/. "$ats/etc/"
  for f in records.config remap.config storage.config ip_allow.yaml; do
    render "$CONF/trafficserver/$f" "$ats/etc/$f" "$ATS_PORT"
  done
  render "$CONF/trafficserver/runroot.yaml" "$ats/runroot.yaml" "$ATS_PORT"
  say "trafficserver: $(traffic_server --version 2>/dev/null | head -n 1)"
  start trafficserver "$ATS_PORT" env TS_RUNROOT="$ats/runroot.yaml" taskset -c "$SERVER_CORE" traffic_server
  if ready "/_ready?size=16&latency=0ms" 60; then
    measured
  else
    tail -n 20 "$ats/log/diags.log" >&2 2>/dev/null || true
    skipped+=("trafficserver (did not start: see above)")
  fi
fi

say "measuring: ${names[*]}"
((${#skipped[@]} == 0)) || say "left out: ${skipped[*]}"

# ---------------------------------------------------------------------------------------------
# Warm, check that each server caches, then the timed runs

results=$work/results.jsonl
"${BENCH[@]}" meta --root "$ROOT" --cachet "$BIN" --started "$started" >"$work/meta.json"
: >"$results"
declare -A row_url=([hot1k]="/hot1k?size=1024" [hot64k]="/hot64k?size=64KiB" [mix]="/mix/1?size=1024")
declare -A row_warm=([hot1k]="/hot1k?size=1024" [hot64k]="/hot64k?size=64KiB" [mix]="/mix/{1..$MIX_KEYS}?size=1024")
ROWS=(hot1k hot64k mix)

for i in "${!names[@]}"; do
  for row in "${ROWS[@]}"; do
    out=$("${BENCH[@]}" warm --server "${names[i]}" --row "$row" --port "${ports[i]}" \
      --origin "127.0.0.1:$ORIGIN_PORT" "${row_warm[$row]}")
    echo "$out" >>"$results"
    missed=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["origin_requests_on_check_pass"])' "$out")
    if [[ $missed != 0 ]]; then
      say "WARNING: ${names[i]} is not caching $row: $missed requests reached the origin after warming"
    fi
  done
done
say "warmed: every server holds /hot1k, /hot64k and /mix/1..$MIX_KEYS"

# measure ROW INDEX RUN: one timed wrk run of a row against names[INDEX].
measure() {
  local row=$1 i=$2 run=$3 out lua=()
  [[ $row != mix ]] || lua=(--lua "$CONF/mix.lua")
  out=$("${BENCH[@]}" run --row "$row" --server "${names[i]}" --run "$run" --pid "${pids[i]}" \
    --origin-pid "$origin_pid" --url "http://127.0.0.1:${ports[i]}${row_url[$row]}" "${lua[@]}" \
    --origin "127.0.0.1:$ORIGIN_PORT" --duration "$DURATION" --conns "$CONNS" \
    --server-core "$SERVER_CORE" --client-core "$CLIENT_CORE" --noise-pct "$NOISE_PCT" \
    --quiet-pct "$QUIET_PCT" --quiet-wait "$QUIET_WAIT")
  echo "$out" >>"$results"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("compare: run %-2s %-7s %-15s %10.0f req/s  %s%s" % (r["run"], r["row"], r["server"], r["rps"] or 0, "NOISY " if r["noisy"] else "", " ".join(r["flags"])))' "$out" >&2
}

# coalesce INDEX RUN: 200 concurrent requests for a new cold key through names[INDEX].
coalesce() {
  local i=$1 run=$2 out args
  if [[ ${names[i]} == hyper-limit* ]]; then
    # No origin behind it: the same 200 requests against prepared responses, the client's floor.
    args=(--path "/hot1k?size=1024")
  else
    args=(--path "/coalesce/${names[i]}-$run-$RANDOM?size=1024&latency=$COALESCE_LATENCY" --origin "127.0.0.1:$ORIGIN_PORT")
  fi
  out=$(taskset -c "$CLIENT_CORE" "${BENCH[@]}" coalesce --server "${names[i]}" --run "$run" \
    --port "${ports[i]}" --pid "${pids[i]}" --origin-pid "$origin_pid" --n "$COALESCE_N" "${args[@]}" \
    --server-core "$SERVER_CORE" --client-core "$CLIENT_CORE" --noise-pct "$NOISE_PCT" \
    --quiet-pct "$QUIET_PCT" --quiet-wait "$QUIET_WAIT")
  echo "$out" >>"$results"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("compare: run %-2s coalesce %-15s origin requests %s, %s/%s answered 200, p50 %s ms, p99 %s ms  %s%s" % (r["run"], r["server"], r["origin_requests"], r["ok"], r["n"], r["waiter_p50_ms"], r["waiter_p99_ms"], "NOISY " if r["noisy"] else "", " ".join(r["flags"])))' "$out" >&2
}

# Every row and server once per run, interleaved, so a slow spell of the machine falls on all.
for ((run = 1; run <= RUNS; run++)); do
  say "run $run of $RUNS"
  for row in "${ROWS[@]}"; do
    for i in "${!names[@]}"; do measure "$row" "$i" "$run"; done
  done
  for i in "${!names[@]}"; do coalesce "$i" "$run"; done
done
# Rows and servers that got no clean run (another process ran on a core): once more each.
for ((pass = 1; pass <= RETRY_NOISY; pass++)); do
  mapfile -t lacking < <("${BENCH[@]}" lacking --results "$results")
  ((${#lacking[@]})) || break
  say "retry $pass of $RETRY_NOISY: ${#lacking[@]} row/server pairs without a clean run"
  for entry in "${lacking[@]}"; do
    row=${entry%% *}
    server=${entry#* }
    for i in "${!names[@]}"; do
      [[ ${names[i]} == "$server" ]] || continue
      if [[ $row == coalesce ]]; then coalesce "$i" $((RUNS + pass)); else measure "$row" "$i" $((RUNS + pass)); fi
    done
  done
done

# ---------------------------------------------------------------------------------------------
# Report

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
json=bench/results/compare-$stamp.json
"${BENCH[@]}" report --results "$results" --meta "$work/meta.json" --out "$json" \
  --duration "$DURATION" --runs "$RUNS" --conns "$CONNS" --server-core "$SERVER_CORE" \
  --client-core "$CLIENT_CORE" --coalesce-n "$COALESCE_N" --coalesce-latency "$COALESCE_LATENCY" \
  --quiet-pct "$QUIET_PCT" --noise-pct "$NOISE_PCT" --spread-pct "$SPREAD_PCT" \
  --command "QUICK=$QUICK DURATION=$DURATION RUNS=$RUNS scripts/compare.sh"
((${#skipped[@]} == 0)) || echo "left out of this run: ${skipped[*]}"
echo "JSON: $json"
