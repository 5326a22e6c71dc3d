#!/usr/bin/env bash
# The cost of ROLLCALL_REDIS_WAIT_REPLICAS (issue 13, item 3): B4 (webhook
# ingest, 64 senders in a closed loop, 8 s) against one release rollcall on
# a Redis master with one replica (both from the repository's redis.conf),
# without and then with WAIT 1. Loopback only; stops by itself. Run through
# `make bench-wait` (which builds both binaries first).
set -eu
cd "$(dirname "$0")/.."
bin=${ROLLCALL_BIN:-target/release/rollcall}
bench=${BENCH:-bench/target/release/rollcall-bench}
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
master=$(free_port); replica=$(free_port); server=$(free_port)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
redis-server redis.conf --port "$master" --dir "$dir" --repl-diskless-sync-delay 0 --daemonize no >"$dir/master.log" 2>&1 &
pids+=($!)
mkdir "$dir/replica"
redis-server redis.conf --port "$replica" --dir "$dir/replica" --replicaof 127.0.0.1 "$master" --daemonize no >"$dir/replica.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  redis-cli -p "$master" info replication 2>/dev/null | grep -q 'state=online' && break
  sleep 0.1
done
for wait in 0 1; do
  redis-cli -p "$master" flushall >/dev/null
  ROLLCALL_RATE_WEBHOOKS=0 ROLLCALL_REDIS_URL="redis://127.0.0.1:$master" ROLLCALL_REDIS_WAIT_REPLICAS=$wait RUST_LOG=warn \
    "$bin" serve --listen "127.0.0.1:$server" >"$dir/server-$wait.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$server/healthz" >/dev/null && break; sleep 0.1; done
  echo "== ROLLCALL_REDIS_WAIT_REPLICAS=$wait (the row's target label says memory: the server was started here, on Redis)"
  "$bench" b4 --url "http://127.0.0.1:$server" --server-pid "$pid" --secs 8 --max-requests 60000 --rooms 200 | grep -E '^(scenario|B4)'
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
