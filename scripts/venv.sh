#!/usr/bin/env bash
# Create or update the project's virtualenv and install lbsync into it
# in editable mode.
#
# Usage: scripts/venv.sh [EXTRA]
#   EXTRA   optional extras group from pyproject.toml, e.g. "test"
#           (installs ".[EXTRA]"; without it just ".")
#
# Environment:
#   LBSYNC_VENV  venv location (default: <repo>/.venv)
#
# WHY: one place that knows how to build the environment, shared by
# developers and CI. `pip install` costs seconds even when nothing changed, so
# a stamp file inside the venv records what was installed (a hash of
# pyproject.toml plus the extra); when it matches, pip is skipped and reruns
# are near-instant. Editing pyproject.toml or asking for another extra
# invalidates the stamp. Source edits need no reinstall (editable install).
#
# Prints the venv path as the last line of output.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRA="${1:-}"
VENV="${LBSYNC_VENV:-$REPO_ROOT/.venv}"
# Resolve a relative override against the caller's directory, so the printed
# path is absolute and usable from anywhere.
VENV="$(realpath -m -- "$VENV")"
STAMP="$VENV/.lbsync-install-stamp"

log() { printf 'venv: %s\n' "$*" >&2; }

if [[ ! -f "$REPO_ROOT/pyproject.toml" ]]; then
    log "error: $REPO_ROOT/pyproject.toml not found"
    exit 1
fi

# A venv whose interpreter no longer runs (e.g. the base python was upgraded
# or removed) cannot be repaired in place; rebuild it from scratch.
if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "existing venv at $VENV is broken; recreating"
    rm -rf "$VENV"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
    # The pip bundled with the base python may predate editable installs of
    # pyproject-only projects (PEP 660); bring it up to date once.
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

# What we are about to install, as one comparable string.
want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1) extra=$EXTRA"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "up to date (pyproject.toml unchanged${EXTRA:+, extra $EXTRA})"
else
    target="."
    [[ -n "$EXTRA" ]] && target=".[$EXTRA]"
    log "installing -e $target"
    # Remove the stamp first so a failed install is retried next time.
    rm -f "$STAMP"
    (cd "$REPO_ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$target")
    printf '%s\n' "$want" >"$STAMP"
fi

echo "$VENV"
