"""Failover between datacenters: two real Consul dev agents federated over the WAN on loopback,
one lbsync reading the local one with `datacenters = ["dc1", "dc2"]`, a real HAProxy (and
nginx). The other datacenter's instances are backup servers: failing every local check moves
the traffic there under load with no failed request and no reload, and recovering moves it
back."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import load
from support.consul import ConsulAgent, federated_agents
from support.processes import Backends, HAProxy, Nginx
from support.site import Site, running_daemon, until_live
from support.traffic import shares, tally

HOST = "shop.example.com"
LOCAL = {"blue": ["dc1-blue-1", "dc1-blue-2"], "green": ["dc1-green-1"]}
REMOTE = {"blue": ["dc2-blue-1", "dc2-blue-2"], "green": ["dc2-green-1"]}
LOCAL_NAMES = [name for members in LOCAL.values() for name in members]
REMOTE_NAMES = [name for members in REMOTE.values() for name in members]


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[list[ConsulAgent]]:
    """dc1 (local) and dc2, each one dev agent, joined over the WAN."""
    with federated_agents(tmp_path / "consul") as agents:
        yield agents


def consul_toml(agent: ConsulAgent) -> str:
    return (
        f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "5s"\n'
        'datacenters = ["dc1", "dc2"]\n'
    )


async def register_shop(
    dc1: ConsulAgent, dc2: ConsulAgent, backends: Callable[[list[str]], Backends]
) -> None:
    """The shop in both datacenters, its route and 80/20 split in dc1's KV."""
    await dc1.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
    await dc1.kv_put("lbsync/services/shop/split", {"groups": {"blue": 80, "green": 20}})
    for agent, names in ((dc1, LOCAL_NAMES), (dc2, REMOTE_NAMES)):
        for name, port in backends(names).ports.items():
            await agent.register("shop", name, port, name.split("-")[1])


async def start_shop(
    site: Site,
    proxy: HAProxy | Nginx,
    backends: Callable[[list[str]], Backends],
    federation: list[ConsulAgent],
) -> str:
    """Register the shop, render its first file with `lbsync once`, start the proxy on it;
    the file's text."""
    dc1, dc2 = federation
    await register_shop(dc1, dc2, backends)
    site.write_config(source=consul_toml(dc1))
    result = site.lbsync("once")
    assert site.dest.exists(), result.stderr
    proxy.start()
    return site.dest.read_text()


def weights(text: str, marker: str) -> list[int]:
    """The weights of the server lines whose name contains `marker`."""
    return [
        int(found.group(1))
        for found in re.finditer(
            rf"^    server \S*{re.escape(marker)}\S* \S+ weight (\d+)", text, re.MULTILINE
        )
    ]


async def test_failing_every_local_check_moves_traffic_to_dc2_under_load_without_a_reload(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    federation: list[ConsulAgent],
) -> None:
    site, proxy = haproxy_site
    dc1, dc2 = federation
    text = await start_shop(site, proxy, backends, federation)
    assert "option allbackups" in text
    assert len(re.findall(r"^    server \S+ \S+ weight \d+ backup", text, re.MULTILINE)) == 3
    measured = shares(await tally(site.port, HOST, 2000), {**LOCAL, "dc2": REMOTE_NAMES})
    assert measured["dc2"] == 0 and abs(measured["green"] - 20) <= 3, measured

    async with running_daemon(site.config()) as daemon:
        status = await daemon.wait_for(lambda s: s.ready, 15)
        assert status.state is not None
        shop = status.state.service("shop")
        assert shop is not None and shop.serving_datacenter == "dc1"
        assert {server.datacenter for server in shop.servers if server.backup} == {"dc2"}
        workers = proxy.worker_pids()
        running = load.start(site.port, HOST, keepalive=4, fresh=2)
        try:
            for name in LOCAL_NAMES:
                await dc1.set_check(name, "critical")
            await until_live(
                daemon, site.dest, lambda text: weights(text, "dc1-") == [0, 0, 0], timeout=15
            )
            state = daemon.status.state
            assert state is not None
            failed_over = state.service("shop")
            assert failed_over is not None and failed_over.serving_datacenter == "dc2"
            counts = await tally(site.port, HOST, 2000)
            assert sum(counts[name] for name in REMOTE_NAMES) == 2000, counts
            measured = shares(counts, REMOTE)  # the split applies inside the serving datacenter
            assert abs(measured["green"] - 20) <= 3, measured

            for name in LOCAL_NAMES:
                await dc1.set_check(name, "passing")
            await until_live(
                daemon, site.dest, lambda text: 0 not in weights(text, "dc1-"), timeout=15
            )
            counts = await tally(site.port, HOST, 1000)
            assert sum(counts[name] for name in LOCAL_NAMES) == 1000, counts

            # a backup joining is added through the runtime API too, `backup` and all
            port = backends(["dc2-blue-3"]).ports["dc2-blue-3"]
            await dc2.register("shop", "dc2-blue-3", port, "blue")
            await until_live(daemon, site.dest, lambda text: weights(text, "dc2-blue-3") != [])
            assert re.search(
                r"server \S*dc2-blue-3\S* \S+ weight \d+ backup", site.dest.read_text()
            )
        finally:
            tallied = load.stop(running)
        print(
            f"failover and back under load: {tallied['requests']} requests, "
            f"{tallied['failed']} failed, bodies {tallied['bodies']}"
        )
        assert tallied["requests"] > 100 and tallied["failed"] == 0, tallied
        assert proxy.worker_pids() == workers  # no reload: weights through the runtime API
        assert set(tallied["bodies"]) >= {"dc1-blue-1", "dc2-blue-1"}, tallied["bodies"]


