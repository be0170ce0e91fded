#!/usr/bin/env bash
# Check that the README's two commands work on a fresh Debian 12 machine.
#
# Usage: scripts/fresh-debian.sh [--logs DIR] [--repo PATH] [--commit REV]
#                                [--rootfs DIR] [--image NAME] [PYTEST_ARGS...]
#   --logs DIR     where demo.log and test.log go (default: a new temporary directory)
#   --repo PATH    the repository to check (default: the one this script is in)
#   --commit REV   the commit to check (default: HEAD); only committed files are seen
#   --rootfs DIR   the Debian 12 root filesystem the image is made from; debootstrapped
#                  there if absent (default: /var/tmp/lbsync-fresh-debian/bookworm)
#   --image NAME   the podman image (default: localhost/debian-fresh:12); built from the
#                  rootfs if missing, `podman rmi NAME` to build it again
#   PYTEST_ARGS    passed through to scripts/test.sh, e.g. `-k dashboard -x`
#
# In a new container it clones the commit, then runs, as root, what the README promises:
# `LBSYNC_DEMO_SECONDS=20 ./scripts/demo.sh` and then `./scripts/test.sh`. It prints both exit
# statuses and how long each took, keeps the full logs, and exits 1 if either failed.
#
# WHY: the README says both commands work on a fresh Debian 12 machine with only python3 and
# apt, and every development machine has long stopped being fresh: a missing package shows up
# only there. The image is a debootstrap minbase with python3, python3-venv, python3-pip, git
# and ca-certificates, and the apt sources of a stock Debian 12 image (deb822
# debian.sources: bookworm, bookworm-updates, bookworm-security), taken from this machine's
# own apt sources, so no mirror host name is written here. No image registry is needed.
# The repository is mounted read-only and cloned inside, so the container sees a fresh
# clone, not this work tree. The container uses the host network (apt's mirror and PyPI are
# reached the way this machine reaches them), so the demo's fixed ports 8080, 9180 and
# 9101-9103 must be free here: checked before anything starts. A network that inspects TLS
# needs its CA trusted: this machine's local CA certificates (/usr/local/share/ca-certificates)
# are added to the container's trust store and pip is pointed at that store (the pip a venv
# upgrades to trusts only its own bundle); the image itself stays stock.
#
# Needs root, podman, runc and catatonit (for `podman run --init`; Debian packages), and
# debootstrap only if the rootfs is missing. podman as root here needs /etc/containers/containers.conf with, under
# [containers], default_ulimits = ["nofile=1024:20000","nproc=4096:4096"] (the hard nofile
# limit no higher than the host's), and under [engine], runtime = "runc" and
# cgroup_manager = "cgroupfs".
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'fresh-debian: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

LOGS=""
REPO="$REPO_ROOT"
COMMIT=HEAD
ROOTFS=/var/tmp/lbsync-fresh-debian/bookworm
IMAGE=localhost/debian-fresh:12
PYTEST_ARGS=()
while (($#)); do
    case "$1" in
        --logs | --repo | --commit | --rootfs | --image)
            (($# >= 2)) || die "$1 needs a value"
            case "$1" in
                --logs) LOGS="$2" ;;
                --repo) REPO="$2" ;;
                --commit) COMMIT="$2" ;;
                --rootfs) ROOTFS="$2" ;;
                --image) IMAGE="$2" ;;
            esac
            shift 2
            ;;
        -h | --help)
            sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        --) shift; PYTEST_ARGS+=("$@"); break ;;
        *) PYTEST_ARGS+=("$1"); shift ;;
    esac
done

[[ $EUID -eq 0 ]] || die "run as root (podman as root, debootstrap)"
command -v podman >/dev/null 2>&1 || die "podman not found (apt-get install podman runc)"

# The whole object store, so that a linked work tree (whose .git is a file pointing
# elsewhere) clones too. The commit is resolved here, where the repository is.
SOURCE_GIT="$(realpath -- "$(git -C "$REPO" rev-parse --git-common-dir)")"
SHA="$(git -C "$REPO" rev-parse --verify "$COMMIT^{commit}")"

if [[ -z $LOGS ]]; then
    LOGS="$(mktemp -d /tmp/fresh-debian.XXXXXX)"
fi
mkdir -p "$LOGS"
LOGS="$(realpath -- "$LOGS")"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 9180 9101 9102 9103; do
    if port_busy "$port"; then
        die "port $port on 127.0.0.1 is in use; the demo in the container needs it (host network)"
    fi
