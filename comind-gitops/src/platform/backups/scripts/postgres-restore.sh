#!/bin/sh
# Restores $BACKUP_DIR/postgres.sql.gz (fetched by postgres-fetch.sh, with its
# .sha256) into the platform's PostgreSQL: the dump drops and recreates each database.
# The only errors allowed are those every pg_dumpall restore meets (the connected role
# cannot be dropped, and so already exists; on RDS, its own rds* roles); any other
# fails the restore.
#
# The application role ($APP_USER, when set) may not log in while the databases are
# replaced (a connection pool would otherwise be back before the dump drops them);
# the dump holds it without its password (--no-role-passwords), so it gets its own
# back, as a SCRAM verifier ($APP_VERIFIER, never the password), and may log in again
# when the restore ends, whether it succeeded or not.
set -eu
. "$(dirname "$0")/common.sh"

: "${PGHOST:?PGHOST is missing}" "${PGUSER:?PGUSER is missing}" "${PGPASSWORD:?PGPASSWORD is missing}"
dir="${BACKUP_DIR:-/backup}"
file="$dir/postgres.sql.gz"
[ -s "$file" ] || fail "no dump at $file"
# The dump is the one that was verified whole when it was taken, unless its SHA-256
# says otherwise (a read far cheaper than decompressing it an extra time).
[ -s "$file.sha256" ] || fail "$file has no .sha256 beside it: it is not a complete backup"
[ "$(sha256sum "$file" | cut -d' ' -f1)" = "$(cat "$file.sha256")" ] ||
    fail "$file does not match its SHA-256 (it is damaged); nothing is restored"

if [ -n "${APP_USER:-}" ]; then
    : "${APP_VERIFIER:?APP_VERIFIER is missing}"
    # psql reads the role and its verifier from the environment (\getenv, psql 15).
    major=$(psql --version | sed -n 's/.* \([0-9][0-9]*\)\..*/\1/p')
    [ "${major:-0}" -ge 15 ] ||
        fail "psql ${major:-?} cannot read variables from the environment (psql 15 or newer is needed); nothing is restored: set platform.backups.postgres_image to PostgreSQL 15 or newer"
fi

# app_role SQL: runs SQL (a statement made by format() from :'app_user' and
# :'app_verifier', for \gexec) when the application role exists.
app_role() {
    printf '%s\n' '\getenv app_user APP_USER' '\getenv app_verifier APP_VERIFIER' \
        "SELECT $1 WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \\gexec" |
        psql -X -q -v ON_ERROR_STOP=1 -d postgres >/dev/null
}
login_again() {
    app_role "format('ALTER ROLE %I LOGIN PASSWORD %L', :'app_user', :'app_verifier')" ||
        echo "backup: role $APP_USER could not be let in again; run \`comind up\`" >&2
}
if [ -n "${APP_USER:-}" ]; then
    app_role "format('ALTER ROLE %I NOLOGIN', :'app_user')" ||
        fail "cannot reach PostgreSQL at $PGHOST as $PGUSER; nothing is restored"
    trap login_again EXIT
fi

# Other sessions hold the databases the dump drops (`postgres` too: the dump
# recreates it from template1). RDS's own sessions (rdsadmin) are not ours to end.
psql -X -q -d postgres -c "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid WHERE a.pid <> pg_backend_pid() AND a.datname IS NOT NULL AND a.datname <> 'rdsadmin' AND (NOT r.rolsuper OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))" >/dev/null ||
    fail "cannot reach PostgreSQL at $PGHOST as $PGUSER; nothing is restored"
errors="$dir/restore.err"
# psql's own status (a lost connection, a failed \connect: it stops part-way) and
# gzip's go through files, as the dump's do; the errors psql only reports are checked
# below.
{
    status=0
    {
        unzipped=0
        gzip -dc "$file" || unzipped=$?
        echo "$unzipped" >"$dir/unzip.status"
    } | psql -X -q -d postgres >/dev/null 2>"$errors" || status=$?
    echo "$status" >"$dir/restore.status"
}
status=$(cat "$dir/restore.status")
# psql first: when it stops, gzip is cut off (SIGPIPE) and is not the cause.
if [ "$status" != 0 ]; then
    tail -n 20 "$errors" >&2
    fail "psql stopped (exit $status); the databases may be partly restored"
fi
[ "$(cat "$dir/unzip.status")" = 0 ] ||
    fail "$file stopped decompressing part-way; the databases are partly restored"
unexpected=$(grep -E 'ERROR|FATAL|PANIC|psql:.*error' "$errors" |
    grep -v "current user cannot be dropped" |
    grep -v "role \"$PGUSER\" already exists" |
    grep -v "role \"rds" || true)
if [ -n "$unexpected" ]; then
    echo "$unexpected" | head -n 20 >&2
    fail "the restore met errors (above); the databases may be partly restored"
fi
if [ -n "${APP_USER:-}" ]; then
    trap - EXIT
    app_role "format('ALTER ROLE %I LOGIN PASSWORD %L', :'app_user', :'app_verifier')" ||
        fail "the databases are restored, but role $APP_USER could not get its password back; run \`comind up\`"
    echo "backup: role $APP_USER has its password again"
fi
echo "backup: restored $file"
