#!/usr/bin/env bash
# Makes the k3d test double (scripts/test-env/k3d) usable and prints its absolute
# path on the last line of stdout:
#
#   K3D="$(scripts/test-env/ensure-k3d-double.sh | tail -1)"
#
# - Debian's python (/usr/bin/python3) must have PyYAML and jsonschema; when
#   either is missing they are installed from PyPI with pip
#   (--break-system-packages, as Debian's python is "externally managed").
# - openssl and curl must be on PATH (the double makes the cluster's PKI with
#   openssl; the self-check uses curl).
# - The Docker engine must answer (ensure-docker.sh starts it if not).
# - The node image comind-test/k3s-node:r1 must be present and up to date
#   (build-test-images.sh builds it; it returns at once when nothing changed).
# The control-plane binaries are not checked here: the double reads them from
# KUBEBUILDER_ASSETS (see ensure-kube.sh).
#
# Idempotent and safe to run concurrently (pip runs under flock). Fails loudly.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DOUBLE="$HERE/k3d"
PY=/usr/bin/python3
LOG_DIR="${COMIND_TEST_LOG_DIR:-/tmp}"
IMAGE=comind-test/k3s-node:r1

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'ERROR: ensure-k3d-double: %s\n' "$*" >&2
    exit 1
}

[ -x "$DOUBLE" ] || die "$DOUBLE is missing or not executable"
[ -x "$PY" ] || die "$PY not found: apt-get install -y python3"

# ---- python modules ------------------------------------------------------------
have_modules() { "$PY" -c 'import yaml, jsonschema' >/dev/null 2>&1; }
if ! have_modules; then
    mkdir -p "$LOG_DIR"
    exec 8>"$LOG_DIR/comind-k3d-double-pip.lock"
    flock -w 600 8 || die "timed out waiting for $LOG_DIR/comind-k3d-double-pip.lock"
    if ! have_modules; then
        if ! "$PY" -m pip --version >/dev/null 2>&1; then
            if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
                say "installing python3-pip (apt)"
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >&2 ||
                    die "apt-get install python3-pip failed"
            else
                die "$PY has no pip: apt-get install -y python3-pip (as root)"
            fi
        fi
        say "pip install PyYAML jsonschema for $PY"
        pip_args=(install -q --disable-pip-version-check 'PyYAML>=5' 'jsonschema>=4,<5')
        if "$PY" -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)' &&
            [ -n "$(ls /usr/lib/python3*/EXTERNALLY-MANAGED 2>/dev/null)" ]; then
            pip_args+=(--break-system-packages)
        fi
        PIP_ROOT_USER_ACTION=ignore "$PY" -m pip "${pip_args[@]}" >&2 ||
            die "pip install PyYAML jsonschema failed (PyPI reachable?)"
        have_modules || die "PyYAML/jsonschema still not importable by $PY after pip install"
    fi
    exec 8>&-
fi

# ---- host tools -------------------------------------------------------------------
for tool in openssl curl docker; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not on PATH (apt-get install -y $tool)"
done

# ---- docker + node image ------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    say "docker engine not reachable, running ensure-docker.sh"
    "$HERE/ensure-docker.sh" >&2 || die "docker engine not available (see ensure-docker.sh above)"
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1 || ! "$HERE/build-test-images.sh" --check >/dev/null 2>&1; then
    say "$IMAGE missing or the test images are outdated: running build-test-images.sh (needs root; about 2-3 min)"
    "$HERE/build-test-images.sh" >&2 || die "build-test-images.sh failed; run it by hand to see why"
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE still missing after build-test-images.sh"

"$DOUBLE" __check || die "$DOUBLE does not run (see above)"
say "k3d double ready: $DOUBLE"
printf '%s\n' "$DOUBLE"
