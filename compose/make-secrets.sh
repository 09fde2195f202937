#!/usr/bin/env bash
# Writes the compose stack's secrets into compose/secrets/ (git-ignored, never in the image's
# build context), one file per secret of compose/docker-compose.yml:
#   postgres_password, database_url         PostgreSQL's password, and the URL the nodes use
#   rabbitmq_credentials.conf, amqp_url     RabbitMQ's only user (a conf.d fragment), and its URL
#   bulwark_admin_key                       the bootstrap admin key (bwk_...), registered by every node
#   grafana_admin_password                  Grafana's admin password
#   prometheus_read_key                     empty until `prometheus-key` below fills it
#
# Usage (from anywhere):
#   compose/make-secrets.sh                 writes every secret that is missing; keeps the others
#   compose/make-secrets.sh --force         writes them all again (see "changing a password")
#   compose/make-secrets.sh prometheus-key  creates an API key with the `read` scope only on the
#                                           stack's database (docker compose run ... keys create)
#                                           and writes it to prometheus_read_key, which
#                                           Prometheus reads at every scrape
#
# Passwords are 256 random bits from openssl (or /dev/urandom), as hex, so they need no
# escaping in a URL or a config file. The admin key has the format of `bulwark keys generate`
# (src/keys.rs, auth/src/token.rs: `bwk_` + 32 random bytes as unpadded base64url): it is made
# by a local release binary if there is one, else by the bulwark:local image, else by openssl.
#
# Permissions: the folder is 0700 (other users of this host cannot list or read it); the files
# are 0644 because compose mounts them into the containers as they are, and the services read
# them as their own non-root users (bulwark 10001, grafana 472, prometheus 65534, rabbitmq 999).
#
# Changing a password: PostgreSQL and RabbitMQ read theirs only when their volume is empty.
# On a running stack change it in the service first (ALTER USER bulwark PASSWORD ...;
# rabbitmqctl change_password bulwark ...), then write the files, then recreate the nodes.
set -euo pipefail
SCRIPT_PATH=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SCRIPT_PATH")"
SECRETS_DIR=secrets
TOKEN_PATTERN='^bwk_[A-Za-z0-9_-]{43}$'

usage() {
    sed -n '2,17p' "$SCRIPT_PATH" | sed 's/^# \{0,1\}//'
    exit 2
}

random_hex() {
    if command -v openssl >/dev/null; then
        openssl rand -hex 32
    else
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
    fi
}

# Writes $2 to secrets/$1 without a trailing newline, replacing the file in place (a file that
# a running container has mounted keeps its inode, so the container sees the new content).
write_secret() {
    local name=$1 value=$2
    (umask 022 && printf '%s' "$value" > "$SECRETS_DIR/$name")
    chmod 0644 "$SECRETS_DIR/$name"
    echo "wrote compose/secrets/$name"
}

needs() {
    [ "$FORCE" = 1 ] || [ ! -s "$SECRETS_DIR/$1" ]
}

admin_token() {
    local token=""
    if [ -x ../target/release/bulwark ]; then
        token=$(../target/release/bulwark keys generate 2>/dev/null || true)
    fi
    if [ -z "$token" ] && command -v docker >/dev/null && docker image inspect bulwark:local >/dev/null 2>&1; then
        token=$(docker run --rm --network none bulwark:local keys generate 2>/dev/null || true)
    fi
    if [ -z "$token" ]; then
        # the same as bulwark_auth::generate_token: 32 bytes of the OS's CSPRNG, base64url, no padding
        if command -v openssl >/dev/null; then
            token="bwk_$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')"
        else
            token="bwk_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        fi
    fi
    if ! [[ $token =~ $TOKEN_PATTERN ]]; then
        echo "error: the admin key made is not a bulwark key (bwk_ and 43 base64url characters)" >&2
        exit 1
    fi
    printf '%s' "$token"
}

