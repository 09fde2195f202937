#!/usr/bin/env bash
# `make bench-queue`: how fast one node drains the database queue, side by side in one run:
# SQLite and PostgreSQL, at the default concurrency and at a higher one, lexicon 1-text jobs
# (near no-op: the queue's own cost dominates). Each PostgreSQL run gets a fresh database.
# Prints one JSON line per run, then a Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/bulwark-bench
JOBS=${BENCH_JOBS:-20000}
CONCURRENCIES=${BENCH_CONCURRENCIES:-16 64}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BENCH_URL=${PG_BENCH_URL:-postgres://postgres@127.0.0.1:5432/bulwark_bench_queue}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

run() {
  local backend=$1 concurrency=$2 url
  if [ "$backend" = sqlite ]; then
    rm -f "$workdir"/queue.db*
    url="sqlite://$workdir/queue.db"
  else
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS bulwark_bench_queue" \
      -c "CREATE DATABASE bulwark_bench_queue" >/dev/null
    url=$PG_BENCH_URL
  fi
  DATABASE_URL="$url" BULWARK__SENTIMENT__ENGINE=lexicon BULWARK__JOBS__CONCURRENCY="$concurrency" \
    BULWARK_LOG=warn "$BIN" queue --jobs "$JOBS" \
    | python3 -c "import json, sys; print(json.dumps(json.load(sys.stdin)))" | tee -a "$workdir/results.jsonl"
}

for backend in sqlite postgres; do
  for concurrency in $CONCURRENCIES; do
    run "$backend" "$concurrency"
  done
done

echo
echo "| backend | concurrency | jobs | drained jobs/s | claim→stored p50 ms | p99 ms | node CPU ms/job | PostgreSQL CPU ms/job | commits/job | inserted jobs/s (batches of 1,000) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
python3 - "$workdir/results.jsonl" <<'PY'
import json, sys

def cell(value, digits=0):
    return "–" if value is None else f"{value:,.{digits}f}"

for line in open(sys.argv[1]):
    r = json.loads(line)
    print(" | ".join([
        "", r["backend"], str(r["concurrency"]), str(r["num_jobs"]), cell(r["jobs_per_second"]),
        str(r["run_p50_ms"]), str(r["run_p99_ms"]), cell(r["node_cpu_ms_per_job"], 3),
        cell(r["database_cpu_ms_per_job"], 3), cell(r["commits_per_job"], 2),
        cell(r["insert_jobs_per_second"]), "",
    ]).strip())
PY
