"""The encoded status the API serves, kept in step with the daemon's without holding it up.

Requests never encode and never wait for an encode: they serve `current`, the last status
encoded whole. A new status is encoded as it is published when that is cheap (a few
services changed: well under a millisecond each), so a small catalog is served exactly as
the daemon sees it; otherwise (a first cycle, a large catalog, a core that rebuilt every
service) the encode runs in a worker thread, off the event loop, while requests keep getting
the previous status. A status published meanwhile waits for that encode to finish and only
the newest one is encoded next: how stale an answer can be is one encode (measured by
bench/api.py).
"""

from __future__ import annotations

import asyncio

from lbsync.daemon.api.document import EncodedStatus, encode_status
from lbsync.daemon.api.fragments import servers_to_encode
from lbsync.daemon.status import Status

# Work (servers to encode plus services to join) encoded on the event loop as it is
# published; beyond it, in the worker thread. 10 servers encode in ≈0.3 ms, joining 1,000
# services' fragments takes ≈1 ms.
INLINE_WORK = 200


def work(status: Status, current: EncodedStatus) -> int:
    """What encoding `status` after `current` costs: the servers of services whose fragment
    cannot be reused, plus the services whose fragments are joined (none for the same state)."""
    state = status.state
    if state is None or state is current.state.state:
        return 0
    return servers_to_encode(state, current.state) + len(state.services)


class Publisher:
    """Holds the last encoded status; `run` is the worker that encodes large changes."""

    def __init__(self, status: Status, *, inline_work: int = INLINE_WORK) -> None:
        self.current = encode_status(status, None)
        self._wanted = status
        self._inline_work = inline_work
        self._wake = asyncio.Event()
        self._busy = False

    @property
    def behind(self) -> bool:
        """Whether a published status is not served yet (its encode is pending or running)."""
        return self._wanted is not self.current.status

    def offer(self, status: Status) -> None:
        """A new status to serve: encoded now when cheap, else handed to the worker."""
        self._wanted = status
        if self._busy:
            return  # the worker takes the newest status when its encode ends
        if work(status, self.current) <= self._inline_work:
            self.current = encode_status(status, self.current)
        else:
            self._wake.set()

    async def run(self) -> None:
        """Encode what `offer` handed over, in a thread, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                while self.behind:
                    self.current = await asyncio.to_thread(
                        encode_status, self._wanted, self.current
                    )
            finally:
                self._busy = False
