#!/usr/bin/env bash
# Stand-in for the docker-library postgres entrypoint (postgres:16-alpine),
# running Debian bookworm's PostgreSQL 15.
#
# Honoured: POSTGRES_USER (default postgres), POSTGRES_PASSWORD or
# POSTGRES_PASSWORD_FILE, POSTGRES_DB (default = user), PGDATA
# (default /var/lib/postgresql/data), POSTGRES_INITDB_ARGS,
# POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), and *.sql / *.sql.gz / *.sh
# files in /docker-entrypoint-initdb.d (run on first start only).
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# file_env VAR [DEFAULT]: VAR or VAR_FILE (contents of the file), not both.
file_env() {
    local var="$1" def="${2:-}"
    local fvar="${var}_FILE"
    local val="$def"
    if [ -n "${!var:-}" ] && [ -n "${!fvar:-}" ]; then
        die "both $var and $fvar are set (but are exclusive)"
    fi
    if [ -n "${!var:-}" ]; then
        val="${!var}"
    elif [ -n "${!fvar:-}" ]; then
        [ -r "${!fvar}" ] || die "$fvar=${!fvar}: file not found or not readable"
        val="$(<"${!fvar}")"
    fi
    export "$var"="$val"
    unset "$fvar"
}

setup_env() {
    export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    export POSTGRES_HOST_AUTH_METHOD="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
}

# first arg is `-f` or `--some-option`: run postgres with it
if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

# postgres asked for help/version/config only: no setup needed
pg_want_help() {
    local arg
    for arg; do
        case "$arg" in
        -'?' | --help | --describe-config | -V | --version | -C) return 0 ;;
        esac
    done
    return 1
}

if [ "${1:-}" != 'postgres' ] || pg_want_help "$@"; then
    exec "$@"
fi

setup_env

if [ "$(id -u)" = '0' ]; then
    # The volume is typically a fresh, root-owned named volume.
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    chown postgres:postgres /var/run/postgresql
    chmod 3777 /var/run/postgresql
    # Re-run as postgres; the secrets were read above (as root) and travel in
    # the environment, exactly like the official image does with gosu.
    export HOME=/var/lib/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
        die "Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value for the
       superuser, or set POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password."
    fi
    log "initializing database in $PGDATA (user=$POSTGRES_USER db=$POSTGRES_DB)"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    # --no-sync: a test container; fsync of the fresh cluster only costs time.
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a word list on purpose
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
        --no-sync $POSTGRES_INITDB_ARGS >/dev/null
    rm -f "$pwfile"
    {
        echo
        echo "# added by the comind-test entrypoint"
        echo "listen_addresses = '*'"
        echo "password_encryption = scram-sha-256"
    } >>"$PGDATA/postgresql.conf"
    {
        echo
        echo "host all all all $POSTGRES_HOST_AUTH_METHOD"
    } >>"$PGDATA/pg_hba.conf"

    initdb_files=()
    if [ -d /docker-entrypoint-initdb.d ]; then
        for f in /docker-entrypoint-initdb.d/*; do
            [ -e "$f" ] && initdb_files+=("$f")
        done
    fi

    if [ "$POSTGRES_DB" != 'postgres' ] || [ "${#initdb_files[@]}" -gt 0 ]; then
        # Temporary server on the unix socket only.
        pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -s start >/dev/null
        psql_cmd=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --no-password -q)
        if [ "$POSTGRES_DB" != 'postgres' ]; then
            "${psql_cmd[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
        fi
        for f in "${initdb_files[@]}"; do
            case "$f" in
            *.sh)
                log "running $f"
                # shellcheck disable=SC1090
                if [ -x "$f" ]; then "$f"; else . "$f"; fi
                ;;
            *.sql)
                log "running $f"
                "${psql_cmd[@]}" --dbname "$POSTGRES_DB" -f "$f"
                ;;
            *.sql.gz)
                log "running $f"
                gunzip -c "$f" | "${psql_cmd[@]}" --dbname "$POSTGRES_DB"
                ;;
            *) log "ignoring $f" ;;
            esac
        done
        pg_ctl -D "$PGDATA" -m fast -w -s stop
    fi
    log "PostgreSQL init process complete; ready for start up."
else
    log "PostgreSQL database directory appears to contain a database; skipping initialization"
fi

# postgres becomes PID 1: it handles SIGINT (fast shutdown, the image's
# STOPSIGNAL), SIGTERM (smart shutdown) and SIGQUIT itself.
exec "$@"
