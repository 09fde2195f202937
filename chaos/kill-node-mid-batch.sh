#!/usr/bin/env bash
# Game day: kill -9 a node in the middle of a batch, start another, and check that every job
# still ends `succeeded` exactly once in effect. Jobs the dead node held come back when their
# lease expires (jobs.lease_ms, shortened here to 3 s).
#
#   chaos/kill-node-mid-batch.sh [DATABASE_URL]   (default: a fresh SQLite file)
#
# Exit 0 when no job was lost; prints how many jobs the second node had to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./target/release/bulwark}
[ -x "$BIN" ] || cargo build --release --bin bulwark
workdir=$(mktemp -d)
DATABASE_URL=${1:-sqlite://$workdir/chaos.db}
export DATABASE_URL BULWARK_LOG=warn BULWARK__JOBS__LEASE_MS=3000 BULWARK__JOBS__CONCURRENCY=8
NUM_JOBS=${NUM_JOBS:-100}
TEXTS_PER_JOB=${TEXTS_PER_JOB:-20}
PORT_A=${PORT_A:-18181}
PORT_B=${PORT_B:-18182}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$workdir"; }
trap cleanup EXIT

wait_ready() {
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node on port $1 never became ready" >&2; return 1
}
count() { curl -fsS "http://127.0.0.1:$1/v1/jobs?status=$2&limit=500" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))'; }

"$BIN" migrate >/dev/null
BULWARK_HTTP_ADDR=127.0.0.1:$PORT_A "$BIN" serve & pids+=($!); victim=$!
wait_ready "$PORT_A"
texts=$(python3 -c "import json; print(json.dumps(['sentence %d was not bad at all, quite good really!' % i for i in range($TEXTS_PER_JOB)]))")
echo "submitting $NUM_JOBS jobs to node A"
for i in $(seq 1 "$NUM_JOBS"); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT_A/v1/jobs" -H 'content-type: application/json' \
    -d "{\"kind\":\"sentiment.analyze\",\"payload\":{\"texts\":$texts},\"idempotency_key\":\"chaos-$i\"}"
done
# Kill once the node is well into the batch, with jobs still running and queued.
for _ in $(seq 1 300); do
  [ "$(count "$PORT_A" succeeded)" -ge 10 ] && break
  sleep 0.1
done
running=$(count "$PORT_A" running); done_before=$(count "$PORT_A" succeeded)
echo "killing node A with SIGKILL ($done_before succeeded, $running running)"
kill -9 "$victim"

BULWARK_HTTP_ADDR=127.0.0.1:$PORT_B "$BIN" serve & pids+=($!)
wait_ready "$PORT_B"
for _ in $(seq 1 600); do
  open=$(( $(count "$PORT_B" queued) + $(count "$PORT_B" running) ))
  [ "$open" -eq 0 ] && break
  sleep 0.2
done
succeeded=$(count "$PORT_B" succeeded); failed=$(( $(count "$PORT_B" failed) + $(count "$PORT_B" dead) ))
rerun=$(curl -fsS "http://127.0.0.1:$PORT_B/v1/jobs?status=succeeded&limit=500" | python3 -c 'import json,sys; print(sum(1 for j in json.load(sys.stdin)["jobs"] if j["attempts"] > 1))')
echo "succeeded=$succeeded failed_or_dead=$failed rerun_after_kill=$rerun (of $NUM_JOBS)"
[ "$succeeded" -eq "$NUM_JOBS" ] || { echo "FAIL: jobs lost or failed"; exit 1; }
[ "$done_before" -lt "$NUM_JOBS" ] || { echo "INCONCLUSIVE: node A finished the batch before the kill"; exit 2; }
echo "PASS: no job lost"
