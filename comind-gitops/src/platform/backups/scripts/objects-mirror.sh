#!/bin/sh
# Mirrors each bucket of $MIRROR_BUCKETS into <backup bucket>/objects/<bucket>/,
# incrementally (rclone copies only what changed, and checks what it copies). A copy,
# never a sync: an object deleted from the bucket (by accident, or by an attacker)
# stays in its backup.
set -eu
. "$(dirname "$0")/common.sh"

: "${BACKUP_BUCKET:?BACKUP_BUCKET is missing}"
s3_remote
for bucket in ${MIRROR_BUCKETS:-}; do
    started=$(date +%s)
    rclone copy "store:$bucket" "store:$BACKUP_BUCKET/objects/$bucket" ||
        fail "the mirror of bucket $bucket failed"
    echo "backup: mirrored $bucket into $BACKUP_BUCKET/objects/$bucket in $(($(date +%s) - started)) s"
done
