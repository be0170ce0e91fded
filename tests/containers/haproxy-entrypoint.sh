#!/bin/sh
# As the official image's: options alone, or `haproxy ...`, run HAProxy master-worker (-W) in
# the foreground (-db), so that USR2 to PID 1 reloads it; any other command runs as given.
set -e
case "$1" in
    -*) set -- haproxy "$@" ;;
esac
if [ "$1" = "haproxy" ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
