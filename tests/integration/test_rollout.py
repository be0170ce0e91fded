"""Rollouts against a real etcd, a real HAProxy and the daemon, on a fake clock.

The rollout's own waits (intervals, control polls) run on this test's event loop, where
looptime makes them instant; everything it talks to (etcd, the sources it follows, HAProxy's
counters, the daemon that applies each step) runs on a real-time loop in a thread
(`support.realtime`). So intervals of minutes cost no real waiting, and no request in flight
ever sees the fake clock jump.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import load
from support.etcd import EtcdServer
from support.processes import Backends, HAProxy
from support.realtime import RealTime, StatsThere, StoreThere, real_time
from support.servicesfile import services_toml
from support.site import Site, is_live, until_status
from support.traffic import shares, tally
from support.waiting import async_wait_until

from lbsync.cli.progress import Progress
from lbsync.config import Config
from lbsync.daemon.daemon import Daemon
from lbsync.daemon.status import Status
from lbsync.haproxy.stats import StatsReader
from lbsync.kv.etcd import EtcdClient
from lbsync.kv.store import EtcdStore, StoreError
from lbsync.sources.build import sources_for
from lbsync.sources.follow import Following, SourceUnusable
from lbsync.traffic.rollout.driver import Rollout
from lbsync.traffic.rollout.gates import GateFailed
from lbsync.traffic.rollout.inputs import FollowedStates
from lbsync.traffic.rollout.record import Aborted, request
from lbsync.traffic.rollout.spec import Phase, RolloutSpec
from lbsync.traffic.splits import SplitError

pytestmark = pytest.mark.looptime

HOST = "shop.example.com"
START = {"blue": 100, "green": 0}
FOREVER = 3600.0  # an interval no step outlasts in these tests: a gate or an operator ends it
WAIT = 20.0  # seconds of real time for a condition to hold


def instance(port: int, tags: list[str], meta: dict[str, str], health: str) -> str:
    value = {"address": "127.0.0.1", "port": port, "tags": tags, "meta": meta, "health": health}
    return json.dumps(value)


@dataclass
class Shop:
    """The shop service in a real etcd, with everything that reads it living on `there`."""

    there: RealTime
    site: Site
    config: Config
    client: EtcdClient
    store: EtcdStore
    following: Following
    ports: dict[str, int]
    by: str

    async def get(self, key: str) -> Any:
        found = await self.there.call(self.client.get(f"lbsync/services/shop/{key}"))
        return None if found is None else json.loads(found.text)

    async def put_instance(self, name: str, *, health: str = "passing") -> None:
        group = name.split("-")[0]
        tags, meta = ([group], {}) if self.by == "tag" else ([], {"version": VERSIONS[group]})
        value = instance(self.ports[name], tags, meta, health)
        await self.there.call(self.client.put(f"lbsync/services/shop/instances/{name}", value))

    async def record(self) -> dict[str, Any]:
        return dict(await self.get("rollout") or {})

    async def until_record(self, wanted: Callable[[dict[str, Any]], bool], what: str) -> None:
        async def reached() -> bool:
            return wanted(await self.record())

        await async_wait_until(reached, WAIT, what)

    def rollout(self, spec: RolloutSpec, output: io.StringIO) -> Rollout:
        """The rollout, driven from this test's loop, its store and gates on the real loop."""
        return Rollout(
            spec=spec,
            store=StoreThere(self.store, self.there),
            states=FollowedStates(self.following, self.config.health_mode),
            stats=StatsThere(StatsReader(self.config), self.there),
            progress=Progress(output, interactive=False),
        )


VERSIONS = {"blue": "1.4", "green": "1.5"}


@asynccontextmanager
async def shop_in(
    site: Site,
    etcd: EtcdServer,
    ports: dict[str, int],
    *,
    by: str = "tag",
    instances_in: Path | None = None,
) -> AsyncIterator[Shop]:
    """The shop written to etcd: blue at 100 %, green (or version 1.5) at 0 %; its instances
    in etcd too, or in a services file at `instances_in` (a second source)."""
    source = f'[source.etcd]\nendpoints = ["{etcd.url}"]\n'
    if instances_in is not None:
        instances_in.parent.mkdir(parents=True, exist_ok=True)
        found = {
            name: {"address": "127.0.0.1", "port": port, "tags": [name.split("-")[0]]}
            for name, port in ports.items()
        }
        instances_in.write_text(services_toml({"shop": {"instances": found}}))
        source += f'[source.file]\npath = "{instances_in}"\n'
    site.write_config(source=source)
    config = site.config()
    groups = {"blue": 100, "green": 0} if by == "tag" else {"1.4": 100, "1.5": 0}
    with real_time() as there:
        client = EtcdClient([etcd.url], request_timeout=3)
        await there.call(client.__aenter__())
        following = Following(sources_for(config))
        try:
            route, split = json.dumps({"hosts": [HOST]}), json.dumps({"by": by, "groups": groups})
            await there.call(client.put("lbsync/services/shop/route", route))
            await there.call(client.put("lbsync/services/shop/split", split))
            shop = Shop(
                there, site, config, client, EtcdStore(client, "lbsync/"), following, ports, by
            )
            for name in ports if instances_in is None else ():
                await shop.put_instance(name)
            await there.call(following.__aenter__())
            yield shop
        finally:
            await there.call(following.__aexit__(None, None, None))
            await there.call(client.__aexit__(None, None, None))


