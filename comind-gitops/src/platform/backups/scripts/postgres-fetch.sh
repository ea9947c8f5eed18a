#!/bin/sh
# Downloads the dump to restore ($RESTORE_KEY under <backup bucket>/postgres/<env>/,
# or the newest complete one) into $BACKUP_DIR/postgres.sql.gz, and checks it
# against its .sha256 before the restore may read it.
set -eu
. "$(dirname "$0")/common.sh"

: "${BACKUP_BUCKET:?BACKUP_BUCKET is missing}" "${ENVIRONMENT:?ENVIRONMENT is missing}"
dir="${BACKUP_DIR:-/backup}"
s3_remote
prefix="store:$BACKUP_BUCKET/postgres/$ENVIRONMENT"
key="${RESTORE_KEY:-}"
if [ -z "$key" ]; then
    key=$(rclone lsf --files-only "$prefix" | grep '\.sql\.gz\.sha256$' | sed 's/\.sha256$//' | sort | tail -n 1)
    [ -n "$key" ] || fail "no complete backup under $prefix"
fi
rclone copyto "$prefix/$key" "$dir/postgres.sql.gz" || fail "cannot download $key"
rclone copyto "$prefix/$key.sha256" "$dir/postgres.sql.gz.sha256" || fail "$key has no .sha256: it is not a complete backup"
[ "$(sha256sum "$dir/postgres.sql.gz" | cut -d' ' -f1)" = "$(cat "$dir/postgres.sql.gz.sha256")" ] ||
    fail "$key does not match its SHA-256; it is not restored"
echo "backup: fetched and checked $key"
