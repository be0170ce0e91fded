"""The Consul source against a real Consul agent: KV contract, catalog, health, faults, ACLs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.consul import ConsulAgent, consul_binary, following, running_agent
from support.ports import free_port

from lbsync.config import ConsulSourceConfig, TlsFiles
from lbsync.model.values import Health, Instance, Route, Snapshot, Split
from lbsync.sources.consul import ConsulSource

WELL_BEFORE_WAIT = 10.0  # a third of the source's 30 s blocking wait


def consul_source(
    *addresses: str, wait: float = 2.0, token: str | None = None, tls: TlsFiles | None = None
) -> ConsulSource:
    """The Consul source a `[source.consul]` table with these settings makes."""
    config = ConsulSourceConfig(addresses=addresses, wait=wait, token=token, tls=tls or TlsFiles())
    return ConsulSource(config)


SHOP_ROUTE = {"hosts": ["shop.example.com"]}


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """One dev agent for the tests that do not stop it (each cleans up after itself)."""
    if consul_binary() is None:
        pytest.fail("consul is not installed: run scripts/install-system.sh --with-test-servers")
    with running_agent(tmp_path_factory.mktemp("consul")) as agent:
        yield agent


@pytest.fixture
async def consul(shared_agent: ConsulAgent) -> AsyncIterator[ConsulAgent]:
    """The shared agent, emptied after the test: KV, services, external nodes, maintenance."""
    yield shared_agent
    await shared_agent.node_maintenance(False)
    for service_id in await shared_agent.call("GET", "/v1/agent/services"):
        await shared_agent.deregister(service_id)
    for node in await shared_agent.call("GET", "/v1/catalog/nodes"):
        if node["Node"] != shared_agent.node:
            await shared_agent.catalog_deregister(node["Node"])
    await shared_agent.kv_delete("", recurse=True)


@pytest.fixture
def own_agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A dev agent of this test's own, which the test may stop and restart."""
    with running_agent(tmp_path / "consul") as agent:
        yield agent


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """A dev agent with ACLs enabled, default policy deny, and a known master token."""
    with running_agent(tmp_path_factory.mktemp("consul-acl"), acl=True) as agent:
        yield agent


def instances(snapshot: Snapshot, service: str) -> dict[str, Instance]:
    prefix = f"services/{service}/instances/"
    return {
        entry.id: entry
        for key, entry in snapshot.entries
        if key.startswith(prefix) and isinstance(entry, Instance)
    }


def healths(snapshot: Snapshot, service: str) -> dict[str, Health]:
    return {key: instance.health for key, instance in instances(snapshot, service).items()}


def entry(snapshot: Snapshot, key: str) -> object:
    return dict(snapshot.entries).get(key)


def rejected(snapshot: Snapshot) -> dict[str, str]:
    return {key: str(rejection) for key, rejection in snapshot.rejected}


