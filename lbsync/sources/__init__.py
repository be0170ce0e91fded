"""Sources: each yields whole snapshots of the KV contract as an async iterator.

A source drops repeats, survives faults, and never raises into the pipeline for a transient
fault: it yields an unusable snapshot (the last good one stays in force) and carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from lbsync.model.values import Snapshot


class Source(Protocol):
    """The one narrow interface every source implements."""

    @property
    def name(self) -> str:
        """How status and errors name this source."""
        ...

    def snapshots(self) -> AsyncIterator[Snapshot]:
        """Whole snapshots, the first as soon as possible, then one per real change."""
        ...
