"""Reloads under a bounded loopback load: HAProxy drops nothing; nginx drops no new connection."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from support import load
from support.processes import Backends, HAProxy, Nginx
from support.servicesfile import instance
from support.site import Site, next_cycle, running_daemon

HOST = "shop.example.com"
RELOADS = 20


def services(
    ports: dict[str, int], *, extra_host: bool = False, extra: bool = False, blue_weight: int = 1
) -> dict[str, dict[str, Any]]:
    """The shop; `extra_host` changes the routing (a reload), `extra` adds an instance and
    `blue_weight` weighs blue-1 (runtime changes for HAProxy, reloads for nginx)."""
    names = ["blue-1", "blue-2", "blue-3"] if extra else ["blue-1", "blue-2"]
    instances = {name: instance(ports[name], "blue") for name in names}
    instances["blue-1"]["weight"] = blue_weight
    hosts = [HOST, f"www.{HOST}"] if extra_host else [HOST]
    return {"shop": {"route": {"hosts": hosts, "path": "/"}, "instances": instances}}


async def change_repeatedly(
    site: Site, documents: list[dict[str, dict[str, Any]]], plan: str
) -> int:
    """Apply each document in turn, each time waiting for its confirmed apply."""
    applied = 0
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        for document in documents:
            status = await next_cycle(daemon, functools.partial(site.write_services, document))
            assert [(r.outcome, r.plan) for r in status.targets] == [("applied", plan)], status
            applied += 1
    return applied


async def reload_repeatedly(site: Site, ports: dict[str, int], count: int) -> int:
    """Toggle a host name `count` times, each time waiting for the confirmed reload."""
    documents = [
        services(ports, extra_host=n % 2 == 0, extra=site.kind == "nginx" and n % 2 == 0)
        for n in range(count)
    ]
    return await change_repeatedly(site, documents, "full")


async def reloads_under_load(
    site: Site,
    proxy: HAProxy | Nginx,
    backends: Callable[[list[str]], Backends],
    *,
    keepalive: int,
    fresh: int,
) -> tuple[int, dict[str, Any]]:
    """Start the proxy, run RELOADS confirmed reloads under a load process; the reload count
    and the load's tally."""
    ports = backends(["blue-1", "blue-2", "blue-3"]).ports
    site.write_services(services(ports))
    site.lbsync("once")
    proxy.start()
    process = load.start(site.port, HOST, keepalive=keepalive, fresh=fresh)
    try:
        applied = await reload_repeatedly(site, ports, RELOADS)
    finally:
        result = load.stop(process)
    print(f"{site.kind}: {applied} reloads, {result}")
    return applied, result


async def test_haproxy_reloads_under_load_drop_no_request(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    applied, result = await reloads_under_load(site, proxy, backends, keepalive=4, fresh=4)
    assert applied == RELOADS
    assert result["requests"] > 1000, result
    assert result["failed"] == 0, result


async def test_nginx_reloads_under_load_drop_no_new_connection_request(
    nginx_site: tuple[Site, Nginx], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = nginx_site
    applied, result = await reloads_under_load(site, proxy, backends, keepalive=0, fresh=8)
    assert applied == RELOADS
    assert result["requests"] > 1000, result
    assert result["failed"] == 0, result


async def test_haproxy_runtime_changes_under_load_drop_no_request_and_never_reload(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    """Instances join and leave (in flight requests finish on a server in maintenance) and
    weights shift, all through the runtime API."""
    site, proxy = haproxy_site
    ports = backends(["blue-1", "blue-2", "blue-3"]).ports
    site.write_services(services(ports))
    site.lbsync("once")
    proxy.start()
    reloads, worker = proxy.reloads(), proxy.worker_pids()
    documents = [
        services(ports, extra=n % 4 in (0, 1), blue_weight=1 + n % 3) for n in range(RELOADS)
    ]
    process = load.start(site.port, HOST, keepalive=4, fresh=4)
    try:
        applied = await change_repeatedly(site, documents, "runtime")
    finally:
        result = load.stop(process)
    print(f"haproxy: {applied} runtime changes, {result}")
    assert applied == RELOADS
    assert proxy.reloads() == reloads and proxy.worker_pids() == worker
    assert result["requests"] > 1000, result
    assert result["failed"] == 0, result
    assert result["bodies"].get("blue-3", 0) > 0, result
