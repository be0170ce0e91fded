"""Progress on a terminal (one line rewritten in place) or plain lines (every few seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

PLAIN_EVERY = 5.0


class Progress:
    """Where a rollout's steps and gate readings are shown."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interactive: bool,
        every: float = PLAIN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.interactive = interactive
        self.every = every
        self.clock = clock
        self._last_status = -float("inf")

    def line(self, text: str) -> None:
        """An event worth keeping: a step, a pause, a revert."""
        prefix = "\r\033[K" if self.interactive else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        """The gates' current reading: in place on a terminal, else every `every` seconds."""
        now = self.clock()
        if self.interactive:
            self.stream.write(f"\r\033[K{text}")
        elif now - self._last_status >= self.every:
            self.stream.write(f"{text}\n")
        else:
            return
        self._last_status = now
        self.stream.flush()
