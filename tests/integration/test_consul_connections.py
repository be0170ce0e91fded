"""The Consul source's connections do not grow with services, changes cost only their reads,
and the requests sent to Consul and etcd are counted.

Real dev agents; instances registered through the catalog API on external nodes. Connections
are counted from /proc while the test itself sends nothing (during the waits for snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.consul import ConsulAgent, consul_binary, following
from support.etcd import EtcdServer
from support.sockets import established_to
from support.waiting import async_wait_until

from lbsync.config import ConsulSourceConfig, EtcdSourceConfig
from lbsync.daemon.metrics import Metrics
from lbsync.daemon.status import Status
from lbsync.model.values import Health, Instance, Snapshot, Split
from lbsync.sources.consul import ConsulSource
from lbsync.sources.etcd import EtcdSource

_T = TypeVar("_T")
NODES = 30
MAX_CONNECTIONS = 4


def instance_body(
    service: int, number: int, *, port: int | None = None, status: str = "passing"
) -> dict[str, Any]:
    """One instance `svc-<service>-<number>` with its own check, exposed by its route tag."""
    node = (service * 3 + number) % NODES
    service_id = f"svc-{service}-{number}"
    return {
        "Node": f"ext-{node}",
        "Address": f"10.2.0.{node + 1}",
        "Service": {
            "Service": f"svc-{service}",
            "ID": service_id,
            "Port": port or 8000 + number,
            "Tags": [f"lbsync.route=svc-{service}.example.com/"],
        },
        "Checks": [
            {
                "CheckID": f"service:{service_id}",
                "Name": "http",
                "Status": status,
                "ServiceID": service_id,
            }
        ],
    }


def all_instances(snapshot: Snapshot) -> dict[str, Instance]:
    return {
        key: entry
        for key, entry in snapshot.entries
        if isinstance(entry, Instance) and snapshot.usable
    }


def instance(snapshot: Snapshot, service: int, number: int) -> Instance | None:
    return all_instances(snapshot).get(f"services/svc-{service}/instances/svc-{service}-{number}")


class Peak:
    """The most established connections of this process to one port, sampled every 5 ms."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.value = 0

    async def during(self, work: Awaitable[_T]) -> _T:
        """Await `work` while sampling (the test sends nothing to the agent meanwhile)."""

        async def sample() -> None:
            while True:
                self.value = max(self.value, established_to(self.port))
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        try:
            return await work
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler


@contextlib.contextmanager
def agent_running(root: Path, *hcl: str) -> Iterator[ConsulAgent]:
    if consul_binary() is None:
        pytest.fail("consul is not installed: run scripts/install-system.sh --with-test-servers")
    agent = ConsulAgent(root=root, hcl=hcl)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def health_reads(source: ConsulSource) -> int:
    return dict(source.requests.items()).get("health-service", 0)


def source_for(agent: ConsulAgent) -> ConsulSource:
    return ConsulSource(ConsulSourceConfig(addresses=(agent.address,), wait=5.0))


async def next_where(
    snapshots: Any, peak: Peak, predicate: Callable[[Snapshot], bool], what: str
) -> Snapshot:
    snapshot: Snapshot = await peak.during(snapshots.next(predicate, 30, what))
    return snapshot


