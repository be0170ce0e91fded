"""Rollouts driven by the daemons (`lbsync rollout start`): real `lbsync run` processes on a
real etcd or Consul elect one driver; the driver is killed by PID mid-step, another daemon
takes over and finishes, and every step's split is written exactly once."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.consul import ConsulAgent
from support.etcd import EtcdServer
from support.ports import free_port
from support.processes import stop_process
from support.site import Site
from support.waiting import async_wait_until

from lbsync.kv.etcd import EtcdClient

ROUTE = {"hosts": ["shop.example.com"]}
STEPS = (10, 50, 100)
INTERVAL = "3s"


class Daemon:
    """One `lbsync run` with its own site (an unreloaded HAProxy file), logging to a file."""

    def __init__(self, root: Path, source: str, ttl: str) -> None:
        self.site = Site(root=root, kind="haproxy", port=free_port())
        self.site.write_config(
            source=f'{source}\n[rollout]\nlease_ttl = "{ttl}"\n', reload='{ method = "none" }'
        )
        self.log = root / "lbsync.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lbsync", "-c", str(self.site.config_path), "run"],
                stdout=subprocess.DEVNULL,
                stderr=output,
                cwd=self.site.root,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@contextmanager
def daemons(root: Path, source: str, ttl: str, count: int = 2) -> Iterator[list[Daemon]]:
    """`count` daemons started, stopped at the end."""
    found = [Daemon(root / f"daemon-{n}", source, ttl) for n in range(count)]
    try:
        for daemon in found:
            daemon.start()
        yield found
    finally:
        for daemon in found:
            daemon.stop()


class Store:
    """What the test reads of the store: the rollout record, its driver, the split history."""

    def __init__(self, get: Any) -> None:
        self._get = get

    async def record(self) -> dict[str, Any]:
        text = await self._get("lbsync/services/shop/rollout")
        found: dict[str, Any] = json.loads(text) if text else {}
        return found

    async def driver(self) -> str | None:
        found: str | None = await self._get("lbsync/services/shop/rollout-driver")
        return found

    async def split(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads((await self._get("lbsync/services/shop/split")) or "{}")
        return found

    async def step_writes(self) -> list[str]:
        text = await self._get("lbsync/services/shop/split-history")
        return [entry["why"] for entry in json.loads(text or "[]") if "rollout" in entry["why"]]


def driven_by(daemon: Daemon, holder: str | None) -> bool:
    return holder is not None and holder.endswith(f"pid {daemon.pid}")


async def started(site: Site) -> None:
    code, out, err = await site.lbsync_async(
        "rollout",
        "start",
        "shop",
        "--to",
        "green",
        "--steps",
        ",".join(map(str, STEPS)),
        "--interval",
        INTERVAL,
    )
    assert code == 0, err
    assert "the daemons drive it" in out


async def kill_the_driver_mid_step(store: Store, pool: list[Daemon], ttl: float) -> None:
    """Wait for step 1, kill its driver, and see another daemon drive on to the end."""
    await async_wait_until(
        lambda: _at_step(store, 1), 60, "the rollout at its first step, driven by a daemon"
    )
    holder = await store.driver()
    first = next(daemon for daemon in pool if driven_by(daemon, holder))
    first.kill()
    killed_at = time.monotonic()
    other = next(daemon for daemon in pool if daemon is not first)

    async def taken_over() -> bool:
        return driven_by(other, await store.driver())

    # within the lease, plus a retry period and the contenders' poll (a deadline, not a figure)
    await async_wait_until(taken_over, 2 * ttl + 10, "another daemon driving the rollout")
    print(f"taken over {time.monotonic() - killed_at:.1f}s after the kill (lease {ttl:g}s)")


async def _at_step(store: Store, step: int) -> bool:
    record = await store.record()
    return record.get("step", 0) >= step and (await store.driver()) is not None


async def finished(store: Store) -> dict[str, Any]:
    async def done() -> bool:
        return (await store.record()).get("phase") == "done"

    await async_wait_until(done, 60, "the rollout done")
    return await store.record()


def each_step_once(writes: list[str]) -> None:
    assert writes == [f"rollout to green: {share}%" for share in STEPS], writes


@pytest.fixture
async def etcd_store(etcd: EtcdServer) -> AsyncIterator[tuple[str, Store]]:
    async with EtcdClient([etcd.url], request_timeout=3) as client:
        for key, value in {
            "services/shop/route": ROUTE,
            "services/shop/split": {"groups": {"green": 0}},
            "services/shop/instances/blue-1": {
                "address": "127.0.0.1",
                "port": 9001,
                "tags": ["blue"],
            },
            "services/shop/instances/green-1": {
                "address": "127.0.0.1",
                "port": 9002,
                "tags": ["green"],
            },
        }.items():
            await client.put(f"lbsync/{key}", json.dumps(value))

        async def get(key: str) -> str | None:
            found = await client.get(key)
            return None if found is None else found.text

        yield f'[source.etcd]\nendpoints = ["{etcd.url}"]\n', Store(get)


async def test_a_killed_driver_is_replaced_and_every_step_is_written_once(
    tmp_path: Path, etcd_store: tuple[str, Store]
) -> None:
    source, store = etcd_store
    with daemons(tmp_path, source, "2s") as pool:
        await started(pool[0].site)
        await kill_the_driver_mid_step(store, pool, 2.0)
        record = await finished(store)
    each_step_once(await store.step_writes())
    assert record["share"] == 100
    assert any("driven by" in event["what"] for event in record["events"])
    assert (await store.split())["groups"] == {"green": 100}


async def test_both_daemons_killed_then_one_started_resumes(
    tmp_path: Path, etcd_store: tuple[str, Store]
) -> None:
    source, store = etcd_store
    with daemons(tmp_path, source, "2s") as pool:
        await started(pool[0].site)
        await async_wait_until(lambda: _at_step(store, 1), 60, "the rollout at its first step")
        for daemon in pool:
            daemon.kill()
        step = (await store.record())["step"]
        assert (await store.record())["phase"] == "running"  # nothing drives it now
        pool[1].start()
        record = await finished(store)
    assert step >= 1
    each_step_once(await store.step_writes())
    assert record["phase"] == "done"


async def test_on_consul_a_session_lock_elects_the_driver_and_survives_its_death(
    tmp_path: Path, agent: ConsulAgent
) -> None:
    await agent.kv_put("lbsync/services/shop/route", ROUTE)
    await agent.kv_put("lbsync/services/shop/split", {"groups": {"green": 0}})
    await agent.register("shop", "blue-1", 9001, "blue")
    await agent.register("shop", "green-1", 9002, "green")

    async def get(key: str) -> str | None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{agent.address}/v1/kv/{key}") as reply,
        ):
            if reply.status == 404:
                return None
            assert reply.status == 200, await reply.text()
            found = await reply.json()
        return base64.b64decode(found[0]["Value"] or "").decode()

    store = Store(get)
    source = f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "5s"\n'
    with daemons(tmp_path, source, "10s") as pool:
        await started(pool[0].site)
        await kill_the_driver_mid_step(store, pool, 10.0)
        record = await finished(store)
    each_step_once(await store.step_writes())
    assert record["phase"] == "done"


async def rollout(site: Site, *words: str) -> str:
    code, out, err = await site.lbsync_async("rollout", *words)
    assert code == 0, err
    return out


async def phase_is(store: Store, phase: str) -> None:
    async def there() -> bool:
        return (await store.record()).get("phase") == phase

    await async_wait_until(there, 30, f"the rollout {phase}")


async def test_pause_resume_promote_and_abort_reach_the_driving_daemon(
    tmp_path: Path, etcd_store: tuple[str, Store]
) -> None:
    source, store = etcd_store
    with daemons(tmp_path, source, "2s", count=1) as pool:
        site = pool[0].site
        start = ("start", "shop", "--to", "green", "--steps", "10,50", "--interval", "1h")
        await rollout(site, *start)
        await async_wait_until(lambda: _at_step(store, 1), 60, "the rollout at its first step")
        assert "pausing" in await rollout(site, "pause", "shop")
        await phase_is(store, "paused")
        status = await rollout(site, "status", "shop")
        assert "shop: paused, to green, step 1/2, at 10%, driven by" in status, status
        assert "step 1: green at 10%" in status
        assert "resumed" in await rollout(site, "resume", "shop")
        await phase_is(store, "running")
        await rollout(site, "promote", "shop")
        await phase_is(store, "done")
        assert (await store.split())["groups"] == {"green": 100}
        assert (await store.step_writes())[-1] == "rollout to green: 100%"

        await rollout(
            site, "start", "shop", "--to", "green", "--steps", "10,50", "--interval", "1h"
        )
        await async_wait_until(lambda: _at_step(store, 1), 60, "the second rollout's first step")
        assert "split reverted" in await rollout(site, "abort", "shop")
        await phase_is(store, "aborted")
        assert (await store.split())["groups"] == {"green": 100}  # where it started
