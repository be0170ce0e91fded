"""Metric gates against a real Prometheus scraping a real HAProxy's built-in exporter.

lbsync renders the HAProxy configuration (the shipped template, plus a frontend that serves the
exporter) for a service whose groups behave as releases do: blue answers 200 at once, green
answers 500, amber answers 200 after 250 ms, violet gets no traffic (share 0). Prometheus scrapes
the exporter every second; the gates are read through lbsync's own client with the names lbsync
rendered, as the rollout driver will read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.ports import free_port
from support.processes import Backends, HAProxy
from support.prometheus import PrometheusServer, with_exporter
from support.servicesfile import instance
from support.site import Site
from support.traffic import tally
from support.waiting import async_wait_until

from lbsync.core.state import server_name
from lbsync.traffic.analysis.measure import measure
from lbsync.traffic.analysis.metrics import MetricGate, Target, parse_metric
from lbsync.traffic.analysis.prometheus import PrometheusClient
from lbsync.traffic.analysis.readings import Reading, Verdict
from lbsync.traffic.analysis.tally import Limits, Outcome, Tally, assess

HOST = "shop.example.com"
GROUPS = {"blue": "blue-1", "green": "green-1.5", "amber": "amber-1", "violet": "violet-1"}
WINDOW = 10.0  # seconds of rate(): a burst of traffic stays in it for the length of a test
WAIT = 30.0  # seconds for Prometheus to have scraped what a test needs


@dataclass
class World:
    site: Site
    proxy: HAProxy
    prometheus: PrometheusServer
    metrics_port: int

    def target(self, group: str) -> Target:
        """The group as the driver will name it: its servers by lbsync's own rule."""
        return Target("shop", group, (server_name(GROUPS[group]),), window=WINDOW)

    async def traffic(self, requests: int = 120) -> None:
        counts = await tally(self.site.port, HOST, requests, clients=6)
        assert sum(counts.values()) == requests
        assert counts["HTTP 500"] > 0 and counts["blue-1"] > 0 and counts["amber-1"] > 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("analysis")
    backends = Backends.start(list(GROUPS.values()), {"green-1.5": 500}, delays_ms={"amber-1": 250})
    site = Site(root=root / "site", kind="haproxy", port=free_port())
    metrics_port = free_port()
    site.write_config(template=with_exporter(root / "haproxy.cfg.j2", metrics_port))
    site.write_services(
        {
            "shop": {
                "route": {"hosts": [HOST], "path": "/"},
                "split": {
                    "by": "tag",
                    "groups": {"blue": 40, "green": 30, "amber": 30, "violet": 0},
                },
                "instances": {
                    name: instance(backends.ports[name], group) for group, name in GROUPS.items()
                },
            }
        }
    )
    result = site.lbsync("once")
    assert "pending" in result.stderr, result.stderr  # written; HAProxy starts next
    for name in GROUPS.values():
        assert f"    server {server_name(name)} " in site.dest.read_text()
    proxy = HAProxy(config=site.dest, master_socket=site.master_socket, port=site.port)
    prometheus = PrometheusServer(root / "prometheus", targets=(f"127.0.0.1:{metrics_port}",))
    try:
        proxy.start()
        prometheus.start()
        yield World(site, proxy, prometheus, metrics_port)
    finally:
        prometheus.stop()
        proxy.stop()
        backends.stop()


async def conclusive(client: PrometheusClient, gate: MetricGate, target: Target) -> Reading:
    """Read the gate until Prometheus has the window's data for it (a pass or a fail)."""
    found: list[Reading] = []

    async def judged() -> bool:
        found[:] = await measure(client, [gate], target)
        return found[0].verdict is not Verdict.INCONCLUSIVE

    await async_wait_until(judged, WAIT, f"a conclusive reading of {gate.name} for {target}")
    return found[0]


async def test_a_group_that_answers_500_fails_the_error_ratio_gate(world: World) -> None:
    gate = parse_metric("error-ratio<0.05")
    await world.traffic()
    async with PrometheusClient(world.prometheus.url, timeout=5) as client:
        reading = await conclusive(client, gate, world.target("green"))
    assert (reading.verdict, reading.value) == (Verdict.FAIL, 1.0)
    assert 'server=~"green-1[.]5"' in reading.query
    assert 'proxy=~"shop|shop:(sticky|pin):.+"' in reading.query
    found = assess(Tally().add([reading]), [gate], Limits())
    assert found.outcome is Outcome.FAILED
    assert "metric error-ratio failed 1 time(s)" in found.message