@asynccontextmanager
async def daemon_in(shop: Shop) -> AsyncIterator[Daemon]:
    """lbsync's daemon for the shop, running on the real-time loop."""

    async def start() -> tuple[Daemon, Callable[[], None], asyncio.Task[None]]:
        daemon = Daemon(shop.config)
        stop = asyncio.Event()
        return daemon, stop.set, asyncio.create_task(daemon.run(stop))

    daemon, stop, task = await shop.there.call(start())
    try:
        await shop.there.call(daemon.wait_for(lambda status: status.ready, WAIT))
        yield daemon
    finally:
        shop.there.loop.call_soon_threadsafe(stop)
        await shop.there.call(asyncio.wait_for(task, 15))


async def live_with_share(shop: Shop, daemon: Daemon, group: str, share: float) -> None:
    """Wait until the daemon applied a split giving `group` this share, and HAProxy runs it."""

    def done(status: Status) -> bool:
        service = status.state.service("shop") if status.state else None
        groups = dict(service.split.groups) if service and service.split else {}
        return groups.get(group) == share and is_live(status, shop.site.dest)

    await shop.there.call(until_status(daemon, done, WAIT))


def paused(before: float) -> Callable[[dict[str, Any]], bool]:
    """A record predicate: the rollout is paused before this share."""
    return lambda record: record.get("phase") == "paused" and record.get("share") == before


async def started_haproxy(shop: Shop, proxy: HAProxy) -> None:
    """The first file written by `lbsync once`, then HAProxy started on it."""
    await shop.there.call(shop.site.lbsync_async("once"))
    proxy.start()


async def test_a_rollout_to_a_healthy_group_follows_each_step_through_haproxy(
    etcd: EtcdServer, haproxy_site: tuple[Site, HAProxy], backends: Callable[..., Backends]
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "green-1"]).ports
    async with shop_in(site, etcd, ports) as shop:
        await started_haproxy(shop, proxy)
        async with daemon_in(shop) as daemon:
            # pausing before each later step holds the earlier one in force while it is measured
            spec = RolloutSpec(
                service="shop", to="green", steps=(20, 60, 100), interval=60, pause_at=(60, 100)
            )
            task = asyncio.create_task(shop.rollout(spec, io.StringIO()).run())
            for share, paused_before in ((20, 60), (60, 100), (100, None)):
                if paused_before is not None:
                    await shop.until_record(paused(paused_before), f"paused before {paused_before}")
                else:
                    await task
                await live_with_share(shop, daemon, "green", share)
                counted = await shop.there.call(tally(site.port, HOST, 500))
                measured = shares(counted, {"green": ["green-1"]})
                assert abs(measured["green"] - share) <= 5, (share, measured)
                if paused_before is not None:
                    assert await shop.there.call(request(shop.store, "shop", Phase.RUNNING)) == (
                        "resumed"
                    )
        assert (await shop.get("split"))["groups"] == {"blue": 0, "green": 100}
        assert (await shop.record())["phase"] == "done"


@pytest.fixture
async def quiet_shop(etcd: EtcdServer, haproxy_site: tuple[Site, HAProxy]) -> AsyncIterator[Shop]:
    """The shop in etcd with no HAProxy running: for what the rollout record shows."""
    async with shop_in(haproxy_site[0], etcd, {"blue-1": 9101, "green-1": 9102}) as shop:
        yield shop


