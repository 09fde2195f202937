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

num_cpus=$(nproc --all)
if [ "$num_cpus" -lt 2 ]; then
    echo "error: pinning needs at least 2 cores, this machine has $num_cpus" >&2
    exit 2
fi
SERVER_CPUS=${SERVER_CPUS:-0}
NODE_CPUS=${NODE_CPUS:-1-$((num_cpus - 1))}
ALL_CPUS=0-$((num_cpus - 1))

server_pids() {
    pgrep -x postgres || true
    pgrep -x beam.smp || true
    pgrep -x epmd || true
    pgrep -f erl_child_setup || true
}

pin_servers() {
    local cpus=$1 pid
    for pid in $(server_pids); do
        # -a: every thread (BEAM schedulers); new PostgreSQL backends inherit the postmaster's.
        taskset -a -p -c "$cpus" "$pid" >/dev/null
    done
}

if [ -z "$(pgrep -x postgres || true)" ] || [ -z "$(pgrep -x beam.smp || true)" ]; then
    echo "error: PostgreSQL and RabbitMQ must run on this machine to be pinned" >&2
    exit 2
fi
trap 'pin_servers "$ALL_CPUS"' EXIT
pin_servers "$SERVER_CPUS"
echo "servers on cores $SERVER_CPUS, node on cores $NODE_CPUS" >&2
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f} \
DATABASE_URL=${DATABASE_URL:?DATABASE_URL must name a PostgreSQL database} \
BULWARK_LOG=${BULWARK_LOG:-warn} \
    taskset -c "$NODE_CPUS" ./target/release/bulwark-bench amqp --jobs "${JOBS:-2000}"
