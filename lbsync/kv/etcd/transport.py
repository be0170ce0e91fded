"""HTTP to etcd's gateway: one aiohttp session, endpoint failover, the auth token, error mapping.

Failover: a call starts at the endpoint that last answered and goes round the list once.
A connection that could not be made never reached the server, so any request moves on to the
next endpoint; after a request may have reached a server (a broken connection, a timeout, or
etcd answering "unavailable"), only idempotent requests move on. A write whose outcome is
unknown raises `EtcdUnavailable` saying so: a compare-and-swap that was applied and then sent
again would report its own write as a conflict.

Auth: with a user name the token is fetched before the first call and sent in the
`Authorization` header. A call refused for its token (HTTP 401, gRPC 16 "invalid auth token":
simple tokens expire after `--auth-token-ttl` seconds unused) logs in again, once, under a lock
so that concurrent calls share one new token, and is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import aiohttp

from lbsync.config import ETCD_PORTS, parse_endpoint
from lbsync.kv.etcd.errors import (
    EtcdAuthError,
    EtcdError,
    EtcdRequestError,
    EtcdUnavailable,
    LeaseExpired,
    PermissionDenied,
    TokenExpired,
)
from lbsync.kv.etcd.messages import to_int
from lbsync.kv.requests import RequestCounts

log = logging.getLogger(__name__)

READ_BUFSIZE = 1 << 20
"""aiohttp's flow-control buffer; its default (64 KiB) limits readline to 128 KiB lines."""

_GRPC_UNAVAILABLE = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE: no leader, timed out, stopping
_HTTP_UNAVAILABLE = {502, 503, 504}


def check_endpoint(endpoint: str) -> str:
    """`http(s)://host:port` by the one endpoint rule (`config.endpoints`); ValueError names a
    bad one."""
    return parse_endpoint(endpoint, ports=ETCD_PORTS, what="etcd endpoint").url


def error_from(status: int | None, data: Mapping[str, Any], where: str) -> EtcdError:
    """The typed error for a gateway error object.

    Unary calls answer `{"error", "message", "code"}` with an HTTP status; an error inside a
    stream is `{"grpc_code", "http_code", "message"}` under `error` (`status` is None then).
    """
    code = to_int(data.get("code", data.get("grpc_code")), "an error code")
    message = str(data.get("message") or data.get("error") or f"HTTP {status}")
    text = f"{where}: {message}"
    lowered = message.lower()
    if code == 16 or status == 401 or "invalid auth token" in lowered:
        return TokenExpired(text)
    if "user name is empty" in lowered:  # auth is on and no token was sent
        return TokenExpired(text)
    if "authentication failed" in lowered:
        return EtcdAuthError(text)
    if code == 7 or status == 403:
        return PermissionDenied(text)
    if "lease not found" in lowered:
        return LeaseExpired(None, message)
    if code in _GRPC_UNAVAILABLE or status in _HTTP_UNAVAILABLE:
        return EtcdUnavailable(text)
    return EtcdRequestError(code, message)


def first_json(payload: bytes, where: str) -> dict[str, Any]:
    """The first JSON object of a body (a streamed body holds one per line)."""
    try:
        value, _ = json.JSONDecoder().raw_decode(payload.decode("utf-8").lstrip())
    except (UnicodeDecodeError, ValueError) as error:
        raise EtcdError(f"{where}: etcd answered something that is not JSON") from error
    if not isinstance(value, dict):
        raise EtcdError(f"{where}: etcd answered JSON that is not an object")
    return value


def request_kind(path: str) -> str:
    """The kind a request is counted as: `/v3/kv/range` is `range`, `/v3/lease/grant` is
    `lease-grant`, `/v3/watch` is `watch`."""
    parts = path.strip("/").split("/")[1:]  # without the version
    if parts[:1] == ["kv"]:
        parts = parts[1:]
    return "-".join(parts) or path


def describe(error: BaseException) -> str:
    """An exception as one readable phrase (aiohttp's timeouts have an empty message)."""
    return str(error) or type(error).__name__


