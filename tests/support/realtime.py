"""A real-time event loop in a thread, for tests whose own loop runs on looptime's fake clock.

A rollout's waits (intervals of minutes) run on the test's loop, where looptime makes them
instant; its I/O (a real etcd, a real HAProxy, the daemon) runs here, in real time, where
request timeouts keep their meaning. The test's loop awaits this loop's work across threads,
and while it waits no timer of its own is pending, so looptime never moves the fake clock
under a request in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from lbsync.haproxy.stats import ErrorCounts, StatsReader
from lbsync.kv.store import Store, Versioned
from support.waiting import async_wait_until

_T = TypeVar("_T")


class RealTime:
    """An event loop running in its own thread until `stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="real-time loop")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def run(self, work: Coroutine[Any, Any, _T], timeout: float = 60) -> _T:
        """Run a coroutine here and block the calling thread for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    async def call(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine here and await its result from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait here, in real time, until a cheap condition holds. Polling from the fake-clock
        loop instead would move its clock at every poll, under the code being waited for."""

        async def holds() -> bool:
            return condition()

        await self.call(async_wait_until(holds, timeout, what))


@contextmanager
def real_time() -> Iterator[RealTime]:
    """A real-time loop for the duration of the block."""
    loop = RealTime()
    loop.start()
    try:
        yield loop
    finally:
        loop.stop()


class StoreThere:
    """A store that lives on the real-time loop, used from the test's loop."""

    def __init__(self, store: Store, there: RealTime) -> None:
        self.store = store
        self.there = there
        self.prefix = store.prefix

    async def get(self, key: str) -> Versioned | None:
        return await self.there.call(self.store.get(key))

    async def put_if(self, key: str, value: str, expect_revision: int) -> bool:
        return await self.there.call(self.store.put_if(key, value, expect_revision))


class StatsThere:
    """HAProxy's counters read on the real-time loop."""

    def __init__(self, stats: StatsReader, there: RealTime) -> None:
        self.stats = stats
        self.there = there

    async def counts(self, backend: str, servers: set[str]) -> ErrorCounts | None:
        return await self.there.call(self.stats.counts(backend, servers))
