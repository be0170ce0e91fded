"""`lbsync split` and `lbsync rollout` against real etcd, Consul and HAProxy."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.consul import consul_binary, running_agent
from support.etcd import EtcdServer
from support.site import Site
from support.waiting import async_wait_until

from lbsync.kv.etcd import EtcdClient

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
        (["rollout", "shop", "--to", "purple"], "unknown group purple"),
        (["rollout", "shop", "--to", "green", "--steps", "50,20"], "--steps: rising shares"),
        (["rollout", "shop", "--to", "green", "--interval", "soon"], "--interval: must be a"),
        (["rollout", "resume", "shop"], "no rollout of shop is in progress"),
    ],
    ids=[
        "unknown group",
        "shares over 100",
        "negative",
        "malformed",
        "no such service",
        "promote",
        "rollout to an unknown group",
        "rollout with falling steps",
        "rollout with a bad interval",
        "nothing to resume",
    ],
)
async def test_invalid_input_is_refused_and_nothing_is_written(
    shop: Shop, args: list[str], message: str
) -> None:
    before = await shop.revision()
    command = args if args[0] == "rollout" else ["split", *args]
    status, _, err = await lbsync(shop.site, *command)
    assert status == 2
    assert message in err
    assert await shop.revision() == before
    assert await shop.get("split-history") is None
    assert await shop.get("rollout") is None


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


async def test_the_rollout_command_runs_its_steps_and_reports_completion(shop: Shop) -> None:
    """The command line's wiring; the gates, pauses and reverts are in test_rollout.py."""
    status, out, err = await lbsync(
        shop.site, "rollout", "shop", "--to", "green", "--steps", "50,100", "--interval", "0s"
    )
    assert status == 0, err
    assert "step 1/2: green at 50%" in out and "step 2/2: green at 100%" in out
    assert "rollout of shop to green complete" in out
    assert (await shop.get("split"))["groups"] == {"blue": 0, "green": 100}
    assert (await shop.get("rollout"))["phase"] == "done"
    assert [entry["why"] for entry in await shop.get("split-history")] == [
        "rollout to green: 50%",
        "rollout to green: 100%",
    ]


FIRST_STEP = ("rollout", "shop", "--to", "green", "--steps", "10,100", "--interval", "1h")


async def interrupted(
    runner: subprocess.Popen[str], record: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[str, str]:
    """Ctrl-C (SIGINT) to a rollout once it holds its first step: its stdout and stderr."""

    async def at_first_step() -> bool:
        found = await record()
        return found.get("phase") == "running" and found.get("share") == 10

    try:
        await async_wait_until(at_first_step, 20, "the rollout at 10 %")
    finally:
        runner.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(runner.communicate, timeout=60)
    return out, err


async def test_ctrl_c_reverts_the_split_records_aborted_and_exits_1(shop: Shop) -> None:
    async def record() -> dict[str, Any]:
        return dict(await shop.get("rollout") or {})

    runner = shop.site.start_lbsync(*FIRST_STEP)
    out, err = await interrupted(runner, record)
    assert runner.returncode == 1, err
    assert "interrupted; split reverted to where the rollout started" in out
    assert (await shop.get("split"))["groups"] == {"blue": 100, "green": 0}
    assert (await record())["phase"] == "aborted"


async def test_ctrl_c_reverts_a_split_kept_in_consul(tmp_path: Path) -> None:
    if consul_binary() is None:
        pytest.fail("consul is not installed: run scripts/install-system.sh --with-test-servers")
    with running_agent(tmp_path / "consul") as agent:
        await agent.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
        await agent.kv_put("lbsync/services/shop/split", {"groups": {"blue": 100, "green": 0}})
        await agent.register("shop", "blue-1", 9101, "blue")
        await agent.register("shop", "green-1", 9102, "green")
        site = Site(root=tmp_path / "site", kind="haproxy", port=9)
        site.write_config(source=f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "2s"\n')

        async def stored() -> dict[str, Any]:
            entries = await agent.call("GET", "/v1/kv/lbsync/services/shop/?recurse")
            return {
                entry["Key"].rsplit("/", 1)[1]: json.loads(base64.b64decode(entry["Value"]))
                for entry in entries
            }

        async def record() -> dict[str, Any]:
            return dict((await stored()).get("rollout") or {})

        runner = site.start_lbsync(*FIRST_STEP)
        out, err = await interrupted(runner, record)
        assert runner.returncode == 1, err
        assert "split reverted to where the rollout started" in out
        assert (await stored())["split"]["groups"] == {"blue": 100, "green": 0}
        assert (await record())["phase"] == "aborted"