class _Failures:
    """Why each endpoint failed during one call, for one error that names them all."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reasons: list[str] = []
        self.last: BaseException | None = None

    def add(self, url: str, error: BaseException) -> None:
        text = describe(error)
        self.reasons.append(text if isinstance(error, EtcdError) else f"{url}: {text}")
        self.last = error

    def error(self) -> EtcdUnavailable:
        return EtcdUnavailable(f"no etcd endpoint answered {self.path}: " + "; ".join(self.reasons))


class Transport:
    """The HTTP side of `EtcdClient`, shared with its watches; see the module docstring."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str | None,
        password: str | None,
        ssl_context: ssl.SSLContext | None,
        request_timeout: float,
        max_connections: int,
        requests: RequestCounts | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd: at least one endpoint is required")
        if (username is None) != (password is None):
            raise ValueError("etcd: a username needs a password and a password a username")
        self.endpoints = tuple(check_endpoint(endpoint) for endpoint in endpoints)
        self.request_timeout = request_timeout
        self._username = username
        self._password = password
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self.requests = requests if requests is not None else RequestCounts()
        self._current = 0
        self._token: str | None = None  # "" once etcd said auth is not enabled
        self._login_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the session (inside the running loop, as aiohttp requires)."""
        if self._session is not None:
            raise RuntimeError("EtcdClient is already open")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            ssl=self._ssl_context if self._ssl_context is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            read_bufsize=READ_BUFSIZE,
        )

    async def close(self) -> None:
        """Close the session and every connection it holds, watches' included."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session; using the client outside `async with` is a programming error."""
        if self._session is None:
            raise RuntimeError("EtcdClient is not open: use `async with EtcdClient(...)`")
        return self._session

    @property
    def endpoint(self) -> str:
        """The endpoint that answered last (the first one before any call)."""
        return self.endpoints[self._current]

    @property
    def token(self) -> str | None:
        """The current auth token (None before login or without credentials)."""
        return self._token or None

    @property
    def can_login(self) -> bool:
        """Whether credentials are configured, so a refused token can be replaced."""
        return self._username is not None

    def headers(self) -> dict[str, str]:
        """Request headers: the token, when there is one (etcd takes it without a scheme)."""
        return {"Authorization": self._token} if self._token else {}

    async def ensure_token(self) -> None:
        """Log in before the first call when credentials are configured."""
        if self._username is not None and self._token is None:
            await self.relogin(None)

    async def relogin(self, rejected: str | None) -> None:
        """Replace the token `rejected`, unless a concurrent call has already replaced it."""
        async with self._login_lock:
            if self._token != rejected and self._token is not None:
                return
            await self._authenticate()

    async def _authenticate(self) -> None:
        if self._username is None or self._password is None:
            return
        body = {"name": self._username, "password": self._password}
        try:
            data = await self.post("/v3/auth/authenticate", body, idempotent=True, auth=False)
        except EtcdRequestError as error:
            if error.code == 9:  # FAILED_PRECONDITION: auth is not enabled
                log.info("etcd has auth disabled; calls go without a token")
                self._token = ""
                return
            raise
        except TokenExpired as error:  # not expected without a token; still a login failure
            raise EtcdAuthError(f"etcd refused the login of {self._username}: {error}") from error
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdAuthError(f"etcd's login of {self._username} returned no token")
        self._token = token
        log.debug("logged in to etcd as %s", self._username)

    async def call(self, path: str, body: Mapping[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST `body` to `path`; log in again once if the token is refused."""
        await self.ensure_token()
        token = self._token
        try:
            return await self.post(path, body, idempotent=idempotent)
        except TokenExpired as error:
            if not self.can_login:
                raise EtcdAuthError(
                    f"etcd requires auth and no user is configured: {error}"
                ) from error
            log.info("etcd refused the auth token (%s); logging in again", error)
            await self.relogin(token)
        try:
            return await self.post(path, body, idempotent=idempotent)
        except TokenExpired as error:
            raise EtcdAuthError(f"etcd refused a fresh token: {error}") from error

    def rotation(self) -> Iterator[int]:
        """Endpoint indexes, from the one that answered last, each once."""
        count = len(self.endpoints)
        return ((self._current + offset) % count for offset in range(count))

    async def post(
        self, path: str, body: Mapping[str, Any], *, idempotent: bool, auth: bool = True
    ) -> dict[str, Any]:
        """One request with failover (see the module docstring); the JSON answer."""
        headers = self.headers() if auth else {}
        failures = _Failures(path)
        for index in self.rotation():
            url = self.endpoints[index] + path
            self.requests.count(request_kind(path))
            try:
                async with self.session.post(url, json=body, headers=headers) as response:
                    status, payload = response.status, await response.read()
            except aiohttp.ClientConnectorError as error:
                failures.add(url, error)
                continue
            except (aiohttp.ClientError, TimeoutError) as error:
                if not idempotent:
                    raise EtcdUnavailable(
                        f"{url}: {describe(error)}; the request may or may not have been applied"
                    ) from error
                failures.add(url, error)
                continue
            if status == 200:
                data = first_json(payload, url)
                if not isinstance(data.get("error"), dict):
                    self._current = index
                    return data
                refusal = error_from(None, data["error"], url)  # a stream's error after 200
            else:
                refusal = error_from(status, _error_object(payload), url)
            if idempotent and type(refusal) is EtcdUnavailable:  # another member may do better
                failures.add(url, refusal)
                continue
            self._current = index
            raise refusal
        raise failures.error() from failures.last

    async def open_stream(self, path: str, body: Mapping[str, Any]) -> aiohttp.ClientResponse:
        """POST to a streaming endpoint with failover; the open response (caller closes it).

        No total timeout applies to the stream; connecting and the response headers must come
        within the request timeout.
        """
        failures = _Failures(path)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout)
        for index in self.rotation():
            url = self.endpoints[index] + path
            self.requests.count(request_kind(path))
            try:
                async with asyncio.timeout(self.request_timeout):
                    response = await self.session.post(
                        url, json=body, headers=self.headers(), timeout=timeout
                    )
            except (aiohttp.ClientError, TimeoutError) as error:
                failures.add(url, error)
                continue
            if response.status == 200:
                self._current = index
                return response
            try:
                async with asyncio.timeout(self.request_timeout):
                    payload = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                payload = b""
            finally:
                response.close()
            refusal = error_from(response.status, _error_object(payload), url)
            if type(refusal) is EtcdUnavailable:
                failures.add(url, refusal)
                continue
            self._current = index
            raise refusal
        raise failures.error() from failures.last


def _error_object(payload: bytes) -> dict[str, Any]:
    """The gateway's error object, or an empty one when the body is not JSON (a proxy's page)."""
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
