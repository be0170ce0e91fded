#!/usr/bin/env bash
# Install the Debian packages lbsync needs on a development or CI machine.
#
# Usage: scripts/install-system.sh [--with-test-servers]
#
#   always:               haproxy, ca-certificates, and python3-venv when the
#                         python3 on PATH cannot create virtualenvs
#   --with-test-servers:  also nginx, etcd-server, openssl (real backends and
#                         TLS material for the integration tests), chromium
#                         (the dashboard test drives it headless; no browser
#                         can be downloaded here), libatomic1 (Playwright's
#                         bundled node driver links it; a fresh Debian 12 does
#                         not have it), podman with runc and debootstrap (the
#                         container tests make a base image, build lbsync's
#                         image and run it beside an HAProxy container), wrk
#                         (their load generator), prometheus (the rollout
#                         analysis tests scrape a real HAProxy's exporter
#                         with it) and Consul (via
#                         scripts/install-consul.sh, since bookworm does not
#                         package it)
#
# WHY it is written this way:
# - Machines are not guaranteed to keep anything installed by hand, so the
#   project must be able to provision itself; but most runs happen on a
#   machine that already has everything, so when nothing is missing we do not
#   touch apt at all (no `apt-get update`), keeping repeated runs fast.
# - The tests start their own haproxy/nginx/etcd on loopback ports. Debian's
#   packages would otherwise start system daemons on install (nginx grabs
#   port 80), so during the install we deny service starts via policy-rc.d.
#   Daemons that were already running are left alone: we only stop what we
#   start, and we start nothing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'install-system: %s\n' "$*" >&2; }

WITH_TEST_SERVERS=0
for arg in "$@"; do
    case "$arg" in
        --with-test-servers) WITH_TEST_SERVERS=1 ;;
        -h | --help)
            sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            log "unknown argument: $arg"
            exit 2
            ;;
    esac
done

wanted=(haproxy ca-certificates)
if [[ $WITH_TEST_SERVERS == 1 ]]; then
    wanted+=(nginx etcd-server openssl chromium libatomic1 podman runc debootstrap wrk prometheus)
fi
# `python3 -m venv --help` alone is not enough: Debian's python3 ships the
# venv module but not ensurepip (that lives in python3-venv), so creating a
# venv with pip fails later with a confusing message. Check both. A python3
# from pyenv or similar passes both and needs nothing from apt.
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    wanted+=(python3-venv)
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for pkg in "${wanted[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    log "all packages present (${wanted[*]})"
else
    # Use sudo only when not already root (CI runs as root).
    SUDO=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { log "error: need root (or sudo) to install: ${missing[*]}"; exit 1; }
        SUDO=(sudo)
    fi

    # policy-rc.d exit code 101 means "action forbidden": invoke-rc.d and
    # deb-systemd-invoke then skip starting the freshly installed services.
    # Only create it if absent (some images, e.g. containers, already ship
    # one), and only remove the one we created.
    POLICY=/usr/sbin/policy-rc.d
    created_policy=0
    cleanup() {
        if [[ $created_policy == 1 ]]; then
            "${SUDO[@]}" rm -f "$POLICY"
        fi
    }
    trap cleanup EXIT
    if [[ ! -e $POLICY ]]; then
        printf '#!/bin/sh\n# Temporary: keep package installs from starting services.\nexit 101\n' \
            | "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod 0755 "$POLICY"
        created_policy=1
    fi

    # Refresh the package lists once: stale or absent lists are the usual
    # reason an install fails with 404s or "Unable to locate package".
    # DEBIAN_FRONTEND is passed via env because sudo would drop an export.
    # The lock timeout waits out e.g. unattended-upgrades on a fresh VM
    # instead of failing at once.
    APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    log "installing: ${missing[*]}"
    "${APT[@]}" update -qq
    # confdef/confold: never stop to ask about modified config files.
    "${APT[@]}" install -y -qq \
        --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
    log "installed: ${missing[*]}"
fi

if [[ $WITH_TEST_SERVERS == 1 ]]; then
    bash "$REPO_ROOT/scripts/install-consul.sh"
fi