async def test_instances_arrive_with_their_health_and_follow_their_checks(
    consul: ConsulAgent,
) -> None:
    await consul.kv_put("lbsync/services/shop/route", SHOP_ROUTE)
    await consul.kv_put("lbsync/services/shop/split", {"groups": {"blue": 80, "green": 20}})
    weights = {"Passing": 3, "Warning": 1}
    await consul.register("shop", "blue-1", 9101, "blue", weights=weights, meta={"v": "1.4"})
    await consul.register("shop", "blue-2", 9102, "blue", weights=weights)
    await consul.register("shop", "green-1", 9103, "green")
    source = consul_source(consul.address, wait=2.0)
    async with following(source) as snapshots:
        first = await snapshots.next(
            lambda s: len(instances(s, "shop")) == 3, 10, "three shop instances"
        )
        assert first.usable and first.error is None and first.rejected == ()
        assert first.source == f"consul:{consul.address}"
        assert entry(first, "services/shop/route") == Route("shop", hosts=("shop.example.com",))
        assert entry(first, "services/shop/split") == Split(
            "shop", groups=(("blue", 80.0), ("green", 20.0))
        )
        assert instances(first, "shop")["blue-1"] == Instance(
            service="shop",
            id="blue-1",
            address="127.0.0.1",
            port=9101,
            tags=("blue",),
            meta=(("v", "1.4"),),
            weight=3,
            health=Health.PASSING,
        )
        assert ("services/shop/route", '{"hosts": ["shop.example.com"]}') in first.raw
        assert source.watched == {"shop"}

        await consul.set_check("green-1", "critical")
        failed = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert healths(failed, "shop") == {
            "blue-1": Health.PASSING,
            "blue-2": Health.PASSING,
            "green-1": Health.CRITICAL,
        }

        await consul.set_check("blue-1", "warning")
        warned = await snapshots.next(lambda s: True, 5, "the next snapshot")
        blue_1 = instances(warned, "shop")["blue-1"]
        assert (blue_1.health, blue_1.weight) == (Health.WARNING, 1)

        await consul.deregister("blue-2")
        gone = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert set(instances(gone, "shop")) == {"blue-1", "green-1"}

        await consul.set_check("blue-1", "critical")
        all_failing = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert all_failing.usable, "all instances failing is reported, not a fault"
        assert set(healths(all_failing, "shop").values()) == {Health.CRITICAL}
        assert [s for s in snapshots.seen if not s.usable] == []
        assert all(a != b for a, b in zip(snapshots.seen, snapshots.seen[1:], strict=False))


async def test_service_and_node_maintenance_are_maintenance(consul: ConsulAgent) -> None:
    await consul.kv_put("lbsync/services/shop/route", SHOP_ROUTE)
    await consul.register("shop", "blue-1", 9101, "blue")
    await consul.register("shop", "green-1", 9103, "green")
    source = consul_source(consul.address, wait=2.0)
    async with following(source) as snapshots:
        await snapshots.next(lambda s: len(instances(s, "shop")) == 2, 10, "two instances")

        await consul.service_maintenance("blue-1", True)
        one = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert healths(one, "shop") == {"blue-1": Health.MAINTENANCE, "green-1": Health.PASSING}

        await consul.service_maintenance("blue-1", False)
        back = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert set(healths(back, "shop").values()) == {Health.PASSING}

        await consul.node_maintenance(True)
        node = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert set(healths(node, "shop").values()) == {Health.MAINTENANCE}

        await consul.node_maintenance(False)
        again = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert set(healths(again, "shop").values()) == {Health.PASSING}


async def test_a_route_tag_exposes_a_service_and_a_kv_route_wins(consul: ConsulAgent) -> None:
    await consul.register("cart", "cart-1", 9201, "lbsync.route=cart.example.com/cart")
    await consul.register("cart", "cart-2", 9202, "lbsync.route=cart.example.com/cart")
    await consul.register("billing", "billing-1", 9301)  # not exposed: never watched
    await consul.register("api", "api-1", 9401, "lbsync.route=/api")
    source = consul_source(consul.address, wait=2.0)
    async with following(source) as snapshots:
        tagged = await snapshots.next(
            lambda s: len(instances(s, "cart")) == 2 and len(instances(s, "api")) == 1,
            10,
            "cart and api instances",
        )
        assert entry(tagged, "services/cart/route") == Route(
            "cart", hosts=("cart.example.com",), path="/cart"
        )
        assert entry(tagged, "services/api/route") == Route("api", hosts=(), path="/api")
        assert instances(tagged, "billing") == {}
        assert source.watched == {"cart", "api"}
        assert tagged.raw == ()

        await consul.kv_put("lbsync/services/cart/route", {"hosts": ["kv.example.com"]})
        kv_wins = await snapshots.next(
            lambda s: entry(s, "services/cart/route") != tagged.entries[0][1], 5, "KV route"
        )
        assert entry(kv_wins, "services/cart/route") == Route("cart", hosts=("kv.example.com",))

        await consul.kv_delete("lbsync/services/cart/route")
        tag_again = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert entry(tag_again, "services/cart/route") == entry(tagged, "services/cart/route")

        await consul.deregister("api-1")  # health (no instance) and catalog (no service) report
        unexposed = await snapshots.next(
            lambda s: entry(s, "services/api/route") is None, 5, "api no longer exposed"
        )
        assert instances(unexposed, "api") == {}
        assert source.watched == {"cart"}


