#!/usr/bin/env bash
# Restores a backup made by scripts/backup.sh into a new database and checks it against its
# manifest (docs/operations/backup.md).
#
#   scripts/restore.sh BACKUP_FILE TARGET_DATABASE_URL|-
#
#   1. BACKUP_FILE must match BACKUP_FILE.sha256 and the digest in BACKUP_FILE.manifest.json,
#      and pg_restore must be able to read it; otherwise nothing is touched.
#   2. The target database is created (createdb through the server's `postgres` database)
#      when it does not exist. One that exists must be empty: any table, view, sequence or
#      function outside the system schemas makes the restore refuse, so a restore never
#      mixes with, or overwrites, live data.
#   3. The target URL's search_path must lead to the schema the backup was taken from, or
#      Bulwark would not find its tables there (add ?options=-c%20search_path%3D<schema>).
#   4. pg_restore --single-transaction --exit-on-error --no-owner --no-acl: all or nothing;
#      every object is owned by the restoring user and no grant is restored.
#   5. ANALYZE, since a restore leaves the planner without statistics.
#   6. The latest applied migration, the jobs by status and the manifest's table counts are
#      read back and printed beside the manifest's.
#
# TARGET_DATABASE_URL as "-" reads the URL from the file named by $DATABASE_URL_FILE, else from
# $DATABASE_URL. A password in the URL is handed to the PostgreSQL tools through PGPASSWORD
# and shown as *** in every message.
#
# Exit status: 0 restored and every count matches; 1 refused or failed before or during the
# restore (the target is left as it was, or empty if this run created it); 2 usage; 3
# restored, but the restored database differs from the manifest (left for inspection).
set -euo pipefail
SCRIPT_NAME=restore
# shellcheck source=scripts/backup-lib.sh
source "$(dirname "$0")/backup-lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

positional=()
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) usage ;;
        --) shift; positional+=("$@"); break ;;
        -?*) echo "restore: error: unknown option $1" >&2; usage ;;
        *) positional+=("$1") ;;
    esac
    shift
