#!/usr/bin/env bash
# Stand-in for minio/minio: speaks the S3 API through SeaweedFS (`weed mini`,
# one process: master + volume + filer + S3 gateway + admin UI).
#
# Accepted command lines (what the official image accepts for a single node):
#   [minio] server DIR [--address [HOST]:PORT] [--console-address [HOST]:PORT] [other flags ignored]
# Credentials, later sources win:
#   defaults minioadmin/minioadmin
#   < MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (or MINIO_ACCESS_KEY / MINIO_SECRET_KEY)
#   < MINIO_ROOT_USER_FILE / MINIO_ROOT_PASSWORD_FILE (docker secrets style)
#   < the file named by MINIO_CONFIG_ENV_FILE (KEY=VALUE lines, `export` and quotes allowed)
# The S3 API is on the --address port (default 9000) and requires exactly these
# credentials (SigV4/V2); anonymous requests get 403. The console port (default
# 9001) serves SeaweedFS's admin UI, login with the same user/password.
# Data lives in DIR/.seaweedfs, so it survives a new container on the same volume.
set -Eeuo pipefail

die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}
log() { printf '[minio-standin] %s\n' "$*"; }

if [ "${1:-}" = 'minio' ]; then
    shift
fi
if [ "${1:-}" != 'server' ]; then
    if [ $# -gt 0 ] && [ "${1:0:1}" != '-' ] && command -v "$1" >/dev/null 2>&1; then
        exec "$@" # e.g. `docker run IMAGE sh`
    fi
    die "this MinIO stand-in only implements 'minio server DIR [--address :PORT] [--console-address :PORT]' (got: $*)"
fi
shift

data_dir=""
address=":9000"
console_address=":9001"
while [ $# -gt 0 ]; do
    case "$1" in
    --address) address="${2:?--address needs a value}"; shift 2 ;;
    --address=*) address="${1#*=}"; shift ;;
    --console-address) console_address="${2:?--console-address needs a value}"; shift 2 ;;
    --console-address=*) console_address="${1#*=}"; shift ;;
    --certs-dir | -S | --ftp | --sftp) shift 2 ;; # not supported, ignored
    -*) shift ;;                                  # --quiet, --json, --anonymous, ...
    *)
        if [ -z "$data_dir" ]; then data_dir="$1"; fi # extra dirs (erasure sets) ignored
        shift
        ;;
    esac
done
[ -n "$data_dir" ] || die "minio server: a data directory is required (e.g. 'server /data')"
case "$data_dir" in *'{'*'...'*'}'*) die "ellipsis/erasure layouts are not supported by the stand-in: $data_dir" ;; esac

port_of() {
    local p="${1##*:}"
    case "$p" in '' | *[!0-9]*) die "bad address '$1' (expected [HOST]:PORT)" ;; esac
    printf '%s' "$p"
}
s3_port="$(port_of "$address")"
console_port="$(port_of "$console_address")"

# ---- credentials -----------------------------------------------------------
user="${MINIO_ROOT_USER:-${MINIO_ACCESS_KEY:-minioadmin}}"
pass="${MINIO_ROOT_PASSWORD:-${MINIO_SECRET_KEY:-minioadmin}}"
if [ -n "${MINIO_ROOT_USER_FILE:-}" ]; then
    f="$MINIO_ROOT_USER_FILE"; [ -f "$f" ] || f="/run/secrets/$f"
    user="$(<"$f")"
fi
if [ -n "${MINIO_ROOT_PASSWORD_FILE:-}" ]; then
    f="$MINIO_ROOT_PASSWORD_FILE"; [ -f "$f" ] || f="/run/secrets/$f"
    pass="$(<"$f")"
