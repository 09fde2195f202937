#!/usr/bin/env bash
# `make bench-traces`: what OpenTelemetry tracing costs, side by side in one run, as ratios
# (traced / untraced). Traced runs sample every trace (always_on) and export over OTLP/HTTP to
# scripts/otlp_sink.py, a local receiver that discards the spans.
#   1. POST /v1/sentiment, ONNX engine, single texts under wrk, rounds alternating untraced
#      and traced (a fresh server each);
#   2. RabbitMQ 1-text jobs (`bulwark-bench amqp`, backlog jobs/s), alternating likewise.
# Needs the release binaries, the runtime and model, PostgreSQL and RabbitMQ (the Makefile
# target builds and checks them).
#
# With BASE_BIN, BASE_BENCH_BIN and BASE_CONFIG (an earlier build's binaries and its config
# file) the rounds compare that build against this one, both untraced: what the tracing code
# costs when it is off. The base gets databases of its own (its migrations are older).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/bulwark
BENCH_BIN=./target/release/bulwark-bench
PORT=${BENCH_PORT:-18080}
SINK_PORT=${BENCH_SINK_PORT:-14318}
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
ROUNDS=${BENCH_ROUNDS:-3}
JOBS=${BENCH_JOBS:-2000}
TEXTS=${BENCH_TEXTS:-../shared/data/sst2/dev.txt}
export WRK_TEXTS=$TEXTS

. scripts/bench-node.sh

python3 scripts/otlp_sink.py --port "$SINK_PORT" >"$workdir/sink.json" &
sink_pid=$!
trap 'kill -TERM "$sink_pid" 2>/dev/null || true; cleanup' EXIT
TRACED=(env OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT"
        OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_TRACES_SAMPLER=always_on)
if [ -n "${BASE_BIN:-}" ]; then
  MODES=(base untraced)
  BASE_PG_URL=postgres://postgres@127.0.0.1:5432/bulwark_bench_base
  psql postgres://postgres@127.0.0.1:5432/postgres -qtAc \
      "SELECT 1 FROM pg_database WHERE datname = 'bulwark_bench_base'" | grep -q 1 \
    || psql postgres://postgres@127.0.0.1:5432/postgres -qc "CREATE DATABASE bulwark_bench_base"
else
  MODES=(untraced traced)
fi

BENCH_KEY=$("$BIN" keys generate)
export BENCH_KEY
requests_per_second() {
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s scripts/wrk-texts.lua "http://127.0.0.1:$PORT/v1/sentiment" \
    | awk '/Requests\/sec/ {print $2}'
}
# Starts the server of a mode: traced, untraced, or the base build (untraced).
serve_as() {
  case $1 in
    traced) start_server "${TRACED[@]}" BULWARK__SENTIMENT__WORKERS=2 ;;
    untraced) start_server env BULWARK__SENTIMENT__WORKERS=2 ;;
    base) BIN=$BASE_BIN SERVE_ARGS="--config $BASE_CONFIG" \
            start_server env BULWARK__SENTIMENT__WORKERS=2 DATABASE_URL="sqlite://$workdir/base.db" ;;
  esac
}
# Runs `bulwark-bench amqp` as a mode; prints its report.
bench_as() {
  case $1 in
    traced) BULWARK_LOG=warn "${TRACED[@]}" "$BENCH_BIN" amqp --jobs "$JOBS" ;;
    untraced) BULWARK_LOG=warn "$BENCH_BIN" amqp --jobs "$JOBS" ;;
    base) BULWARK_LOG=warn DATABASE_URL=$BASE_PG_URL "$BASE_BENCH_BIN" --config "$BASE_CONFIG" amqp --jobs "$JOBS" ;;
  esac
}

echo "== 1. POST /v1/sentiment, onnx engine, $CONNECTIONS connections, $DURATION per round"
for round in $(seq 1 "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    serve_as "$mode"
    wrk -t1 -c"$CONNECTIONS" -d2s -s scripts/wrk-texts.lua "http://127.0.0.1:$PORT/v1/sentiment" >/dev/null
    echo "round $round $mode requests/s $(requests_per_second)"
    stop_server
  done
done | tee "$workdir/http.txt"

echo "== 2. RabbitMQ 1-text jobs, $JOBS per phase (backlog jobs/s)"
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
for round in $(seq 1 "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    bench_as "$mode" >"$workdir/amqp-$mode-$round.json"
    jobs_per_second=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(next(p["jobs_per_second"] for p in r["end_to_end"] if p["texts_per_job"]==1 and p["offered_jobs_per_second"] is None))' "$workdir/amqp-$mode-$round.json")
    echo "round $round $mode jobs/s $jobs_per_second"
  done
done | tee "$workdir/amqp.txt"

kill -TERM "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
echo "== the receiver got: $(cat "$workdir/sink.json")"
python3 - "$workdir/http.txt" "$workdir/amqp.txt" <<'PY'
import statistics, sys
for path, what in zip(sys.argv[1:], ["/v1/sentiment requests/s", "RabbitMQ 1-text jobs/s"]):
    values = {}
    for line in open(path):
        words = line.split()
        values.setdefault(words[2], []).append(float(words[-1]))
    first, second = list(values)
    a, b = statistics.median(values[first]), statistics.median(values[second])
    print(f"{what}: {first} median {a:.0f}, {second} median {b:.0f}, {second} / {first} {b / a:.3f}")
PY
