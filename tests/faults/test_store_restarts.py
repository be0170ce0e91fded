"""etcd and Consul each killed (SIGKILL) and restarted ten times while writes go on, with HAProxy
under load: afterwards the rendered configuration holds what the store holds (no update lost)
and not one request failed meanwhile."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faults.figures import Figures
from support import load
from support.consul import ConsulAgent
from support.etcd import PROGRESS_EVERY_SECOND, EtcdServer
from support.processes import Backends, HAProxy
from support.servicesfile import instance
from support.site import Site, is_live, running_daemon, until_status

from lbsync.daemon.daemon import Daemon
from lbsync.daemon.status import Status
from lbsync.kv.etcd import EtcdClient, EtcdError

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

HOST = "shop.example.com"
RESTARTS = 10
WAIT = 30.0


@dataclass
class Store:
    """One store under test: how to write it, kill it and start it again."""

    name: str
    source: str  # the [source.*] table for lbsync.toml
    put: Callable[[str, str], Awaitable[None]]  # relative key, JSON text; raises when down
    get: Callable[[str], Awaitable[str | None]]
    kill: Callable[[], None]
    start: Callable[[], Awaitable[None]]
    acked: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def etcd_store(root: Path, ports: dict[str, int]) -> AsyncIterator[Store]:
    server = EtcdServer(root=root / "etcd", extra_args=PROGRESS_EVERY_SECOND)
    server.start()
    async with EtcdClient([server.url], request_timeout=1) as client:

        async def put(key: str, text: str) -> None:
            await client.put("lbsync/" + key, text)

        async def get(key: str) -> str | None:
            found = await client.get("lbsync/" + key)
            return None if found is None else found.text

        async def start() -> None:
            await asyncio.to_thread(server.start)

        store = Store(
            name="etcd",
            source=f'[source.etcd]\nendpoints = ["{server.url}"]\nidle_timeout = "5s"\n',
            put=put,
            get=get,
            kill=server.kill,
            start=start,
        )
        await put("services/shop/route", json.dumps({"hosts": [HOST]}))
        for name, port in ports.items():
            value = json.dumps(instance(port, name.split("-")[0]))
            await put(f"services/shop/instances/{name}", value)
        try:
            yield store
        finally:
            server.stop()


@asynccontextmanager
async def consul_store(root: Path, ports: dict[str, int]) -> AsyncIterator[Store]:
    agent = ConsulAgent(root=root / "consul", persistent=True)
    await asyncio.to_thread(agent.start)

    async def put(key: str, text: str) -> None:
        await agent.kv_put("lbsync/" + key, text)

    async def get(key: str) -> str | None:
        found = await agent.call("GET", f"/v1/kv/lbsync/{key}?raw")
        return None if found is None else json.dumps(found)

    store = Store(
        name="consul",
        source=f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "5s"\n',
        put=put,
        get=get,
        kill=agent.stop,
        start=agent.start_async,
    )
    await put("services/shop/route", json.dumps({"hosts": [HOST]}))
    for name, port in ports.items():
        # No TTL check: a restarted agent makes TTL checks critical until the service updates
        # them again, which is Consul telling the truth, not lbsync losing anything.
        await agent.register("shop", name, port, name.split("-")[0], ttl_check=False)
    try:
        yield store
    finally:
        agent.stop()


STORES: dict[str, Callable[[Path, dict[str, int]], Any]] = {
    "etcd": etcd_store,
    "consul": consul_store,
}


def split_value(n: int) -> str:
    """A split that always leaves both groups some traffic, so every request has a server."""
    blue = 10 + (n * 7) % 81
    return json.dumps({"groups": {"blue": blue, "green": 100 - blue}})


async def keep_writing(store: Store, stop: asyncio.Event, rng: random.Random) -> int:
    """Write the split and a counter setting until stopped; remember what the store took."""
    writes = 0
    while not stop.is_set():
        writes += 1
        for key, text in (
            ("services/shop/split", split_value(writes)),
            ("settings/writes", json.dumps(writes)),
        ):
            try:
                await store.put(key, text)
            except (EtcdError, AssertionError, OSError, TimeoutError):
                continue  # the store is down: not taken, nothing to remember
            store.acked[key] = text
        await asyncio.sleep(rng.uniform(0.01, 0.05))  # pacing the writer
    return writes


def applied(status: Status, key: str) -> str | None:
    """The value of a key in the daemon's applied desired state, as JSON text."""
    state = status.state
    if state is None:
        return None
    if key == "settings/writes":
        return next((s.json_text for s in state.settings if s.key == "writes"), None)
    service = state.service("shop")
    if service is None or service.split is None:
        return None
    return json.dumps({"groups": {name: round(share) for name, share in service.split.groups}})


async def restart_repeatedly(store: Store, daemon: Daemon) -> int:
    """Kill the store and start it again, each time until lbsync saw it gone and back."""
    for _ in range(RESTARTS):
        store.kill()
        await daemon.wait_for(lambda s: not s.sources[0].usable, WAIT)
        await store.start()
        await daemon.wait_for(lambda s: s.sources[0].usable, WAIT)
    return RESTARTS


@pytest.mark.parametrize("kind", sorted(STORES))
async def test_a_store_restarted_ten_times_loses_no_update_and_haproxy_serves_throughout(
    tmp_path: Path,
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    figures: Figures,
    kind: str,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "blue-2", "green-1"]).ports
    async with STORES[kind](tmp_path, ports) as store:
        await store.put("services/shop/split", split_value(0))
        site.write_config(source=store.source)
        site.lbsync("once")
        proxy.start()
        traffic = load.start(site.port, HOST, keepalive=4, fresh=2)
        stop = asyncio.Event()
        try:
            async with running_daemon(site.config()) as daemon:
                await daemon.wait_for(lambda s: s.ready, WAIT)
                writer = asyncio.create_task(keep_writing(store, stop, random.Random(5)))
                restarts = await restart_repeatedly(store, daemon)
                stop.set()
                await writer
                held = {key: await store.get(key) for key in store.acked}

                def caught_up(status: Status) -> bool:
                    in_state = all(applied(status, k) == v for k, v in held.items())
                    return in_state and is_live(status, site.dest)

                try:
                    status = await until_status(daemon, caught_up, WAIT)
                except TimeoutError:
                    status = daemon.status  # counted below: what never arrived is lost
                lost = sum(applied(status, key) != text for key, text in held.items())
        finally:
            tally = load.stop(traffic)
    figures.add(
        f"{kind} restarted under load",
        faults_injected=restarts,
        updates_lost=lost,
        failed_requests=tally["failed"],
        requests=tally["requests"],
    )
    assert held and all(text is not None for text in held.values())
    assert lost == 0
    assert tally["requests"] > 0 and tally["failed"] == 0, tally
