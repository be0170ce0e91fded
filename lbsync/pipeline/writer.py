"""The fast lane's file, written after its runtime commands went out, the latest one only.

At 10,000 servers the file is 780 KB and its write, with an fsync, takes tens of milliseconds:
on the critical path it would be most of a change's latency, and one write per change of a
burst kept the disk busy enough to slow a local etcd tenfold. So the writer lets a burst pile
up for `DELAY`, then writes the latest file only, in a worker thread; whatever must read the
file on disk (a decision, a reload, another write) waits for it first (`flush`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

DELAY = 0.05

log = logging.getLogger("lbsync")


class LatestWriter:
    """Writes the newest content handed to it with `write` (blocking: it runs in a thread;
    it returns why the write failed, or None)."""

    def __init__(self, write: Callable[[bytes], str | None], *, delay: float = DELAY) -> None:
        self._write = write
        self._delay = delay
        self._unwritten: bytes | None = None
        self._writing: asyncio.Task[None] | None = None

    def later(self, content: bytes) -> None:
        """Write this content soon, unless newer content comes first."""
        self._unwritten = content
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        await asyncio.sleep(self._delay)  # a burst of changes: one file, not one a change
        while (content := self._unwritten) is not None:
            self._unwritten = None
            error = await asyncio.to_thread(self._write, content)
            if error is not None:  # the next whole cycle finds the file behind and writes it
                log.warning("%s", error)

    async def flush(self) -> None:
        """Wait until the last content handed over is written (or failed to be)."""
        while self._writing is not None and not self._writing.done():
            await asyncio.shield(self._writing)
