#!/usr/bin/env bash
# `make bench-queue-compare`: the database queue drained by one node on PostgreSQL, two builds
# side by side in one run: BASE_BIN (a bulwark-bench built from an earlier commit) and BIN (this
# checkout's). Rounds alternate the builds, each run on a fresh database; lexicon 1-text jobs
# (near no-op: the queue's own cost dominates). Prints one JSON line per run, then a Markdown
# table of medians and the ratio new/base per concurrency.
#
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release -p bulwark-bench)
# Both builds must measure with the same drain loop (bench/src/queue.rs): for c251835 apply
# scripts/bench-queue-harness-c251835.patch to the worktree before building (docs/benchmarks.md).
#   BASE_BIN=/tmp/base/target/release/bulwark-bench BASE_CONFIG=/tmp/base/config/bulwark.toml \
#     make bench-queue-compare
# Each build reads its own commit's config file (a newer file may hold keys an older build
# does not know).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./target/release/bulwark-bench}
BASE_BIN=${BASE_BIN:?set BASE_BIN to the bulwark-bench of the commit to compare with}
BASE_CONFIG=${BASE_CONFIG:?set BASE_CONFIG to the config/bulwark.toml of that commit}
JOBS=${BENCH_JOBS:-20000}
ROUNDS=${BENCH_ROUNDS:-3}
CONCURRENCIES=${BENCH_CONCURRENCIES:-16 64}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BENCH_URL=${PG_BENCH_URL:-postgres://postgres@127.0.0.1:5432/bulwark_bench_queue}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

run() {
  local build=$1 bin=$2 config=$3 concurrency=$4
  psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS bulwark_bench_queue" \
    -c "CREATE DATABASE bulwark_bench_queue" >/dev/null
  DATABASE_URL="$PG_BENCH_URL" BULWARK__SENTIMENT__ENGINE=lexicon \
    BULWARK__JOBS__CONCURRENCY="$concurrency" BULWARK_LOG=warn "$bin" --config "$config" queue --jobs "$JOBS" \
    | python3 -c "import json, sys; r = json.load(sys.stdin); r['build'] = '$build'; print(json.dumps(r))" \
    | tee -a "$workdir/results.jsonl"
}

for round in $(seq "$ROUNDS"); do
  for concurrency in $CONCURRENCIES; do
    # Alternate which build goes first, so neither always meets a warmer machine.
    if [ $((round % 2)) -eq 1 ]; then order="base new"; else order="new base"; fi
    for build in $order; do
      if [ "$build" = base ]; then
        run base "$BASE_BIN" "$BASE_CONFIG" "$concurrency"
      else
        run new "$BIN" config/bulwark.toml "$concurrency"
      fi
    done
  done
done

echo
echo "| concurrency | base jobs/s (median of $ROUNDS) | new jobs/s | new / base | base PostgreSQL CPU ms/job | new |"
echo "| --- | --- | --- | --- | --- | --- |"
python3 - "$workdir/results.jsonl" <<'PY'
import json, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["concurrency"], r["build"])].append(r)
for concurrency in sorted({key[0] for key in runs}):
    base, new = runs[(concurrency, "base")], runs[(concurrency, "new")]
    median = lambda rs, key: statistics.median(r[key] for r in rs if r.get(key) is not None)
    base_rate, new_rate = median(base, "jobs_per_second"), median(new, "jobs_per_second")
    print(f"| {concurrency} | {base_rate:,.0f} | {new_rate:,.0f} | {new_rate / base_rate:.2f} | "
          f"{median(base, 'database_cpu_ms_per_job'):.3f} | {median(new, 'database_cpu_ms_per_job'):.3f} |")
PY
