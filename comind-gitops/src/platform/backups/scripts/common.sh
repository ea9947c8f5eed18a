# Shared by the backup scripts (sourced, POSIX sh: they run in the PostgreSQL image's
# busybox or dash as well as in rclone's alpine).

fail() {
    echo "backup: $*" >&2
    exit 1
}

# rclone's remote `store:` from the platform object store's Secret (the S3_* keys),
# through rclone's environment configuration: no credential on a command line.
s3_remote() {
    export RCLONE_CONFIG_STORE_TYPE=s3
    export RCLONE_CONFIG_STORE_REGION="${S3_REGION:-us-east-1}"
    if [ -n "${S3_ENDPOINT:-}" ]; then
        export RCLONE_CONFIG_STORE_PROVIDER=Other
        export RCLONE_CONFIG_STORE_ENDPOINT="$S3_ENDPOINT"
    else
        export RCLONE_CONFIG_STORE_PROVIDER=AWS
    fi
    if [ -n "${S3_ACCESS_KEY_ID:-}" ]; then
        export RCLONE_CONFIG_STORE_ACCESS_KEY_ID="$S3_ACCESS_KEY_ID"
        export RCLONE_CONFIG_STORE_SECRET_ACCESS_KEY="${S3_SECRET_ACCESS_KEY:?S3_SECRET_ACCESS_KEY is missing}"
    else
        # The Pod's own identity (EKS Pod Identity): the SDK's credential chain.
        export RCLONE_CONFIG_STORE_ENV_AUTH=true
    fi
    if [ "${S3_FORCE_PATH_STYLE:-true}" = "false" ]; then
        export RCLONE_CONFIG_STORE_FORCE_PATH_STYLE=false
    fi
    # The bucket exists (Comind made it); never try to create it.
    export RCLONE_S3_NO_CHECK_BUCKET=true
    export RCLONE_CONFIG="${RCLONE_CONFIG:-/dev/null}"
}

# The UTC time `days` days ago, as a backup stamp (names sort as times).
stamp_days_ago() {
    date -u -d "@$(($(date +%s) - $1 * 86400))" +%Y%m%dT%H%M%SZ
}
