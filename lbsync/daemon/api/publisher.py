"""The encoded status the API serves, kept in step with the daemon's without holding it up.

Requests never encode and never wait for an encode: they serve `current`, the last status
encoded whole. In a small catalog a new status is encoded as it is published, so what the
daemon publishes is served at once; in a large one the encode runs in a worker thread, off
the event loop, while requests keep getting the previous status. A status published
meanwhile waits for that encode to finish, and only the newest one is encoded next: an
answer is at most two encodes behind the daemon (a few milliseconds each when one service
changed, up to a second when every service of 10,000 servers is new; bench/api.py).
"""

from __future__ import annotations

import asyncio
import logging

from lbsync.daemon.api.document import EncodedStatus, encode_status
from lbsync.daemon.api.fragments import servers_to_encode
from lbsync.daemon.status import Status

# A change is encoded on the event loop as it is published when the state's services plus
# the servers to encode again are at most this many (well under a millisecond); a larger one
# in the worker thread. Even one service changed among 1,000 costs 5-15 ms (the walk by
# identity, the rollout lookups, one chunk rejoined; bench/api.py): 50 such changes a
# second would take a tenth to a third of the loop, while the thread gives the GIL back to
# the loop every 5 ms (`sys.getswitchinterval`) and skips to the newest status.
INLINE_WORK = 200

log = logging.getLogger("lbsync")


def cheap(status: Status, current: EncodedStatus, *, limit: int) -> bool:
    """Whether encoding `status` after `current` is small enough for the event loop: the
    state's services plus the servers to encode again are at most `limit` (the same state
    costs nothing)."""
    state = status.state
    if state is None or state is current.state.state:
        return True
    if len(state.services) > limit:
        return False  # without walking them
    return len(state.services) + servers_to_encode(state, current.state) <= limit


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
        if cheap(status, self.current, limit=self._inline_work):
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
