"""Small pieces of every lbsync HTTP client that calls other people's servers (Prometheus,
webhooks): one session held for the client's life, and faults said in lbsync's own words.

aiohttp's exception texts quote the request's URL, and a webhook's URL may hold a token; so
what such a client shows of a failed request is made here from the exception's kind and its
errno, never from its text.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

import aiohttp

_T = TypeVar("_T")


def no_answer(error: BaseException, *, timeout: float) -> str:
    """A phrase for a request that `error` stopped before any answer (within `timeout` s)."""
    if isinstance(error, TimeoutError):
        return f"no answer in {timeout:g}s"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate was not accepted"
    if isinstance(error, aiohttp.ClientSSLError):
        return "TLS failed"
    if isinstance(error, aiohttp.ClientConnectorError):
        number = error.os_error.errno
        return f"cannot connect: {os.strerror(number) if number else type(error.os_error).__name__}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without an answer"
    return f"no answer ({type(error).__name__})"


class SessionHolder:
    """A client's aiohttp session: the caller's, else one opened by `async with` for its block
    (one connection pool), else one a call (`with_session`)."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._owned = self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._owned is not None:
            await self._owned.close()
            self._owned = self._session = None

    async def with_session(self, work: Callable[[aiohttp.ClientSession], Awaitable[_T]]) -> _T:
        """`work` done with the held session, or with one opened and closed for it."""
        if self._session is not None:
            return await work(self._session)
        async with aiohttp.ClientSession() as session:
            return await work(session)