async def test_a_change_keeps_every_part_it_did_not_touch_as_the_same_object(
    consul: ConsulAgent,
) -> None:
    await consul.kv_put("lbsync/services/shop/route", SHOP_ROUTE)
    await consul.kv_put("lbsync/settings/owner", '"platform"')
    await consul.register("shop", "shop-1", 9501)
    await consul.register("cart", "cart-1", 9502, "lbsync.route=/cart")
    source = consul_source(consul.address, wait=2.0)
    async with following(source) as snapshots:
        first = await snapshots.next(
            lambda s: len(instances(s, "shop")) == 1 and len(instances(s, "cart")) == 1,
            10,
            "shop and cart instances",
        )
        assert set(first.parts) == {"", "services/shop", "services/cart"}

        await consul.set_check("cart-1", "critical")
        flipped = await snapshots.next(
            lambda s: healths(s, "cart") == {"cart-1": Health.CRITICAL}, 5, "cart-1 critical"
        )
        assert flipped.parts["services/cart"] != first.parts["services/cart"]
        assert flipped.parts["services/shop"] is first.parts["services/shop"]
        assert flipped.parts[""] is first.parts[""]

        await consul.kv_put("lbsync/services/shop/split", {"groups": {"blue": 100}})
        split = await snapshots.next(
            lambda s: entry(s, "services/shop/split") is not None, 5, "shop's split"
        )
        assert split.parts["services/cart"] is flipped.parts["services/cart"]
        assert split.parts[""] is flipped.parts[""]


async def test_bad_kv_values_are_refused_by_key_and_the_rest_applies(consul: ConsulAgent) -> None:
    await consul.kv_put("lbsync/services/shop/route", SHOP_ROUTE)
    await consul.kv_put("lbsync/services/shop/split", {"groups": {"blue": 80, "green": 50}})
    await consul.kv_put("lbsync/services/cart/route", '{"hosts": ["cart.example.com"')
    await consul.kv_put(
        "lbsync/services/static/instances/s-1", {"address": "10.0.0.9\nbind :80", "port": 80}
    )
    await consul.kv_put("lbsync/services/static/instances/s-2", {"address": "10.0.0.8", "port": 80})
    await consul.kv_put("lbsync/settings/owner", '"platform"')
    await consul.kv_put("lbsync/app/banner", "hello")
    source = consul_source(consul.address, wait=2.0)
    async with following(source) as snapshots:
        snapshot = await snapshots.next(lambda s: s.usable, 10, "a usable snapshot")
    problems = rejected(snapshot)
    assert sorted(problems) == [
        "services/cart/route",
        "services/shop/split",
        "services/static/instances/s-1",
    ]
    assert problems["services/cart/route"].startswith(
        "consul key lbsync/services/cart/route: not valid JSON"
    )
    assert problems["services/shop/split"] == (
        "consul key lbsync/services/shop/split: group shares sum to 130, more than 100"
    )
    assert problems["services/static/instances/s-1"].startswith(
        "consul key lbsync/services/static/instances/s-1: address must be"
    )
    assert [key for key, _ in snapshot.entries] == [
        "services/shop/route",
        "services/static/instances/s-2",
        "settings/owner",
    ]
    assert dict(snapshot.raw)["app/banner"] == "hello"
    assert dict(snapshot.raw)["services/shop/split"] == '{"groups": {"blue": 80, "green": 50}}'