async def test_a_slow_group_fails_the_latency_gate(world: World) -> None:
    gate = parse_metric("latency<0.2")
    await world.traffic()
    async with PrometheusClient(world.prometheus.url, timeout=5) as client:
        reading = await conclusive(client, gate, world.target("amber"))
    assert reading.verdict is Verdict.FAIL
    # 250 ms a request, though HAProxy 2.6's exporter says ~0.03 after ~70 requests (metrics.py)
    assert reading.value is not None and 0.24 < reading.value < 0.4


async def test_a_healthy_group_passes_both_gates(world: World) -> None:
    gates = [parse_metric("error-ratio<0.05"), parse_metric("latency<0.2")]
    await world.traffic()
    async with PrometheusClient(world.prometheus.url, timeout=5) as client:
        readings = [await conclusive(client, gate, world.target("blue")) for gate in gates]
    assert [r.verdict for r in readings] == [Verdict.PASS, Verdict.PASS]
    assert readings[0].value == 0.0
    assert readings[1].value is not None and readings[1].value < 0.05
    assert assess(Tally().add(readings), gates, Limits()).outcome is Outcome.PASSING


async def test_a_group_without_traffic_is_inconclusive_and_three_in_a_row_pause(
    world: World,
) -> None:
    gates = [parse_metric("error-ratio<0.05"), parse_metric("latency<0.2")]
    await world.traffic()
    async with PrometheusClient(world.prometheus.url, timeout=5) as client:
        # blue's reading being conclusive shows the window holds the traffic just sent
        await conclusive(client, gates[0], world.target("blue"))
        tally = Tally()
        for count in range(1, 4):
            readings = await measure(client, gates, world.target("violet"))
            assert [r.verdict for r in readings] == [Verdict.INCONCLUSIVE] * 2
            assert "NaN" in str(readings[0].error)  # 0 errors over 0 answers
            assert "no data: the query gave no series" in str(readings[1].error)
            tally = tally.add(readings)
            found = assess(tally, gates, Limits(inconclusive_limit=3))
            assert found.outcome is (Outcome.PAUSED if count == 3 else Outcome.WAITING)
    assert "inconclusive 3 times in a row" in found.message


async def test_a_query_with_no_data_refused_or_of_several_series_is_inconclusive(
    world: World,
) -> None:
    gates = [
        parse_metric('nothing=sum(rate(haproxy_server_http_responses_total{proxy="nope"}[10s]))<1'),
        parse_metric("broken=sum(rate(up[10s])<1"),
        parse_metric('many=haproxy_server_weight{proxy="{service}"}>=0'),
        parse_metric("range=up[10s]>0"),
    ]
    async with PrometheusClient(world.prometheus.url, timeout=5) as client:
        readings = await measure(client, gates, world.target("blue"))
    assert [r.verdict for r in readings] == [Verdict.INCONCLUSIVE] * 4
    errors = [str(r.error) for r in readings]
    assert errors[0] == "no data: the query gave no series"
    assert errors[1].startswith("Prometheus refused the query (bad_data): ")
    assert errors[2].startswith(f"{len(GROUPS)} series where one is expected")
    assert errors[3].startswith("a range vector")


async def test_a_group_with_no_servers_is_inconclusive_without_asking(world: World) -> None:
    gate = parse_metric("error-ratio<0.05")
    empty = Target("shop", "indigo", (), window=WINDOW)
    async with PrometheusClient(world.prometheus.url, timeout=5) as client:
        (reading,) = await measure(client, [gate], empty)
    assert (reading.verdict, reading.error) == (
        Verdict.INCONCLUSIVE,
        "group indigo of shop has no servers",
    )


async def test_prometheus_hung_or_stopped_is_inconclusive_never_a_pass(
    world: World, tmp_path: Path
) -> None:
    own = PrometheusServer(tmp_path / "prometheus", targets=(f"127.0.0.1:{world.metrics_port}",))
    own.start()
    gate = parse_metric('up=max(up{job="lbsync-test"})>=1')
    target = world.target("blue")
    try:
        async with PrometheusClient(own.url, timeout=0.5) as client:
            (running,) = await measure(client, [gate], target)
            own.freeze()
            (frozen,) = await measure(client, [gate], target)
            own.thaw()
            own.stop()
            (stopped,) = await measure(client, [gate], target)
    finally:
        own.stop()
    assert (running.verdict, running.value) == (Verdict.PASS, 1.0)
    assert frozen.verdict is Verdict.INCONCLUSIVE and frozen.value is None
    assert frozen.error == f"Prometheus at {own.url}: no answer in 0.5s"
    assert stopped.verdict is Verdict.INCONCLUSIVE and stopped.value is None
    assert stopped.error == f"Prometheus at {own.url}: cannot connect: Connection refused"
