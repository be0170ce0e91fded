"""Quiescence (consul-template's min/max wait) as a small async-iterator transformer.

A change is passed on once no newer change arrived for `min_wait`, but never later than
`max_wait` after the first change that is still waiting, so a steady stream of changes still
gets applied. Only the latest value is passed on: intermediate ones are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def quiesce(
    changes: AsyncIterator[T], *, min_wait: float, max_wait: float
) -> AsyncIterator[T]:
    """Yield the latest item after `min_wait` of quiet, or `max_wait` after the first pending."""
    loop = asyncio.get_running_loop()
    latest: list[T] = []
    arrived = asyncio.Event()
    done = asyncio.Event()

    async def pump() -> None:
        try:
            async for item in changes:
                latest[:] = [item]
                arrived.set()
        finally:
            done.set()
            arrived.set()

    pumping = asyncio.create_task(pump())
    try:
        while True:
            arrived.clear()
            if not latest:
                if done.is_set():
                    break
                await arrived.wait()
                continue
            first = loop.time()
            while not done.is_set():
                arrived.clear()
                wait = min(min_wait, first + max_wait - loop.time())
                if wait <= 0:
                    break
                try:
                    async with asyncio.timeout(wait):  # not wait_for: it can drop a cancel
                        await arrived.wait()
                except TimeoutError:
                    break
            yield latest.pop()
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping  # re-raises an error of the source
