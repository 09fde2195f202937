#!/usr/bin/env bash
# `make bench-celery`: the Celery pipeline and Bulwark on the same RabbitMQ, PostgreSQL, model
# and texts, back to back in one run, so their ratio is read from one run of a noisy machine.
#   1. scripts/celery_pipeline.py: a Celery worker (2 processes, one ONNX thread each, quorum
#      queue, acks late, publish confirms, one committed PostgreSQL row per job) fed by a
#      producer that measures a backlog of 1-text jobs and latency at 145 jobs/s;
#   2. `bulwark-bench amqp` with the same number of jobs, then again with its step events on
#      (scripts/amqp-latency-breakdown.py), to read its latency where Celery's ends.
# Prints both reports, then the ratios. Needs `make release-bench runtime model` first (the Makefile
# target does that) and the local PostgreSQL and RabbitMQ.
#
# BENCH_PIN=1 (make bench-celery-pinned): PostgreSQL and RabbitMQ pinned to core 0, both
# systems (worker and producer, Celery's and Bulwark's alike) to the other cores, as they would
# run with the servers on machines of their own; the servers' affinity is put back on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2000}
if [ "${BENCH_PIN:-}" = 1 ]; then
    . scripts/pin-servers.sh
    require_pinnable
    trap 'pin_servers "$ALL_CPUS"' EXIT
    pin_servers "$SERVER_CPUS"
    echo "servers on cores $SERVER_CPUS, Celery and Bulwark on cores $NODE_CPUS" >&2
    BENCH_PIN=done taskset -c "$NODE_CPUS" "$PWD/scripts/bench-celery.sh" "$@"
    exit
fi
. scripts/python-venv.sh
export CELERY_DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/bulwark_bench_amqp}
if [ -z "${DATABASE_URL:-}" ]; then
    # The default database is the bench's own: created here on a fresh machine.
    psql postgres://postgres@127.0.0.1:5432/postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname = 'bulwark_bench_amqp'" | grep -q 1 \
        || psql postgres://postgres@127.0.0.1:5432/postgres -qc "CREATE DATABASE bulwark_bench_amqp"
fi
export CELERY_MODEL_DIR=$PWD/ml-models/models/sentiment-minilm-sst2
# celery_pipeline.py imports the Python baseline's scorer, in the worker's pool processes too.
export PYTHONPATH=$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}

ensure_python_venv "celery>=5.5,<6" "psycopg[binary]>=3.2,<4"

workdir=$(mktemp -d)
worker_pid=""
cleanup() {
    if [ -n "$worker_pid" ]; then kill -TERM "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; fi
    rm -rf "$workdir"
}
trap cleanup EXIT

(cd scripts && exec "../$VENV/bin/celery" -A celery_pipeline worker --concurrency 2 --pool prefork \
    --loglevel WARNING --without-gossip --without-mingle --without-heartbeat) >"$workdir/worker.log" 2>&1 &
worker_pid=$!
# The worker is ready once its pool processes exist and it consumes the queue.
for _ in $(seq 1 100); do
    if rabbitmqctl -q list_consumers 2>/dev/null | grep -q bulwark-celery-bench; then break; fi
    sleep 0.2
done
rabbitmqctl -q list_consumers 2>/dev/null | grep -q bulwark-celery-bench \
    || { echo "celery worker did not start:" >&2; cat "$workdir/worker.log" >&2; exit 1; }

echo "== celery pipeline ($JOBS jobs)" >&2
(cd scripts && "../$VENV/bin/python" celery_pipeline.py --jobs "$JOBS" --worker-pid "$worker_pid") >"$workdir/celery.json" \
    || { echo "celery pipeline failed; its worker's log:" >&2; tail -20 "$workdir/worker.log" >&2; exit 1; }
kill -TERM "$worker_pid"; wait "$worker_pid" 2>/dev/null || true; worker_pid=""
cat "$workdir/celery.json"

export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
echo "== bulwark-bench amqp ($JOBS jobs)" >&2
DATABASE_URL=$CELERY_DATABASE_URL BULWARK_LOG=warn \
    ./target/release/bulwark-bench amqp --jobs "$JOBS" >"$workdir/bulwark.json"
cat "$workdir/bulwark.json"
# Again with the step events (debug) that time each job's path, so Bulwark's latency can also
# be read where Celery's ends: the job's code returned, before its outcome's commit. Writing
# them costs Bulwark a little (about 0.06 ms of CPU per job, and some of its tail).
echo "== bulwark-bench amqp ($JOBS jobs), step events on" >&2
DATABASE_URL=$CELERY_DATABASE_URL \
    BULWARK_LOG=warn,bulwark_broker::delivery=debug,bulwark_actors::attempt=debug,bulwark_bench=debug \
    ./target/release/bulwark-bench amqp --jobs "$JOBS" >/dev/null 2>"$workdir/steps.log" \
    || { tail -20 "$workdir/steps.log" >&2; exit 1; }
python3 scripts/amqp-latency-breakdown.py --json "$workdir/steps.log" >"$workdir/steps.json"
python3 scripts/amqp-latency-breakdown.py "$workdir/steps.log" \
    | sed -n '/^phase 1-celery-half/,/^phase/p' | sed '$d' >&2

"$VENV/bin/python" - "$workdir/celery.json" "$workdir/bulwark.json" "$workdir/steps.json" <<'PY'
import json, sys
celery = json.load(open(sys.argv[1]))
bulwark = json.load(open(sys.argv[2]))
steps = json.load(open(sys.argv[3]))["1-celery-half"]["steps"]
executed = steps["published -> executed"]
one_text = bulwark["end_to_end"][0]
at_145 = next(phase for phase in bulwark["end_to_end"] if phase["offered_jobs_per_second"] == 145.0)
print(json.dumps({
    "bulwark_over_celery_jobs_per_second": round(one_text["jobs_per_second"] / celery["backlog"]["jobs_per_second"], 2),
    # Bulwark's own latency: publish to the outcome event received (the outcome committed).
    "p99_ms_at_145_jobs_per_second": {"bulwark": round(at_145["latency_p99_ms"], 2), "celery": celery["paced_at_145"]["latency_p99_ms"]},
    # At the same point for both: publish to the job's code returned, before its row's commit
    # (Bulwark's from its second run, step events on).
    "to_job_done_before_commit_at_145_jobs_per_second": {
        "bulwark": {"p50": executed["p50"], "p99": executed["p99"]},
        "celery": {"p50": celery["paced_at_145"]["latency_p50_ms"], "p99": celery["paced_at_145"]["latency_p99_ms"]},
    },
    "cpu_ms_per_job_outside_model": {"bulwark": round(bulwark["cpu_ms_per_job_outside_model"], 3), "celery": celery["worker_cpu_ms_per_job_outside_model"]},
}, indent=2))
PY