async def test_catalog_instances_are_checked_like_kv_values(consul: ConsulAgent) -> None:
    await consul.kv_put("lbsync/services/api/route", {"path": "/api"})
    for number in (1, 2):
        await consul.catalog_register(
            f"ext-{number}",
            f"10.1.0.{number}",
            {"ID": "api-1", "Service": "api", "Port": 8081},
            [{"CheckID": "serfHealth", "Name": "serf", "Status": "passing"}],
        )
    await consul.catalog_register(
        "ext-3",
        "10.1.0.3",
        {"ID": "api-9", "Service": "api", "Port": 8081, "Address": "10.1.0.3\nbind :80"},
        [{"CheckID": "serfHealth", "Name": "serf", "Status": "critical"}],
    )
    source = consul_source(consul.address, wait=2.0)
    async with following(source) as snapshots:
        snapshot = await snapshots.next(lambda s: len(instances(s, "api")) == 2, 10, "api")
    found = instances(snapshot, "api")
    assert {key: (i.address, i.health) for key, i in found.items()} == {
        "ext-1:api-1": ("10.1.0.1", Health.PASSING),
        "ext-2:api-1": ("10.1.0.2", Health.PASSING),
    }
    assert list(rejected(snapshot).values()) == [
        "consul service api instance api-9: address must be an IP address or a DNS host name,"
        " got '10.1.0.3\\nbind :80'"
    ]


async def test_the_next_address_is_used_when_the_first_refuses(consul: ConsulAgent) -> None:
    await consul.kv_put("lbsync/settings/owner", '"platform"')
    dead = f"http://127.0.0.1:{free_port()}"
    source = consul_source(dead, consul.address, wait=2.0)
    async with following(source) as snapshots:
        snapshot = await snapshots.next(lambda s: s.usable, 10, "a usable snapshot")
    assert source.name == f"consul:{dead}"
    assert [key for key, _ in snapshot.entries] == ["settings/owner"]


async def test_a_change_right_after_a_restart_is_seen_long_before_the_blocking_wait_ends(
    own_agent: ConsulAgent,
) -> None:
    """A blocking query that kept the index from before the restart would sleep through its
    whole 30 s wait; the reset index sees the change at once (the figure: bench/propagation.py
    consul-restart)."""
    for number in range(40):  # the index before the restart is well above the one after it
        await own_agent.kv_put("lbsync/noise", str(number))
    source = consul_source(own_agent.address, wait=30.0)
    async with following(source) as snapshots:
        await snapshots.next(lambda s: ("noise", "39") in s.raw, 10, "the noise key")
        own_agent.stop()
        await snapshots.next(lambda s: not s.usable, 5, "the agent reported down")
        await own_agent.start_async()

        await own_agent.kv_put("lbsync/services/shop/route", SHOP_ROUTE)
        routed = await snapshots.next(
            lambda s: entry(s, "services/shop/route") is not None, WELL_BEFORE_WAIT, "the route"
        )
        assert "noise" not in dict(routed.raw), "the restarted agent lost its data"

        await own_agent.kv_put("lbsync/services/shop/split", {"groups": {"blue": 50}})
        await snapshots.next(
            lambda s: entry(s, "services/shop/split") is not None, WELL_BEFORE_WAIT, "split"
        )


async def test_consul_down_gives_one_unusable_snapshot_then_recovers(
    own_agent: ConsulAgent,
) -> None:
    await own_agent.kv_put("lbsync/settings/owner", '"platform"')
    source = consul_source(own_agent.address, wait=2.0)
    async with following(source) as snapshots:
        await snapshots.next(lambda s: s.usable, 10, "a usable snapshot")
        own_agent.stop()
        down = await snapshots.next(lambda s: True, 5, "the next snapshot")
        assert not down.usable and down.entries == ()
        assert down.error is not None
        assert down.error.startswith(f"Consul unreachable at {own_agent.address}")
        await own_agent.start_async()  # meanwhile: refused, then "No cluster leader" (500)
        await own_agent.kv_put("lbsync/settings/owner", '"platform"')
        back = await snapshots.next(lambda s: True, 10, "the snapshot after the restart")
        assert back.usable and [key for key, _ in back.entries] == ["settings/owner"]
        assert [s.usable for s in snapshots.seen] == [True, False, True]


