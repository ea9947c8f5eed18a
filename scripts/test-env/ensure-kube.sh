#!/usr/bin/env bash
# The Kubernetes test peer: kube-apiserver, kube-controller-manager and etcd, unpacked
# once from ../shared/test-peers into a cache directory outside the checkout and
# checked against its SHA256SUMS.
#
# Prints the directory holding the binaries (envtest's KUBEBUILDER_ASSETS layout) as
# its only line on stdout; everything else goes to stderr. ./scripts/test exports it:
#
#   export KUBEBUILDER_ASSETS="$(scripts/test-env/ensure-kube.sh)"
#
# Where KUBEBUILDER_ASSETS is already set (for example by `setup-envtest use 1.36 -p
# path`), that directory is used as it is, once it holds the three binaries.
#
# Environment:
#   COMIND_TEST_PEERS  the test-peers folder (default: ../shared/test-peers beside the
#                      checkout)
#   XDG_CACHE_HOME     the cache root (default: ~/.cache); binaries go to
#                      $XDG_CACHE_HOME/comind/test-peers/<first 12 hex of SHA256SUMS>
#
# Fails, never skips, when the peer cannot be provided.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binaries=(kube-apiserver kube-controller-manager etcd)

fail() {
    echo "ensure-kube: $*" >&2
    exit 1
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    for bin in "${binaries[@]}"; do
        [[ -x "$KUBEBUILDER_ASSETS/$bin" ]] ||
            fail "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $bin; unset it to use ../shared/test-peers"
    done
    echo "ensure-kube: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
    echo "$KUBEBUILDER_ASSETS"
    exit 0
fi

peers="${COMIND_TEST_PEERS:-$root/../shared/test-peers}"
[[ -f "$peers/SHA256SUMS" ]] ||
    fail "no test peers at $peers (expected SHA256SUMS and bin/*.xz); set COMIND_TEST_PEERS or KUBEBUILDER_ASSETS"
command -v xz >/dev/null || fail "xz is needed to unpack the peers: apt-get install -y xz-utils"

sums="$(sha256sum "$peers/SHA256SUMS" | cut -c1-12)"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/comind/test-peers/$sums"
mkdir -p "$dir"

expected() {
    awk -v name="$1" '$2 == name { print $1 }' "$peers/SHA256SUMS"
}

for bin in "${binaries[@]}"; do
    want="$(expected "$bin")"
    [[ -n "$want" ]] || fail "$peers/SHA256SUMS lists no $bin"
    if [[ -x "$dir/$bin" ]] && [[ "$(sha256sum "$dir/$bin" | cut -d' ' -f1)" == "$want" ]]; then
        continue
    fi
    [[ -f "$peers/bin/$bin.xz" ]] || fail "missing $peers/bin/$bin.xz"
    echo "ensure-kube: unpacking $bin" >&2
    xz -dc "$peers/bin/$bin.xz" >"$dir/$bin.partial"
    got="$(sha256sum "$dir/$bin.partial" | cut -d' ' -f1)"
    if [[ "$got" != "$want" ]]; then
        rm -f "$dir/$bin.partial"
        fail "$bin does not match SHA256SUMS (got $got, want $want)"
    fi
    chmod +x "$dir/$bin.partial"
    mv "$dir/$bin.partial" "$dir/$bin"
done

echo "ensure-kube: kube-apiserver, kube-controller-manager and etcd in $dir" >&2
echo "$dir"
