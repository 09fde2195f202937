#!/usr/bin/env bash
# What checking an API key and its rate limits costs, side by side in one run (these machines
# are noisy: compare ratios within a run, not numbers across runs):
#   1. in-process: one request's key verification, per-IP and per-key buckets (p50/p99);
#   2. GET /live under wrk without a key (no check at all), with a header of the same size that
#      is not a key (the control: the request's extra bytes, no check), and with a key (verified,
#      counted in both buckets, RateLimit-* headers in the answer), alternated A C B A C B;
#   3. POST /v1/sentiment (lexicon engine) with a key, and the check's share of its time.
# Run through `make bench-auth` (it builds the release binaries first). The numbers go to
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/bulwark
BENCH_BIN=./target/release/bulwark-bench
PORT=${BENCH_PORT:-18081}
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}

. scripts/bench-node.sh

export BENCH_KEY
BENCH_KEY=$("$BIN" keys generate)
export DATABASE_URL="sqlite://$workdir/bench.db"
export BULWARK__SENTIMENT__ENGINE=lexicon
# The buckets are raised far above what one machine can send: the check runs, nothing is refused.
for group in READ SUBMIT PER_IP; do
  export "BULWARK__AUTH__RATE_LIMITS__${group}__PER_SECOND=10000000"
  export "BULWARK__AUTH__RATE_LIMITS__${group}__BURST=10000000"
done

echo "== 1. in-process: key check and both buckets, one at a time"
BULWARK_LOG=warn "$BENCH_BIN" auth --checks "${BENCH_CHECKS:-200000}" | tee "$workdir/micro.json"

BULWARK_HTTP_ADDR="127.0.0.1:$PORT" BULWARK_LOG=warn BULWARK_BOOTSTRAP_ADMIN_KEY="$BENCH_KEY" "$BIN" serve &
server_pid=$!
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done

rps() {
  # wrk's Requests/sec for: path [lua script] [key|padding]
  local path=$1 script=${2:-} header=${3:-}
  local args=(-t1 -c"$CONNECTIONS" -d"$DURATION")
  [ -n "$script" ] && args+=(-s "$script")
  [ "$header" = key ] && args+=(-H "Authorization: Bearer $BENCH_KEY")
  [ "$header" = padding ] && args+=(-H "X-Padding-Was: Bearer $BENCH_KEY")
  wrk "${args[@]}" "http://127.0.0.1:$PORT$path" | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "non-2xx " $NF > "/dev/stderr"}'
}

echo "== 2. GET /live, $CONNECTIONS connections, $DURATION each, alternated"
rps /live >/dev/null # warm-up
live_a1=$(rps /live); live_c1=$(rps /live "" padding); live_b1=$(rps /live "" key)
live_a2=$(rps /live); live_c2=$(rps /live "" padding); live_b2=$(rps /live "" key)
echo "without key: $live_a1 $live_a2 req/s; same-size header, no key: $live_c1 $live_c2 req/s; with key: $live_b1 $live_b2 req/s"

echo "== 3. POST /v1/sentiment, lexicon engine, with key"
export WRK_TEXTS=${BENCH_TEXTS:-../shared/data/sst2/dev.txt}
if [ ! -f "$WRK_TEXTS" ]; then
  printf '1 a lovely and moving film\n0 a dull, lifeless mess\n1 great fun\n0 not worth the time\n' > "$workdir/texts.txt"
  WRK_TEXTS="$workdir/texts.txt"
fi
sentiment=$(rps /v1/sentiment scripts/wrk-texts.lua key)
echo "with key: $sentiment req/s"

python3 - "$workdir/micro.json" "$live_a1" "$live_a2" "$live_c1" "$live_c2" "$live_b1" "$live_b2" "$sentiment" <<'PY'
import json, sys
micro = json.load(open(sys.argv[1]))
a1, a2, c1, c2, b1, b2, sentiment = map(float, sys.argv[2:])
without, padded, with_key = (a1 + a2) / 2, (c1 + c2) / 2, (b1 + b2) / 2
mean_s = micro["check_mean_us"] / 1e6
print("== summary")
print(f"/live with key / without key: {with_key / without:.3f} (cost {100 * (1 - with_key / without):.1f}% of /live req/s)")
print(f"/live same-size header / without: {padded / without:.3f}; with key / same-size header: {with_key / padded:.3f} (the check alone: {100 * (1 - with_key / padded):.1f}%)")
print(f"check mean {micro['check_mean_us']:.2f} us, p99 {micro['check_p99_us']:.2f} us")
print(f"check's share of one core's time at /live's rate: {100 * mean_s * without:.1f}%")
print(f"check's share of one core's time at /v1/sentiment's rate: {100 * mean_s * sentiment:.1f}%")
PY
