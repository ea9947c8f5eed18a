#!/bin/sh
# Dumps every database of the platform's PostgreSQL (pg_dumpall, from PG* variables)
# into $BACKUP_DIR/postgres.sql.gz with its SHA-256 beside it, and proves the file is
# whole before any later step may upload it: a dump that stopped half-way, a wrong
# password or a full disk fails the Job and leaves no file that looks like a backup.
set -eu
. "$(dirname "$0")/common.sh"

: "${PGHOST:?PGHOST is missing}" "${PGUSER:?PGUSER is missing}" "${PGPASSWORD:?PGPASSWORD is missing}"
dir="${BACKUP_DIR:-/backup}"
out="$dir/postgres.sql.gz"
partial="$out.partial"
trap 'rm -f "$partial" "$dir/dump.status"' EXIT
rm -f "$out" "$out.sha256"
started=$(date +%s)

# --no-role-passwords: the platform's role is not a superuser (nor is RDS's master
# user), and role passwords are Comind's to set again on `up`, not a backup's.
# rdsadmin: RDS's own database, which no user may connect to.
# POSIX sh has no pipefail: pg_dumpall's own status goes through a file, and gzip's
# (a full disk) is the pipeline's, which `set -e` checks.
if ! {
    status=0
    pg_dumpall --clean --if-exists --quote-all-identifiers --no-role-passwords \
        --exclude-database=rdsadmin || status=$?
    echo "$status" >"$dir/dump.status"
} | gzip -c >"$partial"; then
    fail "gzip could not write the dump to $dir (is the scratch volume full?); nothing is uploaded"
fi
status=$(cat "$dir/dump.status") || fail "pg_dumpall left no status: the scratch volume is full or unwritable"
[ "$status" = 0 ] || fail "pg_dumpall failed (exit $status); nothing is uploaded"

[ -s "$partial" ] || fail "the dump is empty; nothing is uploaded"
gzip -t "$partial" || fail "the dump is not a whole gzip file; nothing is uploaded"
# pg_dumpall ends every complete dump with this line: a dump cut short does not.
gzip -dc "$partial" | tail -n 4 | grep -q "PostgreSQL database cluster dump complete" ||
    fail "the dump does not end with pg_dumpall's completion line; nothing is uploaded"
sha256sum "$partial" | cut -d' ' -f1 >"$out.sha256.partial"
mv "$out.sha256.partial" "$out.sha256"
mv "$partial" "$out"
echo "backup: dumped and verified $(wc -c <"$out" | tr -d ' ') bytes (gzip) in $(($(date +%s) - started)) s, sha256 $(cat "$out.sha256")"
