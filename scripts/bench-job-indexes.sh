#!/usr/bin/env bash
# `make bench-indexes`: what the jobs table's indexes cost per job on PostgreSQL, side by side
# in one run: the index set of migrations 0001-0010 against 0011's (partial unique idempotency
# index, no whole-history kind index). Claims and finishes 19,968 jobs in batches of 64 with
# the runner's statements, three rounds alternating, and prints WAL bytes and backend CPU per
# job. WAL bytes do not depend on how busy the machine is; CPU time does, a little.
set -euo pipefail
cd "$(dirname "$0")/sql"
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
export CPU_FILE; CPU_FILE=$(mktemp)
trap 'rm -f "$CPU_FILE"*; psql "$PG_URL" -qc "DROP SCHEMA IF EXISTS bulwark_bench_indexes CASCADE" 2>/dev/null' EXIT
ticks_per_second=$(getconf CLK_TCK)

round() {
  local label=$1 unique=$2 kind_index=$3 idempotency_index=$4 wal
  psql "$PG_URL" -q -v ON_ERROR_STOP=1 -v N=19968 -v UNIQ="$unique" -v KINDIDX="$kind_index" \
    -v IDEMIDX="$idempotency_index" -f bench-job-indexes-schema.sql 2>/dev/null >/dev/null
  wal=$(psql "$PG_URL" -q -v ON_ERROR_STOP=1 -f bench-job-indexes-cycle.sql | awk '/wal_bytes_per_job/ {print $2}')
  local ticks=$(( $(cat "$CPU_FILE.1") - $(cat "$CPU_FILE.0") ))
  printf '| %s | %s | %s |\n' "$label" "$wal" \
    "$(python3 -c "print(f'{$ticks / $ticks_per_second * 1e6 / 19968:.1f}')")"
}

echo "| index set | WAL bytes per job | backend CPU µs per job |"
echo "|---|---:|---:|"
for _ in 1 2 3; do
  round "0001-0010" "UNIQUE" "CREATE INDEX jobs_kind_status ON jobs (kind, status);" ""
  round "0011" "" "" "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;"
done
