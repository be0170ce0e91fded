#!/bin/sh
# Entrypoint of the lbsync sidecar image.
#
# `run` (the default) first tries one cycle, so that HAProxy, starting beside it, finds a
# rendered and validated configuration in the shared directory; then it runs the daemon, which
# retries whatever the first cycle could not finish (HAProxy not up yet: `pending`). A
# configuration error (exit status 2, e.g. an API beyond loopback without a token) stops the
# container at once: the daemon would refuse the same file.
# Options after `run` (`run --log-level info`) apply to both. Any other command (`check`,
# `render`, `split ...`) runs as given.
set -eu

config="${LBSYNC_CONFIG:-/etc/lbsync/lbsync.toml}"
if [ "$#" -eq 0 ]; then
    set -- run
fi
if [ "$1" = "run" ]; then
    shift
    status=0
    lbsync -c "$config" once "$@" || status=$?
    if [ "$status" -eq 2 ]; then
        exit 2
    elif [ "$status" -ne 0 ]; then
        echo "lbsync: first cycle incomplete; the daemon retries it" >&2
    fi
    set -- run "$@"
fi
exec lbsync -c "$config" "$@"
