#!/bin/sh
# Stand-in for alpine/git (ENTRYPOINT ["git"]), running Debian bookworm's git: the
# arguments are git's. The image also has /bin/sh, as alpine/git does, so a
# container may override the entrypoint with a shell.
set -eu
exec git "$@"
