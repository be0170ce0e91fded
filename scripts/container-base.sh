#!/usr/bin/env bash
# Make the local base image that the container tests build lbsync's image on.
#
# Usage: scripts/container-base.sh [--image NAME] [--rootfs DIR]
#   --image NAME   the podman image to make (default: localhost/lbsync-base:bookworm);
#                  nothing is done when it exists (`podman rmi NAME` to make it again)
#   --rootfs DIR   where the Debian 12 root filesystem is debootstrapped (default: a
#                  temporary directory, removed afterwards)
#
# The image is a debootstrap minbase of Debian 12 with python3, python3-venv and
# ca-certificates, slimmed as debian:bookworm-slim is, and the apt sources of a stock Debian 12 image taken from this machine's
# own (so `apt-get install` works in a build, and no mirror host name is written here). It
# stands in for `python:3.11-slim-bookworm`, the Dockerfile's default BASE, where no image
# registry can be reached: `podman build --build-arg BASE=localhost/lbsync-base:bookworm .`
#
# Needs root, podman and debootstrap (Debian packages). Prints the image name on stdout.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/apt-sources.sh
source "$REPO_ROOT/scripts/lib/apt-sources.sh"

log() { printf 'container-base: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

IMAGE=localhost/lbsync-base:bookworm
ROOTFS=""
while (($#)); do
    case "$1" in
        --image) IMAGE="${2:?--image needs a value}"; shift 2 ;;
        --rootfs) ROOTFS="${2:?--rootfs needs a value}"; shift 2 ;;
        -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

[[ $EUID -eq 0 ]] || die "run as root (debootstrap, podman as root)"
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install $tool)"
done

if podman image exists "$IMAGE"; then
    log "image $IMAGE present"
    printf '%s\n' "$IMAGE"
    exit 0
fi

main="$(host_apt_uri main)"
security="$(host_apt_uri security)"
[[ -n $main ]] || die "no Debian archive found in this machine's apt sources"
[[ -n $security ]] || die "no Debian security archive found in this machine's apt sources"

started=$SECONDS
if [[ -z $ROOTFS ]]; then
    # On the same file system as podman's storage, not a small /tmp.
    ROOTFS="$(mktemp -d /var/tmp/lbsync-base.XXXXXX)"
    trap 'rm -rf "$ROOTFS"' EXIT
fi
log "debootstrap bookworm into $ROOTFS from $main"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$main" >&2
write_debian_sources "$ROOTFS" "$main" "$security"
# Slim, as debian:bookworm-slim (python:3.11-slim's base) is: no manuals, documentation or
# translations, now or from later installs (copyright files stay); no package lists or archives.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/slim" <<'EXCLUDES'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EXCLUDES
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/var/cache/apt/archives/*.deb
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +

log "importing $ROOTFS as $IMAGE"
tar -C "$ROOTFS" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
log "image $IMAGE made in $((SECONDS - started))s"
printf '%s\n' "$IMAGE"
