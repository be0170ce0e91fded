"""How many requests a client sent to its store, by endpoint kind.

A store is shared with everything else on its host (Consul's agent caps connections per
client address; an etcd cluster serves every client), so the daemon shows what lbsync costs
it: one `RequestCounts` per source, counted by the client as it sends, read by the metrics at
scrape time. It is an object of its source, never of the module: two sources (or two daemons
in one process) keep their own figures.
"""

from __future__ import annotations

from collections import Counter


class RequestCounts:
    """Requests sent so far, by kind (`kv`, `catalog`, `health-state`, `range`, `watch`, ...)."""

    def __init__(self) -> None:
        self._sent: Counter[str] = Counter()

    def count(self, kind: str) -> None:
        """One more request of this kind (every attempt counts, retries and failovers too)."""
        self._sent[kind] += 1

    def items(self) -> tuple[tuple[str, int], ...]:
        """(kind, requests) pairs, sorted by kind."""
        return tuple(sorted(self._sent.items()))

    def total(self) -> int:
        """Requests of every kind."""
        return sum(self._sent.values())
