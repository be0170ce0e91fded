"""Delays between retries: exponential, capped, with optional jitter. One rule for every retry.

The n-th failure in a row waits `first * 2**(n-1)`, never more than `cap`; with jitter the delay
is drawn from [`(1 - jitter) * d`, `d`], so many clients that failed together spread out. Pure:
the caller counts failures and brings the random source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_EXPONENT = 30  # 2**30 times any first delay is past every cap


@dataclass(frozen=True)
class Backoff:
    """A retry schedule."""

    first: float
    cap: float
    jitter: float = 0.5

    def delay(
        self, failures: int, *, rng: random.Random | None = None, cap: float | None = None
    ) -> float:
        """Seconds to wait after the `failures`-th failure in a row (from 1); `cap` lowers the
        schedule's own cap for this one delay."""
        limit = self.cap if cap is None else min(cap, self.cap)
        exact = min(limit, self.first * 2.0 ** min(max(failures, 1) - 1, MAX_EXPONENT))
        if not self.jitter:
            return exact
        draw = random.uniform if rng is None else rng.uniform
        return exact * draw(1.0 - self.jitter, 1.0)
