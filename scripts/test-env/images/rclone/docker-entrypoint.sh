#!/bin/sh
# Stand-in for rclone/rclone (Debian bookworm's rclone): the official image's
# entrypoint is rclone itself. The backup Jobs set their own command (/bin/sh and a
# script), as they do with the official image.
exec rclone "$@"
