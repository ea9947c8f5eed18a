#!/bin/sh
# Placeholder node for the k3d test double (scripts/test-env/k3d): stands in for
# rancher/k3s (server/agent nodes) and ghcr.io/k3d-io/k3d-proxy (the serverlb).
# It runs no k3s and no proxy: it idles, so the container exists, runs, has the
# labels, networks, published ports and files k3d would give it, and stops at
# once on SIGTERM (tini is PID 1 and forwards the signal to `sleep`).
#
#   IMAGE                      idle (the image's CMD is `sleep infinity`)
#   IMAGE server|agent [ARGS]  idle; the k3s arguments k3d passes are ignored
#   IMAGE CMD [ARGS]           exec CMD (e.g. `docker run IMAGE sh`)
set -eu

case "${1:-}" in
"" | server | agent | -*) exec sleep infinity ;;
esac

exec "$@"
