#!/bin/sh
# Dumps every database of the platform's PostgreSQL (pg_dumpall, from PG* variables)
# into $BACKUP_DIR/postgres.sql.gz with its SHA-256 beside it, and proves the file is
# whole before any later step may upload it: a dump that stopped half-way, a wrong
# password or a full disk fails the Job and leaves no file that looks like a backup.
#
# The proof costs little time: the compressed stream is decompressed (gzip's whole-
# file check, and the dump's last lines) while it is written, on the machine's other
# cores, instead of reading the file back twice afterwards.
set -eu
. "$(dirname "$0")/common.sh"

: "${PGHOST:?PGHOST is missing}" "${PGUSER:?PGUSER is missing}" "${PGPASSWORD:?PGPASSWORD is missing}"
dir="${BACKUP_DIR:-/backup}"
out="$dir/postgres.sql.gz"
partial="$out.partial"
# Each stage's status and the stream's last lines live outside the scratch
# volume, so a full scratch volume is reported as such and not as a lost status.
notes=$(mktemp -d "${TMPDIR:-/tmp}/dump.XXXXXX")
trap 'rm -f "$partial"; rm -rf "$notes"' EXIT
rm -f "$out" "$out.sha256"
started=$(date +%s)

# noted NAME COMMAND...: runs COMMAND (a stage of the pipeline below) and writes its
# exit status to $notes/NAME: POSIX sh has no pipefail, and a pipeline's status is
# its last stage's only.
noted() {
    name=$1
    shift
    status=0
    "$@" || status=$?
    echo "$status" >"$notes/$name"
}

# --no-role-passwords: the platform's role is not a superuser (nor is RDS's master
# user), and role passwords are Comind's to set again (`up`, and a restore).
# rdsadmin: RDS's own database, which no user may connect to.
noted pg_dumpall pg_dumpall --clean --if-exists --quote-all-identifiers --no-role-passwords \
    --exclude-database=rdsadmin |
    noted gzip gzip -c |
    noted write tee "$partial" |
    noted check gzip -dc |
    tail -n 4 >"$notes/tail"

stage() {
    status=$(cat "$notes/$1" 2>/dev/null) || status="none"
    [ "$status" = 0 ]
}
# The cause is the first stage that failed of itself: a stage that stops cuts off
# the ones before it (SIGPIPE, exit 141), which are then not the cause.
cause=""
for name in pg_dumpall gzip write check; do
    stage "$name" && continue
    if [ -z "$cause" ] || [ "$status" != 141 ]; then
        cause=$name
        cause_status=$status
    fi
    [ "$status" != 141 ] && break
done
case "$cause" in
"") ;;
pg_dumpall) fail "pg_dumpall failed (exit $cause_status); nothing is uploaded" ;;
gzip) fail "gzip failed (exit $cause_status); nothing is uploaded" ;;
write) fail "could not write the dump to $dir (is the scratch volume full?); nothing is uploaded" ;;
*) fail "the dump is not a whole gzip file (exit $cause_status); nothing is uploaded" ;;
esac
[ -s "$partial" ] || fail "the dump is empty; nothing is uploaded"
# pg_dumpall ends every complete dump with this line: a dump cut short does not.
grep -q "PostgreSQL database cluster dump complete" "$notes/tail" ||
    fail "the dump does not end with pg_dumpall's completion line; nothing is uploaded"
sum=$(sha256sum "$partial" | cut -d' ' -f1)
echo "$sum" >"$out.sha256.partial"
mv "$out.sha256.partial" "$out.sha256"
mv "$partial" "$out"
echo "backup: dumped and verified $(wc -c <"$out" | tr -d ' ') bytes (gzip) in $(($(date +%s) - started)) s, sha256 $sum"
