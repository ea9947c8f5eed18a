#!/bin/sh
# Stand-in for softwaremill/elasticmq-native: an SQS API on port 9324 served by
# moto (`moto_server`, only SQS matters). Runs under tini (as the official
# image does), so SIGTERM stops it at once.
#
# Arguments are ignored (the official image takes JVM-style -Dkey=value
# options); /opt/elasticmq.conf is NOT read: queues must be created through the
# API. The UI/stats port 9325 is not served.
# MOTO_ACCOUNT_ID defaults to 000000000000 (the image sets it), so queue URLs
# look like ElasticMQ's: http://<Host header of the request>/000000000000/<queue>.
set -eu

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ] && command -v "$1" >/dev/null 2>&1; then
    exec "$@" # e.g. `docker run IMAGE sh`
fi

if [ -f /opt/elasticmq.conf ]; then
    echo "[elasticmq-standin] note: /opt/elasticmq.conf is ignored by this stand-in (moto)" >&2
fi

exec moto_server -H 0.0.0.0 -p "${SQS_PORT:-9324}"
