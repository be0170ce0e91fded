"""Who the status API answers: the holder of the bearer token where one is configured, else
only requests that name a loopback host.

A token is compared as SHA-256 digests with `hmac.compare_digest`: the time a refusal takes
tells nothing about how much of a guess was right, not even its length. The probes `/healthz`
and `/readyz` need none: a kubelet or a load balancer cannot always send one, and they tell
only that the process lives and has applied once.

Without a token the API listens on loopback (the configuration refuses anything else unless
`[api] open`), and the way a web page reaches it anyway is DNS rebinding: a name of the
page's own, answered with 127.0.0.1 after the page loaded. The browser then sends that name as
`Host`, so only loopback names are answered, and others get 421 Misdirected Request. A request
without `Host` (HTTP/1.0) is answered: browsers always send one.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from lbsync.config import is_loopback

PROBES: Final = frozenset({"/healthz", "/readyz"})
CHALLENGE: Final = 'Bearer realm="lbsync"'


def host_name(header: str) -> str:
    """The host of a `Host` header, without its port and an IPv6 address's brackets."""
    header = header.strip()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, colon, port = header.rpartition(":")
    return name if colon and port.isascii() and port.isdigit() else header


def names_loopback(header: str | None) -> bool:
    """Whether a request's `Host` names this machine's loopback (or is absent)."""
    return header is None or is_loopback(host_name(header))


def digest(token: str) -> bytes:
    """What a token is compared as."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def bearer_matches(header: str | None, expected: bytes) -> bool:
    """Whether an `Authorization` header is `Bearer <token>` (the scheme in any case) with the
    token whose `digest` is `expected`."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(digest(given.strip()), expected)


def guard(token: str | None, *, loopback: bool) -> Middleware:
    """The middleware: a token for every route but the probes when `token` is set; otherwise,
    when the API listens on `loopback`, a loopback `Host`."""
    expected = None if token is None else digest(token)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None:
            allowed = request.path in PROBES or bearer_matches(
                request.headers.get("Authorization"), expected
            )
            if not allowed:
                return web.Response(
                    status=401,
                    text="unauthorized: send Authorization: Bearer <the [api] token_file token>\n",
                    headers={"WWW-Authenticate": CHALLENGE},
                )
        elif loopback and not names_loopback(request.headers.get("Host")):
            return web.Response(
                status=421,
                text="misdirected request: without [api] token_file, only requests for "
                "localhost, 127.0.0.1 or [::1] are answered\n",
            )
        return await handler(request)

    return check
