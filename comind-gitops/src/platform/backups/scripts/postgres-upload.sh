#!/bin/sh
# Uploads the verified dump of postgres-dump.sh to
# <backup bucket>/postgres/<env>/<stamp>.sql.gz, then its .sha256, which marks the
# backup complete; the retention runs beside the upload.
set -eu
. "$(dirname "$0")/common.sh"

: "${BACKUP_BUCKET:?BACKUP_BUCKET is missing}" "${ENVIRONMENT:?ENVIRONMENT is missing}"
dir="${BACKUP_DIR:-/backup}"
file="$dir/postgres.sql.gz"
[ -s "$file" ] && [ -s "$file.sha256" ] ||
    fail "no verified dump in $dir: the dump step did not finish; nothing is uploaded"
s3_remote
stamp=$(date -u +%Y%m%dT%H%M%SZ)
prefix="store:$BACKUP_BUCKET/postgres/$ENVIRONMENT"
started=$(date +%s)
# The retention runs beside the upload: it sees the backups before this one, and
# never removes the newest complete one among them.
"$(dirname "$0")/retention.sh" "$prefix" .sql.gz &
retention=$!
# rclone checks the uploaded object's MD5 against the file's.
uploaded=0
rclone copyto "$file" "$prefix/$stamp.sql.gz" || uploaded=$?
retained=0
wait "$retention" || retained=$?
[ "$uploaded" = 0 ] || fail "the upload of $stamp.sql.gz failed"
# Then the .sha256, which marks the backup complete: never before the dump is up.
rclone copyto "$file.sha256" "$prefix/$stamp.sql.gz.sha256" || fail "the upload of $stamp.sql.gz.sha256 failed"
echo "backup: uploaded $prefix/$stamp.sql.gz in $(($(date +%s) - started)) s"
[ "$retained" = 0 ] || fail "the backup is uploaded, but the retention failed (above)"
