"""The etcd source against real etcd: changes reach HAProxy, outages and compaction lose
nothing, auth with expiring tokens, TLS, bad values refused per key, and `lbsync register`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.etcd import PROGRESS_EVERY_SECOND, EtcdServer, b64, make_tls_files
from support.processes import Backends, HAProxy
from support.site import Site, running_daemon, until_live
from support.traffic import tally
from support.waiting import wait_until

from lbsync.config import EtcdSourceConfig
from lbsync.kv.etcd import EtcdClient
from lbsync.sources.etcd import EtcdSource

HOST = "shop.example.com"
PROGRESS = PROGRESS_EVERY_SECOND
USER, PASSWORD = "lbsync", "lbsync-secret"


def etcd_toml(server: EtcdServer, extra: str = "") -> str:
    return (
        f'[source.etcd]\nendpoints = ["{server.url}"]\nprefix = "lbsync/"\n'
        f'idle_timeout = "5s"\nrequest_timeout = "2s"\n{extra}'
    )


def instance(port: int, *tags: str, **fields: Any) -> str:
    return json.dumps({"address": "127.0.0.1", "port": port, "tags": list(tags), **fields})


@dataclass
class Shop:
    site: Site
    proxy: HAProxy
    ports: dict[str, int]
    client: EtcdClient

    async def put(self, key: str, value: str) -> None:
        await self.client.put(f"lbsync/{key}", value)

    def dest_has(self, text: str) -> bool:
        return text in self.site.dest.read_text()


async def seed(client: EtcdClient, ports: dict[str, int]) -> None:
    await client.put("lbsync/services/shop/route", json.dumps({"hosts": [HOST]}))
    await client.put("lbsync/services/shop/instances/blue-1", instance(ports["blue-1"], "blue"))
    await client.put("lbsync/services/shop/instances/green-1", instance(ports["green-1"], "green"))


@pytest.fixture
async def shop(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    etcd: EtcdServer,
    client: EtcdClient,
) -> Shop:
    site, proxy = haproxy_site
    site.write_config(source=etcd_toml(etcd))
    ports = backends(["blue-1", "blue-2", "green-1"]).ports
    await seed(client, ports)
    result = site.lbsync("once")
    assert "pending" in result.stderr, result.stderr
    proxy.start()
    return Shop(site, proxy, ports, client)


async def test_puts_and_deletes_reach_haproxy_and_a_split_change_moves_the_weights(
    shop: Shop,
) -> None:
    async with running_daemon(shop.site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        await shop.put("services/shop/instances/blue-2", instance(shop.ports["blue-2"], "blue"))
        dest = shop.site.dest
        await until_live(daemon, dest, lambda text: "server blue-2 " in text)
        await shop.client.delete("lbsync/services/shop/instances/blue-2")
        await until_live(daemon, dest, lambda text: "server blue-2 " not in text)
        split = {"groups": {"blue": 100, "green": 0}}
        await shop.put("services/shop/split", json.dumps(split))
        await until_live(daemon, dest, lambda text: "weight 0" in text)
        counts = await tally(shop.site.port, HOST, 200)
    assert counts == {"blue-1": 200}


async def test_an_outage_keeps_the_last_config_serving_and_a_delete_made_meanwhile_applies(
    shop: Shop, etcd: EtcdServer, tmp_path: Path
) -> None:
    await shop.put("services/shop/instances/blue-2", instance(shop.ports["blue-2"], "blue"))
    async with running_daemon(shop.site.config()) as daemon:
        await until_live(daemon, shop.site.dest, lambda text: "server blue-2 " in text)
        worker = shop.proxy.worker_pids()
        etcd.kill(signal.SIGKILL)
        status = await daemon.wait_for(lambda s: not s.sources[0].usable, 15)
        assert status.sources[0].error is not None and "etcd" in status.sources[0].error
        assert shop.dest_has("server blue-2 ")  # nothing was taken away for the outage
        assert sum((await tally(shop.site.port, HOST, 100)).values()) == 100
        assert shop.proxy.worker_pids() == worker

        # While lbsync cannot reach it, etcd comes back on another port and an operator
        # deletes blue-2 and changes the split there.
        aside = EtcdServer(root=etcd.root, peer_port=etcd.peer_port, extra_args=PROGRESS)
        aside.start()
        async with EtcdClient([aside.url]) as operator:
            assert await operator.delete("lbsync/services/shop/instances/blue-2") == 1
            await operator.put("lbsync/services/shop/split", json.dumps({"groups": {"blue": 100}}))
        aside.kill(signal.SIGTERM)

        etcd.start()
        await daemon.wait_for(lambda s: s.sources[0].usable, 15)
        await until_live(daemon, shop.site.dest, lambda text: "server blue-2 " not in text)
        state = daemon.status.state
        assert state is not None
        service = state.service("shop")
        assert service is not None and service.split is not None
        assert service.split.groups == (("blue", 100.0),)
        assert sorted(server.name for server in service.servers) == ["blue-1", "green-1"]


async def test_a_compacted_watch_is_resynced_and_deletes_in_the_gap_are_not_lost(
    etcd: EtcdServer, client: EtcdClient
) -> None:
    await seed(client, {"blue-1": 9001, "green-1": 9002})
    source = EtcdSource(EtcdSourceConfig(endpoints=(etcd.url,), prefix="lbsync/"))
    snapshots = source.snapshots()
    first = await anext(snapshots)
    assert "services/shop/instances/green-1" in dict(first.entries)
    # The source is suspended before it opens its watch: make changes, then compact past them.
    await client.delete("lbsync/services/shop/instances/green-1")
    revision = await client.put("lbsync/services/shop/instances/blue-2", instance(9003, "blue"))
    await client.compact(revision)
    second = await asyncio.wait_for(anext(snapshots), 10)
    keys = set(dict(second.entries))
    assert "services/shop/instances/green-1" not in keys
    assert "services/shop/instances/blue-2" in keys
    await snapshots.aclose()  # type: ignore[attr-defined]


async def test_auth_with_a_role_on_the_prefix_survives_token_expiry(tmp_path: Path) -> None:
    server = EtcdServer(root=tmp_path / "etcd", extra_args=(*PROGRESS, "--auth-token-ttl", "2"))
    server.start()
    try:
        server.enable_auth(USER, PASSWORD, "lbsync/")
        config = EtcdSourceConfig(endpoints=(server.url,), username=USER, password=PASSWORD)
        source = EtcdSource(config)
        async with EtcdClient.from_config(config) as writer:
            await writer.put("lbsync/services/shop/route", json.dumps({"hosts": [HOST]}))
            snapshots = source.snapshots()
            assert "services/shop/route" in dict((await anext(snapshots)).entries)
            wait_until(lambda: server.log_has("deleted a simple token"), 15, "a token to expire")
            await writer.put("lbsync/services/shop/split", json.dumps({"groups": {"a": 10}}))
            snapshot = await asyncio.wait_for(anext(snapshots), 10)
            assert snapshot.usable
            assert "services/shop/split" in dict(snapshot.entries)
            await snapshots.aclose()  # type: ignore[attr-defined]
    finally:
        server.stop()


def test_tls_with_a_client_certificate_through_the_command_line(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = EtcdServer(root=tmp_path / "etcd", tls=tls)
    server.start()
    try:
        server.post("/v3/kv/put", {"key": b64("lbsync/services/shop/route"), "value": b64("{}")})
        site = Site(root=tmp_path / "site", kind="haproxy", port=8)
        site.write_config(
            source=etcd_toml(
                server,
                f'ca_file = "{tls.ca}"\ncert_file = "{tls.client_cert}"\n'
                f'key_file = "{tls.client_key}"\n',
            )
        )
        result = site.lbsync("render")
        assert result.returncode == 0, result.stderr
        assert "backend shop" in result.stdout
    finally:
        server.stop()


async def test_bad_values_are_refused_by_key_and_the_rest_applies(
    shop: Shop,
) -> None:
    async with running_daemon(shop.site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        await shop.put("services/shop/split", "{not json")
        await shop.put("services/cart/split", json.dumps({"groups": {"a": 80, "b": 50}}))
        await shop.put("services/cart/route", json.dumps({"hosts": ["cart.example.com"]}))
        bad = {"address": "127.0.0.1\n    bind :1", "port": 80}
        await shop.put("services/cart/instances/evil", json.dumps(bad))
        await shop.put("services/cart/instances/good", instance(shop.ports["blue-2"]))

        def refused(status: Any) -> set[str]:
            return {r.where for r in status.state.rejected} if status.state else set()

        status = await daemon.wait_for(lambda s: len(refused(s)) == 3, 10)
        assert refused(status) == {
            "etcd key lbsync/services/shop/split",
            "etcd key lbsync/services/cart/split",
            "etcd key lbsync/services/cart/instances/evil",
        }
        await until_live(daemon, shop.site.dest, lambda text: "backend cart" in text)
    text = shop.site.dest.read_text()
    assert "server good " in text and "evil" not in text and "bind :1" not in text
    check = await asyncio.create_subprocess_exec("haproxy", "-c", "-f", str(shop.site.dest))
    assert await check.wait() == 0


def test_register_keeps_an_instance_while_it_runs(etcd: EtcdServer, tmp_path: Path) -> None:
    site = Site(root=tmp_path / "site", kind="haproxy", port=8)
    site.write_config(source=etcd_toml(etcd))
    key = "lbsync/services/shop/instances/web-1"

    def present() -> bool:
        status, answer = etcd.post_raw("/v3/kv/range", {"key": b64(key)})
        return status == 200 and int(answer.get("count", "0")) == 1

    def start() -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "lbsync", "-c", str(site.config_path), "register"]
        argv += ["shop", "web-1", "--address", "127.0.0.1", "--port", "9000", "--tag", "green"]
        process = subprocess.Popen([*argv, "--ttl", "2"], stderr=subprocess.PIPE)
        wait_until(present, 10, "the instance registered")
        return process

    killed = start()
    killed.send_signal(signal.SIGKILL)
    killed.wait(5)
    assert present()  # the lease outlives the process until its TTL runs out
    wait_until(lambda: not present(), 6, "the instance gone after the TTL")

    stopped = start()
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(5) == 0
    assert not present()  # revoked at once


def test_register_refuses_an_invalid_instance_and_writes_nothing(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    site = Site(root=tmp_path / "site", kind="haproxy", port=8)
    site.write_config(source=etcd_toml(etcd))
    result = site.lbsync(
        "register", "shop", "web-1", "--address", "10.0.0.1;", "--port", "80", timeout=20
    )
    assert result.returncode == 2
    assert "address" in result.stderr
    status, answer = etcd.post_raw(
        "/v3/kv/range", {"key": b64("lbsync/"), "range_end": b64("lbsync0")}
    )
    assert status == 200 and "kvs" not in answer


async def test_a_generic_target_reads_raw_keys_under_the_prefix(
    etcd: EtcdServer, client: EtcdClient, tmp_path: Path
) -> None:
    await client.put("lbsync/app/flags/checkout", "on")
    await client.put("lbsync/app/flags/search", "off")
    await client.put("lbsync/settings/owner", '"platform"')
    template = tmp_path / "flags.j2"
    template.write_text(
        "{% for f in kv.ls('app/flags') %}{{ f }}={{ kv.get('app/flags/' ~ f) }}\n{% endfor %}"
        "owner={{ settings.owner }}\n"
    )
    dest = tmp_path / "flags.env"
    config = tmp_path / "lbsync.toml"
    config.write_text(
        etcd_toml(etcd)
        + f'\n[[target]]\nkind = "generic"\ntemplate = "{template}"\ndest = "{dest}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbsync", "-c", str(config), "once"
    )
    assert await process.wait() == 0
    assert dest.read_text() == "checkout=on\nsearch=off\nowner=platform\n"
