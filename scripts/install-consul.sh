#!/usr/bin/env bash
# Install a Consul binary for the integration tests.
#
# Usage: scripts/install-consul.sh [DEST_DIR]
#   DEST_DIR defaults to <repo>/.cache/consul; the binary ends up at
#   DEST_DIR/consul.
#
# WHY this roundabout route: Consul is not packaged in Debian bookworm, and
# HashiCorp's own downloads are not reachable from our build machines (only
# the Debian package mirrors, PyPI and npm are). Debian bullseye still ships
# a `consul` package (1.8.7), and its binary is statically linked Go, so it
# runs fine on bookworm. We fetch that single .deb from the *same* mirror the
# machine already uses (read from its apt sources, so no host name is written
# here), using a private, throwaway apt state so the system's package lists
# and sources are never touched, then unpack just the binary.
#
# Idempotent: does nothing if DEST_DIR/consul already works, or if a working
# `consul` is already on PATH.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${1:-$REPO_ROOT/.cache/consul}"

log() { printf 'install-consul: %s\n' "$*" >&2; }

# --- fast paths -------------------------------------------------------------
if [[ -x "$DEST_DIR/consul" ]] && "$DEST_DIR/consul" version >/dev/null 2>&1; then
    log "already present: $("$DEST_DIR/consul" version | head -n1) at $DEST_DIR/consul"
    exit 0
fi
if command -v consul >/dev/null 2>&1 && consul version >/dev/null 2>&1; then
    log "using consul on PATH: $(consul version | head -n1) at $(command -v consul)"
    exit 0
fi

for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || { log "error: $tool not found (Debian/Ubuntu host required)"; exit 1; }
done

TMP="$(mktemp -d)"
# Always remove the private apt state and the unpacked package, even on error.
trap 'rm -rf "$TMP"' EXIT
# mktemp creates a 0700 directory; apt drops privileges to the _apt user while
# downloading, so it must be able to traverse TMP and write into the target
# directories. Otherwise apt falls back to downloading as root with a warning.
chmod 755 "$TMP"
mkdir -p "$TMP/sp" "$TMP/lists/partial" "$TMP/cache/archives/partial" "$TMP/dl"
if id _apt >/dev/null 2>&1; then
    chown -R _apt "$TMP/lists" "$TMP/cache" "$TMP/dl" 2>/dev/null || true
fi

# --- derive a bullseye source from the machine's bookworm source -----------
DEB822=/etc/apt/sources.list.d/debian.sources
ONELINE=/etc/apt/sources.list
if [[ -f "$DEB822" ]]; then
    # deb822: stanzas are separated by blank lines. Pick the first enabled
    # stanza whose Suites: line names plain "bookworm" (that excludes the
    # security archive, whose only suite is bookworm-security), and re-emit it
    # with Suites: bullseye and Types: deb (no need for source indexes). Every
    # other field (URIs, Components, Signed-By, comments) is kept verbatim;
    # Signed-By matters because the bullseye signing keys ship in bookworm's
    # debian-archive-keyring, so the bullseye index is still authenticated.
    awk '
        function flush() {
            if (!done && want && !disabled) { printf "%s", buf; done = 1 }
            buf = ""; want = 0; disabled = 0
        }
        /^[[:space:]]*$/ { flush(); next }
        {
            line = $0
            key = tolower($0)
            if (key ~ /^suites:/) {
                n = split(substr($0, index($0, ":") + 1), s, /[[:space:]]+/)
                for (i = 1; i <= n; i++) if (s[i] == "bookworm") want = 1
                line = "Suites: bullseye"
            } else if (key ~ /^types:/) {
                line = "Types: deb"
            } else if (key ~ /^enabled:[[:space:]]*no/) {
                disabled = 1
            }
            buf = buf line "\n"
        }
        END { flush() }
    ' "$DEB822" >"$TMP/sp/bullseye.sources"
elif [[ -f "$ONELINE" ]]; then
    # One-line format: "deb [options] URI SUITE COMPONENT...". Take the first
    # "deb" line for plain bookworm and keep its [options] (e.g. signed-by=).
    awk '
        /^deb[[:space:]]/ {
            i = 2; opts = ""
            if ($2 ~ /^\[/) {
                while (i <= NF) { opts = opts (opts == "" ? "" : " ") $i; if ($i ~ /\]$/) { i++; break } i++ }
            }
            uri = $i; suite = $(i + 1)
            if (suite == "bookworm") {
                printf "deb %s%s bullseye main\n", (opts == "" ? "" : opts " "), uri
                exit
            }
        }
    ' "$ONELINE" >"$TMP/sp/bullseye.list"
fi

if ! [[ -s "$TMP/sp/bullseye.sources" || -s "$TMP/sp/bullseye.list" ]]; then
    log "error: no Debian bookworm source found in $DEB822 or $ONELINE"
    exit 1
fi

# Private apt state: no system sources, our own lists and cache. Everything
# else (proxies, keyrings, architecture) still comes from the system config.
APT_OPTS=(
    -o Dir::Etc::sourcelist=/dev/null
    -o "Dir::Etc::sourceparts=$TMP/sp"
    -o "Dir::State::Lists=$TMP/lists"
    -o "Dir::Cache=$TMP/cache"
)

log "fetching bullseye package index (private apt state in $TMP)"
if ! apt-get -q "${APT_OPTS[@]}" update >"$TMP/update.log" 2>&1 \
    || grep -qE '^(W|E): .*(NO_PUBKEY|not signed|signature|Release file)' "$TMP/update.log"; then
    # Refuse unauthenticated packages rather than silently trusting them.
    cat "$TMP/update.log" >&2
    log "error: apt update for bullseye failed (see above)"
    exit 1
fi

log "downloading consul .deb"
(cd "$TMP/dl" && apt-get -q "${APT_OPTS[@]}" download consul) >"$TMP/download.log" 2>&1 || {
    cat "$TMP/download.log" >&2
    log "error: could not download the consul package"
    exit 1
}

debs=("$TMP"/dl/consul_*.deb)
dpkg-deb -x "${debs[0]}" "$TMP/x"
mkdir -p "$DEST_DIR"
# Copy to a temporary name then rename, so an interrupted run never leaves a
# half-written binary that the fast path above would trust.
install -m 0755 "$TMP/x/usr/bin/consul" "$DEST_DIR/consul.tmp"
mv -f "$DEST_DIR/consul.tmp" "$DEST_DIR/consul"

log "installed $("$DEST_DIR/consul" version | head -n1) at $DEST_DIR/consul"
