"""The encoded status the API serves, kept in step with the daemon's without holding it up.

Requests never encode and never wait for an encode: they serve `current`, the last status
encoded whole. A new status is encoded as it is published when that is cheap (a few
services changed), so what the daemon publishes is served at once; otherwise (a first
cycle, a core that rebuilt every service of a large catalog) the encode runs in a worker
thread, off the event loop, while requests keep getting the previous status. A status
published meanwhile waits for that encode to finish, and only the newest one is encoded
next: an answer is at most two such encodes behind the daemon (bench/api.py measures it).
"""

from __future__ import annotations

import asyncio
import logging

from lbsync.daemon.api.document import EncodedStatus, encode_status
from lbsync.daemon.api.fragments import servers_to_encode
from lbsync.daemon.status import Status

# Work (servers to encode, plus a tenth of the services: walking them by identity and
# rejoining a chunk costs about that) encoded on the event loop as it is published; beyond
# it, in the worker thread. One service of 10 servers changed among 1,000 (work 110) costs
# 2-5 ms (bench/api.py); a whole new state of 10,000 servers, 300-600 ms.
INLINE_WORK = 200

log = logging.getLogger("lbsync")


def work(status: Status, current: EncodedStatus) -> int:
    """What encoding `status` after `current` costs: the servers of services whose fragment
    cannot be reused, plus a tenth of the services (none for the same state)."""
    state = status.state
    if state is None or state is current.state.state:
        return 0
    return servers_to_encode(state, current.state) + len(state.services) // 10


def encoded_or_none(status: Status, previous: EncodedStatus) -> EncodedStatus | None:
    """`encode_status`, or None (logged) should it fail: that would be a bug, not input, and
    neither the daemon nor the last answer should stop for it."""
    try:
        return encode_status(status, previous)
    except Exception:
        log.exception("status API: cannot encode the status; serving the previous one")
        return None


class Publisher:
    """Holds the last encoded status; `run` is the worker that encodes large changes."""

    def __init__(self, status: Status, *, inline_work: int = INLINE_WORK) -> None:
        self.current = encode_status(status, None)
        self._wanted = status
        self._refused: Status | None = None
        self._inline_work = inline_work
        self._wake = asyncio.Event()
        self._busy = False

    @property
    def behind(self) -> bool:
        """Whether a published status is not served yet (its encode is pending or running)."""
        return self._wanted is not self.current.status and self._wanted is not self._refused

    def offer(self, status: Status) -> None:
        """A new status to serve: encoded now when cheap, else handed to the worker."""
        self._wanted = status
        if self._busy:
            return  # the worker takes the newest status when its encode ends
        if work(status, self.current) <= self._inline_work:
            self._take(status, encoded_or_none(status, self.current))
        else:
            self._wake.set()

    def _take(self, status: Status, encoded: EncodedStatus | None) -> None:
        if encoded is None:
            self._refused = status
        else:
            self.current = encoded

    async def run(self) -> None:
        """Encode what `offer` handed over, in a thread, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                while self.behind:
                    wanted = self._wanted
                    self._take(
                        wanted, await asyncio.to_thread(encoded_or_none, wanted, self.current)
                    )
            finally:
                self._busy = False