async def test_a_group_failing_its_health_mid_rollout_reverts(quiet_shop: Shop) -> None:
    shop = quiet_shop
    spec = RolloutSpec(service="shop", to="green", steps=(10, 50, 100), interval=FOREVER)
    output = io.StringIO()
    task = asyncio.create_task(shop.rollout(spec, output).run())
    await shop.until_record(lambda r: r.get("share") == 10, "the rollout at 10 %")
    await shop.put_instance("green-1", health="critical")
    with pytest.raises(GateFailed, match="fewer than --min-healthy 1"):
        await task
    assert (await shop.get("split"))["groups"] == {"blue": 100, "green": 0}
    assert (await shop.record())["phase"] == "reverted"
    assert "split reverted to where the rollout started" in output.getvalue()


@pytest.mark.parametrize(
    ("by", "to"),
    [("tag", "green"), ("meta:version", "1.5")],
    ids=["a group by tag", "a group by meta:version"],
)
async def test_a_group_answering_5xx_through_haproxy_reverts(
    etcd: EtcdServer,
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[..., Backends],
    by: str,
    to: str,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "green-1"], statuses={"green-1": 500}).ports
    async with shop_in(site, etcd, ports, by=by) as shop:
        await started_haproxy(shop, proxy)
        traffic = load.start(site.port, HOST, keepalive=2, fresh=0)
        try:
            async with daemon_in(shop):
                spec = RolloutSpec(
                    service="shop", to=to, steps=(20, 100), interval=300, max_error_rate=0.1
                )
                with pytest.raises(GateFailed, match="error ratio"):
                    await shop.rollout(spec, io.StringIO()).run()
        finally:
            load.stop(traffic)
        groups = {"blue": 100, "green": 0} if by == "tag" else {"1.4": 100, "1.5": 0}
        assert (await shop.get("split"))["groups"] == groups
        assert (await shop.record())["phase"] == "reverted"


async def test_pause_resume_and_abort_from_another_process(quiet_shop: Shop) -> None:
    shop, site = quiet_shop, quiet_shop.site
    spec = RolloutSpec(service="shop", to="green", steps=(10, 50, 100), interval=60, pause_at=(50,))
    task = asyncio.create_task(shop.rollout(spec, io.StringIO()).run())
    await shop.until_record(lambda r: r.get("phase") == "paused", "the rollout paused")
    assert (await shop.get("split"))["groups"]["green"] == 10
    status, _, err = await shop.there.call(site.lbsync_async("rollout", "resume", "shop"))
    assert status == 0, err
    await task
    assert (await shop.get("split"))["groups"] == {"blue": 0, "green": 100}

    reset = json.dumps({"groups": {"blue": 100, "green": 0}})
    await shop.there.call(shop.client.put("lbsync/services/shop/split", reset))
    spec = RolloutSpec(service="shop", to="green", steps=(30, 100), interval=FOREVER)
    task = asyncio.create_task(shop.rollout(spec, io.StringIO()).run())
    await shop.until_record(lambda r: r.get("share") == 30, "the rollout at 30 %")
    status, out, err = await shop.there.call(site.lbsync_async("rollout", "abort", "shop"))
    assert status == 0, err
    assert "reverted" in out
    with pytest.raises(Aborted):
        await task
    assert (await shop.get("split"))["groups"] == {"blue": 100, "green": 0}
    assert (await shop.record())["phase"] == "aborted"


def until_share(share: float) -> Callable[[dict[str, Any]], bool]:
    """A record predicate: the rollout wrote the step giving this share."""
    return lambda record: record.get("phase") == "running" and record.get("share") == share


async def assert_reverted(shop: Shop, phase: str, *message: str) -> None:
    """The split is back where the rollout started and the record ended as `phase`."""
    assert (await shop.get("split"))["groups"] == START
    record = await shop.record()
    assert record["phase"] == phase, record
    for fragment in message:
        assert fragment in record["message"], record


async def assert_not_blocked(shop: Shop) -> None:
    """A new rollout starts and runs to its end."""
    spec = RolloutSpec(service="shop", to="green", steps=(100,), interval=1)
    await shop.rollout(spec, io.StringIO()).run()
    assert (await shop.get("split"))["groups"] == {"blue": 0, "green": 100}
    assert (await shop.record())["phase"] == "done"


async def test_a_source_that_fails_mid_rollout_reverts(
    etcd: EtcdServer, haproxy_site: tuple[Site, HAProxy], tmp_path: Path
) -> None:
    """The instances come from a services file; removing its directory makes that source
    unusable (the daemon keeps its last good state), and the gates must not go on judging by
    what it said last."""
    services = tmp_path / "conf" / "services.toml"
    ports = {"blue-1": 9101, "green-1": 9102}
    async with shop_in(haproxy_site[0], etcd, ports, instances_in=services) as shop:
        spec = RolloutSpec(service="shop", to="green", steps=(10, 50, 100), interval=FOREVER)
        task = asyncio.create_task(shop.rollout(spec, io.StringIO()).run())
        await shop.until_record(until_share(10), "the rollout at 10 %")
        shutil.rmtree(services.parent)
        with pytest.raises(SourceUnusable, match="directory removed"):
            await task
        await assert_reverted(shop, "reverted", "is unusable", "split reverted")


