"""`lbsync health` (and `lbsync-health`): a running daemon's probe as an exit status.

A container's HEALTHCHECK runs it every few seconds beside the daemon, often with no curl in the
image, and must finish within its timeout even when the machine is busy: so it reads the
configuration and asks `/healthz` (or `/readyz`) with the standard library alone, not with the
command line's full set of imports.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from lbsync.cli.apiurl import StatusUnavailable, api_url, url_from_listen
from lbsync.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from lbsync.cli.parser import DEFAULT_CONFIG
from lbsync.config import ConfigError, load

ANSWER_LIMIT: Final = 1024  # bytes of a probe's answer shown


def probe(base_url: str, *, ready: bool, timeout: float = 5.0) -> tuple[bool, str]:
    """GET `/healthz` (the daemon runs) or `/readyz` (it applied its sources): whether it
    answered 200, and what it said; OSError when nothing answered."""
    url = base_url.rstrip("/") + ("/readyz" if ready else "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (http only)
            status, body = answer.status, answer.read(ANSWER_LIMIT)
    except urllib.error.HTTPError as refused:  # 503 from /readyz: an answer, not an error
        status, body = refused.code, refused.read(ANSWER_LIMIT)
    text = body.decode(errors="replace").strip()
    return status == 200, f"{url}: {status} {text!r}"


def check(config: Path, api: str | None, *, ready: bool) -> int:
    """Probe the daemon of `config` (or at `api`); the exit status, having said why."""
    try:
        url = api_url(api) if api else url_from_listen(load(config).api.listen)
        healthy, said = probe(url, ready=ready)
    except (ConfigError, UsageError) as error:
        print(f"lbsync: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StatusUnavailable as error:
        print(f"lbsync: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:  # refused, timed out: no daemon answering
        print(f"lbsync: {api or config}: no answer: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(said, file=sys.stdout if healthy else sys.stderr)
    return EXIT_OK if healthy else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lbsync-health`: `lbsync health` without the rest of the command line."""
    parser = argparse.ArgumentParser(prog="lbsync-health", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-c", "--config", type=Path, default=Path(os.environ.get("LBSYNC_CONFIG", DEFAULT_CONFIG))
    )
    parser.add_argument("--api", help="the daemon's API URL (default: from [api] listen)")
    parser.add_argument("--ready", action="store_true", help="ask /readyz instead")
    arguments = parser.parse_args(argv)
    return check(arguments.config, arguments.api, ready=arguments.ready)


if __name__ == "__main__":
    sys.exit(main())