async def test_a_datacenter_out_of_reach_is_reported_and_the_local_one_keeps_serving(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    federation: list[ConsulAgent],
) -> None:
    site, proxy = haproxy_site
    dc1, dc2 = federation
    await start_shop(site, proxy, backends, federation)
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda s: s.ready, 15)
        before = site.dest.read_bytes()
        dc2.stop()
        status = await daemon.wait_for(
            lambda s: any("consul datacenter dc2" in r for r in s.sources[0].rejected), 30
        )
        assert status.sources[0].usable
        refusal = next(r for r in status.sources[0].rejected if "datacenter dc2" in r)
        assert "kept as backups" in refusal, refusal
        await dc1.set_check("dc1-green-1", "critical")  # a local change still applies
        await until_live(
            daemon, site.dest, lambda text: weights(text, "dc1-green-1") == [0], timeout=15
        )
        assert weights(site.dest.read_text(), "dc2-") == weights(before.decode(), "dc2-")
        counts = await tally(site.port, HOST, 500)
    assert sum(counts[name] for name in LOCAL["blue"]) == 500, counts


async def test_nginx_fails_over_to_dc2_and_back(
    nginx_site: tuple[Site, Nginx],
    backends: Callable[[list[str]], Backends],
    federation: list[ConsulAgent],
) -> None:
    site, proxy = nginx_site
    dc1, _ = federation
    text = await start_shop(site, proxy, backends, federation)
    assert len(re.findall(r"^\s+server \S+ weight=\d+ backup;", text, re.M)) == 3
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda s: s.ready, 15)
        counts = await tally(site.port, HOST, 300)
        assert sum(counts[name] for name in LOCAL_NAMES) == 300, counts
        workers = proxy.worker_pids()
        for name in LOCAL_NAMES:
            await dc1.set_check(name, "critical")

        def all_local_down(text: str) -> bool:
            primaries = re.findall(r"^\s+server (\S+)( down|[^;]*);$", text, re.M)
            return sum(1 for _, rest in primaries if rest == " down") == 3

        await until_live(daemon, site.dest, all_local_down, timeout=15)
        await asyncio.to_thread(proxy.wait_for_new_workers, workers)
        counts = await tally(site.port, HOST, 300)
        assert sum(counts[name] for name in REMOTE_NAMES) == 300, counts
        workers = proxy.worker_pids()
        for name in LOCAL_NAMES:
            await dc1.set_check(name, "passing")
        await until_live(daemon, site.dest, lambda text: " down;" not in text, timeout=15)
        await asyncio.to_thread(proxy.wait_for_new_workers, workers)
        counts = await tally(site.port, HOST, 300)
    assert sum(counts[name] for name in LOCAL_NAMES) == 300, counts
