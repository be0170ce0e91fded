"""Where a running daemon's API is, from `[api] listen`: for `lbsync status` and `lbsync health`
(which must stay light: it imports nothing but this and the configuration)."""

from __future__ import annotations

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
