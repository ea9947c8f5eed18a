#!/bin/sh
# Stand-in for the docker-library redis entrypoint (redis:7-alpine), running
# Debian bookworm's redis-server 7.0.
set -eu

# first arg is `-f` or `--some-option`, or first arg is `something.conf`
if [ "${1#-}" != "${1:-}" ] || [ "${1%.conf}" != "${1:-}" ]; then
    set -- redis-server "$@"
fi

# allow the container to be started with `--user`
if [ "${1:-}" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
    find . \! -user redis -exec chown redis '{}' +
    export HOME=/data
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# The official image's redis-server is built with protected-mode off by default
# (a container is reached through a bridge, never from loopback); Debian's is
# built with it on. Mimic the official default unless it is set explicitly.
if [ "${1:-}" = 'redis-server' ]; then
    explicit=""
    case " $* " in *' --protected-mode '*) explicit=1 ;; esac
    if [ $# -ge 2 ] && [ "${2#-}" = "$2" ] && [ -r "$2" ] &&
        grep -qiE '^[[:space:]]*protected-mode[[:space:]]' "$2"; then
        explicit=1
    fi
    if [ -z "$explicit" ]; then
        set -- "$@" --protected-mode no
    fi
fi

# set an appropriate umask (if one isn't set already)
um="$(umask)"
if [ "$um" = '0022' ]; then
    umask 0077
fi

exec "$@"
