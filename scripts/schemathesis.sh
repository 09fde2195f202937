#!/usr/bin/env bash
# Checks that the API does what its OpenAPI document says: boots `bulwark serve` on a free port
# over a temporary SQLite database (lexicon engine, one in-process simulated provider named
# `sim`), waits for /ready, runs schemathesis (pinned in scripts/requirements-schemathesis.txt)
# with every check against /openapi.json, and fails on any failure. The node is always stopped.
# Run through `make schemathesis` (it builds the debug binary first); docs/openapi.md explains
# the checks and the typing rules the server enforces.
#
# Environment:
#   BULWARK_BIN                the binary (default target/debug/bulwark)
#   BULWARK_SCHEMATHESIS_KEY   the API key sent as `Authorization: Bearer <key>`; it is also the
#                              node's bootstrap admin key. Unset: a fresh `bwk_` key is made
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 100, about 35 s)
#   SCHEMATHESIS_SEED          the generation seed (default 1, so a failure reproduces)
#   SCHEMATHESIS_ARGS          extra arguments for `schemathesis run`
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BULWARK_BIN:-target/debug/bulwark}
VENV_DIR=target/venv-schemathesis
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-1}
READY_DEADLINE_SECS=60
. scripts/python-venv.sh

test -x "$BIN" || { echo "error: $BIN does not exist; build it first (cargo build --bin bulwark)" >&2; exit 1; }
ensure_requirements_venv "$VENV_DIR" scripts/requirements-schemathesis.txt

workdir=$(mktemp -d)
node_pid=""
stop_node() {
  if [ -n "$node_pid" ]; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
    node_pid=""
  fi
  rm -rf "$workdir"
}
trap stop_node EXIT

cat > "$workdir/bulwark.toml" <<TOML
[incidents]
dir = "$workdir/incidents"

# The run's key may make as many calls as schemathesis sends: a 429 would hide the answer.
[auth.rate_limits]
read = { per_second = 100000, burst = 100000 }
submit = { per_second = 100000, burst = 100000 }
operate = { per_second = 100000, burst = 100000 }
admin = { per_second = 100000, burst = 100000 }
per_ip = { per_second = 100000, burst = 100000 }
failed_auth_per_ip = { per_second = 100000, burst = 100000 }

[providers.sim]
kind = "simulated"
seed = 7
brands = ["Acme", "Globex"]
TOML

if [ -z "${BULWARK_SCHEMATHESIS_KEY:-}" ]; then
  BULWARK_SCHEMATHESIS_KEY=bwk_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
fi

# Port 0: the node picks a free port and logs it in its "bulwark is serving" line.
DATABASE_URL="sqlite://$workdir/bulwark.db" BULWARK_HTTP_ADDR=127.0.0.1:0 \
  BULWARK_BOOTSTRAP_ADMIN_KEY="$BULWARK_SCHEMATHESIS_KEY" \
  BULWARK_LOG=warn,bulwark=info BULWARK_LOG_FORMAT=json BULWARK__SENTIMENT__ENGINE=lexicon \
  "$BIN" --config "$workdir/bulwark.toml" serve >"$workdir/node.out" 2>"$workdir/node.log" &
node_pid=$!

deadline=$((SECONDS + READY_DEADLINE_SECS))
base_url=""
until [ -n "$base_url" ] && curl -fsS "$base_url/ready" >/dev/null 2>&1; do
  if ! kill -0 "$node_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "error: the node did not become ready within ${READY_DEADLINE_SECS}s; its log:" >&2
    tail -n 40 "$workdir/node.log" >&2
    exit 1
  fi
  if [ -z "$base_url" ]; then
    addr=$(grep -m1 '"bulwark is serving"' "$workdir/node.log" | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true)
    [ -n "$addr" ] && base_url="http://$addr"
  fi
  sleep 0.1
done
echo "node ready at $base_url"

auth_args=(-H "Authorization: Bearer $BULWARK_SCHEMATHESIS_KEY")

# Every check runs; schemathesis.toml (beside this script) holds the per-operation settings,
# each with its reason.
# schemathesis keeps a crash cache in `.schemathesis/` of its working directory: the run's own.
status=0
repo=$PWD
(cd "$workdir" && "$repo/$VENV_DIR/bin/schemathesis" --config-file "$repo/scripts/schemathesis.toml" \
  run "$base_url/openapi.json" \
  --checks all --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 2 \
  --request-timeout 30 --no-color --report junit --report-dir "$workdir/report" \
  --generation-database none \
  "${auth_args[@]}" ${SCHEMATHESIS_ARGS:-}) || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures (exit $status); the node's last log lines:" >&2
  tail -n 20 "$workdir/node.log" >&2
fi
exit "$status"
