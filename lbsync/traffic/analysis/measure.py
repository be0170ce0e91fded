"""One round of readings: every gate's query filled in for the target, asked, and judged.

The queries go out together (each bounded by the client's timeout) and the readings come back
in the gates' order, all stamped with the round's time. A gate that reads the group's servers
while the group has none is inconclusive without asking Prometheus, and says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from lbsync.traffic.analysis.metrics import MetricGate, Target, expand
from lbsync.traffic.analysis.readings import Reading, Sample, judge


class Querier(Protocol):
    """Where numbers come from (`prometheus.PrometheusClient`)."""

    async def query(self, text: str) -> Sample:
        """The one number `text` gives now, or why there is none; never raises."""
        ...


async def measure(
    querier: Querier,
    gates: Sequence[MetricGate],
    target: Target,
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[Reading, ...]:
    """Every gate read once for `target`."""
    queries = [expand(gate.query, target) for gate in gates]

    async def sample(gate: MetricGate, query: str) -> Sample:
        if gate.needs_servers and not target.servers:
            return Sample(error=f"group {target.group} of {target.service} has no servers")
        return await querier.query(query)

    samples = await asyncio.gather(*(sample(g, q) for g, q in zip(gates, queries, strict=True)))
    now = clock()
    return tuple(
        judge(gate, query, found, now=now)
        for gate, query, found in zip(gates, queries, samples, strict=True)
    )