async def test_a_store_failing_mid_rollout_is_retried_and_the_split_reverted(
    quiet_shop: Shop, etcd: EtcdServer
) -> None:
    shop = quiet_shop
    spec = RolloutSpec(service="shop", to="green", steps=(10, 100), interval=FOREVER)
    output = io.StringIO()
    task = asyncio.create_task(shop.rollout(spec, output).run())
    await shop.until_record(until_share(10), "the rollout at 10 %")
    etcd.freeze()  # requests hang until the client's 3 s timeout: a store that does not answer
    try:
        await shop.there.until(
            lambda: task.done() or "retrying the store" in output.getvalue(),
            WAIT,
            "the rollout retrying the store",
        )
    finally:
        etcd.thaw()
    with pytest.raises(StoreError):
        await task
    await assert_reverted(shop, "reverted", "split reverted")
    await assert_not_blocked(shop)


async def test_a_store_gone_for_longer_than_the_retries_leaves_a_record_abort_clears(
    quiet_shop: Shop, etcd: EtcdServer
) -> None:
    shop = quiet_shop
    spec = RolloutSpec(service="shop", to="green", steps=(10, 100), interval=FOREVER)
    task = asyncio.create_task(shop.rollout(spec, io.StringIO()).run())
    await shop.until_record(until_share(10), "the rollout at 10 %")
    etcd.kill()
    with pytest.raises(StoreError, match="lbsync rollout abort shop"):
        await task
    etcd.start()
    assert (await shop.record())["phase"] == "running"
    store = StoreThere(shop.store, shop.there)
    answer = await request(store, "shop", Phase.ABORTING)
    assert "no running rollout answered" in answer and "split reverted" in answer
    await assert_reverted(shop, "aborted", "split reverted")
    await assert_not_blocked(shop)


async def test_a_cancelled_rollout_reverts_and_the_cancellation_propagates(
    quiet_shop: Shop,
) -> None:
    shop = quiet_shop
    spec = RolloutSpec(service="shop", to="green", steps=(10, 100), interval=FOREVER)
    task = asyncio.create_task(shop.rollout(spec, io.StringIO()).run())
    await shop.until_record(until_share(10), "the rollout at 10 %")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_reverted(shop, "aborted", "interrupted", "split reverted")
    await assert_not_blocked(shop)


async def killed_runner(shop: Shop) -> None:
    """`lbsync rollout` at its first step, then killed (SIGKILL): nothing of it cleans up."""
    runner = shop.site.start_lbsync(
        *("rollout", "shop", "--to", "green", "--steps", "10,100", "--interval", "1h")
    )
    try:
        await shop.until_record(until_share(10), "the killed rollout at 10 %")
    finally:
        runner.kill()
        runner.communicate(timeout=10)


async def test_an_abort_no_runner_answers_reverts_the_split_itself(quiet_shop: Shop) -> None:
    shop = quiet_shop
    await killed_runner(shop)
    answer = await request(StoreThere(shop.store, shop.there), "shop", Phase.ABORTING)
    assert "no running rollout answered in 10s" in answer, answer
    await assert_reverted(shop, "aborted", "split reverted")
    await assert_not_blocked(shop)


async def test_a_record_left_by_a_dead_runner_says_how_to_clear_it_and_abort_does(
    quiet_shop: Shop,
) -> None:
    shop = quiet_shop
    await killed_runner(shop)
    left = {**await shop.record(), "updated": time.time() - 3600}  # as if killed an hour ago
    await shop.there.call(shop.client.put("lbsync/services/shop/rollout", json.dumps(left)))
    spec = RolloutSpec(service="shop", to="green", steps=(100,), interval=1)
    with pytest.raises(SplitError, match="`lbsync rollout abort shop` reverts its split"):
        await shop.rollout(spec, io.StringIO()).run()
    answer = await request(StoreThere(shop.store, shop.there), "shop", Phase.ABORTING)
    assert "its runner silent for 36" in answer and "split reverted" in answer, answer
    await assert_reverted(shop, "aborted", "split reverted")
    await assert_not_blocked(shop)
