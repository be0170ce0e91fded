#!/bin/sh
# Entrypoint of the lbsync sidecar image.
#
# `run` (the default) first tries one cycle, so that HAProxy, starting beside it, finds a
# rendered and validated configuration in the shared directory; then it runs the daemon, which
# retries whatever the first cycle could not finish (HAProxy not up yet: `pending`).
# Any other command (`check`, `render`, `split ...`) runs as given.
set -eu

config="${LBSYNC_CONFIG:-/etc/lbsync/lbsync.toml}"
if [ "$#" -eq 0 ]; then
    set -- run
fi
if [ "$1" = "run" ]; then
    lbsync -c "$config" once || echo "lbsync: first cycle incomplete; the daemon retries it" >&2
fi
exec lbsync -c "$config" "$@"
