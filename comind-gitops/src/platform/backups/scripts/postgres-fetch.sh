#!/bin/sh
# Downloads the dump to restore ($RESTORE_KEY under <backup bucket>/postgres/<env>/,
# or the newest complete one) into $BACKUP_DIR/postgres.sql.gz with its .sha256,
# which postgres-restore.sh checks before it touches a database (one read of the
# dump, not two).
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
# Both files in one rclone run, named exactly (never as a filter pattern).
printf '%s\n' "$key" "$key.sha256" >"$dir/fetch.list"
rclone copy --files-from-raw "$dir/fetch.list" "$prefix" "$dir/fetched" || fail "cannot download $key"
[ -f "$dir/fetched/$key" ] || fail "there is no backup $key under $prefix"
[ -f "$dir/fetched/$key.sha256" ] || fail "$key has no .sha256: it is not a complete backup"
mv "$dir/fetched/$key" "$dir/postgres.sql.gz"
mv "$dir/fetched/$key.sha256" "$dir/postgres.sql.gz.sha256"
rm -rf "$dir/fetched" "$dir/fetch.list"
echo "backup: fetched $key"
