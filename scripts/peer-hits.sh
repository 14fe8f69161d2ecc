#!/usr/bin/env bash
# Hit-path throughput of cachet beside nginx proxy_cache and Varnish, all in front of the same
# `cachet origin`, loaded by wrk on loopback with one hot key. Numbers from one run are comparable
# with each other only. Needs: wrk, nginx, varnishd (Debian: wrk nginx-light varnish) and a
# release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/cachet
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
SIZE=${SIZE:-4096}
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

$BIN origin --listen 127.0.0.1:19000 --latency 50ms --body-size "$SIZE" >/dev/null 2>&1 & pids+=($!)

port=18080
for backend in rwlock sharded moka; do
  # No access log, like the nginx and Varnish set-ups below: the hit path alone is compared.
  $BIN serve --listen 127.0.0.1:$port --upstream http://127.0.0.1:19000 --backend $backend --access-log off >/dev/null 2>&1 & pids+=($!)
  port=$((port + 1))
done

if command -v nginx >/dev/null; then
  mkdir -p "$work/nginx/cache"
  cat >"$work/nginx/nginx.conf" <<CONF
user root;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  proxy_cache_path $work/nginx/cache keys_zone=c:16m max_size=64m;
  upstream origin { server 127.0.0.1:19000; keepalive 64; }
  server {
    listen 127.0.0.1:18090;
    location / {
      proxy_cache c;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://origin;
    }
  }
}
CONF
  nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & pids+=($!)
fi
if command -v varnishd >/dev/null; then
  cat >"$work/default.vcl" <<VCL
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "19000"; }
VCL
  varnishd -F -a 127.0.0.1:18091 -f "$work/default.vcl" -s malloc,64m -n "$work/varnish" >/dev/null 2>&1 & pids+=($!)
fi
sleep 2

run() {
  local name=$1 url=$2
  curl -s -o /dev/null "$url"; curl -s -o /dev/null "$url"
  local out
  out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$url")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-16s %12s %10s %10s\n' "$name" "$rps" "$p50" "$p99"
}

printf '%-16s %12s %10s %10s\n' "proxy" "req/s" "p50" "p99"
run cachet-rwlock  http://127.0.0.1:18080/hot
run cachet-sharded http://127.0.0.1:18081/hot
run cachet-moka    http://127.0.0.1:18082/hot
command -v nginx >/dev/null && run nginx http://127.0.0.1:18090/hot
command -v varnishd >/dev/null && run varnish http://127.0.0.1:18091/hot
