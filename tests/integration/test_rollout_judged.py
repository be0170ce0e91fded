"""Rollouts judged by Prometheus and by webhooks, driven by a real `lbsync run` on a real etcd,
in front of a real HAProxy whose exporter a real Prometheus scrapes: a group that answers 500,
and one that answers slowly, is reverted by its metric gate, a query without data pauses the
rollout for a person, and a
confirm-promotion hook that answers 503 holds the last step until it answers 200."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.daemons import Daemon
from support.etcd import EtcdServer
from support.ports import free_port
from support.processes import Backends, HAProxy
from support.prometheus import PrometheusServer, with_exporter
from support.traffic import tally
from support.waiting import async_wait_until

from lbsync.kv.etcd import EtcdClient

HOST = "shop.example.com"


@dataclass
class Shop:
    client: EtcdClient
    etcd: EtcdServer

    async def put(self, key: str, value: object) -> None:
        await self.client.put(f"lbsync/services/shop/{key}", json.dumps(value))

    async def record(self) -> dict[str, Any]:
        found = await self.client.get("lbsync/services/shop/rollout")
        value: dict[str, Any] = json.loads(found.text) if found is not None else {}
        return value

    async def split(self) -> dict[str, Any]:
        found = await self.client.get("lbsync/services/shop/split")
        value: dict[str, Any] = json.loads(found.text) if found is not None else {}
        return value

    async def phase(self, phase: str, timeout: float = 60) -> dict[str, Any]:
        async def there() -> bool:
            return (await self.record()).get("phase") == phase

        await async_wait_until(there, timeout, f"the rollout {phase}")
        return await self.record()


@pytest.fixture
async def shop(etcd: EtcdServer) -> AsyncIterator[Shop]:
    """blue answers at once, green with 500, amber after 300 ms; green and amber at 0 %."""
    group = Backends.start(
        ["blue-1", "green-1", "amber-1"], {"green-1": 500}, delays_ms={"amber-1": 300}
    )
    try:
        async with EtcdClient([etcd.url], request_timeout=3) as client:
            found = Shop(client, etcd)
            await found.put("route", {"hosts": [HOST], "path": "/"})
            await found.put("split", {"groups": {"green": 0, "amber": 0}})
            for name in group.ports:
                tag = name.split("-")[0]
                value = {"address": "127.0.0.1", "port": group.ports[name], "tags": [tag]}
                await found.put(f"instances/{name}", value)
            yield found
    finally:
        group.stop()


@pytest.fixture
def proxied(tmp_path: Path, shop: Shop) -> Iterator[tuple[Daemon, HAProxy, PrometheusServer]]:
    """lbsync driving a real HAProxy whose exporter a real Prometheus scrapes every second."""
    metrics = free_port()
    prometheus = PrometheusServer(tmp_path / "prometheus", targets=(f"127.0.0.1:{metrics}",))
    prometheus.start()
    daemon = Daemon(
        tmp_path / "daemon",
        f'[source.etcd]\nendpoints = ["{shop.etcd.url}"]\n',
        "2s",
        extra=f'\n[analysis]\nprometheus = "{prometheus.url}"\nwindow = "10s"\n',
        reload="",  # the site's own: HAProxy's master socket
        template=with_exporter(tmp_path / "haproxy.cfg.j2", metrics),
    )
    site = daemon.site
    assert site.lbsync("once").returncode in (0, 1)  # the first file; HAProxy starts on it
    proxy = HAProxy(config=site.dest, master_socket=site.master_socket, port=site.port)
    proxy.start()
    daemon.start()
    try:
        yield daemon, proxy, prometheus
    finally:
        daemon.stop()
        proxy.stop()
        prometheus.stop()


async def flowing(port: int) -> None:
    """Requests through HAProxy, batch after batch, until cancelled."""
    while True:
        await tally(port, HOST, 30, clients=3)


async def start(daemon: Daemon, *options: str, to: str = "green") -> None:
    code, _, err = await daemon.site.lbsync_async(
        "rollout", "start", "shop", "--to", to, "--max-error-rate", "1", *options
    )
    assert code == 0, err


async def reverted(
    shop: Shop, daemon: Daemon, proxy: HAProxy, metric: str, *, to: str
) -> dict[str, Any]:
    """A rollout to `to` gated on `metric`, with requests flowing, until it is reverted."""
    traffic = asyncio.create_task(flowing(proxy.port))
    try:
        await start(daemon, "--steps", "50,100", "--interval", "3s", "--metric", metric, to=to)
        return await shop.phase("reverted", timeout=90)
    finally:
        traffic.cancel()


async def test_a_group_answering_500_is_reverted_by_its_prometheus_gate(
    shop: Shop, proxied: tuple[Daemon, HAProxy, PrometheusServer]
) -> None:
    daemon, proxy, _ = proxied
    record = await reverted(shop, daemon, proxy, "error-ratio<0.05", to="green")
    assert "error-ratio" in record["message"], record["message"]
    verdicts = [reading["verdict"] for reading in record["readings"]]
    assert verdicts[-1] == "fail", record["readings"]
    assert (await shop.split())["groups"] == {"green": 0, "amber": 0}  # where it started
    assert any("analysis failed" in event["what"] for event in record["events"])
    code, out, err = await daemon.site.lbsync_async("rollout", "status", "shop")
    assert code == 0, err
    assert "  metric error-ratio = " in out and "(fail)" in out, out


async def test_a_slow_group_is_reverted_by_its_latency_gate(
    shop: Shop, proxied: tuple[Daemon, HAProxy, PrometheusServer]
) -> None:
    daemon, proxy, _ = proxied
    record = await reverted(shop, daemon, proxy, "latency<0.1", to="amber")
    assert "latency" in record["message"], record["message"]
    failed = [r for r in record["readings"] if r["verdict"] == "fail"]
    assert failed and failed[-1]["value"] > 0.1, record["readings"]
    assert (await shop.split())["groups"] == {"green": 0, "amber": 0}


async def test_a_query_without_data_pauses_the_rollout_for_a_person(
    shop: Shop, proxied: tuple[Daemon, HAProxy, PrometheusServer]
) -> None:
    daemon, _, _ = proxied
    await start(
        daemon,
        "--steps",
        "50,100",
        "--interval",
        "1s",
        "--metric",
        "nothing=lbsync_no_such_series<1",
        "--inconclusive-limit",
        "2",
    )
    record = await shop.phase("paused", timeout=60)
    assert "inconclusive 2 times in a row" in record["message"], record["message"]
    assert {reading["verdict"] for reading in record["readings"]} == {"inconclusive"}
    assert (await shop.split())["groups"]["green"] == 50  # held, neither promoted nor reverted


@pytest.fixture
async def confirm() -> AsyncIterator[tuple[str, list[int], list[dict[str, Any]]]]:
    """A confirm-promotion endpoint (the operator's, on loopback): it answers the status at the
    head of `answers` (the last one from then on) and keeps every body it was posted."""
    answers = [503]
    bodies: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=answers[0])

    app = web.Application()
    app.router.add_post("/confirm", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/confirm", answers, bodies
    finally:
        await runner.cleanup()


async def test_a_confirm_promotion_hook_holds_the_last_step_until_it_answers_2xx(
    tmp_path: Path, shop: Shop, confirm: tuple[str, list[int], list[dict[str, Any]]]
) -> None:
    url, answers, bodies = confirm
    daemon = Daemon(tmp_path / "daemon", f'[source.etcd]\nendpoints = ["{shop.etcd.url}"]\n', "2s")
    daemon.start()
    try:
        await start(
            daemon, "--steps", "50,100", "--interval", "1s", "--hook", f"confirm-promotion={url}"
        )

        async def asked_twice() -> bool:
            return len(bodies) >= 2

        await async_wait_until(asked_twice, 60, "confirm-promotion asked (and refused) twice")
        record = await shop.record()
        assert record["phase"] == "running" and record["step"] == 1, record
        assert "waiting for confirm-promotion" in record["message"]
        assert (await shop.split())["groups"]["green"] == 50
        assert bodies[0]["type"] == "confirm-promotion" and bodies[0]["service"] == "shop"
        answers[0] = 200
        record = await shop.phase("done")
    finally:
        daemon.stop()
    assert (await shop.split())["groups"] == {"green": 100, "amber": 0}
    assert any(r["outcome"] == "waiting" for r in record["hook_results"])
    assert record["hook_results"][-1]["outcome"] == "ok"
