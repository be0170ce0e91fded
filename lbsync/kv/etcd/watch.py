"""One etcd watch over the gateway's streaming `/v3/watch`: JSON lines in, WatchResponses out.

The stream is read in raw chunks and split into lines here, so no aiohttp line limit applies
(a 1 MiB value is a 1.4 MB line in base64); `MAX_LINE` only guards memory against a broken peer.

Watchdog: every read must bring at least one byte within `idle_timeout` seconds, else
`WatchIdle`. A killed server closes the connection and the read fails at once; a hung server or
a silently cut network sends nothing and is caught only this way. A quiet prefix stays alive
through etcd's progress notifications, sent every `--experimental-watch-progress-notify-interval`
(10 min by default in etcd 3.4: run etcd with a value well under `idle_timeout`, e.g. 10s for
the default 30 s; otherwise a quiet watch ends every `idle_timeout` and is simply re-opened).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from lbsync.kv.etcd.errors import (
    Compacted,
    EtcdAuthError,
    EtcdError,
    EtcdUnavailable,
    PermissionDenied,
    TokenExpired,
    WatchCanceled,
    WatchIdle,
)
from lbsync.kv.etcd.messages import WatchResponse, prefix_range
from lbsync.kv.etcd.transport import Transport, describe, error_from

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_LINE = 256 << 20
"""Longest watch message accepted (a catch-up after a long gap can batch many values)."""


class EtcdWatch:
    """A watch on every key under a prefix, from a start revision; see `EtcdClient.watch`.

    Use as `async with client.watch(...) as watch: async for response in watch: ...`.
    Entering waits for etcd to confirm the watch (so writes made afterwards are seen);
    iterating yields responses with events and progress notifications, and raises on any end
    of the stream: it never just stops. After an error the watch is closed; open a new one
    from `resume_revision`, the first revision not yet delivered.
    """

    def __init__(
        self,
        transport: Transport,
        prefix: str,
        start_revision: int,
        *,
        progress_notify: bool,
        idle_timeout: float | None,
    ) -> None:
        self.prefix = prefix
        self.resume_revision = start_revision
        self.watch_id: int | None = None
        self._transport = transport
        self._progress_notify = progress_notify
        self._idle_timeout = idle_timeout
        self._response: aiohttp.ClientResponse | None = None
        self._buffer = bytearray()
        self._scanned = 0
        self._closed = False

    async def __aenter__(self) -> EtcdWatch:
        await self._guarded(self._open())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> EtcdWatch:
        return self

    async def __anext__(self) -> WatchResponse:
        if self._closed:
            raise StopAsyncIteration
        if self._response is None:
            await self._guarded(self._open())
        response = await self._guarded(self._next_response(self._idle_timeout))
        if response.canceled:
            self.close()
            raise self._cancel_error(response)
        if response.events:
            last = response.events[-1].kv.mod_revision
            self.resume_revision = max(self.resume_revision, last + 1)
        elif response.is_progress_notify and response.revision:
            # etcd notifies only watchers that are up to date: all up to `revision` is delivered.
            self.resume_revision = max(self.resume_revision, response.revision + 1)
        return response

    async def buffered(self) -> WatchResponse | None:
        """The next response if it has already arrived (whole, in what was received), else
        None; never waits. A reader coalesces what piled up while it was busy."""
        if self._closed or self._response is None:
            return None
        if self._buffer.find(b"\n", self._scanned) < 0:
            self._buffer += self._response.content.read_nowait()
            if self._buffer.find(b"\n", self._scanned) < 0:
                return None
        return await self.__anext__()

    def close(self) -> None:
        """Drop the stream's connection; iterating afterwards ends the iteration."""
        self._closed = True
        self._close_stream()

    def _close_stream(self) -> None:
        """Drop the connection of the current stream (an etcd stream never ends by itself)."""
        if self._response is not None:
            self._response.close()
            self._response = None

    async def aclose(self) -> None:
        """The async form of `close`, for `contextlib.aclosing`."""
        self.close()

    @property
    def _where(self) -> str:
        return f"watch on {self.prefix!r} at {self._transport.endpoint}"

    async def _guarded(self, step: Awaitable[_T]) -> _T:
        """Run one step; on any exception (cancellation too) close the stream first."""
        try:
            return await step
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        """Create the watch; a refused token is replaced once, as unary calls do."""
        await self._transport.ensure_token()
        for attempt in range(2):
            token = self._transport.token
            try:
                await self._create()
            except TokenExpired as refusal:
                self._close_stream()
                if not self._transport.can_login:
                    raise EtcdAuthError(
                        f"etcd requires auth and no user is configured: {refusal}"
                    ) from refusal
                if attempt:
                    raise EtcdAuthError(
                        f"etcd refused a fresh token for a watch: {refusal}"
                    ) from refusal
                log.info("etcd refused the watch's auth token (%s); logging in again", refusal)
                await self._transport.relogin(token)
            else:
                return

    async def _create(self) -> None:
        request: dict[str, Any] = {**prefix_range(self.prefix)}
        request["progress_notify"] = self._progress_notify
        if self.resume_revision > 0:
            request["start_revision"] = self.resume_revision
        self._buffer.clear()
        self._scanned = 0
        self._response = await self._transport.open_stream("/v3/watch", {"create_request": request})
        try:
            first = await self._next_response(self._transport.request_timeout)
        except WatchIdle as error:
            raise EtcdUnavailable(f"{self._where}: etcd did not confirm the watch") from error
        if first.canceled:
            raise self._cancel_error(first)
        if not first.created:
            raise EtcdError(f"{self._where}: etcd's first watch message was not 'created'")
        self.watch_id = first.watch_id

    def _cancel_error(self, response: WatchResponse) -> EtcdError:
        if response.compact_revision:
            return Compacted(response.compact_revision)
        reason = response.cancel_reason
        lowered = reason.lower()
        auth_markers = ("unauthenticated", "invalid auth token", "user name is empty")
        if any(marker in lowered for marker in auth_markers):
            return TokenExpired(f"{self._where}: {reason}")
        if "permission denied" in lowered or "permissiondenied" in lowered:
            return PermissionDenied(f"{self._where}: {reason}")
        return WatchCanceled(reason)

    async def _next_response(self, timeout: float | None) -> WatchResponse:
        while not (line := await self._next_line(timeout)).strip():
            pass
        try:
            data = json.loads(line)
        except ValueError as error:
            raise EtcdError(f"{self._where}: etcd sent a line that is not JSON") from error
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            raise error_from(None, data["error"], self._where)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise EtcdError(f"{self._where}: etcd sent a watch message without a result")
        return WatchResponse.from_json(result)

    async def _next_line(self, timeout: float | None) -> bytes:
        while (end := self._buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            if self._scanned > MAX_LINE:
                raise EtcdError(f"{self._where}: a watch message exceeds {MAX_LINE} bytes")
            self._buffer += await self._read_chunk(timeout)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line

    async def _read_chunk(self, timeout: float | None) -> bytes:
        if self._response is None:
            raise EtcdUnavailable(f"{self._where}: the watch is closed")
        try:
            async with asyncio.timeout(timeout):
                chunk = await self._response.content.readany()
        except TimeoutError as error:
            raise WatchIdle(
                f"{self._where}: no byte for {timeout} s (a hung server or a cut network)"
            ) from error
        except aiohttp.ClientError as error:
            raise EtcdUnavailable(f"{self._where}: the stream broke: {describe(error)}") from error
        if not chunk:
            raise EtcdUnavailable(f"{self._where}: etcd closed the watch stream")
        return chunk
