"""Python's cyclic garbage collector, kept off the fast lane's path.

At 10,000 servers a full collection walks every object of the state, the layouts and the
status (tens of milliseconds), and it starts whenever enough new objects survived, in the
middle of a change as likely as not. What a whole cycle leaves alive is long-lived and
immutable, freed by reference counting, so after each whole cycle it is moved out of the
collector's generations (`gc.freeze`), after the young generations were collected, and a
collection then walks only what came since. Garbage cycles frozen with it would never be
collected, so every `FULL_EVERY` seconds, at a whole cycle (when the fast lane has been
quiet), everything is unfrozen and collected once.
"""

from __future__ import annotations

import gc
import time

FULL_EVERY = 300.0


class Collector:
    """When the daemon last collected everything."""

    def __init__(self, *, full_every: float = FULL_EVERY) -> None:
        self.full_every = full_every
        self._full_at = time.monotonic()

    def after_whole_cycle(self) -> None:
        """Freeze what the whole cycle left alive; now and then collect everything first."""
        now = time.monotonic()
        if now - self._full_at >= self.full_every:
            gc.unfreeze()
            gc.collect()
            self._full_at = now
        else:
            gc.collect(1)
        gc.freeze()
