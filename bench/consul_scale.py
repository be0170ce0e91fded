"""The Consul source at scale: connections held, requests at the agent, payloads, flip latency.

A real Consul dev agent with S exposed services of I instances each (registered through the
catalog API on 100 external nodes, one check per instance, exposed by `lbsync.route=` tags),
and the Consul source in this process. Prints:

- time to the first snapshot and the requests it took;
- the most established connections of this process to the agent (sampled from /proc);
- requests per second at the agent while idle, by kind (the source's own counters);
- for F health flips, one after the other: flip -> snapshot showing it (median, max) and the
  requests each cost;
- one re-registration with a new port and the same check (a sweep: every service read);
- what one wake-up of `/v1/health/state/any` costs (bytes, the agent's time, decoding, lbsync's
  fold), and one `/v1/health/service/<svc>` (bytes, decoding, mapping).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: a real Consul agent, free ports

from support.consul import ConsulAgent, following  # noqa: E402
from support.sockets import established_to  # noqa: E402

from lbsync.config import ConsulSourceConfig  # noqa: E402
from lbsync.model.values import Health, Instance, Snapshot  # noqa: E402
from lbsync.sources.consul import ConsulSource  # noqa: E402
from lbsync.sources.consul.changes import health_state  # noqa: E402
from lbsync.sources.consul.mapping import service_view  # noqa: E402

NODES = 100
_T = TypeVar("_T")


def body(service: int, number: int, *, status: str = "passing", port: int = 0) -> dict[str, Any]:
    node = (service * 7 + number) % NODES
    service_id = f"svc-{service}-{number}"
    return {
        "Node": f"ext-{node}",
        "Address": f"10.3.{node // 250}.{node % 250 + 1}",
        "Service": {
            "Service": f"svc-{service}",
            "ID": service_id,
            "Port": port or 8000 + number,
            "Tags": [f"lbsync.route=svc-{service}.example.com/", "stable"],
            "Meta": {"version": "1.4.2"},
        },
        "Checks": [
            {
                "CheckID": f"service:{service_id}",
                "Name": "http",
                "Status": status,
                "ServiceID": service_id,
                "Output": "HTTP GET http://10.3.0.1:8000/health: 200 OK Output: ok",
            }
        ],
    }


def health_of(snapshot: Snapshot, key: str) -> Health | None:
    entry = dict(snapshot.entries).get(key) if snapshot.usable else None
    return entry.health if isinstance(entry, Instance) else None


def flipped(key: str) -> Callable[[Snapshot], bool]:
    """Whether a snapshot shows this instance critical."""
    return lambda snapshot: health_of(snapshot, key) is Health.CRITICAL


class Sampler:
    """The most connections of this process to one port, every 5 ms while running."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.peak = 0
        self.paused = False  # while the benchmark itself talks to the agent
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            if not self.paused:
                self.peak = max(self.peak, established_to(self.port))
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        kind: after[kind] - before.get(kind, 0)
        for kind in after
        if after[kind] != before.get(kind, 0)
    }


async def fetch(agent: ConsulAgent, path: str) -> tuple[bytes, float]:
    """One answer's bytes and the seconds the agent took to send it."""
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.get(agent.address + path) as reply:
        raw = await reply.read()
    return raw, time.perf_counter() - start


def timed(work: Callable[[], _T], repeat: int = 5) -> tuple[_T, float]:
    """The result of `work` and its median seconds over `repeat` runs."""
    seconds: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


async def payloads(agent: ConsulAgent) -> None:
    """What one wake-up of the health state costs, step by step, and one service's read."""
    raw, served = await fetch(agent, "/v1/health/state/any")
    items, decode = timed(lambda: json.loads(raw))
    _, fold = timed(lambda: health_state(1, items))
    one, one_served = await fetch(agent, "/v1/health/service/svc-1")
    nodes, one_decode = timed(lambda: json.loads(one))
    _, one_map = timed(lambda: service_view("svc-1", nodes))
    print(
        f"/v1/health/state/any: {len(raw) / 1e6:.2f} MB, {len(items):,} checks; served in "
        f"{served * 1000:.0f} ms; json.loads {decode * 1000:.0f} ms, fold {fold * 1000:.0f} ms"
    )
    print(
        f"/v1/health/service/svc-1: {len(one) / 1e3:.1f} kB; served in "
        f"{one_served * 1000:.1f} ms; json.loads {one_decode * 1000:.2f} ms, mapping "
        f"{one_map * 1000:.2f} ms"
    )


