"""The status API: a read-only aiohttp server, one more task of the daemon's task group.

It never changes anything: every route is a GET (aiohttp answers HEAD with the same headers
and any other method with 405), and every answer is computed from the one immutable `Status`
the daemon swaps whole, read by reference at the start of the request, so a response never
mixes two moments. The JSON and the services' metrics are not encoded per request: the daemon
`publish`es each new status, `Publisher` encodes it once (off the event loop when it is large)
and every request serves the last encoded one. It listens on loopback unless `[api] listen`
says otherwise; port 0 picks a free port, published in `address` once bound (the tests rely
on it). Who it answers is
`guard.py`'s: a bearer token, or on loopback without one only requests for a loopback host.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from lbsync.config import ConfigError, is_loopback, parse_listen
from lbsync.daemon.api import document, encode
from lbsync.daemon.api.guard import guard
from lbsync.daemon.api.publisher import Publisher
from lbsync.daemon.metrics import Metrics
from lbsync.daemon.status import MAX_EVENTS, Status

log = logging.getLogger("lbsync")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_EVENTS = 50
# The dashboard is one self-contained page: scripts and styles inline, data only from this
# origin. The policy makes a stray external reference fail loudly in the browser.
DASHBOARD_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def event_limit(text: str) -> int | None:
    """`?limit=` as a count (at most MAX_EVENTS); None unless it is ASCII digits, since
    `"²".isdigit()` is true and `int("²")` fails."""
    if not (text.isascii() and text.isdigit()):
        return None
    return min(int(text), MAX_EVENTS)


class StatusApi:
    """The daemon's read-only HTTP face: health, readiness, metrics, JSON and the dashboard."""

    def __init__(
        self, status: Callable[[], Status], *, listen: str, token: str | None = None
    ) -> None:
        self._status = status
        self.listen = parse_listen(listen)
        self._token = token
        on_loopback = self.listen is None or is_loopback(self.listen[0])
        self._loopback_only = token is None and on_loopback
        self.open = token is None and not on_loopback  # `[api] open`, warned about at start
        self.metrics = Metrics(status)
        self.publisher = Publisher(status())
        # a service's observed traffic (`daemon/observed.py`), given by the daemon
        self.traffic: Callable[[str], dict[str, Any]] | None = None
        self.address: tuple[str, int] | None = None
        self.listening = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._dashboard = (
            importlib.resources.files("lbsync.daemon.api").joinpath("dashboard.html").read_bytes()
        )

    @property
    def url(self) -> str | None:
        """The base URL once bound (None before), as clients reach it."""
        if self.address is None:
            return None
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def publish(self, status: Status) -> None:
        """Take a new status to serve (the daemon calls this on every change)."""
        if self.listen is not None:
            self.publisher.offer(status)

    def observe(self, status: Status) -> None:
        """Count one finished cycle (applies, durations, propagation)."""
        self.metrics.observe_cycle(status)

    def app(self) -> web.Application:
        """The routes; every one is a GET."""
        app = web.Application(
            middlewares=[_no_store, guard(self._token, loopback=self._loopback_only)]
        )
        app.router.add_get("/", self._index)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/status", self._status_json)
        app.router.add_get("/v1/summary", self._summary_json)
        app.router.add_get("/v1/services/{name}", self._service)
        app.router.add_get("/v1/services/{name}/traffic", self._traffic)
        app.router.add_get("/v1/events", self._events)
        return app

    async def start(self) -> None:
        """Bind the socket. The daemon calls this before its tasks start, so a port in use is
        a configuration error with a clear message rather than a failed task."""
        if self.listen is None or self._runner is not None:
            return
        host, port = self.listen
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as error:
            await runner.cleanup()
            raise ConfigError(
                f"api.listen: cannot listen on {host}:{port}: {error.strerror or error}"
            ) from error
        self._runner = runner
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        self.listening.set()
        log.info("status API and dashboard on %s/", self.url)
        if self.open:
            log.warning(
                "the status API on %s has no token: anyone who can reach it can read every "
                "service, instance, address and error ([api] open = true; set [api] token_file "
                "to require one)",
                self.url,
            )

    async def serve(self) -> None:
        """Answer requests until cancelled (the daemon's task group cancels it on stop)."""
        await self.start()
        try:
            await self.publisher.run()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Close the socket and the open connections (safe to call more than once)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _index(self, _: web.Request) -> web.StreamResponse:
        return web.Response(
            body=self._dashboard,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": DASHBOARD_POLICY},
        )

    async def _healthz(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.StreamResponse:
        reason = encode.not_ready_reason(self._status())
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def _metrics(self, _: web.Request) -> web.StreamResponse:
        services = self.publisher.current.state.metrics
        return web.Response(
            body=b"".join((self.metrics.exposition(), *services)),
            headers={"Content-Type": METRICS_CONTENT_TYPE},
        )

    async def _status_json(self, _: web.Request) -> web.StreamResponse:
        return _json(document.status_body(self.publisher.current, now=time.time()))

    async def _summary_json(self, _: web.Request) -> web.StreamResponse:
        return _json(document.summary_body(self.publisher.current, now=time.time()))

    async def _service(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = document.service_body(self.publisher.current, name)
        if body is None:
            return web.json_response({"error": f"no service named {name!r}"}, status=404)
        return _json(body)

    async def _traffic(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if document.service_body(self.publisher.current, name) is None:
            return web.json_response({"error": f"no service named {name!r}"}, status=404)
        if self.traffic is None:
            return web.json_response({"every": None, "available": False, "groups": {}})
        return web.json_response(self.traffic(name))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        limit = event_limit(request.query.get("limit", str(DEFAULT_EVENTS)))
        if limit is None:
            return web.json_response({"error": "limit: expected a whole number"}, status=400)
        return web.json_response({"events": encode.events_json(self._status(), limit)})


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@web.middleware
async def _no_store(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer describes one moment: no cache may keep it."""
    response = await handler(request)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
