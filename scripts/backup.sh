#!/usr/bin/env bash
# Backs up a Bulwark PostgreSQL database (docs/operations/backup.md).
#
#   scripts/backup.sh [--serializable-deferrable] [--lock-wait-timeout=60s] DATABASE_URL|- OUT_FILE
#
# Writes three files, each through a temporary name in OUT_FILE's folder, fsync'd, then
# renamed into place (the sidecars first, the dump last, so a dump that exists has them):
#   OUT_FILE                 pg_dump's custom format (-Fc) of the schema holding Bulwark's
#                            tables (the first of the URL's search_path that has them)
#   OUT_FILE.sha256          its digest, as `sha256sum -c` reads it
#   OUT_FILE.manifest.json   what it holds: the latest applied migration, jobs by status,
#                            row counts of schedules, dead_letters, api_keys, audits and
#                            paused_kinds, the source (password hidden), versions and sizes
# An existing OUT_FILE is replaced whole, never half-written. The files are readable by their
# owner only: they hold the server secret, key digests and every payload.
#
# DATABASE_URL as "-" reads the URL from the file named by $DATABASE_URL_FILE, else from
# $DATABASE_URL, so the URL's password appears in no argument list. A password in the URL is
# handed to pg_dump and psql through PGPASSWORD; PGPASSWORD, ~/.pgpass and the other PG*
# variables work as for any libpq program.
#
# One snapshot: a session exports a REPEATABLE READ snapshot, counts the manifest's rows in it,
# and pg_dump dumps from that same snapshot (--snapshot), so the manifest describes the dump
# exactly while nodes keep writing. --serializable-deferrable takes the snapshot in a
# SERIALIZABLE READ ONLY DEFERRABLE transaction instead: it waits until PostgreSQL can give
# a snapshot no serializable transaction can contradict, which may take long under write load.
# Bulwark runs no SERIALIZABLE transactions, so a REPEATABLE READ snapshot is already a state
# every committed transaction agrees with; the option is for databases shared with
# applications that do. Tables are locked ACCESS SHARE for the dump's length (writes go on;
# a migration waits), and a table that cannot be locked within --lock-wait-timeout (default
# 60s, $BACKUP_LOCK_WAIT_TIMEOUT) fails the backup instead of queueing every writer behind it.
#
# Exit status: 0 written, 1 failed (nothing left behind but an older OUT_FILE), 2 usage.
set -euo pipefail
SCRIPT_NAME=backup
# shellcheck source=scripts/backup-lib.sh
source "$(dirname "$0")/backup-lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

isolation="ISOLATION LEVEL REPEATABLE READ, READ ONLY"
lock_wait_timeout=${BACKUP_LOCK_WAIT_TIMEOUT:-60s}
positional=()
while [ $# -gt 0 ]; do
    case $1 in
        --serializable-deferrable) isolation="ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE" ;;
        --lock-wait-timeout=*) lock_wait_timeout=${1#*=} ;;
        -h | --help) usage ;;
        --) shift; positional+=("$@"); break ;;
        -?*) echo "backup: error: unknown option $1" >&2; usage ;;
        *) positional+=("$1") ;;
    esac
    shift
