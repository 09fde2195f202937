# Sourced by the HTTP benchmark scripts: wrk from Debian's packages when missing, a work folder,
# and a `bulwark serve` in the background ($server_pid) that is stopped on exit: start_server
# [env VAR=value…] starts one on SQLite at 127.0.0.1:$PORT with $BENCH_KEY as its admin key and
# the rate limits raised far above what one machine sends ($SERVE_ARGS after `serve`, e.g.
# `--config FILE`); stop_server stops it.

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
  DATABASE_URL="sqlite://$workdir/http.db" BULWARK_HTTP_ADDR="127.0.0.1:$PORT" BULWARK_LOG=warn \
    BULWARK_BOOTSTRAP_ADMIN_KEY="$BENCH_KEY" \
    BULWARK__AUTH__RATE_LIMITS__SUBMIT__PER_SECOND=10000000 BULWARK__AUTH__RATE_LIMITS__SUBMIT__BURST=10000000 \
    BULWARK__AUTH__RATE_LIMITS__PER_IP__PER_SECOND=10000000 BULWARK__AUTH__RATE_LIMITS__PER_IP__BURST=10000000 \
    "$@" "$BIN" serve ${SERVE_ARGS:-} &
  server_pid=$!
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server never became ready" >&2
  return 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }
