# shellcheck shell=bash disable=SC2034  # the PG_URL* variables are read by the scripts that source this
# Sourced by scripts/backup.sh and scripts/restore.sh (not run on its own): reading a
# PostgreSQL URL so that its password never reaches a process's argv (`ps` shows every
# argument to every user) nor a message. The password moves to PGPASSWORD, which only the
# same user can read (/proc/<pid>/environ), and messages show the URL with `***` instead.

# Connection attempts give up after this many seconds unless the caller set its own.
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}

# Prints "<tool>: error: <message>" on stderr and exits 1 (2 with a third argument "usage").
die() {
    echo "$SCRIPT_NAME: error: $1" >&2
    exit "${2:-1}"
}

# Prints "<tool>: <message>" on stderr.
say() {
    echo "$SCRIPT_NAME: $1" >&2
}

# Prints its argument with %XX sequences decoded (libpq decodes them in URLs too).
percent_decode() {
    local text=${1//\\/\\\\}
    printf '%b' "${text//%/\\x}"
}

# Returns the database URL an argument stands for: the argument itself, or for "-" the first
# line of the file $DATABASE_URL_FILE (a mounted secret), or else $DATABASE_URL; both set is
# an error, as it is for bulwark.
resolve_url_argument() {
    local argument=$1 url=""
    if [ "$argument" != - ]; then
        printf '%s' "$argument"
        return
    fi
    if [ -n "${DATABASE_URL_FILE:-}" ] && [ -n "${DATABASE_URL:-}" ]; then
        die "both DATABASE_URL and DATABASE_URL_FILE are set: unset one (bulwark refuses both too)" 2
    fi
    if [ -n "${DATABASE_URL_FILE:-}" ]; then
        [ -r "$DATABASE_URL_FILE" ] || die "DATABASE_URL_FILE names $DATABASE_URL_FILE, which cannot be read"
        IFS= read -r url <"$DATABASE_URL_FILE" || [ -n "$url" ] \
            || die "DATABASE_URL_FILE ($DATABASE_URL_FILE) is empty"
        printf '%s' "${url%$'\r'}"
        return
    fi
    [ -n "${DATABASE_URL:-}" ] || die "the URL argument is - but neither DATABASE_URL_FILE nor DATABASE_URL is set" 2
    printf '%s' "$DATABASE_URL"
}

# Splits a postgres:// URL. Sets PG_URL (the URL without its password: safe to pass as an
# argument), PG_URL_SHOWN (for messages: the password as ***), PG_URL_DB (the database name,
# decoded; empty when the URL names none) and PG_URL_MAINTENANCE (the same server and user,
# database `postgres`), and exports PGPASSWORD when the URL carries a password, in its user
# part or as a `password=` parameter.
split_pg_url() {
    local url=$1
    local pattern='^(postgres|postgresql)://([^/?#]*)(/[^?#]*)?(\?[^#]*)?$'
    case $url in
        sqlite:*) die "$url is a SQLite database: copy it with sqlite3's .backup or VACUUM INTO (docs/operations/backup.md)" 2 ;;
        postgres://* | postgresql://*) ;;
        *) die "expected a postgres:// URL, got something else (${url%%://*}://...)" 2 ;;
    esac
    [[ $url =~ $pattern ]] || die "cannot read the URL: expected postgres://[user[:password]@]host[:port]/database[?parameters]" 2
    local scheme=${BASH_REMATCH[1]} authority=${BASH_REMATCH[2]} path=${BASH_REMATCH[3]}
    local query=${BASH_REMATCH[4]#\?}
    local userinfo="" hostport=$authority password="" has_password=false
    if [[ $authority == *@* ]]; then
        userinfo=${authority%@*}
        hostport=${authority##*@}
    fi
    local user=$userinfo
    if [[ $userinfo == *:* ]]; then
        user=${userinfo%%:*}
        password=$(percent_decode "${userinfo#*:}")
        has_password=true
    fi
    local kept_parameters=() shown_parameters=() parameter
    if [ -n "$query" ]; then
        local IFS='&'
        for parameter in $query; do
            if [[ $parameter == password=* ]]; then
                password=$(percent_decode "${parameter#password=}")
                has_password=true
                shown_parameters+=("password=***")
            else
                kept_parameters+=("$parameter")
                shown_parameters+=("$parameter")
            fi
        done
        unset IFS
    fi
    local kept_query="" shown_query=""
    if [ ${#kept_parameters[@]} -gt 0 ]; then
        kept_query="?$(IFS='&'; echo "${kept_parameters[*]}")"
    fi
    if [ ${#shown_parameters[@]} -gt 0 ]; then
        shown_query="?$(IFS='&'; echo "${shown_parameters[*]}")"
    fi
    local user_part="" shown_user_part=""
    if [ -n "$user" ]; then
        user_part="$user@"
        shown_user_part="$user@"
        if [ -n "${userinfo#"$user"}" ]; then
            shown_user_part="$user:***@"
        fi
    fi
    PG_URL="$scheme://$user_part$hostport$path$kept_query"
    PG_URL_SHOWN="$scheme://$shown_user_part$hostport$path$shown_query"
    PG_URL_DB=$(percent_decode "${path#/}")
    PG_URL_MAINTENANCE="$scheme://$user_part$hostport/postgres$kept_query"
    if [ "$has_password" = true ]; then
        export PGPASSWORD=$password
    fi
}

# Checks that the PostgreSQL client programs named are installed.
require_programs() {
    local program
    for program in "$@"; do
        command -v "$program" >/dev/null \
            || die "$program is not installed (Debian: apt-get install postgresql-client)"
    done
}
