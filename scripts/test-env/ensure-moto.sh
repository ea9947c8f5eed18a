#!/usr/bin/env bash
# Make sure `moto_server` (moto[server] 5.2.x) is installed for python3.
#
# Idempotent; installs with pip only when moto_server is missing from PATH or
# `import moto.server` fails / has the wrong version. Starts no server: tests
# start their own on a free port.
set -euo pipefail

SPEC='moto[server]>=5.2,<5.3'

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is not installed (apt-get install python3 python3-pip)"

# Prints the moto version when `import moto.server` works and it is 5.2.x.
moto_version_ok() {
    python3 - <<'PY' 2>/dev/null
import sys
import moto, moto.server  # noqa: F401
v = moto.__version__
parts = v.split(".")
ok = len(parts) >= 2 and parts[0] == "5" and parts[1] == "2"
print(v)
sys.exit(0 if ok else 1)
PY
}

check() {
    hash -r
    command -v moto_server >/dev/null 2>&1 && moto_version_ok >/dev/null
}

if check; then
    say "moto_server present (moto $(moto_version_ok), $(command -v moto_server))"
    exit 0
fi

say "installing $SPEC with pip"
if ! python3 -m pip --version >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        say "pip missing: installing python3-pip from Debian"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null ||
            die "could not install python3-pip"
    else
        die "python3 has no pip; install python3-pip (as root: apt-get install python3-pip)"
    fi
fi

pip_args=(install --disable-pip-version-check --quiet "$SPEC")
# Debian's system python refuses pip installs (PEP 668) unless told otherwise.
# On a throwaway CI/test machine installing into /usr/local is what we want.
stdlib="$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
if [ -f "$stdlib/EXTERNALLY-MANAGED" ]; then
    pip_args+=(--break-system-packages)
fi
python3 -m pip "${pip_args[@]}" ||
    die "pip install '$SPEC' failed (PyPI reachable? try: python3 -m pip install '$SPEC')"

# pyenv needs its shims regenerated for the new console script.
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash >/dev/null 2>&1 || true
fi

if ! check; then
    hash -r
    if ! command -v moto_server >/dev/null 2>&1; then
        die "moto installed but moto_server is not on PATH (PATH=$PATH).
       pip put scripts in: $(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'); add it to PATH."
    fi
    die "moto installed but 'python3 -c \"import moto.server\"' fails or is not 5.2.x:
$(python3 -c 'import moto.server' 2>&1 | tail -n 5)"
fi
say "moto_server ready (moto $(moto_version_ok), $(command -v moto_server))"