done
[ ${#positional[@]} -eq 2 ] || usage
backup_file=${positional[0]}
require_programs psql pg_restore createdb sha256sum
export PGAPPNAME=bulwark-restore

# Runs SQL (psql's dialect) against a URL with extra psql arguments (-v name=value);
# SQL_OUTPUT holds what it printed, rows as fields joined by |, and its errors.
run_sql() {
    local url=$1 sql=$2
    shift 2
    SQL_OUTPUT=$(printf '%s\n' "$sql" \
        | psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 "$@" "$url" 2>&1)
}

# 1. The file, before any connection.
manifest_file=$backup_file.manifest.json
sha_file=$backup_file.sha256
{ [ -f "$backup_file" ] && [ -r "$backup_file" ]; } || die "cannot read $backup_file"
[ -r "$sha_file" ] || die "cannot read $sha_file: a backup is restored only with its digest"
[ -r "$manifest_file" ] || die "cannot read $manifest_file: a backup is restored only with its manifest"
grep -q '"format": "bulwark-backup-manifest/1"' "$manifest_file" \
    || die "$manifest_file is not a manifest this script knows (format bulwark-backup-manifest/1)"
read -r sidecar_sha _ <"$sha_file" || true
manifest_sha=$(grep -o '"sha256": "[0-9a-f]*"' "$manifest_file" | head -1 | grep -o '[0-9a-f]\{64\}' || true)
actual_sha=$(sha256sum -- "$backup_file" | cut -d' ' -f1)
[ "$actual_sha" = "${sidecar_sha:-}" ] \
    || die "$backup_file does not match $sha_file (expected ${sidecar_sha:-nothing}, got $actual_sha): the file is damaged or was changed; restore another backup"
[ "$actual_sha" = "$manifest_sha" ] \
    || die "$backup_file does not match the digest in $manifest_file (expected ${manifest_sha:-nothing}, got $actual_sha): the manifest belongs to another dump"
work_dir=$(mktemp -d)
trap 'rm -rf -- "$work_dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
pg_restore --list "$backup_file" >"$work_dir/toc" 2>"$work_dir/toc.err" \
    || die "pg_restore cannot read $backup_file: $(cat "$work_dir/toc.err")"
manifest=$(cat "$manifest_file")

# 2. The target database: created when missing, refused when it holds anything.
target_url=$(resolve_url_argument "${positional[1]}") || exit
split_pg_url "$target_url"
[ -n "$PG_URL_DB" ] || die "$PG_URL_SHOWN names no database: give the new database's name in the URL" 2
run_sql "$PG_URL_MAINTENANCE" "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database');" \
    -v database="$PG_URL_DB" \
    || die "cannot connect to the server of $PG_URL_SHOWN (through its postgres database): $SQL_OUTPUT"
created=false
if [ "$SQL_OUTPUT" = f ]; then
    createdb_errors=$(createdb --maintenance-db="$PG_URL_MAINTENANCE" -- "$PG_URL_DB" 2>&1) \
        || die "cannot create database $PG_URL_DB: $createdb_errors"
    created=true
fi
if [ "$created" = true ]; then
    left_as="empty: this run created it"
else
    left_as="untouched"
fi

run_sql "$PG_URL" "SELECT :'manifest'::jsonb ->> 'schema';" -v manifest="$manifest" \
    || die "cannot connect to $PG_URL_SHOWN: $SQL_OUTPUT"
schema=$SQL_OUTPUT
[ -n "$schema" ] || die "$manifest_file names no schema"

run_sql "$PG_URL" "SELECT count(*) || '|' || COALESCE(string_agg(name, ', ' ORDER BY name) FILTER (WHERE rank <= 5), '')
FROM (SELECT name, row_number() OVER (ORDER BY name) AS rank FROM (
    SELECT format('%s %I.%I', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence'
                                             WHEN 'm' THEN 'materialized view' ELSE 'table' END,
                  n.nspname, c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
    UNION ALL
    SELECT format('function %I.%I', n.nspname, p.proname)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT format('schema %I', nspname) FROM pg_namespace WHERE nspname = :'schema' AND nspname <> 'public'
) AS objects) AS numbered;" -v schema="$schema" || die "cannot inspect $PG_URL_SHOWN: $SQL_OUTPUT"
num_objects=${SQL_OUTPUT%%|*}
if [ "$num_objects" != 0 ]; then
    die "$PG_URL_SHOWN is not empty ($num_objects objects, e.g. ${SQL_OUTPUT#*|}): restore into a new database, or drop this one first if it is a failed restore"
fi

# 3. Bulwark, given the target URL, must find the restored tables: the backup's schema must be
# the first of the URL's search_path that exists. Tried by creating the schema in a
# transaction that is rolled back.
run_sql "$PG_URL" "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :'schema') AS schema_exists \\gset
BEGIN;
\\if :schema_exists
\\else
CREATE SCHEMA :\"schema\";
\\endif
SELECT current_schema();
ROLLBACK;" -v schema="$schema" || die "cannot check the search_path of $PG_URL_SHOWN: $SQL_OUTPUT"
if [ "$SQL_OUTPUT" != "$schema" ]; then
    die "the backup's tables live in schema $schema, but $PG_URL_SHOWN would find ${SQL_OUTPUT:-no schema} first: add ?options=-c%20search_path%3D$schema to the URL (and give Bulwark the same URL); the target is $left_as"
fi

# 4. All or nothing. A schema that exists already (public, in a new database) is not created
# again, and keeps its own comment.
toc_args=()
run_sql "$PG_URL" "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :'schema');" -v schema="$schema" \
    || die "cannot inspect $PG_URL_SHOWN: $SQL_OUTPUT"
if [ "$SQL_OUTPUT" = t ]; then
    awk -v schema="$schema" '!(($4 == "SCHEMA" && $5 == "-" && $6 == schema) \
        || ($4 == "COMMENT" && $5 == "-" && $6 == "SCHEMA" && $7 == schema))' \
        "$work_dir/toc" >"$work_dir/toc.kept"
    toc_args=(--use-list="$work_dir/toc.kept")
fi
restore_errors=$(pg_restore --exit-on-error --single-transaction --no-owner --no-acl "${toc_args[@]}" \
    --dbname="$PG_URL" "$backup_file" 2>&1) \
    || die "pg_restore failed, nothing was restored (the target is $left_as): $restore_errors"

# 5. Statistics for the planner.
run_sql "$PG_URL" "ANALYZE;" || die "restored, but ANALYZE failed: $SQL_OUTPUT"

# 6. The restored rows beside the manifest's counts: one line per check, "order|name|backup|restored".
run_sql "$PG_URL" "WITH manifest AS (SELECT :'manifest'::jsonb AS m),
expected (ord, name, value) AS (
    SELECT 1, 'migration latest version', (m #>> '{migration,latest_version}')::bigint FROM manifest
    UNION ALL SELECT 2, 'migrations applied', (m #>> '{migration,num_applied}')::bigint FROM manifest
    UNION ALL SELECT 3, 'jobs ' || key, value::bigint FROM manifest, jsonb_each_text(m -> 'jobs_by_status')
    UNION ALL SELECT 4, key, value::bigint FROM manifest, jsonb_each_text(m -> 'tables')
),
actual (ord, name, value) AS (
    SELECT 1, 'migration latest version', max(version) FROM :\"schema\"._sqlx_migrations WHERE success
    UNION ALL SELECT 2, 'migrations applied', count(*) FROM :\"schema\"._sqlx_migrations WHERE success
    UNION ALL SELECT 3, 'jobs ' || status, count(*) FROM :\"schema\".jobs GROUP BY status
    UNION ALL SELECT 4, key, CASE WHEN to_regclass(format('%I.%I', :'schema', key)) IS NOT NULL THEN
            (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', :'schema', key),
                                                 false, true, '')))[1]::text::bigint END
        FROM manifest, jsonb_object_keys(m -> 'tables') AS key
)
SELECT COALESCE(e.ord, a.ord), COALESCE(e.name, a.name),
       COALESCE(e.value::text, CASE WHEN COALESCE(e.ord, a.ord) = 3 THEN '0' ELSE '-' END),
       COALESCE(a.value::text, CASE WHEN COALESCE(e.ord, a.ord) = 3 THEN '0' ELSE 'missing' END)
FROM expected AS e FULL JOIN actual AS a ON a.name = e.name
ORDER BY 1, 2;
SELECT 'amqp|' || count(*) FROM :\"schema\".jobs WHERE transport = 'amqp' AND status IN ('queued', 'running');
SELECT 'snapshot|' || COALESCE(:'manifest'::jsonb ->> 'snapshot_at', '?') || '|' || COALESCE(:'manifest'::jsonb ->> 'source', '?');" \
    -v manifest="$manifest" -v schema="$schema" \
    || { echo "restore: error: restored into $PG_URL_SHOWN, but cannot read it back: $SQL_OUTPUT" >&2; exit 3; }

num_checks=0
num_mismatches=0
num_running=0
num_amqp=0
report=$(printf '%-28s %12s %12s\n' check backup restored)
while IFS='|' read -r first name expected actual; do
    case $first in
        amqp) num_amqp=$name; continue ;;
        snapshot) snapshot_at=$name; source_url=$expected; continue ;;
    esac
    num_checks=$((num_checks + 1))
    verdict=ok
    if [ "$expected" != "$actual" ]; then
        verdict=MISMATCH
        num_mismatches=$((num_mismatches + 1))
    fi
    if [ "$name" = "jobs running" ]; then
        num_running=$actual
    fi
    report+=$'\n'$(printf '%-28s %12s %12s  %s' "$name" "$expected" "$actual" "$verdict")
done <<<"$SQL_OUTPUT"

created_note=""
[ "$created" = true ] && created_note=" (created)"
echo "restore: $backup_file (sha256 ok), snapshot of ${source_url:-?} at ${snapshot_at:-?}"
echo "restore: into $PG_URL_SHOWN$created_note, schema $schema"
echo "$report"
if [ "$num_mismatches" -gt 0 ]; then
    echo "restore: error: $num_mismatches of $num_checks checks differ from the manifest; the restored database is left for inspection" >&2
    exit 3
fi
echo "restore: verified: $num_checks checks match the manifest"
if [ "$num_running" != 0 ]; then
    echo "restore: jobs running at backup time: $num_running; they run again once their leases expire (at-least-once)"
fi
if [ "$num_amqp" != 0 ]; then
    echo "restore: RabbitMQ jobs queued or running at backup time: $num_amqp; they run only if the broker still holds their message (docs/operations/backup.md, \"RabbitMQ after a restore\")"
fi
