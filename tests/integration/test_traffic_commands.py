"""`lbsync split` and `lbsync rollout` against real etcd, Consul and HAProxy."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import load
from support.consul import consul_binary, running_agent
from support.etcd import EtcdServer
from support.processes import Backends, HAProxy
from support.site import Site, is_live, running_daemon
from support.traffic import shares, tally
from support.waiting import async_wait_until

from lbsync.daemon import Daemon
from lbsync.sources.etcd import EtcdClient
from lbsync.status import Status

HOST = "shop.example.com"


def instance(port: int, *tags: str, health: str = "passing") -> str:
    return json.dumps({"address": "127.0.0.1", "port": port, "tags": list(tags), "health": health})


async def lbsync(site: Site, *args: str) -> tuple[int, str, str]:
    return await site.lbsync_async(*args)


@dataclass
class Shop:
    site: Site
    client: EtcdClient
    ports: dict[str, int]

    async def get(self, key: str) -> Any:
        found = await self.client.get(f"lbsync/services/shop/{key}")
        return None if found is None else json.loads(found.text)

    async def revision(self) -> int:
        found = await self.client.get("lbsync/services/shop/split")
        return found.mod_revision if found else 0


async def make_shop(
    site: Site, client: EtcdClient, etcd: EtcdServer, ports: dict[str, int]
) -> Shop:
    site.write_config(source=f'[source.etcd]\nendpoints = ["{etcd.url}"]\n')
    await client.put("lbsync/services/shop/route", json.dumps({"hosts": [HOST]}))
    await client.put(
        "lbsync/services/shop/split", json.dumps({"groups": {"blue": 100, "green": 0}})
    )
    for name, port in ports.items():
        await client.put(
            f"lbsync/services/shop/instances/{name}", instance(port, name.split("-")[0])
        )
    return Shop(site, client, ports)


@pytest.fixture
async def shop(tmp_path: Path, etcd: EtcdServer, client: EtcdClient) -> Shop:
    site = Site(root=tmp_path / "site", kind="haproxy", port=9)
    return await make_shop(site, client, etcd, {"blue-1": 9101, "green-1": 9102})


async def test_split_get_shows_target_achieved_and_eligible_per_group(shop: Shop) -> None:
    status, out, err = await lbsync(shop.site, "split", "get", "shop", "--json")
    assert status == 0, err
    answer = json.loads(out)
    groups = {row["group"]: row for row in answer["groups"]}
    assert groups["blue"]["target"] == 100 and groups["blue"]["achieved"] == 100
    assert groups["green"]["eligible"] == 1 and groups["green"]["achieved"] == 0
    assert answer["revision"] == await shop.revision()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "shop", "blue=50", "purple=50"], "unknown group(s) purple"),
        (["set", "shop", "blue=90", "green=30"], "sum to 120"),
        (["set", "shop", "blue=-5", "green=10"], "groups.blue must be between 0 and 100"),
        (["set", "shop", "blue"], "expected GROUP=SHARE"),
        (["set", "nosuch", "blue=100"], "service 'nosuch' does not exist"),
        (["promote", "shop", "purple"], "unknown group purple"),
    ],
    ids=["unknown group", "shares over 100", "negative", "malformed", "no such service", "promote"],
)
async def test_invalid_input_is_refused_and_nothing_is_written(
    shop: Shop, args: list[str], message: str
) -> None:
    before = await shop.revision()
    status, _, err = await lbsync(shop.site, "split", *args)
    assert status == 2
    assert message in err
    assert await shop.revision() == before
    assert await shop.get("split-history") is None


async def test_set_promote_history_and_rollback(shop: Shop) -> None:
    assert (
        await lbsync(shop.site, "split", "set", "shop", "blue=90", "green=10", "--reason", "canary")
    )[0] == 0
    assert (await lbsync(shop.site, "split", "promote", "shop", "green"))[0] == 0
    assert (await shop.get("split"))["groups"] == {"blue": 0, "green": 100}
    status, out, _ = await lbsync(shop.site, "split", "history", "shop")
    assert status == 0 and "canary" in out and out.count("\n") == 2
    assert (await lbsync(shop.site, "split", "rollback", "shop"))[0] == 0
    assert (await shop.get("split"))["groups"] == {"blue": 90, "green": 10}


async def test_two_writers_with_the_same_expected_revision_exactly_one_wins(shop: Shop) -> None:
    revision = str(await shop.revision())
    results = await asyncio.gather(
        lbsync(
            shop.site,
            "split",
            "set",
            "shop",
            "blue=80",
            "green=20",
            "--expect-revision",
            revision,
            "--reason",
            "writer-a",
        ),
        lbsync(
            shop.site,
            "split",
            "set",
            "shop",
            "blue=60",
            "green=40",
            "--expect-revision",
            revision,
            "--reason",
            "writer-b",
        ),
    )
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, _, err in results if code == 1)
    assert ("changed" in loser and "nothing was overwritten" in loser) or "not " + revision in loser
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    expected = [{"blue": 80, "green": 20}, {"blue": 60, "green": 40}][winner]
    assert (await shop.get("split"))["groups"] == expected
    assert (await shop.get("split-history"))[-1]["why"] == ["writer-a", "writer-b"][winner]


async def test_consul_compare_and_swap_lets_exactly_one_writer_win(tmp_path: Path) -> None:
    if consul_binary() is None:
        pytest.fail("consul is not installed: run scripts/install-system.sh --with-test-servers")
    with running_agent(tmp_path / "consul") as agent:
        await agent.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
        await agent.kv_put("lbsync/services/shop/split", {"groups": {"blue": 100}})
        await agent.register("shop", "blue-1", 9101, "blue")
        await agent.register("shop", "green-1", 9102, "green")
        site = Site(root=tmp_path / "site", kind="haproxy", port=9)
        site.write_config(source=f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "2s"\n')
        (entry,) = await agent.call("GET", "/v1/kv/lbsync/services/shop/split")
        index = str(entry["ModifyIndex"])
        results = await asyncio.gather(
            *(
                lbsync(
                    site,
                    "split",
                    "set",
                    "shop",
                    f"blue={100 - n}",
                    f"green={n}",
                    "--expect-revision",
                    index,
                )
                for n in (10, 20)
            )
        )
        assert sorted(code for code, _, _ in results) == [0, 1], results


async def rollout(site: Site, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lbsync",
        "-c",
        str(site.config_path),
        "rollout",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def phase_of(shop: Shop) -> tuple[str | None, Any]:
    record = await shop.get("rollout")
    return (record or {}).get("phase"), (record or {}).get("share")


def at_share(share: float) -> Callable[[str | None, Any], bool]:
    """A phase predicate: the rollout record says it has reached this share."""
    return lambda _phase, current: current == share


async def wait_phase(shop: Shop, wanted: Callable[[str | None, Any], bool], timeout: float) -> None:
    async def reached() -> bool:
        return wanted(*await phase_of(shop))

    await async_wait_until(reached, timeout, "the rollout record to reach a phase")


async def live_with_share(daemon: Daemon, dest: Path, group: str, share: float) -> None:
    """Wait until the daemon applied a split giving `group` this share, and HAProxy runs it."""

    def done(status: Status) -> bool:
        service = status.state.service("shop") if status.state else None
        groups = dict(service.split.groups) if service and service.split else {}
        return groups.get(group) == share and is_live(status, dest)

    await daemon.wait_for(done, 10)


async def test_a_rollout_to_a_healthy_group_follows_each_step_through_haproxy(
    tmp_path: Path,
    etcd: EtcdServer,
    client: EtcdClient,
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[..., Backends],
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "green-1"]).ports
    shop = await make_shop(site, client, etcd, ports)
    site.lbsync("once")
    proxy.start()
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        process = await rollout(
            site, "shop", "--to", "green", "--steps", "20,60,100", "--interval", "2s"
        )
        for share in (20, 60, 100):
            await wait_phase(shop, at_share(share), 15)
            await live_with_share(daemon, site.dest, "green", share)
            measured = shares(await tally(site.port, HOST, 500), {"green": ["green-1"]})
            assert abs(measured["green"] - share) <= 5, (share, measured)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    assert (await shop.get("split"))["groups"] == {"blue": 0, "green": 100}
    assert (await phase_of(shop))[0] == "done"


async def test_a_group_failing_its_health_mid_rollout_reverts_and_exits_non_zero(
    shop: Shop,
) -> None:
    process = await rollout(
        shop.site, "shop", "--to", "green", "--steps", "10,50,100", "--interval", "3s"
    )
    await wait_phase(shop, lambda phase, share: share == 10, 15)
    await shop.client.put(
        "lbsync/services/shop/instances/green-1",
        instance(shop.ports["green-1"], "green", health="critical"),
    )
    assert await asyncio.wait_for(process.wait(), 20) == 1
    assert process.stderr is not None
    assert "fewer than --min-healthy 1" in (await process.stderr.read()).decode()
    assert (await shop.get("split"))["groups"] == {"blue": 100, "green": 0}
    assert (await phase_of(shop))[0] == "reverted"


async def test_a_group_answering_5xx_through_haproxy_reverts(
    etcd: EtcdServer,
    client: EtcdClient,
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[..., Backends],
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "green-1"], statuses={"green-1": 500}).ports
    shop = await make_shop(site, client, etcd, ports)
    site.lbsync("once")
    proxy.start()
    traffic = load.start(site.port, HOST, keepalive=2, fresh=0)
    try:
        async with running_daemon(site.config()):
            process = await rollout(
                site,
                "shop",
                "--to",
                "green",
                "--steps",
                "20,100",
                "--interval",
                "5s",
                "--max-error-rate",
                "0.1",
            )
            assert await asyncio.wait_for(process.wait(), 30) == 1
    finally:
        load.stop(traffic)
    assert process.stderr is not None
    assert "error ratio" in (await process.stderr.read()).decode()
    assert (await shop.get("split"))["groups"] == {"blue": 100, "green": 0}


async def test_pause_resume_and_abort_from_another_process(shop: Shop) -> None:
    process = await rollout(
        shop.site,
        "shop",
        "--to",
        "green",
        "--steps",
        "10,50,100",
        "--interval",
        "1s",
        "--pause-at",
        "50",
    )
    await wait_phase(shop, lambda phase, share: phase == "paused", 15)
    assert (await shop.get("split"))["groups"]["green"] == 10
    status, out, err = await lbsync(shop.site, "rollout", "resume", "shop")
    assert status == 0, err
    assert await asyncio.wait_for(process.wait(), 20) == 0
    assert (await shop.get("split"))["groups"] == {"blue": 0, "green": 100}

    await shop.client.put(
        "lbsync/services/shop/split", json.dumps({"groups": {"blue": 100, "green": 0}})
    )
    process = await rollout(
        shop.site, "shop", "--to", "green", "--steps", "30,100", "--interval", "30s"
    )
    await wait_phase(shop, lambda phase, share: share == 30, 15)
    status, out, err = await lbsync(shop.site, "rollout", "abort", "shop")
    assert status == 0, err
    assert "reverted" in out
    assert await asyncio.wait_for(process.wait(), 20) == 1
    assert (await shop.get("split"))["groups"] == {"blue": 100, "green": 0}
    assert (await phase_of(shop))[0] == "aborted"