async def test_acl_with_the_token_reads_kv_and_catalog_until_the_token_is_deleted(
    acl_agent: ConsulAgent,
) -> None:
    await acl_agent.kv_put("lbsync/services/shop/route", SHOP_ROUTE)
    await acl_agent.register("shop", "blue-1", 9101, "blue")
    token = await acl_agent.create_token(
        'key_prefix "lbsync/" { policy = "read" }\n'
        'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
    )
    try:
        source = consul_source(acl_agent.address, token=token, wait=2.0)
        async with following(source) as snapshots:
            snapshot = await snapshots.next(lambda s: s.usable, 10, "a usable snapshot")
            assert set(instances(snapshot, "shop")) == {"blue-1"}
            assert entry(snapshot, "services/shop/route") is not None

            await acl_agent.delete_token(token)
            refused = await snapshots.next(lambda s: True, 5, "the next snapshot")
            assert not refused.usable and refused.error is not None
            assert refused.error.startswith("Consul ACL: token not found"), refused.error
    finally:
        await acl_agent.deregister("blue-1")


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (
            None,  # KV and catalog are both refused: whichever is reported first is named
            "Consul ACL: token missing or not allowed to read ",
        ),
        ("wrong-token", "Consul ACL: token not found (wrong, expired or deleted)"),
        (
            "service-reader",
            "Consul ACL: token missing or not allowed to read lbsync/: the configured token"
            ' needs key_prefix "lbsync/" read (Consul answered 403 Permission denied)',
        ),
        (
            "key-reader",
            "Consul ACL: token missing or not allowed to read the service catalog: the"
            ' configured token needs service_prefix "" read (Consul answered an empty catalog',
        ),
    ],
    ids=["missing token", "wrong token", "token without key read", "token without service read"],
)
async def test_acl_without_a_usable_token_never_looks_like_an_empty_catalog(
    acl_agent: ConsulAgent, token: str | None, problem: str
) -> None:
    await acl_agent.kv_put("lbsync/services/shop/route", SHOP_ROUTE)
    if token == "service-reader":
        token = await acl_agent.create_token(
            'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
        )
    elif token == "key-reader":
        token = await acl_agent.create_token('key_prefix "lbsync/" { policy = "read" }')
    source = consul_source(acl_agent.address, token=token, wait=2.0)
    async with following(source) as snapshots:
        refused = await snapshots.next(lambda s: True, 10, "the first snapshot")
        assert not refused.usable and refused.error is not None
        assert refused.error.startswith(problem), refused.error
        if token is None:
            assert "no token is configured, so the anonymous token needs " in refused.error
        await acl_agent.register("shop", "blue-1", 9101, "blue")  # a change Consul hides
        try:
            later = await snapshots.during(2.5)  # longer than one blocking wait
        finally:
            await acl_agent.deregister("blue-1")
    assert [s for s in later if s.usable] == []
    assert all(not s.usable for s in snapshots.seen)


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    with running_agent(tmp_path / "consul", tls=True) as agent:
        await agent.kv_put("lbsync/settings/owner", '"platform"')
        files = agent.tls_files
        source = consul_source(agent.https_address, tls=TlsFiles(**files))
        async with following(source) as snapshots:
            snapshot = await snapshots.next(lambda s: True, 10, "the first snapshot")
        assert snapshot.usable and [key for key, _ in snapshot.entries] == ["settings/owner"]

        # no client certificate: the agent verifies incoming HTTPS
        source = consul_source(agent.https_address, tls=TlsFiles(ca_file=files["ca_file"]))
        async with following(source) as snapshots:
            refused = await snapshots.next(lambda s: True, 10, "the first snapshot")
        assert not refused.usable and refused.error is not None
        assert refused.error.startswith(f"Consul unreachable at {agent.https_address}")
        assert "certificate" in refused.error