async def test_three_hundred_exposed_services_hold_four_connections_and_follow_every_change(
    tmp_path: Path,
) -> None:
    with agent_running(tmp_path / "consul") as agent:
        await agent.catalog_register_many(
            [instance_body(service, number) for service in range(300) for number in range(3)]
        )
        source = source_for(agent)
        peak = Peak(agent.ports["http"])
        async with following(source) as snapshots:
            first = await next_where(
                snapshots, peak, lambda s: len(all_instances(s)) == 900, "900 instances"
            )
            assert len(source.watched) == 300
            assert 1 <= peak.value <= MAX_CONNECTIONS

            reads = health_reads(source)
            await agent.catalog_register_many([instance_body(7, 1, status="critical")])
            flipped = await next_where(
                snapshots,
                peak,
                lambda s: getattr(instance(s, 7, 1), "health", None) is Health.CRITICAL,
                "svc-7-1 critical",
            )
            assert len(all_instances(flipped)) == 900
            assert health_reads(source) - reads <= 2, "a flip reads the flipped service only"

            await agent.catalog_register_many([instance_body(8, 0, port=9999)])
            moved = await next_where(
                snapshots,
                peak,
                lambda s: getattr(instance(s, 8, 0), "port", None) == 9999,
                "svc-8-0 on its new port",
            )
            before = instance(first, 8, 0)
            assert before is not None
            assert instance(moved, 8, 0) == dataclasses.replace(before, port=9999)

            reads = health_reads(source)
            await agent.call(
                "PUT", "/v1/catalog/deregister", {"Node": "ext-3", "ServiceID": "svc-1-0"}
            )
            gone = await next_where(
                snapshots, peak, lambda s: instance(s, 1, 0) is None, "svc-1-0 deregistered"
            )
            assert len(all_instances(gone)) == 899
            assert health_reads(source) - reads <= 2, "a deregistration reads its service only"

            reads = health_reads(source)
            on_node = {
                f"svc-{s}-{n}" for s in range(300) for n in range(3) if (s * 3 + n) % NODES == 5
            } - {"svc-1-0"}
            await agent.catalog_register_many(
                [
                    {
                        "Node": "ext-5",
                        "Address": "10.2.0.6",
                        "Checks": [{"CheckID": "node-up", "Name": "node", "Status": "critical"}],
                    }
                ]
            )
            down = await next_where(
                snapshots,
                peak,
                lambda s: all(
                    all_instances(s)[f"services/{i.rsplit('-', 1)[0]}/instances/{i}"].health
                    is Health.CRITICAL
                    for i in on_node
                ),
                "every instance on ext-5 critical",
            )
            critical = {i.id for i in all_instances(down).values() if i.health is Health.CRITICAL}
            assert critical == on_node | {"svc-7-1"}
            assert health_reads(source) - reads <= len(on_node), "only that node's services"
            assert peak.value <= MAX_CONNECTIONS