done
[ ${#positional[@]} -eq 2 ] || usage
out_file=${positional[1]}
require_programs psql pg_dump sha256sum
[[ $lock_wait_timeout =~ ^[0-9]+(ms|s|min)?$ ]] \
    || die "--lock-wait-timeout takes a PostgreSQL duration such as 500ms, 60s or 2min" 2
database_url=$(resolve_url_argument "${positional[0]}") || exit
split_pg_url "$database_url"
export PGAPPNAME=bulwark-backup

# The output's folder must exist and take new files; the temporary names live there so the
# final rename stays on one file system (and so is atomic).
out_dir=$(dirname -- "$out_file")
out_name=$(basename -- "$out_file")
[ -d "$out_dir" ] || die "cannot write $out_file: $out_dir is not a directory"
[ ! -d "$out_file" ] || die "cannot write $out_file: it is a directory"
umask 077
tmp_dump=$(mktemp "$out_dir/.$out_name.XXXXXX" 2>/dev/null) \
    || die "cannot write $out_file: cannot create a file in $out_dir (permissions? read-only file system?)"
tmp_sha=$(mktemp "$out_dir/.$out_name.sha256.XXXXXX")
tmp_manifest=$(mktemp "$out_dir/.$out_name.manifest.XXXXXX")

# The snapshot session: a psql process fed through a FIFO, which holds the transaction open
# while pg_dump runs.
session_pid=""
fifo_dir=""
cleanup() {
    rm -f -- "$tmp_dump" "$tmp_sha" "$tmp_manifest"
    if [ -n "$session_pid" ]; then
        kill "$session_pid" 2>/dev/null || true
    fi
    if [ -n "$fifo_dir" ]; then
        rm -rf -- "$fifo_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A write to a session that died must fail as a value, not kill the script silently.
trap '' PIPE

pg_dump_version=$(pg_dump --version)
fifo_dir=$(mktemp -d)
mkfifo "$fifo_dir/in" "$fifo_dir/out"
psql -X -q -A -t -v ON_ERROR_STOP=1 \
    -v source_url="$PG_URL_SHOWN" -v dump_name="$out_name" -v pg_dump_version="$pg_dump_version" \
    "$PG_URL" <"$fifo_dir/in" >"$fifo_dir/out" 2>&1 &
session_pid=$!
exec {session_in}>"$fifo_dir/in" {session_out}<"$fifo_dir/out"
end_mark="@@bulwark-backup-$$@@"

# Runs SQL (psql's dialect: variables, \gset) in the session; its output lands in
# SESSION_OUTPUT. Returns 1 when the session failed (psql stops at the first error).
session_run() {
    local line
    SESSION_OUTPUT=""
    printf '%s\n\\echo %s\n' "$1" "$end_mark" 1>&"$session_in" 2>/dev/null || return 1
    while IFS= read -r line <&"$session_out"; do
        if [ "$line" = "$end_mark" ]; then
            SESSION_OUTPUT=${SESSION_OUTPUT%$'\n'}
            return 0
        fi
        SESSION_OUTPUT+=$line$'\n'
    done
    SESSION_OUTPUT=${SESSION_OUTPUT%$'\n'}
    return 1
}

# Prints advice when a failure was a lock wait that ran out.
lock_hint() {
    case $1 in
        *"lock timeout"* | *"could not obtain lock"* | *"LOCK TABLE"*)
            printf '\n(a table stayed locked by another session for longer than --lock-wait-timeout=%s: a migration or an ALTER in progress? back up again once it is done)' "$lock_wait_timeout" ;;
    esac
}

session_run "SELECT 1;" \
    || die "cannot connect to $PG_URL_SHOWN: ${SESSION_OUTPUT:-psql ended without a word}"

# Bulwark's schema is where sqlx keeps its migration table, found through the URL's
# search_path (tests give each run a schema of its own).
session_run "SELECT COALESCE((SELECT n.nspname FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = pg_catalog.to_regclass('_sqlx_migrations')
      AND pg_catalog.to_regclass(pg_catalog.format('%I.jobs', n.nspname)) IS NOT NULL), '') AS schema \\gset
\\echo :schema" || die "cannot read the schema of $PG_URL_SHOWN: $SESSION_OUTPUT"
schema=$SESSION_OUTPUT
[ -n "$schema" ] \
    || die "$PG_URL_SHOWN holds no Bulwark tables (_sqlx_migrations and jobs) in its search_path: wrong database, or run \`bulwark migrate\` first"

