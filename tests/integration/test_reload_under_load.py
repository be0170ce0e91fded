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


def services(ports: dict[str, int], with_extra: bool) -> dict[str, dict[str, Any]]:
    names = ["blue-1", "blue-2", "blue-3"] if with_extra else ["blue-1", "blue-2"]
    return {
        "shop": {
            "route": {"hosts": [HOST], "path": "/"},
            "instances": {name: instance(ports[name], "blue") for name in names},
        }
    }


async def reload_repeatedly(site: Site, ports: dict[str, int], count: int) -> int:
    """Toggle an instance `count` times, each time waiting for the confirmed reload."""
    applied = 0
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        for round_number in range(count):
            document = services(ports, with_extra=round_number % 2 == 0)
            status = await next_cycle(daemon, functools.partial(site.write_services, document))
            assert [r.outcome for r in status.targets] == ["applied"], status.targets
            applied += 1
    return applied


async def test_haproxy_reloads_under_load_drop_no_request(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "blue-2", "blue-3"]).ports
    site.write_services(services(ports, with_extra=False))
    site.lbsync("once")
    proxy.start()
    process = load.start(site.port, HOST, keepalive=4, fresh=4)
    try:
        applied = await reload_repeatedly(site, ports, RELOADS)
    finally:
        result = load.stop(process)
    print(f"haproxy: {applied} reloads, {result}")
    assert applied == RELOADS
    assert result["requests"] > 1000, result
    assert result["failed"] == 0, result


async def test_nginx_reloads_under_load_drop_no_new_connection_request(
    nginx_site: tuple[Site, Nginx], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = nginx_site
    ports = backends(["blue-1", "blue-2", "blue-3"]).ports
    site.write_services(services(ports, with_extra=False))
    site.lbsync("once")
    proxy.start()
    process = load.start(site.port, HOST, keepalive=0, fresh=8)
    try:
        applied = await reload_repeatedly(site, ports, RELOADS)
    finally:
        result = load.stop(process)
    print(f"nginx: {applied} reloads, {result}")
    assert applied == RELOADS
    assert result["requests"] > 1000, result
    assert result["failed"] == 0, result