fi
if [ -n "${MINIO_CONFIG_ENV_FILE:-}" ]; then
    [ -r "$MINIO_CONFIG_ENV_FILE" ] || die "MINIO_CONFIG_ENV_FILE=$MINIO_CONFIG_ENV_FILE: file not found or unreadable"
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%$'\r'}"
        line="${line#"${line%%[![:space:]]*}"}" # ltrim
        case "$line" in '' | '#'*) continue ;; esac
        line="${line#export }"
        key="${line%%=*}"
        [ "$key" != "$line" ] || continue
        val="${line#*=}"
        case "$val" in
        \"*\") val="${val#\"}"; val="${val%\"}" ;;
        \'*\') val="${val#\'}"; val="${val%\'}" ;;
        esac
        case "$key" in
        MINIO_ROOT_USER | MINIO_ACCESS_KEY) user="$val" ;;
        MINIO_ROOT_PASSWORD | MINIO_SECRET_KEY) pass="$val" ;;
        esac
    done <"$MINIO_CONFIG_ENV_FILE"
fi
# Same limits MinIO enforces at start-up.
[ "${#user}" -ge 3 ] || die "Invalid credentials: MINIO_ROOT_USER length should be at least 3"
[ "${#pass}" -ge 8 ] || die "Invalid credentials: MINIO_ROOT_PASSWORD length should be at least 8"

json_escape() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//$'\t'/\\t}"
    printf '%s' "$s"
}

cfg_dir=/run/minio-standin
mkdir -p "$cfg_dir"
chmod 700 "$cfg_dir"
cat >"$cfg_dir/s3.json" <<EOF
{
  "identities": [
    {
      "name": "minio-root",
      "credentials": [
        { "accessKey": "$(json_escape "$user")", "secretKey": "$(json_escape "$pass")" }
      ],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF

# ---- storage ---------------------------------------------------------------
weed_dir="$data_dir/.seaweedfs"
mkdir -p "$weed_dir"
# `weed mini` persists its flags in mini.options and re-applies them on the next
# start (even flags no longer given). Our flags are authoritative: drop it.
rm -f "$weed_dir/mini.options"

log "S3 API on :$s3_port (SeaweedFS $(weed version 2>/dev/null | awk '{print $3}')), console on :$console_port, data in $weed_dir"

# -ip=127.0.0.1: the components find each other on loopback; -ip.bind=0.0.0.0 so
# the published S3/console ports answer. Small volumes (sparse, no prealloc),
# no telemetry (no network), no WebDAV / Iceberg / Lance endpoints, and no
# pre-stop grace period.
weed mini \
    -dir="$weed_dir" \
    -ip=127.0.0.1 \
    -ip.bind=0.0.0.0 \
    -s3.port="$s3_port" \
    -s3.config="$cfg_dir/s3.json" \
    -s3.port.iceberg=0 \
    -s3.port.lance=0 \
    -webdav=false \
    -admin.port="$console_port" \
    -admin.user="$user" \
    -admin.password="$pass" \
    -master.telemetry=false \
    -master.volumeSizeLimitMB=64 \
    -master.volumePreallocate=false \
    -volume.max=0 \
    -volume.preStopSeconds=0 &
child=$!

# weed is not PID 1 on purpose: its volume server's graceful HTTP shutdown
# sometimes (~1 stop in 15) waits for a lingering keep-alive connection until
# `docker stop` gives up and SIGKILLs after 10 s. Everything that holds state
# (S3 gateway, filer) has stopped by then, so after a short grace we kill it.
grace="${MINIO_STANDIN_STOP_GRACE_SECONDS:-3}"
stopping=""
# shellcheck disable=SC2317  # only called from stop_child
child_alive() { # a zombie (exited, not yet reaped) counts as stopped
    local st
    st="$(cut -d' ' -f3 "/proc/$child/stat" 2>/dev/null)" || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}
# shellcheck disable=SC2317  # invoked through trap
stop_child() {
    stopping=1
    trap '' TERM INT
    kill -TERM "$child" 2>/dev/null || return 0
    local i
    for ((i = 0; i < grace * 10; i++)); do
        child_alive || return 0
        sleep 0.1
    done
    log "weed did not stop within ${grace}s; killing it"
    kill -KILL "$child" 2>/dev/null || true
}
trap stop_child TERM INT
rc=0
wait "$child" || rc=$?
if [ -n "$stopping" ]; then
    # the trapped signal interrupted `wait`; collect weed's own exit status
    rc=0
    wait "$child" 2>/dev/null || rc=$?
fi
exit "$rc"