async def run(*, services: int, instances: int, flips: int, idle: float) -> None:
    with tempfile.TemporaryDirectory(prefix="lbsync-consul-scale-") as root:
        agent = ConsulAgent(root=Path(root) / "consul")
        agent.start()
        try:
            start = time.perf_counter()
            bodies = [body(s, n) for s in range(services) for n in range(instances)]
            await agent.catalog_register_many(bodies)
            print(
                f"registered {services:,} services x {instances} instances "
                f"({services * instances:,}) in {time.perf_counter() - start:.1f} s"
            )
            await payloads(agent)
            source = ConsulSource(ConsulSourceConfig(addresses=(agent.address,), wait=30.0))
            sampler = Sampler(agent.ports["http"])
            sampler.start()
            total = services * instances
            async with following(source) as snapshots:
                start = time.perf_counter()
                await snapshots.next(
                    lambda s: (
                        s.usable and sum(isinstance(e, Instance) for _, e in s.entries) == total
                    ),
                    600,
                    "every instance",
                )
                print(
                    f"first snapshot: {time.perf_counter() - start:.1f} s, requests "
                    f"{dict(source.requests.items())}"
                )
                before = dict(source.requests.items())
                await asyncio.sleep(idle)  # an observation window: nothing changes
                idle_counts = deltas(before, dict(source.requests.items()))
                rate = sum(idle_counts.values()) / idle
                print(f"idle {idle:.0f} s: {rate:.2f} requests/s {idle_counts}")

                latencies: list[float] = []
                costs: list[int] = []
                for flip in range(flips):
                    service, number = (flip * 37) % services, flip % instances
                    key = f"services/svc-{service}/instances/svc-{service}-{number}"
                    status = "critical"
                    before = dict(source.requests.items())
                    start = time.perf_counter()
                    sampler.paused = True
                    await agent.catalog_register_many([body(service, number, status=status)])
                    sampler.paused = False
                    await snapshots.next(flipped(key), 60, key)
                    latencies.append(time.perf_counter() - start)
                    cost = deltas(before, dict(source.requests.items()))
                    costs.append(cost.get("health-service", 0))
                median = statistics.median(latencies) * 1000
                print(
                    f"{flips} flips: flip -> snapshot median {median:.0f} ms, "
                    f"max {max(latencies) * 1000:.0f} ms; health-service reads per flip "
                    f"median {statistics.median(costs):.0f}, max {max(costs)}"
                )

                before = dict(source.requests.items())
                start = time.perf_counter()
                sampler.paused = True
                await agent.catalog_register_many([body(3, 0, port=9999)])
                sampler.paused = False
                key = "services/svc-3/instances/svc-3-0"
                await snapshots.next(
                    lambda s: getattr(dict(s.entries).get(key), "port", None) == 9999, 120, key
                )
                elapsed = time.perf_counter() - start
                cost = deltas(before, dict(source.requests.items()))
                print(
                    f"re-registration (new port, same check): {elapsed:.1f} s to the snapshot, "
                    f"{cost.get('health-service', 0) / elapsed:.0f} requests/s during it {cost}"
                )
            sampler.stop()
            print(f"connections held to the agent, most seen: {sampler.peak}")
        finally:
            agent.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    print(f"lbsync Consul scale benchmark: Python {sys.version.split()[0]}")
    asyncio.run(
        run(services=args.services, instances=args.instances, flips=args.flips, idle=args.idle)
    )


if __name__ == "__main__":
    main()
