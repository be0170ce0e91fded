"""Quiescence (min/max wait) on a fake event-loop clock: looptime makes every sleep instant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from lbsync.pipeline.debounce import quiesce

pytestmark = pytest.mark.looptime

Timeline = list[tuple[str, float]]


class SourceFailed(Exception):
    """The error a scripted source raises."""


async def scripted(
    *steps: tuple[float, str], linger: float = 0.0, fail: bool = False
) -> AsyncIterator[str]:
    """Yield each item after its delay, stay open `linger` seconds, then end (or fail)."""
    for delay, item in steps:
        await asyncio.sleep(delay)
        yield item
    await asyncio.sleep(linger)
    if fail:
        raise SourceFailed("store gone")


async def timeline(
    source: AsyncIterator[str],
    *,
    min_wait: float = 0.2,
    max_wait: float = 1.0,
    busy: float = 0.0,
    into: Timeline | None = None,
) -> Timeline:
    """What quiesce yields and when (loop time since the start); `busy` is the consumer's work."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    seen: Timeline = [] if into is None else into
    async for item in quiesce(source, min_wait=min_wait, max_wait=max_wait):
        seen.append((item, round(loop.time() - start, 6)))
        await asyncio.sleep(busy)
    return seen


async def test_a_burst_within_min_wait_yields_only_the_last_item_once() -> None:
    source = scripted((0, "a"), (0.05, "b"), (0.05, "c"), linger=5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await timeline(source) == [("c", 0.3)]
    assert loop.time() - start == pytest.approx(5.1)


async def test_a_steady_stream_faster_than_min_wait_still_yields_by_max_wait() -> None:
    source = scripted(*((0.15, str(index)) for index in range(20)))
    # items at 0.15, 0.30 ... 3.00; each pending run is cut max_wait after its first item
    assert await timeline(source) == [
        ("6", 1.15),
        ("13", 2.2),
        ("19", 3.0),
    ]


async def test_items_separated_by_more_than_min_wait_each_yield() -> None:
    source = scripted((0, "a"), (1, "b"), (1, "c"), linger=5)
    assert await timeline(source) == [
        ("a", 0.2),
        ("b", 1.2),
        ("c", 2.2),
    ]


async def test_the_source_ending_flushes_the_pending_item_at_once_and_ends() -> None:
    source = scripted((0, "a"), (0.05, "b"))
    assert await timeline(source) == [("b", 0.05)]


async def test_an_empty_source_yields_nothing_and_ends() -> None:
    assert await timeline(scripted(linger=3)) == []


async def test_items_arriving_while_the_consumer_is_busy_are_coalesced() -> None:
    source = scripted((0, "a"), (0.5, "b"), (0.2, "c"), linger=5)
    # "a" leaves at 0.2, the consumer works until 1.2; "c" is then the latest, out at 1.4
    assert await timeline(source, busy=1.0) == [
        ("a", 0.2),
        ("c", 1.4),
    ]


async def test_a_source_error_propagates_to_the_consumer() -> None:
    with pytest.raises(SourceFailed, match="store gone"):
        await timeline(scripted(linger=1, fail=True))


async def test_a_source_error_after_items_still_propagates() -> None:
    seen: Timeline = []
    with pytest.raises(SourceFailed):
        await timeline(scripted((0, "a"), (0.05, "b"), linger=3, fail=True), into=seen)
    assert seen == [("b", 0.25)]
