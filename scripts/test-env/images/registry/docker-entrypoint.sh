#!/bin/sh
# Stand-in for the official registry:2 entrypoint, running Debian's
# docker-registry (distribution 2.8) as `registry`.
set -e

case "${1:-}" in
*.yaml | *.yml) set -- registry serve "$@" ;;
serve | garbage-collect | help | -*) set -- registry "$@" ;;
esac

exec "$@"
