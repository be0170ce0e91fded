"""The one narrow interface every source implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from lbsync.kv.requests import RequestCounts
from lbsync.model.values import Snapshot


class Source(Protocol):
    """Whole snapshots of the KV contract as an async iterator."""

    @property
    def name(self) -> str:
        """How status and errors name this source."""
        ...

    def snapshots(self) -> AsyncIterator[Snapshot]:
        """Whole snapshots, the first as soon as possible, then one per real change."""
        ...


@runtime_checkable
class Counted(Protocol):
    """A source that counts its requests to a store (etcd, Consul), for the metrics."""

    requests: RequestCounts
