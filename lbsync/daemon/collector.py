"""Python's cyclic garbage collector, kept off the fast lane's path.

At 10,000 servers a full collection walks every object of the state, the layouts and the
status (tens of milliseconds), and it starts whenever enough new objects survived, in the
middle of a change as likely as not. What a whole cycle leaves alive is long-lived and
immutable, freed by reference counting, so after each whole cycle it is moved out of the
collector's generations (`gc.freeze`), after the young generations were collected, and a
collection then walks only what came since. Garbage cycles frozen with it would never be
collected, so every `FULL_EVERY` seconds, at a whole cycle (when the fast lane has been
quiet), everything is unfrozen and collected once.

The young generations are collected less often than Python's default (`tune`: after 10,000
new objects instead of 700, the middle one after 50 of those instead of 10): a whole parse and
build at 10,000 servers make some 200,000 long-lived objects, and by default each is walked
several times on its way to the old generation, whose growth then starts full collections of
everything in the middle of the cycle; that was a tenth of a cold cycle
(`bench/cycle.py`). The garbage a cycle leaves is freed by reference counting, so the
collector has little to find either way.
"""

from __future__ import annotations

import gc
import time

FULL_EVERY = 300.0
YOUNG_THRESHOLD = 10_000
MIDDLE_THRESHOLD = 50


def tune() -> None:
    """Collect the youngest generation every `YOUNG_THRESHOLD` new objects, the middle one
    every `MIDDLE_THRESHOLD` of those; the old one as Python does."""
    old = gc.get_threshold()[2]
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, old)


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
