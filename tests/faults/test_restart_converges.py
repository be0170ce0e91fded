"""lbsync killed between writing a file and applying it, or HAProxy changed behind its back: a
restarted lbsync finds out what HAProxy really runs and converges in its first cycle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.processes import Backends, HAProxy, master_cli
from support.servicesfile import instance, write_atomically
from support.site import Site, running_daemon, until_live
from support.traffic import tally

from lbsync.pipeline.decision import Plan
from lbsync.pipeline.report import Outcome

HOST = "shop.example.com"


def shop(ports: dict[str, int], *, weights: dict[str, int], api: bool) -> dict[str, Any]:
    services: dict[str, Any] = {
        "shop": {
            "route": {"hosts": [HOST]},
            "instances": {
                name: instance(port, name.split("-")[0], weight=weights[name])
                for name, port in ports.items()
            },
        }
    }
    if api:
        services["api"] = {
            "route": {"hosts": [HOST], "path": "/api"},
            "instances": {"api-1": instance(ports["blue-1"], "api")},
        }
    return services


@pytest.mark.parametrize(
    "change", ["a route added", "weights only"], ids=["a route added", "weights only"]
)
async def test_a_file_written_but_never_applied_is_applied_by_the_next_start(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], change: str
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "green-1"]).ports
    site.write_services(shop(ports, weights={"blue-1": 1, "green-1": 1}, api=False))
    site.lbsync("once")
    proxy.start()
    before = proxy.worker_pids()
    after = (
        shop(ports, weights={"blue-1": 1, "green-1": 1}, api=True)
        if change == "a route added"
        else shop(ports, weights={"blue-1": 1, "green-1": 0}, api=False)
    )
    # what a lbsync killed after its write and before its reload leaves behind
    site.write_services(after)
    rendered = site.lbsync("render")
    assert rendered.returncode == 0, rendered.stderr
    write_atomically(site.dest, rendered.stdout)
    assert proxy.worker_pids() == before  # HAProxy still runs the old file

    async with running_daemon(site.config()) as daemon:
        status = await daemon.wait_for(lambda s: s.cycles > 0, 15)
        report = status.targets[0]
        assert report.plan is Plan.RELOAD and report.outcome is Outcome.APPLIED, report
        assert proxy.worker_pids() != before
        counts = await tally(site.port, HOST, 200)
    if change == "weights only":
        assert proxy.weights("shop") == {"blue-1": 256, "green-1": 0}
        assert counts == {"blue-1": 200}
    else:
        assert proxy.servers("api")


async def test_weights_changed_behind_lbsyncs_back_are_corrected_at_start(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "green-1"]).ports
    site.write_services(shop(ports, weights={"blue-1": 1, "green-1": 1}, api=False))
    site.lbsync("once")
    proxy.start()
    master_cli(site.master_socket, "@1 set server shop/green-1 weight 0")
    assert proxy.weights("shop") == {"blue-1": 256, "green-1": 0}
    async with running_daemon(site.config()) as daemon:
        await until_live(daemon, site.dest, lambda text: "green-1" in text)
        assert proxy.weights("shop") == {"blue-1": 256, "green-1": 256}


async def test_a_proxy_that_loaded_the_file_is_left_alone_at_start(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "green-1"]).ports
    site.write_services(shop(ports, weights={"blue-1": 1, "green-1": 1}, api=False))
    site.lbsync("once")
    proxy.start()
    before = proxy.worker_pids()
    async with running_daemon(site.config()) as daemon:
        status = await daemon.wait_for(lambda s: s.cycles > 0, 15)
        assert status.targets[0].outcome is Outcome.UNCHANGED, status.targets
    assert proxy.worker_pids() == before
