#!/bin/sh
# retention.sh PREFIX SUFFIX: removes the backups under PREFIX (named <stamp>SUFFIX,
# complete once <stamp>SUFFIX.sha256 is there) older than $RETENTION_DAYS, but never
# the newest complete one, so a long outage of the backups never empties the bucket.
set -eu
. "$(dirname "$0")/common.sh"

prefix="$1"
suffix="$2"
: "${RETENTION_DAYS:?RETENTION_DAYS is missing}"
s3_remote
cutoff=$(stamp_days_ago "$RETENTION_DAYS")
listing=$(rclone lsf --files-only "$prefix") || fail "cannot list $prefix"
newest=""
for name in $listing; do
    case "$name" in
    *"$suffix.sha256") stamp=${name%"$suffix.sha256"} ;;
    *) continue ;;
    esac
    if [ -z "$newest" ] || expr "$stamp" \> "$newest" >/dev/null; then
        newest=$stamp
    fi
done
removed=0
for name in $listing; do
    stamp=${name%%.*}
    [ "$stamp" = "$newest" ] && continue
    # expr compares strings; stamps sort as times.
    if expr "$stamp" \< "$cutoff" >/dev/null; then
        rclone deletefile "$prefix/$name" || fail "cannot remove $prefix/$name"
        removed=$((removed + 1))
    fi
done
echo "backup: retention of $RETENTION_DAYS days removed $removed files under $prefix; the newest complete backup is ${newest:-none}"
