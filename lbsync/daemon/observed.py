"""What HAProxy actually served, per group, for the dashboard: requests per second and the
share of 5xx (with failed connections and broken responses), over the last minutes.

The computed shares say what the weights should give; this says what the servers answered.
It is read from HAProxy's own counters (`show stat`, the same reader as the rollout's error
gate), every `EVERY` seconds, and only for the services the dashboard asked about in the last
`INTEREST` seconds, so a daemon nobody watches reads nothing, and a large catalog costs what
is on screen. The text is parsed in a worker thread (at 10,000 servers it is megabytes).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lbsync.core.state import DesiredState, ServiceState
from lbsync.haproxy.stats import ErrorCounts, counts_of, stat_rows

EVERY = 5.0
KEEP = 60  # samples per group: five minutes
INTEREST = 60.0

Reading = tuple[float, dict[str, ErrorCounts]]


@dataclass
class _Series:
    """One service's samples: the last counters per group, and the rates computed from them."""

    asked: float
    last: Reading | None = None
    rates: dict[str, deque[tuple[float, float, float]]] = field(default_factory=dict)


def group_counts(rows: list[dict[str, str]], service: ServiceState) -> dict[str, ErrorCounts]:
    """The counters of each group's servers of a service in `show stat` rows (`stat_rows`)."""
    groups: dict[str, set[str]] = {}
    for server in service.servers:
        groups.setdefault(server.group, set()).add(server.name)
    return {group: counts_of(rows, service.name, names) for group, names in groups.items()}


def rates(before: Reading, now: Reading) -> dict[str, tuple[float, float, float]]:
    """Per group: (time, responses per second, error ratio) between two readings; a counter
    that went down (HAProxy reloaded, its counters reset) gives no rate for that group."""
    elapsed = now[0] - before[0]
    found = {}
    for group, counts in now[1].items():
        earlier = before[1].get(group)
        if earlier is None or elapsed <= 0 or counts.responses < earlier.responses:
            continue
        ratio, total = counts.ratio_since(earlier)
        found[group] = (round(now[0], 3), round(total / elapsed, 3), round(ratio, 4))
    return found


class Observed:
    """The samples of the services the dashboard shows."""

    def __init__(
        self,
        read: Callable[[str], Awaitable[str]] | None,
        *,
        every: float = EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.read = read
        self.every = every
        self.clock = clock
        self._series: dict[str, _Series] = {}

    def ask(self, service: str) -> dict[str, Any]:
        """A service's samples so far, and interest in it for the next `INTEREST` seconds."""
        series = self._series.setdefault(service, _Series(asked=self.clock()))
        series.asked = self.clock()
        return {
            "every": self.every,
            "available": self.read is not None,
            "groups": {group: list(samples) for group, samples in series.rates.items()},
        }

    async def run(self, state: Callable[[], DesiredState | None]) -> None:
        """Sample every `every` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            await self.sample(state)

    async def sample(self, state: Callable[[], DesiredState | None]) -> None:
        """One reading for every service asked about lately (the others are forgotten); the
        desired state is asked for only then."""
        now = self.clock()
        self._series = {
            name: series for name, series in self._series.items() if now - series.asked < INTEREST
        }
        if self.read is None or not self._series:
            return
        desired = state()
        if desired is None:
            return
        try:
            text = await self.read("show stat")
        except (OSError, TimeoutError):
            return  # no HAProxy to ask now: a gap in the series
        wanted = [
            (name, service)
            for name, service in ((name, desired.service(name)) for name in self._series)
            if service is not None
        ]

        def counted_by_service() -> dict[str, dict[str, ErrorCounts]]:
            rows = stat_rows(text)  # once for every service: megabytes at 10,000 servers
            return {name: group_counts(rows, service) for name, service in wanted}

        try:
            counted = await asyncio.to_thread(counted_by_service)
        except ValueError:
            return  # not `show stat` output
        for name, counts in counted.items():
            series = self._series[name]
            reading = (now, counts)
            if series.last is not None:
                for group, sample in rates(series.last, reading).items():
                    series.rates.setdefault(group, deque(maxlen=KEEP)).append(sample)
            series.last = reading
