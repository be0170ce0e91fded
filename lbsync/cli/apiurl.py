"""Where a running daemon's API is, from `[api] listen`: for `lbsync status` and `lbsync health`
(which must stay light: it imports nothing but this and the configuration)."""

from __future__ import annotations

import urllib.parse

from lbsync.cli.exits import UsageError
from lbsync.config import parse_listen


class StatusUnavailable(Exception):
    """The daemon's API could not be reached or did not answer with a status."""


def url_from_listen(listen: str) -> str:
    """The URL a local client uses for `[api] listen` (a wildcard host means this machine)."""
    parsed = parse_listen(listen)
    if parsed is None:
        raise StatusUnavailable("the status API is disabled ([api] listen = ''); pass --api URL")
    host, port = parsed
    if port == 0:
        raise StatusUnavailable("[api] listen has port 0 (chosen at start); pass --api URL")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def api_url(text: str) -> str:
    """`--api`: an http(s) URL of a host, with a port or a path prefix and nothing else."""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 (reading it checks the port)
    except ValueError:  # a bracket left open, a port out of range
        parts = urllib.parse.urlsplit("")
    if (
        not text.isprintable()
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
    ):
        raise UsageError(f"--api: expected http(s)://host:port, got {text!r}")
    return text
