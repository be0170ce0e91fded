"""Weighted splits measured through a real HAProxy with real backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from support.processes import Backends, HAProxy
from support.servicesfile import instance
from support.site import Site, next_cycle, running_daemon
from support.traffic import shares, tally

HOST = "shop.example.com"
BLUE_GREEN = {"blue": ["blue-1", "blue-2"], "green": ["green-1"]}


def shop(ports: dict[str, int], groups: dict[str, float]) -> dict[str, dict[str, Any]]:
    return {
        "shop": {
            "route": {"hosts": [HOST], "path": "/"},
            "split": {"by": "tag", "groups": groups},
            "instances": {
                "blue-1": instance(ports["blue-1"], "blue"),
                "blue-2": instance(ports["blue-2"], "blue"),
                "green-1": instance(ports["green-1"], "green"),
            },
        }
    }


def start(
    site: Site, proxy: HAProxy, backends: Callable[[list[str]], Backends], groups: dict[str, float]
) -> dict[str, int]:
    ports = backends(["blue-1", "blue-2", "green-1"]).ports
    site.write_services(shop(ports, groups))
    result = site.lbsync("once")
    assert result.returncode == 1, result.stderr  # written, but no HAProxy to reload yet
    assert "pending" in result.stderr
    proxy.start()
    return ports


async def test_a_90_10_split_lands_within_3_points_over_2000_requests(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    start(site, proxy, backends, {"blue": 90, "green": 10})
    measured = shares(await tally(site.port, HOST, 2000), BLUE_GREEN)
    assert abs(measured["blue"] - 90) <= 3, measured
    assert abs(measured["green"] - 10) <= 3, measured


async def test_blue_green_100_0_sends_nothing_to_green(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    start(site, proxy, backends, {"blue": 100, "green": 0})
    counts = await tally(site.port, HOST, 1000)
    assert counts["green-1"] == 0
    assert counts["blue-1"] + counts["blue-2"] == 1000


async def test_editing_the_split_shifts_traffic_through_the_runtime_api_without_a_reload(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    ports = start(site, proxy, backends, {"blue": 90, "green": 10})
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        first_worker = proxy.worker_pids()
        status = await next_cycle(
            daemon, lambda: site.write_services(shop(ports, {"blue": 20, "green": 80}))
        )
        report = status.targets[0]
        assert (report.outcome, report.plan, report.runtime_ops) == ("applied", "runtime", 3)
        assert proxy.worker_pids() == first_worker  # no reload
        assert "weight" in site.dest.read_text()
        measured = shares(await tally(site.port, HOST, 2000), BLUE_GREEN)
    assert abs(measured["green"] - 80) <= 3, measured
    assert abs(measured["blue"] - 20) <= 3, measured


async def test_an_unknown_host_gets_404_and_a_known_one_its_service(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    start(site, proxy, backends, {"blue": 100})
    assert (await tally(site.port, "other.example.com", 10))["HTTP 404"] == 10
    assert sum((await tally(site.port, HOST, 10)).values()) == 10