make_postgres() {
    local password=""
    if [ "$FORCE" = 0 ] && [ -s "$SECRETS_DIR/postgres_password" ]; then
        password=$(cat "$SECRETS_DIR/postgres_password")
    elif [ "$FORCE" = 0 ] && [ -s "$SECRETS_DIR/database_url" ]; then
        echo "error: compose/secrets/database_url exists but postgres_password does not: delete database_url to make both" >&2
        exit 1
    else
        password=$(random_hex)
        write_secret postgres_password "$password"
    fi
    if needs database_url; then
        write_secret database_url "postgres://bulwark:${password}@postgres:5432/bulwark"
    fi
}

make_rabbitmq() {
    local conf=rabbitmq_credentials.conf password=""
    if [ "$FORCE" = 0 ] && [ -s "$SECRETS_DIR/$conf" ]; then
        password=$(sed -n 's/^default_pass = //p' "$SECRETS_DIR/$conf")
    elif [ "$FORCE" = 0 ] && [ -s "$SECRETS_DIR/amqp_url" ]; then
        echo "error: compose/secrets/amqp_url exists but $conf does not: delete amqp_url to make both" >&2
        exit 1
    else
        password=$(random_hex)
        write_secret "$conf" "# RabbitMQ's only user, created when the node first boots on an empty volume
# (written by compose/make-secrets.sh; mounted at /etc/rabbitmq/conf.d/30-bulwark-credentials.conf)
default_user = bulwark
default_pass = ${password}
default_vhost = /
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
"
    fi
    if [ -z "$password" ]; then
        echo "error: no default_pass line in compose/secrets/$conf" >&2
        exit 1
    fi
    if needs amqp_url; then
        write_secret amqp_url "amqp://bulwark:${password}@rabbitmq:5672/%2f"
    fi
}

make_prometheus_key() {
    local compose=(docker compose -f docker-compose.yml)
    if [ -s "$SECRETS_DIR/prometheus_read_key" ] && [ "$FORCE" = 0 ]; then
        echo "compose/secrets/prometheus_read_key already holds a key; to replace it, revoke it" >&2
        echo "(docker compose -f compose/docker-compose.yml run --rm -T migrate keys list, then keys revoke <id>)" >&2
        echo "and run: compose/make-secrets.sh --force prometheus-key" >&2
        exit 1
    fi
    if ! docker compose version >/dev/null 2>&1; then
        echo "error: docker with its compose plugin is needed to create the key on the stack's database" >&2
        exit 1
    fi
    # migrations first (idempotent; starts PostgreSQL), then the key, printed once on stdout
    "${compose[@]}" run --rm -T migrate >/dev/null
    local token
    token=$("${compose[@]}" run --rm -T migrate keys create --name prometheus --scope read | tr -d '\r\n')
    if ! [[ $token =~ $TOKEN_PATTERN ]]; then
        echo "error: bulwark keys create did not print a key" >&2
        exit 1
    fi
    write_secret prometheus_read_key "$token"
}

FORCE=0
ACTION=secrets
for argument in "$@"; do
    case "$argument" in
        --force) FORCE=1 ;;
        prometheus-key) ACTION=prometheus-key ;;
        -h|--help) usage ;;
        *) echo "error: unknown argument $argument" >&2; usage ;;
    esac
done

mkdir -p "$SECRETS_DIR"
chmod 0700 "$SECRETS_DIR"

if [ "$ACTION" = prometheus-key ]; then
    make_prometheus_key
    exit 0
fi

make_postgres
make_rabbitmq
if needs bulwark_admin_key; then
    write_secret bulwark_admin_key "$(admin_token)"
fi
if needs grafana_admin_password; then
    write_secret grafana_admin_password "$(random_hex)"
fi
# Prometheus' key needs the database: an empty file until `prometheus-key` fills it (compose
# refuses to start a service whose secret file is missing)
if [ ! -e "$SECRETS_DIR/prometheus_read_key" ]; then
    write_secret prometheus_read_key ""
fi
if [ ! -s "$SECRETS_DIR/prometheus_read_key" ]; then
    echo "note: prometheus_read_key is empty: once the stack is up, run compose/make-secrets.sh prometheus-key"
fi
