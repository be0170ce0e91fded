"""What a rollout reads and where it reports: the desired state, HAProxy's counters, and a
progress display; each a small protocol, so a terminal, a daemon and a test give their own."""

from __future__ import annotations

from typing import Protocol

from lbsync.core.state import DesiredState, build
from lbsync.haproxy.stats import ErrorCounts
from lbsync.model.values import HealthMode
from lbsync.sources.follow import Following


class Progress(Protocol):
    """Where a rollout says what it does (a terminal, a log)."""

    def line(self, text: str) -> None:
        """An event worth keeping: a step, a pause, a revert."""

    def status(self, text: str) -> None:
        """The gates' current reading."""


class Counters(Protocol):
    """HAProxy's counters of some servers (`haproxy.stats.StatsReader`)."""

    async def counts(self, backend: str, servers: set[str]) -> ErrorCounts | None:
        """The servers' counters, or None when no runtime API can be reached."""
        ...


class DesiredStates(Protocol):
    """The desired state as the daemon would see it now."""

    def state(self) -> DesiredState:
        """The current desired state; raises when a source failed."""
        ...


class FollowedStates:
    """Desired states built from followed sources, as the daemon builds them."""

    def __init__(self, following: Following, mode: HealthMode) -> None:
        self.following = following
        self.mode = mode

    def state(self) -> DesiredState:
        """The desired state of the sources' current catalog."""
        return build(self.following.catalog(), self.mode)
