"""Failover tiers (`core.failover`): the split inside the serving datacenter, backups weighted
where the proxy can turn to them at once, later datacenters waiting at weight 0; and how the
KV contract, the Consul mapping, the configuration and the templates carry them (pure)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.desired import at, rendered, state_of

from lbsync.common.backoff import Backoff
from lbsync.config import Config, ConfigError, ConsulSourceConfig, load
from lbsync.core.failover import allocate_tiers
from lbsync.core.weights import allocate_shares
from lbsync.daemon.gauges import state_exposition
from lbsync.kv.consul import Agents, Settings
from lbsync.model.checks import ContractError
from lbsync.model.contract import parse_instance
from lbsync.model.values import Health, Instance, Rejection, Split
from lbsync.sources.consul.datacenter import Datacenter
from lbsync.sources.consul.mapping import kv_view, service_view
from lbsync.sources.consul.parts import DATACENTER_FAULT, compose
from lbsync.sources.consul.watch import Retry

SPLIT = Split(service="shop", groups=(("green", 20.0),))


def instance(name: str, tier: int, *tags: str, health: Health = Health.PASSING) -> Instance:
    dc = f"dc{tier + 1}"
    return Instance("shop", f"{dc}-{name}", "10.0.0.1", 8000, tags, (), 1, health, dc, tier)


def weights_of(instances: tuple[Instance, ...], split: Split | None = SPLIT) -> dict[str, int]:
    tiered = allocate_tiers(instances, split)
    return {inst.id: w for inst, w in zip(instances, tiered.shares.weights, strict=True)}


LOCAL = (instance("blue-1", 0), instance("blue-2", 0), instance("green-1", 0, "green"))
DC2 = (instance("blue-1", 1), instance("green-1", 1, "green"))
DC3 = (instance("blue-1", 2),)


def test_the_local_tier_serves_and_the_next_waits_weighted_as_backups() -> None:
    tiered = allocate_tiers(LOCAL + DC2 + DC3, SPLIT)
    weights = weights_of(LOCAL + DC2 + DC3)
    assert tiered.backup == [False] * 3 + [True] * 3
    assert tiered.serving_datacenter == "dc1"
    assert weights["dc1-green-1"] > 0 and weights["dc2-green-1"] > 0 and weights["dc2-blue-1"] > 0
    assert weights["dc3-blue-1"] == 0  # behind dc2
    achieved = dict(
        zip([i.id for i in tiered.shares.instances], tiered.shares.achieved, strict=True)
    )
    assert achieved["dc2-blue-1"] == 0 and abs(achieved["dc1-green-1"] - 20) < 1


def test_with_every_local_instance_failing_the_split_applies_inside_dc2() -> None:
    failing = tuple(
        Instance(i.service, i.id, i.address, i.port, i.tags, (), 1, Health.CRITICAL, "dc1", 0)
        for i in LOCAL
    )
    tiered = allocate_tiers(failing + DC2 + DC3, SPLIT)
    weights = weights_of(failing + DC2 + DC3)
    assert tiered.serving_datacenter == "dc2"
    assert [weights[i.id] for i in failing] == [0, 0, 0]
    assert weights["dc3-blue-1"] == 0
    groups = {group.name: group for group in tiered.shares.groups}
    assert groups["green"].achieved == pytest.approx(20, abs=1)
    # the standby weights are the ones the proxy used while dc1 served: no change at failover
    assert weights["dc2-green-1"] == weights_of(LOCAL + DC2 + DC3)["dc2-green-1"]


def test_dc3_is_weighted_once_dc2_has_no_eligible_instance() -> None:
    down = tuple(
        Instance(i.service, i.id, i.address, i.port, i.tags, (), 1, Health.CRITICAL, "dc2", 1)
        for i in DC2
    )
    weights = weights_of(LOCAL + down + DC3)
    assert weights["dc3-blue-1"] > 0 and weights["dc2-blue-1"] == 0
    assert allocate_tiers(LOCAL + down + DC3, SPLIT).serving_datacenter == "dc1"


def test_no_eligible_instance_anywhere_is_unserved_and_serves_nowhere() -> None:
    down = tuple(
        Instance(
            i.service,
            i.id,
            i.address,
            i.port,
            i.tags,
            (),
            1,
            Health.CRITICAL,
            i.datacenter,
            i.failover,
        )
        for i in LOCAL + DC2
    )
    tiered = allocate_tiers(down, SPLIT)
    assert tiered.serving_datacenter == "" and tiered.shares.unserved == 100
    assert not any(tiered.shares.weights)


tiers = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from([(), ("green",)]),
        st.sampled_from([Health.PASSING, Health.CRITICAL]),
        st.integers(0, 5),
    ),
    max_size=8,
)


@given(tiers)
def test_without_tiers_it_is_the_plain_allocation_and_with_them_each_tier_is_one(
    rows: list[tuple[int, tuple[str, ...], Health, int]],
) -> None:
    made = tuple(
        Instance("shop", f"i{n}", "10.0.0.1", 8000, tags, (), weight, health, "", tier)
        for n, (tier, tags, health, weight) in enumerate(rows)
    )
    flat = tuple(
        Instance(i.service, i.id, i.address, i.port, i.tags, (), i.weight, i.health) for i in made
    )
    assert allocate_tiers(flat, SPLIT).shares == allocate_shares(flat, SPLIT)
    tiered = allocate_tiers(made, SPLIT)
    for tier in {i.failover for i in made}:
        members = tuple(i for i in made if i.failover == tier)
        alone = allocate_shares(members, SPLIT)
        got = [w for i, w in zip(made, tiered.shares.weights, strict=True) if i.failover == tier]
        assert got == alone.weights or not any(got)  # its own weights, or waiting at 0
    assert sum(tiered.shares.achieved) <= 100 + 1e-6


def test_the_contract_takes_a_datacenter_and_a_failover_tier_and_refuses_bad_ones() -> None:
    made = parse_instance(
        "shop", "a", {"address": "10.0.0.1", "port": 80, "datacenter": "dc2", "failover": 1}
    )
    assert (made.datacenter, made.failover) == ("dc2", 1)
    plain = parse_instance("shop", "a", {"address": "10.0.0.1", "port": 80})
    assert (plain.datacenter, plain.failover) == ("", 0)
    for bad, named in (
        ({"failover": -1}, "failover"),
        ({"failover": 17}, "failover"),
        ({"failover": True}, "failover"),
        ({"datacenter": "dc 2\n"}, "datacenter"),
    ):
        with pytest.raises(ContractError, match=named):
            parse_instance("shop", "a", {"address": "10.0.0.1", "port": 80, **bad})


def test_consul_instances_of_another_datacenter_are_named_by_it() -> None:
    answer = [
        {
            "Node": {"Node": "n1", "Address": "10.0.0.2"},
            "Service": {"ID": "web-1", "Port": 80, "Tags": ["blue"]},
            "Checks": [],
        }
    ]
    view = service_view("shop", answer, datacenter="dc2", failover=1)
    ((key, made),) = view.entries
    assert key == "services/shop/instances/dc2:web-1"
    assert (made.id, made.datacenter, made.failover) == ("dc2:web-1", "dc2", 1)
    local = service_view("shop", answer, datacenter="dc1", failover=0)
    assert local.entries[0][1].id == "web-1" and local.entries[0][1].datacenter == "dc1"


def test_composition_adds_the_other_datacenters_instances_and_their_faults() -> None:
    answer = [
        {"Node": {"Node": "n1", "Address": "10.0.0.2"}, "Service": {"ID": "web-1", "Port": 80}}
    ]
    kv = kv_view(
        [("lbsync/services/shop/route", b'{"hosts": ["shop.example.com"]}')], prefix="lbsync/"
    )
    fault = (DATACENTER_FAULT + "dc2", Rejection("consul datacenter dc2", "unreachable"))
    snapshot = compose(
        source="consul",
        kv=kv,
        catalog={"shop": ()},
        services={"shop": service_view("shop", answer, datacenter="dc1")},
        remote={"shop": (service_view("shop", answer, datacenter="dc2", failover=1),)},
        faults=(fault,),
    )
    keys = [key for key, _ in snapshot.entries]
    assert "services/shop/instances/web-1" in keys and "services/shop/instances/dc2:web-1" in keys
    assert any(r.where == "consul datacenter dc2" for _, r in snapshot.rejected)


def test_the_datacenters_setting_names_the_local_one_first(tmp_path: Path) -> None:
    config = load_text(tmp_path, 'datacenters = ["dc1", "dc2"]')
    source = config.consul_source
    assert source is not None
    assert source.datacenters == ("dc1", "dc2") and source.datacenter == "dc1"
    for text, says in (
        ('datacenters = ["dc1", "dc1"]', "named twice"),
        ("datacenters = []", "at least"),
        ('datacenters = ["dc 1"]', "not a datacenter name"),
        ('datacenter = "dc1"\ndatacenters = ["dc1", "dc2"]', "not both"),
    ):
        with pytest.raises(ConfigError, match=says):
            load_text(tmp_path, text)


def load_text(tmp_path: Path, table: str) -> Config:
    """A configuration whose `[source.consul]` table holds these lines."""
    path = tmp_path / "lbsync.toml"
    path.write_text(f'[source.consul]\n{table}\n\n[[target]]\ndest = "run/haproxy.cfg"\n')
    return load(path, environ={})


FAILOVER = {
    "services/shop/route": {"hosts": ["shop.example.com"]},
    "services/shop/instances/blue-1": at(9101, datacenter="dc1"),
    "services/shop/instances/dc2-blue-1": at(9201, datacenter="dc2", failover=1),
}


def test_haproxy_renders_backup_servers_and_allbackups(tmp_path: Path) -> None:
    text = rendered(state_of(FAILOVER), "haproxy", tmp_path)
    assert "    option allbackups\n" in text
    assert "server dc2-blue-1 127.0.0.1:9201 weight 256 backup" in text
    assert "server blue-1 127.0.0.1:9101 weight 256\n" in text
    plain = rendered(
        state_of({k: v for k, v in FAILOVER.items() if "dc2" not in k}), "haproxy", tmp_path
    )
    assert "allbackups" not in plain and " backup" not in plain


def test_nginx_renders_backup_servers_but_random_has_none(tmp_path: Path) -> None:
    text = rendered(state_of(FAILOVER), "nginx", tmp_path)
    assert "server 127.0.0.1:9201 weight=256 backup;" in text
    randomly = {
        **FAILOVER,
        "services/shop/route": {"hosts": ["shop.example.com"], "balance": "random"},
    }
    text = rendered(state_of(randomly), "nginx", tmp_path)
    assert " backup" not in text and "server 127.0.0.1:9201 down;" in text
    down = {**randomly, "services/shop/instances/blue-1": at(9101, health="critical")}
    text = rendered(state_of(down), "nginx", tmp_path)
    assert "server 127.0.0.1:9201 weight=256;" in text and "server 127.0.0.1:9101 down;" in text


def test_the_state_says_which_datacenter_serves(tmp_path: Path) -> None:
    state = state_of(FAILOVER)
    shop = state.service("shop")
    assert shop is not None and shop.serving_datacenter == "dc1" and shop.has_backups
    down = {
        **FAILOVER,
        "services/shop/instances/blue-1": at(9101, datacenter="dc1", health="critical"),
    }
    shop = state_of(down).service("shop")
    assert shop is not None and shop.serving_datacenter == "dc2"


def test_metrics_say_whether_a_service_with_backups_is_failed_over() -> None:
    plain = {k: v for k, v in FAILOVER.items() if "dc2" not in k}
    assert b"lbsync_service_failed_over{" not in state_exposition(state_of(plain))
    text = state_exposition(state_of(FAILOVER))
    assert b'lbsync_service_failed_over{service="shop"} 0.0\n' in text
    down = {**FAILOVER, "services/shop/instances/blue-1": at(9101, health="critical")}
    assert b'lbsync_service_failed_over{service="shop"} 1.0\n' in state_exposition(state_of(down))


def test_another_datacenter_offers_only_the_services_it_has_read() -> None:
    """A service it began to follow but has not read yet (or failed to) is not offered; the
    composition goes on without its backups rather than failing."""
    agents = Agents(
        Settings.from_config(ConsulSourceConfig(addresses=("http://127.0.0.1:1",)), pool=1)
    )
    remote = Datacenter(
        agents,
        dc="dc2",
        label="dc2",
        failover=1,
        retry=Retry(Backoff(first=0.1, cap=1.0), random.Random(0)),
        resync=300.0,
        report=lambda name, fault: None,
        catalog_moved=lambda: None,
        changed=asyncio.Event(),
    )
    remote.follow(frozenset({"shop", "cart"}))
    assert remote.views() == {}
    answer = [
        {"Node": {"Node": "n1", "Address": "10.0.0.2"}, "Service": {"ID": "web-1", "Port": 80}}
    ]
    remote.services["shop"] = service_view("shop", answer, datacenter="dc2", failover=1)
    assert list(remote.views()) == ["shop"]
