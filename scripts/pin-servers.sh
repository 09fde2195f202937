# Sourced by the pinned benchmarks: moves every local PostgreSQL and RabbitMQ process (all their
# threads) to a set of cores, so the system under test can be given the other cores.
# Needs permission to change the servers' affinity (root, or the same user).

server_pids() {
    pgrep -x postgres || true
    pgrep -x beam.smp || true
    pgrep -x epmd || true
    pgrep -f erl_child_setup || true
}

# pin_servers CPUS: e.g. `pin_servers 0`, and `pin_servers 0-1` to put them back.
pin_servers() {
    local cpus=$1 pid
    for pid in $(server_pids); do
        # -a: every thread (BEAM schedulers); new PostgreSQL backends inherit the postmaster's.
        taskset -a -p -c "$cpus" "$pid" >/dev/null
    done
}

# Fails unless both servers run on this machine and it has at least two cores; sets
# SERVER_CPUS (default core 0), NODE_CPUS (default the rest) and ALL_CPUS.
require_pinnable() {
    local num_cpus
    num_cpus=$(nproc --all)
    if [ "$num_cpus" -lt 2 ]; then
        echo "error: pinning needs at least 2 cores, this machine has $num_cpus" >&2
        exit 2
    fi
    if [ -z "$(pgrep -x postgres || true)" ] || [ -z "$(pgrep -x beam.smp || true)" ]; then
        echo "error: PostgreSQL and RabbitMQ must run on this machine to be pinned" >&2
        exit 2
    fi
    SERVER_CPUS=${SERVER_CPUS:-0}
    NODE_CPUS=${NODE_CPUS:-1-$((num_cpus - 1))}
    ALL_CPUS=0-$((num_cpus - 1))
}
