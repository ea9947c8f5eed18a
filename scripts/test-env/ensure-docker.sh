#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
#
# Idempotent: exits at once when the engine already answers. Otherwise installs
# Debian's docker.io (if dockerd is missing), starts dockerd in the background
# (no systemd needed) and polls `docker info` until it answers.
#
# Environment:
#   COMIND_TEST_LOG_DIR        where dockerd.log goes (default /tmp)
#   COMIND_DOCKER_TIMEOUT      seconds to wait for the engine (default 60)
set -euo pipefail

LOG_DIR="${COMIND_TEST_LOG_DIR:-/tmp}"
TIMEOUT="${COMIND_DOCKER_TIMEOUT:-60}"
DOCKERD_LOG="$LOG_DIR/dockerd.log"
LOCK_FILE="${LOG_DIR}/comind-ensure-docker.lock"

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then
    say "docker engine is running (server $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    die "the docker engine is not reachable and starting it needs root.
       Run this script as root, or start dockerd yourself (and check DOCKER_HOST / socket permissions)."
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix:///var/run/docker.sock" ] && [ "${DOCKER_HOST}" != "unix:///run/docker.sock" ]; then
    say "note: DOCKER_HOST=${DOCKER_HOST}; this script only starts a local dockerd on the default socket"
fi

mkdir -p "$LOG_DIR"

# Serialise concurrent callers: only one of them installs / starts dockerd.
exec 9>"$LOCK_FILE"
flock -w "$((TIMEOUT + 300))" 9 || die "could not take lock $LOCK_FILE (another ensure-docker.sh stuck?)"

# Someone else may have started it while we waited for the lock.
if command -v docker >/dev/null 2>&1 && engine_up; then
    say "docker engine is running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "dockerd is missing and apt-get is not available: install Docker by hand"
    say "installing docker.io from Debian (apt-get update + install)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed (network / Debian mirror reachable?)"
    # Recommends are not needed to run the engine (they are apparmor, git, ...).
    apt-get install -y -qq --no-install-recommends docker.io ca-certificates >/dev/null ||
        die "apt-get install docker.io failed; run 'apt-get install docker.io' by hand to see why"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH"
fi

dockerd_pid() {
    # The engine's own pid file is the reliable source; fall back to pgrep.
    local pid=""
    if [ -s /var/run/docker.pid ]; then
        pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            echo "$pid"
            return 0
        fi
    fi
    pgrep -x dockerd 2>/dev/null | head -n1
}

started_by_us=""
pid="$(dockerd_pid || true)"
if [ -n "$pid" ]; then
    # e.g. the package's init script started it during install
    say "dockerd already running (pid $pid); waiting for it to answer"
else
    rm -f /var/run/docker.pid
    say "starting dockerd (log: $DOCKERD_LOG)"
    {
        printf '\n===== %s: dockerd started by %s =====\n' "$(date -Is)" "$0"
    } >>"$DOCKERD_LOG"
    # 9>&- : the daemon must not inherit (and so hold) our lock.
    nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    started_by_us=1
fi

start=$(date +%s)
deadline=$((start + TIMEOUT))
while :; do
    if engine_up; then
        say "docker engine ready after $(($(date +%s) - start))s (server $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        exit 0
    fi
    if [ -n "$started_by_us" ] && ! kill -0 "$pid" 2>/dev/null; then
        echo "---- last lines of $DOCKERD_LOG ----" >&2
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        die "dockerd (pid $pid) exited during startup; see $DOCKERD_LOG above.
       Common causes: missing iptables/kernel modules, another engine holding /var/run/docker.sock,
       or a stale /var/lib/docker from a different storage driver."
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "---- last lines of $DOCKERD_LOG ----" >&2
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        die "docker engine did not answer 'docker info' within ${TIMEOUT}s; see $DOCKERD_LOG.
       Raise COMIND_DOCKER_TIMEOUT or start dockerd by hand to investigate."
    fi
    sleep 0.5
done
