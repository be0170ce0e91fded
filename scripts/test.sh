#!/usr/bin/env bash
# Run the full lbsync check suite: the same thing locally and in CI.
#
# Usage: scripts/test.sh [pytest args...]
#   e.g. scripts/test.sh -k consul -x
#
# Steps, stopping at the first failure:
#   1. system packages and test servers (haproxy, nginx, etcd, Consul, Chromium)
#   2. the virtualenv with the "test" extra
#   3. ruff check (and its keyword-only-arguments rule), ruff format --check, mypy,
#      lint-imports, pytest
#
# WHY: a fresh machine has none of the tools installed, so the test command
# provisions everything itself (each step is a fast no-op when already done).
# Linters run before the tests because they are quick and catch most
# mistakes. pytest's "no tests collected" (exit 5) is treated as a failure:
# a suite that silently runs nothing must not count as passing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

step() { printf '\n==> %s\n' "$*" >&2; }

step "system packages"
bash scripts/install-system.sh --with-test-servers

step "virtualenv"
# venv.sh prints the venv path as its last stdout line; its progress goes to
# stderr, so it stays visible.
VENV="$(bash scripts/venv.sh test | tail -n1)"

# Tools from the venv first, then the project-local Consul (bullseye build
# unpacked by install-consul.sh), then the system.
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$REPO_ROOT/.cache/consul:$PATH"

step "ruff check"
ruff check .

step "ruff: keyword-only arguments beyond three (PLR0917)"
ruff check --preview --select PLR0917 lbsync bench

step "ruff format --check"
ruff format --check .

step "mypy"
mypy

step "lint-imports"
lint-imports

step "pytest"
rc=0
python -m pytest "$@" || rc=$?
if ((rc == 5)); then
    printf 'test.sh: pytest collected no tests; treating as failure\n' >&2
    exit 1
fi
exit "$rc"
