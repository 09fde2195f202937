#!/usr/bin/env bash
# `make bench-amqp-pinned`: `bulwark-bench amqp` with the node on cores of its own.
#
# On a small machine the local PostgreSQL and RabbitMQ take CPU from the node during the
# end-to-end phases but not during the in-process phase, so the ratio between the two measures
# the co-located servers as much as Bulwark. This run pins every PostgreSQL and RabbitMQ process
# to SERVER_CPUS and the benchmark to NODE_CPUS, so both phases get the same cores, as they would
# with the servers on machines of their own. The servers' affinity is put back on exit.
#
# Needs permission to change the servers' affinity (root, or the same user). Defaults: on N
# cores, the servers get core 0 and the node the rest.
set -euo pipefail

. "$(dirname "$0")/pin-servers.sh"
require_pinnable
trap 'pin_servers "$ALL_CPUS"' EXIT
pin_servers "$SERVER_CPUS"
echo "servers on cores $SERVER_CPUS, node on cores $NODE_CPUS" >&2
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f} \
DATABASE_URL=${DATABASE_URL:?DATABASE_URL must name a PostgreSQL database} \
BULWARK_LOG=${BULWARK_LOG:-warn} \
    taskset -c "$NODE_CPUS" ./target/release/bulwark-bench amqp --jobs "${JOBS:-2000}"
