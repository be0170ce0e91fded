"""Write to etcd or Consul -> configuration written: how long a change takes to reach the file.

A real etcd or Consul agent, lbsync's daemon (`apply.min_wait = 0`) with one target, and N
sequential changes, each waited for: the time from the store's answer to the end of the cycle
that wrote the file (the daemon publishes its status right after writing). Changes:

- `etcd put` / `consul kv put`: the split's share changes, so every server's weight changes;
- `consul health`: one instance's TTL check flips between critical and passing.

Targets: `haproxy` (each file validated by `haproxy -c`, as in production; reload `none`) and
`generic` (no validator: the source and the pipeline alone).

`consul restart`: the Consul source (blocking wait 30 s) follows an agent that is restarted
(its index starts again near 1); the time from the first write after the restart to the
source's snapshot holding it. Without the index reset that write would wait out the 30 s.
Run: `python bench/propagation.py [--changes 200] [--restarts 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: real etcd and Consul, free ports

from support.consul import ConsulAgent, following  # noqa: E402
from support.etcd import EtcdServer  # noqa: E402
from support.site import running_daemon  # noqa: E402

from lbsync.config import ConsulSourceConfig, load  # noqa: E402
from lbsync.daemon.status import Status  # noqa: E402
from lbsync.kv.etcd import EtcdClient  # noqa: E402
from lbsync.model.values import Health, Snapshot  # noqa: E402
from lbsync.sources.consul import ConsulSource  # noqa: E402

RESTART_WAIT = 30.0

GENERIC_TEMPLATE = (
    "{% for s in all_services %}{% for x in s.servers %}{{ x.name }} {{ x.endpoint }} "
    "{{ x.weight }}\n{% endfor %}{% endfor %}"
)
ROUTE = {"hosts": ["shop.example.com"]}

# A change: makes the write for step n and returns the condition its cycle is done on.
Change = Callable[[int], Awaitable[Callable[[Status], bool]]]


def split_share(n: int) -> float:
    return float(1 + n % 98)


def split_applied(share: float) -> Callable[[Status], bool]:
    def done(status: Status) -> bool:
        service = status.state.service("shop") if status.state else None
        return bool(service and service.split and service.split.groups == (("a", share),))

    return done


@asynccontextmanager
async def etcd_store(root: Path) -> AsyncIterator[tuple[str, Change]]:
    etcd = EtcdServer(root=root / "etcd")
    etcd.start()
    try:
        async with EtcdClient([etcd.url]) as client:
            await client.put("lbsync/services/shop/route", json.dumps(ROUTE))
            for n in range(3):
                tags = ["a"] if n == 0 else []
                value = {"address": "127.0.0.1", "port": 9000 + n, "tags": tags}
                await client.put(f"lbsync/services/shop/instances/i{n}", json.dumps(value))

            async def change(n: int) -> Callable[[Status], bool]:
                share = split_share(n)
                await client.put("lbsync/services/shop/split", json.dumps({"groups": {"a": share}}))
                return split_applied(share)

            yield f'[source.etcd]\nendpoints = ["{etcd.url}"]\n', change
    finally:
        etcd.stop()


@asynccontextmanager
async def consul_store(root: Path, health: bool) -> AsyncIterator[tuple[str, Change]]:
    agent = ConsulAgent(root=root / "consul")
    agent.start()
    try:
        await agent.kv_put("lbsync/services/shop/route", ROUTE)
        for n in range(3):
            await agent.register("shop", f"i{n}", 9000 + n, *(["a"] if n == 0 else []))

        async def kv_change(n: int) -> Callable[[Status], bool]:
            share = split_share(n)
            await agent.kv_put("lbsync/services/shop/split", {"groups": {"a": share}})
            return split_applied(share)

        async def health_change(n: int) -> Callable[[Status], bool]:
            healthy = n % 2 == 1
            await agent.set_check("i0", "passing" if healthy else "critical")
            wanted = Health.PASSING if healthy else Health.CRITICAL

            def done(status: Status) -> bool:
                service = status.state.service("shop") if status.state else None
                servers = {s.instance_id: s for s in service.servers} if service else {}
                return "i0" in servers and servers["i0"].health is wanted

            return done

        source = f'[source.consul]\naddresses = ["{agent.address}"]\n'
        yield source, health_change if health else kv_change
    finally:
        agent.stop()


def write_config(root: Path, source: str, kind: str) -> Path:
    target = f'[[target]]\nkind = "{kind}"\ndest = "{root / "out.cfg"}"\n'
    if kind == "generic":
        (root / "t.j2").write_text(GENERIC_TEMPLATE)
        target += f'template = "{root / "t.j2"}"\n'
    else:
        target += '[target.vars]\nbind = ["127.0.0.1:1"]\n'
    path = root / "lbsync.toml"
    path.write_text(
        f'{source}\n[apply]\nmin_wait = "0ms"\nmax_wait = "1s"\n\n[api]\nlisten = ""\n\n{target}'
    )
    return path


async def measure(scenario: str, kind: str, changes: int) -> list[float]:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        store = (
            etcd_store(root)
            if scenario == "etcd put"
            else consul_store(root, health=scenario == "consul health")
        )
        async with store as (source, change):
            config = load(write_config(root, source, kind), environ={})
            latencies = []
            async with running_daemon(config) as daemon:
                await daemon.wait_for(lambda status: status.ready, 20)
                for n in range(changes):
                    done = await change(n)
                    written = time.perf_counter()
                    await daemon.wait_for(done, 10)
                    latencies.append(time.perf_counter() - written)
            return latencies


async def after_restarts(restarts: int) -> list[float]:
    """Seconds from the first write after each agent restart to the source seeing it."""
    with tempfile.TemporaryDirectory() as directory:
        agent = ConsulAgent(root=Path(directory) / "consul")
        agent.start()
        latencies = []
        try:
            for number in range(40):  # an index before the restart well above the one after
                await agent.kv_put("lbsync/noise", str(number))
            config = ConsulSourceConfig(addresses=(agent.address,), wait=RESTART_WAIT)
            async with following(ConsulSource(config)) as snapshots:
                await snapshots.next(lambda s: ("noise", "39") in s.raw, 10, "the noise key")
                for restart in range(restarts):
                    agent.stop()
                    await snapshots.next(lambda s: not s.usable, 10, "the agent down")
                    await agent.start_async()
                    marker = ("marker", f"after-{restart}")
                    await agent.kv_put("lbsync/marker", marker[1])
                    written = time.perf_counter()

                    def seen(snapshot: Snapshot, wanted: tuple[str, str] = marker) -> bool:
                        return wanted in snapshot.raw

                    await snapshots.next(seen, RESTART_WAIT, "the marker")
                    latencies.append(time.perf_counter() - written)
        finally:
            agent.stop()
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--restarts", type=int, default=5)
    arguments = parser.parse_args()
    print(f"write -> configuration written, {arguments.changes} sequential changes, ms")
    print(f"{'change':15} {'target':8} {'median':>7} {'p99':>7} {'max':>7}")
    for scenario in ("etcd put", "consul kv put", "consul health") if arguments.changes else ():
        for kind in ("generic", "haproxy"):
            latencies = sorted(asyncio.run(measure(scenario, kind, arguments.changes)))
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            print(
                f"{scenario:15} {kind:8} {statistics.median(latencies) * 1000:7.1f} "
                f"{p99 * 1000:7.1f} {latencies[-1] * 1000:7.1f}"
            )
    if arguments.restarts:
        seen = sorted(asyncio.run(after_restarts(arguments.restarts)))
        print(
            f"{'consul restart':15} {'source':8} {statistics.median(seen) * 1000:7.1f} "
            f"{'':>7} {seen[-1] * 1000:7.1f}   ({len(seen)} restarts, blocking wait "
            f"{RESTART_WAIT:g} s)"
        )


if __name__ == "__main__":
    main()