done

# shellcheck source=lib/apt-sources.sh
source "$REPO_ROOT/scripts/lib/apt-sources.sh"

build_image() {
    local main security
    main="$(host_apt_uri main)"
    security="$(host_apt_uri security)"
    [[ -n $main ]] || die "no Debian archive found in this machine's apt sources"
    [[ -n $security ]] || die "no Debian security archive found in this machine's apt sources"

    if [[ -e $ROOTFS/usr/bin/python3 ]]; then
        log "using the existing rootfs $ROOTFS"
    else
        command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install debootstrap)"
        log "debootstrap bookworm into $ROOTFS from $main"
        mkdir -p "$ROOTFS"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,git,ca-certificates \
            bookworm "$ROOTFS" "$main"
    fi

    write_debian_sources "$ROOTFS" "$main" "$security"

    log "importing $ROOTFS as $IMAGE"
    tar -C "$ROOTFS" -c . | podman import -q - "$IMAGE" >/dev/null
}

start=$SECONDS
if podman image exists "$IMAGE"; then
    log "image $IMAGE present"
else
    build_image
    log "image $IMAGE built in $((SECONDS - start))s"
fi

CONTAINER="lbsync-fresh-debian-$$"
# The container's own podman storage, on this machine's disk as a machine's would be (podman's
# overlay storage cannot sit on the container's overlay root), empty: nothing is built yet.
STORAGE="$(mktemp -d /var/tmp/lbsync-fresh-storage.XXXXXX)"
cleanup() {
    podman rm -f -t 0 "$CONTAINER" >/dev/null 2>&1 || true
    rm -rf "$STORAGE"
}
trap cleanup EXIT

# --init reaps the daemons the demo and the tests leave behind, as a machine's init would;
# /dev/shm as large as a machine's, not podman's 64 MB (Chromium uses it); privileged, so that
# root may do what root on a machine can: mount (the fault suite fills a small tmpfs and makes a
# directory read-only with a bind mount) and run containers (the container tests run podman).
RUN=(podman run -d --name "$CONTAINER" --init --network host --shm-size 1g --privileged
    -v "$STORAGE:/var/lib/containers" -v "$SOURCE_GIT:/src:ro")
LOCAL_CA=/usr/local/share/ca-certificates
EXEC_ENV=()
if [[ -n "$(find "$LOCAL_CA" -name '*.crt' 2>/dev/null | head -n1)" ]]; then
    RUN+=(-v "$LOCAL_CA:$LOCAL_CA:ro")
    EXEC_ENV=(-e PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
"${RUN[@]}" "$IMAGE" sleep infinity >/dev/null
if ((${#EXEC_ENV[@]})); then
    log "trusting this machine's local CA certificates from $LOCAL_CA in the container"
    podman exec "$CONTAINER" update-ca-certificates >/dev/null
fi
WORK=/root/lbsync
# The repository may belong to another user than root: trust it for this clone only.
podman exec -e GIT_CONFIG_GLOBAL=/tmp/clone.gitconfig "$CONTAINER" sh -c \
    'git config --global safe.directory "*" && git clone -q /src "$1" && rm "$GIT_CONFIG_GLOBAL"' \
    sh "$WORK"
podman exec -w "$WORK" "$CONTAINER" git checkout -q --detach "$SHA"
log "container $CONTAINER: $SHA cloned into $WORK; logs in $LOGS"

# Runs a command in the container's clone, shows its output and saves it to LOGS/NAME.log;
# records NAME's exit status and duration.
declare -A STATUS TOOK
step() {
    local name=$1 started=$SECONDS
    shift
    log "==> $name: $*"
    set +e
    podman exec "${EXEC_ENV[@]}" -w "$WORK" "$CONTAINER" "$@" 2>&1 | tee "$LOGS/$name.log"
    STATUS[$name]=${PIPESTATUS[0]}
    set -e
    TOOK[$name]=$((SECONDS - started))
}

step demo env LBSYNC_DEMO_SECONDS=20 ./scripts/demo.sh
step test ./scripts/test.sh "${PYTEST_ARGS[@]}"

printf '\n'
rc=0
for name in demo test; do
    log "$name: exit ${STATUS[$name]} after ${TOOK[$name]}s (log: $LOGS/$name.log)"
    ((STATUS[$name] == 0)) || rc=1
done
exit "$rc"