# The snapshot, then the manifest's counts in it. Jobs are counted by status, every status
# present plus the known ones at 0; the other tables only where they exist (older schemas).
session_run "BEGIN $isolation;
SET LOCAL lock_timeout = '$lock_wait_timeout';
SET LOCAL idle_in_transaction_session_timeout = 0;
SELECT pg_catalog.pg_export_snapshot() AS snapshot \\gset
SELECT jsonb_build_object(
    'schema', :'schema',
    'migration', (SELECT jsonb_build_object('latest_version', max(version), 'num_applied', count(*))
                  FROM :\"schema\"._sqlx_migrations WHERE success),
    'num_failed_migrations', (SELECT count(*) FROM :\"schema\"._sqlx_migrations WHERE NOT success),
    'jobs_by_status', '{\"queued\": 0, \"running\": 0, \"succeeded\": 0, \"failed\": 0, \"dead\": 0, \"cancelled\": 0}'::jsonb
        || COALESCE((SELECT jsonb_object_agg(status, num_jobs)
                     FROM (SELECT status, count(*) AS num_jobs FROM :\"schema\".jobs GROUP BY status) AS by_status),
                    '{}'::jsonb),
    'tables', COALESCE((SELECT jsonb_object_agg(name, (xpath('/row/n/text()', query_to_xml(
                            format('SELECT count(*) AS n FROM %I.%I', :'schema', name), false, true, '')))[1]::text::bigint)
                        FROM unnest(ARRAY['schedules', 'dead_letters', 'api_keys', 'audits', 'paused_kinds']) AS name
                        WHERE to_regclass(format('%I.%I', :'schema', name)) IS NOT NULL),
                       '{}'::jsonb),
    'amqp_jobs_in_flight', (SELECT count(*) FROM :\"schema\".jobs
                            WHERE transport = 'amqp' AND status IN ('queued', 'running'))
)::text AS counts \\gset
\\echo :snapshot" || die "cannot take the snapshot and count rows: $SESSION_OUTPUT$(lock_hint "$SESSION_OUTPUT")"
snapshot=$SESSION_OUTPUT
[[ $snapshot =~ ^[0-9A-F]+-[0-9A-F]+-[0-9]+$ ]] || die "unexpected snapshot id from the session: $snapshot"

# pg_dump reads --schema as a pattern: quoted, the name matches itself only, case kept.
schema_pattern="\"${schema//\"/\"\"}\""
if ! dump_errors=$(pg_dump --format=custom --snapshot="$snapshot" --schema="$schema_pattern" \
    --lock-wait-timeout="$lock_wait_timeout" --file="$tmp_dump" "$PG_URL" 2>&1); then
    die "pg_dump failed: $dump_errors$(lock_hint "$dump_errors")"
fi
dump_bytes=$(stat -c %s -- "$tmp_dump")
dump_sha256=$(sha256sum -- "$tmp_dump" | cut -d' ' -f1)

session_run "\\set dump_bytes $dump_bytes
\\set dump_sha256 $dump_sha256
SELECT jsonb_pretty(jsonb_build_object(
    'format', 'bulwark-backup-manifest/1',
    'snapshot_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
    'source', :'source_url',
    'server_version', current_setting('server_version'),
    'isolation', current_setting('transaction_isolation'),
    'dump', jsonb_build_object('file', :'dump_name', 'format', 'custom', 'bytes', :dump_bytes,
                               'sha256', :'dump_sha256', 'pg_dump', :'pg_dump_version')
) || :'counts'::jsonb);
COMMIT;" || die "cannot write the manifest: $SESSION_OUTPUT"
printf '%s\n' "$SESSION_OUTPUT" >"$tmp_manifest"
summary_counts=$SESSION_OUTPUT
exec {session_in}>&-
wait "$session_pid" 2>/dev/null || true
exec {session_out}<&-
session_pid=""

printf '%s  %s\n' "$dump_sha256" "$out_name" >"$tmp_sha"
# pg_dump fsyncs its own output; these make the sidecars as durable before any rename.
sync -- "$tmp_dump" "$tmp_sha" "$tmp_manifest"
mv -f -- "$tmp_sha" "$out_file.sha256"
mv -f -- "$tmp_manifest" "$out_file.manifest.json"
mv -f -- "$tmp_dump" "$out_file"
# The renames are durable once the folder is; some file systems cannot fsync a folder.
sync -- "$out_dir" 2>/dev/null || say "warning: could not fsync $out_dir; the renames may not survive a power loss"

# A short report from the manifest just written (its fields are one per line, known names).
field() { grep -o "\"$1\": [0-9]*" <<<"$summary_counts" | head -1 | grep -o '[0-9]*$'; }
echo "backup: wrote $out_file ($dump_bytes bytes, sha256 $dump_sha256)"
echo "backup: from $PG_URL_SHOWN, schema $schema, migration $(field latest_version)"
echo "backup: jobs: queued $(field queued), running $(field running), succeeded $(field succeeded), failed $(field failed), dead $(field dead), cancelled $(field cancelled)"
echo "backup: schedules $(field schedules), dead_letters $(field dead_letters), api_keys $(field api_keys), audits $(field audits), paused_kinds $(field paused_kinds)"
