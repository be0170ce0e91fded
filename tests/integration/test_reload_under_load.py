"""Reloads under a bounded loopback load: HAProxy drops nothing; nginx drops no new connection."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from support.processes import SUPPORT, Backends, HAProxy, Nginx
from support.servicesfile import instance
from support.site import Site, running_daemon

from lbsync.daemon import Daemon
from lbsync.status import Status

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


def start_load(port: int, keepalive: int, fresh: int) -> subprocess.Popen[str]:
    load = subprocess.Popen(
        [
            sys.executable,
            str(SUPPORT / "load.py"),
            str(port),
            HOST,
            str(keepalive),
            str(fresh),
            "120",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert load.stdout is not None
    assert load.stdout.readline().strip() == "started"
    return load


def stop_load(load: subprocess.Popen[str]) -> dict[str, Any]:
    output, _ = load.communicate(input="", timeout=60)
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


async def next_cycle(daemon: Daemon, change: Callable[[], None]) -> Status:
    """Make a change and wait for the daemon's next apply cycle."""
    cycles = daemon.status.cycles
    change()
    return await daemon.wait_for(lambda status: status.cycles > cycles, 10)


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
    load = start_load(site.port, keepalive=4, fresh=4)
    try:
        applied = await reload_repeatedly(site, ports, RELOADS)
    finally:
        result = stop_load(load)
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
    load = start_load(site.port, keepalive=0, fresh=8)
    try:
        applied = await reload_repeatedly(site, ports, RELOADS)
    finally:
        result = stop_load(load)
    print(f"nginx: {applied} reloads, {result}")
    assert applied == RELOADS
    assert result["requests"] > 1000, result
    assert result["failed"] == 0, result
