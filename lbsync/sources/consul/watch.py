"""Consul's blocking-query loop, shared by the KV, catalog and per-service health watchers.

The rules, from Consul's blocking-query guidance, consul-template's view and what was
measured here (RESEARCH.md):

- The index is an int. Index 0 means "answer now", so it is never used to block: the first
  read, the read after any error and the read after the index went backwards are non-blocking.
- After an error the old index is dropped: a restarted agent starts again near index 1, and a
  blocking query with the old, higher index would sleep through the whole wait while the data
  changed (the agent restarted empty). The one non-blocking read notices that at once.
- An index lower than the last one seen (a restart, a snapshot restore, another agent) resets
  to 0; an index below 1 is a Consul bug and gets a pause so that it cannot spin.
- A new index does not always mean new data (a wait that ran out, writes elsewhere in the
  table), so the value is compared and only a different one is passed on.
- Errors back off exponentially with jitter up to `retry_max`. A refused connection (nothing
  listening: the local agent restarting) is retried at least every second: refusing costs
  nothing, and it makes a restart visible in about a second rather than after a long backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TypeVar

from lbsync.common.backoff import Backoff
from lbsync.kv.consul import Fault, Unavailable

CONNECT_RETRY: Final = 1.0
ZERO_INDEX_PAUSE: Final = 1.0

_T = TypeVar("_T")
Read = Callable[[int], Awaitable[tuple[int, _T]]]


class Retry:
    """The delays between failed reads: one backoff schedule, and its random source."""

    def __init__(self, backoff: Backoff, rng: random.Random) -> None:
        self.backoff = backoff
        self._rng = rng

    def delay(self, failures: int, fault: Fault) -> float:
        """Seconds to wait after the `failures`-th failure in a row (from 1); a refused
        connection is tried again within `CONNECT_RETRY`."""
        refused = isinstance(fault, Unavailable) and fault.connect
        return self.backoff.delay(failures, rng=self._rng, cap=CONNECT_RETRY if refused else None)


def next_index(last_seen: int, found: int) -> int:
    """The index for the next read: `found`, or 0 (non-blocking) when it went backwards or is 0."""
    if found < 1 or found < last_seen:
        return 0
    return found


async def blocking_reads(read: Read[_T], retry: Retry) -> AsyncIterator[_T | Fault]:
    """Yield each different value `read` returns, and each Fault; never ends, never raises a Fault.

    `read(index)` blocks while index > 0 and returns (new index, value).
    """
    index = 0
    last_seen = 0
    failures = 0
    last: _T | None = None
    while True:
        try:
            found, value = await read(index)
        except Fault as fault:
            failures += 1
            index = 0
            yield fault
            await asyncio.sleep(retry.delay(failures, fault))
            continue
        recovered = failures > 0
        failures = 0
        index = next_index(last_seen, found)
        last_seen = found
        if recovered or last is None or value != last:
            last = value
            yield value
        if found < 1:
            await asyncio.sleep(ZERO_INDEX_PAUSE)


async def follow_answers(
    read: Read[_T],
    apply: Callable[[_T], None],
    *,
    retry: Retry,
    report: Callable[[Fault | None], None],
    recovered: Callable[[], None],
) -> None:
    """Apply each new answer of a blocking query and report each fault (None once it reads
    again); after a fault, `recovered` is called first: the agent may have restarted empty, or
    another agent answers now, so what was read before may be gone."""
    failing = False
    async for item in blocking_reads(read, retry):
        if isinstance(item, Fault):
            failing = True
            report(item)
            continue
        apply(item)
        if failing:
            failing = False
            recovered()
        report(None)
