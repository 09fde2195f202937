#!/usr/bin/env bash
# Measures Bulwark on this machine, side by side in one run (these machines are noisy, so
# compare ratios within a run, not numbers across runs):
#   1. the Python baseline: onnxruntime + tokenizers on the same model and texts, no HTTP;
#   2. POST /v1/sentiment on the ONNX engine under wrk (single texts at rising concurrency,
#      and 32-text requests), texts from the SST-2 dev set;
#   3. POST /v1/sentiment on the lexicon engine;
#   4. local-queue jobs/s on SQLite and PostgreSQL.
# wrk shares the 2 cores with the server. Run through `make bench` (it builds the release binaries
# and fetches the runtime and model first). docs/benchmarks.md keeps the recorded runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/bulwark
BENCH_BIN=./target/release/bulwark-bench
PORT=${BENCH_PORT:-18080}
DURATION=${BENCH_DURATION:-10s}
SECONDS_PY=${BENCH_PYTHON_SECONDS:-10}
TEXTS=${BENCH_TEXTS:-../shared/data/sst2/dev.txt}
MODEL_DIR=ml-models/models/sentiment-minilm-sst2
. scripts/python-venv.sh
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BENCH_URL=${PG_BENCH_URL:-postgres://postgres@127.0.0.1:5432/bulwark_bench}
export WRK_TEXTS=$TEXTS

ensure_python_venv

. scripts/bench-node.sh

# Requests carry an admin key (the bootstrap key) and the per-key and per-IP buckets are raised
# far above what one machine can send: the benchmark measures the service, key check included.
BENCH_KEY=$("$BIN" keys generate)
export BENCH_KEY
load() {
  local connections=$1 script=$2
  wrk -t1 -c"$connections" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$PORT/v1/sentiment" \
    | grep -E "Requests/sec|50%|90%|99%|requests in|Non-2xx" | tr -s ' ' | paste -sd ' '
}

echo "== 1. python baseline (same model, same texts, tokenization included, no HTTP)"
"$VENV/bin/python" scripts/python_baseline.py --model-dir "$MODEL_DIR" --data "$TEXTS" --batch 32 --threads 2 --seconds "$SECONDS_PY"
"$VENV/bin/python" scripts/python_baseline.py --model-dir "$MODEL_DIR" --data "$TEXTS" --batch 1 --threads 1 --processes 2 --seconds "$SECONDS_PY"

echo "== 2. POST /v1/sentiment, onnx engine (workers=2, 1 intra-op thread each)"
start_server env BULWARK__SENTIMENT__WORKERS=2 BULWARK__SENTIMENT__INTRA_OP_THREADS=1
load 1 scripts/wrk-texts.lua >/dev/null # warm-up
for connections in 1 2 4 16 64; do
  echo "single text, $connections connections: $(load "$connections" scripts/wrk-texts.lua)"
done
echo "32 texts per request, 4 connections: $(load 4 scripts/wrk-texts-batch.lua)"
stop_server

echo "== 3. POST /v1/sentiment, lexicon engine"
start_server env BULWARK__SENTIMENT__ENGINE=lexicon
for connections in 1 8 32; do
  echo "single text, $connections connections: $(load "$connections" scripts/wrk-texts.lua)"
done
echo "32 texts per request, 8 connections: $(load 8 scripts/wrk-texts-batch.lua)"
stop_server

echo "== 4. local queue, lexicon engine, 1-text jobs"
echo "-- sqlite"
DATABASE_URL="sqlite://$workdir/queue.db" BULWARK__SENTIMENT__ENGINE=lexicon BULWARK_LOG=warn \
  "$BENCH_BIN" queue --jobs "${BENCH_JOBS:-5000}"
echo "-- postgresql"
psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS bulwark_bench" -c "CREATE DATABASE bulwark_bench" 2>/dev/null
DATABASE_URL="$PG_BENCH_URL" BULWARK__SENTIMENT__ENGINE=lexicon BULWARK_LOG=warn \
  "$BENCH_BIN" queue --jobs "${BENCH_JOBS:-5000}"