async def test_a_tight_per_client_connection_limit_still_syncs_and_the_consul_cli_works(
    tmp_path: Path,
) -> None:
    with agent_running(tmp_path / "consul", "limits { http_max_conns_per_client = 8 }") as agent:
        await agent.catalog_register_many(
            [instance_body(service, number) for service in range(60) for number in range(2)]
        )
        source = source_for(agent)
        peak = Peak(agent.ports["http"])
        async with following(source) as snapshots:
            await next_where(
                snapshots, peak, lambda s: len(all_instances(s)) == 120, "120 instances"
            )
            binary = consul_binary()
            assert binary is not None
            listed = await asyncio.to_thread(
                subprocess.run,
                [binary, "catalog", "services", f"-http-addr={agent.address}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert listed.returncode == 0, listed.stderr
            assert "svc-59" in listed.stdout.split()

            await agent.catalog_register_many([instance_body(42, 1, status="warning")])
            await next_where(
                snapshots,
                peak,
                lambda s: getattr(instance(s, 42, 1), "health", None) is Health.WARNING,
                "svc-42-1 warning",
            )
        assert peak.value <= MAX_CONNECTIONS


def exposed_requests(metrics: Metrics, source: str) -> dict[str, float]:
    """`lbsync_source_requests_total` of one source, by kind, as the daemon's /metrics has it."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == "lbsync_source_requests_total" and sample.labels["source"] == source:
                found[sample.labels["kind"]] = sample.value
    return found


async def test_requests_to_consul_and_etcd_are_counted_by_kind_in_the_metrics(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    with agent_running(tmp_path / "consul") as agent:
        await agent.catalog_register_many([instance_body(1, 0)])
        consul = source_for(agent)
        store = EtcdSource(EtcdSourceConfig(endpoints=(etcd.url,)))
        metrics = Metrics(lambda: Status(started_at=0.0, sources=()))
        metrics.count_requests(
            lambda: [(consul.name, consul.requests), (store.name, store.requests)]
        )
        async with following(consul) as snapshots, following(store) as etcd_snapshots:
            await snapshots.next(lambda s: len(all_instances(s)) == 1, 20, "one instance")
            await etcd_snapshots.next(lambda s: s.usable, 20, "a usable etcd snapshot")
            consul_counts = exposed_requests(metrics, consul.name)
            assert set(consul_counts) == {
                "catalog",
                "health-service",
                "health-state",
                "kv",
                "token",
            }
            assert consul_counts["health-service"] >= 1
            assert dict(consul.requests.items()) == consul_counts
            etcd_counts = exposed_requests(metrics, store.name)
            assert etcd_counts.get("range", 0) >= 1 and etcd_counts.get("watch", 0) >= 1


async def test_changes_the_health_state_cannot_show_still_reach_the_snapshot(
    tmp_path: Path,
) -> None:
    """An instance registered without checks moves only the catalog's index (every service is
    read); a node's new address alone moves neither query (seen at the periodic full read)."""
    with agent_running(tmp_path / "consul") as agent:
        await agent.catalog_register_many(
            [instance_body(service, number) for service in range(5) for number in range(2)]
        )
        source = ConsulSource(ConsulSourceConfig(addresses=(agent.address,), wait=5.0), resync=3.0)
        async with following(source) as snapshots:
            await snapshots.next(lambda s: len(all_instances(s)) == 10, 20, "10 instances")
            bare = instance_body(2, 5)
            del bare["Checks"]
            await agent.catalog_register_many([bare])
            arrived = await snapshots.next(
                lambda s: instance(s, 2, 5) is not None, 20, "the instance without checks"
            )
            assert getattr(instance(arrived, 2, 5), "health", None) is Health.PASSING

            node = instance_body(4, 0)["Node"]
            await agent.catalog_register_many([{"Node": node, "Address": "10.9.9.9"}])
            moved = await snapshots.next(
                lambda s: getattr(instance(s, 4, 0), "address", None) == "10.9.9.9",
                20,
                "svc-4-0 at its node's new address",
            )
            assert len(all_instances(moved)) == 11


def split_of(snapshot: Snapshot, service: str) -> tuple[str, tuple[tuple[str, float], ...]] | None:
    """(by, groups) of a service's split in a usable snapshot."""
    found = dict(snapshot.entries).get(f"services/{service}/split")
    return (found.by, found.groups) if isinstance(found, Split) and snapshot.usable else None


async def test_config_entries_take_two_connections_more_and_each_kind_wakes_only_its_own(
    tmp_path: Path,
) -> None:
    with agent_running(tmp_path / "consul") as agent:
        await agent.call(
            "PUT", "/v1/config", {"Kind": "service-defaults", "Name": "shop", "Protocol": "http"}
        )
        subsets = {v: {"Filter": f"Service.Meta.version == {v}"} for v in ("v1", "v2")}
        await agent.call(
            "PUT", "/v1/config", {"Kind": "service-resolver", "Name": "shop", "Subsets": subsets}
        )

        async def split(weights: dict[str, float]) -> None:
            splits = [{"Weight": w, "ServiceSubset": s} for s, w in weights.items()]
            await agent.call(
                "PUT", "/v1/config", {"Kind": "service-splitter", "Name": "shop", "Splits": splits}
            )

        await split({"v1": 80, "v2": 20})
        config = ConsulSourceConfig(addresses=(agent.address,), wait=30.0, config_entries=True)
        source = ConsulSource(config)
        peak = Peak(agent.ports["http"])
        async with following(source) as snapshots:
            await next_where(
                snapshots,
                peak,
                lambda s: split_of(s, "shop") == ("meta:version", (("v1", 80.0), ("v2", 20.0))),
                "the splitter's 80/20",
            )
            await split({"v1": 50, "v2": 50})
            await next_where(
                snapshots,
                peak,
                lambda s: split_of(s, "shop") == ("meta:version", (("v1", 50.0), ("v2", 50.0))),
                "the splitter's 50/50",
            )

            async def held() -> bool:  # the six queries' connections, once all are sent
                peak.value = max(peak.value, established_to(agent.ports["http"]))
                return peak.value == MAX_CONNECTIONS + 2

            await async_wait_until(held, 10, "six connections")
        assert peak.value == MAX_CONNECTIONS + 2
        # one read and one blocking query per kind, and the splitter's again after its write:
        # the resolver's query slept through it (waits are 30 s)
        assert dict(source.requests.items())["config"] == 5
