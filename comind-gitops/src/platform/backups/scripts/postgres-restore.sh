#!/bin/sh
# Restores $BACKUP_DIR/postgres.sql.gz (fetched and checked by postgres-fetch.sh) into
# the platform's PostgreSQL: the dump drops and recreates each database. The only
# errors allowed are the two every pg_dumpall restore meets (the connected role
# cannot be dropped, and so already exists); any other fails the restore.
set -eu
. "$(dirname "$0")/common.sh"

: "${PGHOST:?PGHOST is missing}" "${PGUSER:?PGUSER is missing}" "${PGPASSWORD:?PGPASSWORD is missing}"
dir="${BACKUP_DIR:-/backup}"
file="$dir/postgres.sql.gz"
[ -s "$file" ] || fail "no dump at $file"
# The dump is the one that was verified whole when it was taken: its SHA-256 says so
# (a read far cheaper than decompressing it twice).
[ -s "$file.sha256" ] || fail "$file has no .sha256 beside it: it is not a complete backup"
[ "$(sha256sum "$file" | cut -d' ' -f1)" = "$(cat "$file.sha256")" ] ||
    fail "$file does not match its SHA-256; nothing is restored"
# Other sessions hold the databases the dump drops (`postgres` too: the dump
# recreates it from template1).
psql -X -q -d postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname IS NOT NULL" >/dev/null ||
    fail "cannot reach PostgreSQL at $PGHOST"
errors="$dir/restore.err"
# psql's own status (a lost connection, a failed \connect: it stops part-way) goes
# through a file, as the dump's does; the errors it only reports are checked below.
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
[ "$(cat "$dir/unzip.status")" = 0 ] ||
    fail "$file stopped decompressing part-way; the databases are partly restored"
if [ "$status" != 0 ]; then
    tail -n 20 "$errors" >&2
    fail "psql stopped (exit $status); the databases may be partly restored"
fi
unexpected=$(grep -E 'ERROR|FATAL|PANIC|psql:.*error' "$errors" | grep -v "current user cannot be dropped" | grep -v "role \"$PGUSER\" already exists" || true)
if [ -n "$unexpected" ]; then
    echo "$unexpected" | head -n 20 >&2
    fail "the restore met errors (above); the databases may be partly restored"
fi
# The dump holds the roles without their passwords (--no-role-passwords): the
# application role gets its own back, as a SCRAM verifier (never the password), read
# by psql from the environment (never a command line).
if [ -n "${APP_USER:-}" ]; then
    : "${APP_VERIFIER:?APP_VERIFIER is missing}"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<'SQL' || fail "cannot give role $APP_USER its password back"
\getenv app_user APP_USER
\getenv app_verifier APP_VERIFIER
ALTER ROLE :"app_user" PASSWORD :'app_verifier';
SQL
    echo "backup: role $APP_USER has its password again"
fi
echo "backup: restored $file"
