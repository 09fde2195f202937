#!/usr/bin/env bash
# Measures Bulwark on this machine: POST /v1/sentiment latency and throughput under wrk, and
# local-queue jobs/s on SQLite and PostgreSQL. Results go to stdout; docs/benchmarks.md keeps
# the recorded runs. Run through `make bench` (it builds the release binary first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/bulwark
PORT=${BENCH_PORT:-18080}
DURATION=${BENCH_DURATION:-15s}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BENCH_URL=${PG_BENCH_URL:-postgres://postgres@127.0.0.1:5432/bulwark_bench}

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi

workdir=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT

start_server() {
  DATABASE_URL="sqlite://$workdir/http.db" BULWARK_HTTP_ADDR="127.0.0.1:$PORT" BULWARK_LOG=warn "$@" \
    "$BIN" serve &
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }

echo "== batching wait: single text, 1 connection, max_batch_wait_us=500 (then 0, the default, below)"
start_server env BULWARK__SENTIMENT__MAX_BATCH_WAIT_US=500
wrk -t1 -c1 -d"$DURATION" --latency -s scripts/wrk-sentiment.lua \
  "http://127.0.0.1:$PORT/v1/sentiment" | grep -E "Requests/sec|Latency|50%|90%|99%|requests in"
stop_server

echo "== POST /v1/sentiment (lexicon engine, SQLite, $(nproc) cores shared by server and wrk)"
start_server env
for connections in 1 8 32; do
  echo "-- single text, $connections connections"
  wrk -t1 -c"$connections" -d"$DURATION" --latency -s scripts/wrk-sentiment.lua \
    "http://127.0.0.1:$PORT/v1/sentiment" | grep -E "Requests/sec|Latency|50%|90%|99%|requests in"
done
echo "-- 32 texts per request, 8 connections"
wrk -t1 -c8 -d"$DURATION" --latency -s scripts/wrk-sentiment-batch.lua \
  "http://127.0.0.1:$PORT/v1/sentiment" | grep -E "Requests/sec|Latency|50%|90%|99%|requests in"
stop_server

echo "== local queue, SQLite"
DATABASE_URL="sqlite://$workdir/queue.db" BULWARK_LOG=warn "$BIN" bench queue --jobs "${BENCH_JOBS:-5000}"

echo "== local queue, PostgreSQL"
psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS bulwark_bench" -c "CREATE DATABASE bulwark_bench"
DATABASE_URL="$PG_BENCH_URL" BULWARK_LOG=warn "$BIN" bench queue --jobs "${BENCH_JOBS:-5000}"
