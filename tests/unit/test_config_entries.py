"""Consul's splitter and resolver config entries as splits: each mapping, and each refusal named."""

from __future__ import annotations

from typing import Any

import pytest

from lbsync.model.values import Rejection, Split
from lbsync.sources.consul.entries import (
    RESOLVER,
    SPLITTER,
    EntrySplits,
    parse_config_entries,
    subset_group,
)
from lbsync.sources.consul.fabio import parse_fabio_config
from lbsync.sources.consul.mapping import kv_view
from lbsync.sources.consul.parts import compose


def splitter(name: str, *splits: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"Kind": SPLITTER, "Name": name, "Splits": list(splits), **more}


def resolver(name: str, subsets: dict[str, str], **more: Any) -> dict[str, Any]:
    bodies = {subset: {"Filter": text} for subset, text in subsets.items()}
    return {"Kind": RESOLVER, "Name": name, "Subsets": bodies, **more}


VERSIONS = {"v1": "Service.Meta.version == v1", "v2": "Service.Meta.version == v2"}
EIGHTY_TWENTY = ({"Weight": 80, "ServiceSubset": "v1"}, {"Weight": 20, "ServiceSubset": "v2"})


def one(entries: EntrySplits, service: str = "shop") -> dict[str, object] | str:
    """The service's split value, or the one refusal's `where: why`."""
    refused = [refusal for name, refusal in entries.refused if name == service]
    if refused:
        assert len(refused) == 1, refused
        return f"{refused[0].where}: {refused[0].why}"
    value = entries.split_value(service)
    assert value is not None
    return value


@pytest.mark.parametrize(
    ("text", "by", "group"),
    [
        ("Service.Meta.version == v1", "meta:version", "v1"),
        ('Service.Meta.version == "v1"', "meta:version", "v1"),
        ("Service.Meta.version==`1.4-rc`", "meta:version", "1.4-rc"),
        ("  Service.Meta.version ==\t1.4 ", "meta:version", "1.4"),
        ('Service.Meta["app-version"] == "2"', "meta:app-version", "2"),
        ("Service.Meta[ `app_version` ] == v2", "meta:app_version", "v2"),
        ('"canary" in Service.Tags', "tag", "canary"),
        ("canary in Service.Tags", "tag", "canary"),
        ("`blue.1` in Service.Tags", "tag", "blue.1"),
        ('Service.Tags contains "green"', "tag", "green"),
        ("Service.Tags contains green", "tag", "green"),
    ],
)
def test_a_subset_filter_of_a_known_shape_is_a_group(text: str, by: str, group: str) -> None:
    assert subset_group("s", {"Filter": text}) == (by, group)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Filter": "Service.Meta.version != v1"}, "is not one lbsync reads"),
        ({"Filter": "Service.Meta.version == v1 and Service.Tags contains x"}, "not one"),
        ({"Filter": "( Service.Meta.version == v1 )"}, "not one"),
        ({"Filter": 'Service.Meta.version matches "v.*"'}, "not one"),
        ({"Filter": "Node.Meta.rack == a"}, "not one"),
        ({"Filter": "service.meta.version == v1"}, "not one"),  # Consul's selectors: case counts
        ({"Filter": 'Service.Meta.version == "v\\x31"'}, "not one"),  # escapes are not read
        ({"Filter": "Service.Meta.version == v1.0"}, "not one"),  # Consul refuses it as well
        ({"Filter": '"canary" not in Service.Tags'}, "not one"),
        ({"Filter": "Service.Tags == canary"}, "not one"),
        ({"Filter": "Service.Tags contains not"}, "quote the value 'not'"),
        ({"Filter": '"v1" == Service.Meta.version'}, "not one"),
        ({"Filter": 'Service.Meta.version == "two words"'}, "subset s's value"),
        ({"Filter": 'Service.Meta.version == "a;b"'}, "subset s's value"),
        ({"Filter": 'Service.Meta["a.b"] == v1'}, "meta key"),
        ({"Filter": ""}, "has no Filter"),
        ({}, "has no Filter"),
        ({"Filter": "Service.Meta.version == v1", "OnlyPassing": "yes"}, "OnlyPassing"),
        ({"Filter": "Service.Meta.version == v1", "Weight": 3}, "unknown field 'Weight'"),
        ("Service.Meta.version == v1", "not a JSON object"),
    ],
)
def test_any_other_subset_is_refused_with_the_reason(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        subset_group("s", body)


def test_subsets_by_meta_version_with_an_80_20_splitter_make_a_meta_split() -> None:
    entries = parse_config_entries(
        splitters=[splitter("shop", *EIGHTY_TWENTY)], resolvers=[resolver("shop", VERSIONS)]
    )
    assert one(entries) == {"by": "meta:version", "groups": {"v1": 80.0, "v2": 20.0}}
    assert entries.refused == ()


def test_tag_subsets_make_a_tag_split_in_the_splitters_order() -> None:
    tags = {"stable": '"stable" in Service.Tags', "canary": "Service.Tags contains canary"}
    entries = parse_config_entries(
        splitters=[
            splitter(
                "shop",
                {"Weight": 5, "ServiceSubset": "canary"},
                {"Weight": 95, "ServiceSubset": "stable"},
            )
        ],
        resolvers=[resolver("shop", tags)],
    )
    assert one(entries) == {"by": "tag", "groups": {"canary": 5.0, "stable": 95.0}}


def test_a_split_without_subset_goes_to_the_default_subset() -> None:
    entries = parse_config_entries(
        splitters=[splitter("shop", {"Weight": 90}, {"Weight": 10, "ServiceSubset": "v2"})],
        resolvers=[resolver("shop", VERSIONS, DefaultSubset="v1")],
    )
    assert one(entries) == {"by": "meta:version", "groups": {"v1": 90.0, "v2": 10.0}}


def test_splits_to_the_same_instances_add_up() -> None:
    same = {**VERSIONS, "one": 'Service.Meta.version == "v1"'}
    entries = parse_config_entries(
        splitters=[
            splitter(
                "shop",
                {"Weight": 60.5},  # the default subset, v1, which Consul accepts beside v1
                {"Weight": 19.5, "ServiceSubset": "v1", "Service": "shop"},
                {"Weight": 10, "ServiceSubset": "one"},
                {"Weight": 10, "ServiceSubset": "v2"},
            )
        ],
        resolvers=[resolver("shop", same, DefaultSubset="v1")],
    )
    assert one(entries) == {"by": "meta:version", "groups": {"v1": 90.0, "v2": 10.0}}


def test_a_single_split_to_the_whole_service_is_plain_load_balancing() -> None:
    entries = parse_config_entries(splitters=[splitter("shop", {"Weight": 100})], resolvers=[])
    assert one(entries) == {"by": "tag", "groups": {}}


def test_weights_with_two_decimals_and_timeouts_and_metadata_are_taken() -> None:
    three = {**VERSIONS, "v3": "Service.Meta.version == v3"}
    subsets: dict[str, Any] = {n: {"Filter": f, "OnlyPassing": True} for n, f in three.items()}
    entries = parse_config_entries(
        splitters=[
            splitter(
                "shop",
                {"Weight": 33.33, "ServiceSubset": "v1", "Namespace": "default"},
                {"Weight": 33.33, "ServiceSubset": "v2"},
                {"Weight": 33.34, "ServiceSubset": "v3"},
                Meta={"owner": "team"},
                CreateIndex=5,
                ModifyIndex=9,
            )
        ],
        resolvers=[
            {
                "Kind": RESOLVER,
                "Name": "shop",
                "Subsets": subsets,
                "ConnectTimeout": "5s",
                "RequestTimeout": "15s",
                "Failover": {},  # empty: the default
                "Namespace": "default",
            }
        ],
    )
    assert one(entries) == {
        "by": "meta:version",
        "groups": {"v1": 33.33, "v2": 33.33, "v3": 33.34},
    }


SPLITTER_REFUSALS = [
    (
        [{"Weight": 60, "Service": "api"}, {"Weight": 40, "ServiceSubset": "v2"}],
        {},
        "split 1 goes to another service ('api')",
    ),
    ([{"Weight": 60}, {"Weight": 40, "ServiceSubset": "v2"}], {}, "goes to every instance"),
    ([{"Weight": 60, "ServiceSubset": "v1"}, {"Weight": 30, "ServiceSubset": "v2"}], {}, "90"),
    ([{"Weight": -10, "ServiceSubset": "v1"}, {"Weight": 110, "ServiceSubset": "v2"}], {}, "0 to"),
    ([{"Weight": 33.333, "ServiceSubset": "v1"}, {"Weight": 66.667}], {}, "two decimals"),
    ([{"Weight": "80", "ServiceSubset": "v1"}], {}, "Weight must be a number"),
    ([{"Weight": True, "ServiceSubset": "v1"}], {}, "Weight must be a number"),
    ([{"Weight": 100, "ServiceSubset": "v9"}], {}, "no service-resolver shop defines subset 'v9'"),
    (
        [{"Weight": 100, "ServiceSubset": "v1", "RequestHeaders": {"Set": {"x": "1"}}}],
        {},
        "split 1: RequestHeaders: header changes are not carried out",
    ),
    ([{"Weight": 100, "ServiceSubset": "v1", "ResponseHeaders": {"Add": {}}}], {}, "header"),
    ([{"Weight": 100, "ServiceSubset": "v1", "Namespace": "team"}], {}, "Namespace 'team'"),
    ([{"Weight": 100, "ServiceSubset": "v1", "Partition": "p"}], {}, "Partition 'p'"),
    ([{"Weight": 100, "ServiceSubset": "v1", "Hash": "x"}], {}, "unknown field 'Hash'"),
    ([{"Weight": 100, "ServiceSubset": 3}], {}, "ServiceSubset must be"),
    (["v1"], {}, "split 1: not a JSON object"),
    ([], {}, "Splits must be a non-empty list"),
    ([{"Weight": 100, "ServiceSubset": "v1"}], {"Namespace": "team"}, "Namespace 'team'"),
    ([{"Weight": 100, "ServiceSubset": "v1"}], {"Priority": 1}, "unknown field 'Priority'"),
]


@pytest.mark.parametrize(("splits", "more", "message"), SPLITTER_REFUSALS)
def test_a_splitter_lbsync_cannot_carry_out_is_refused_by_name(
    splits: list[Any], more: dict[str, Any], message: str
) -> None:
    entries = parse_config_entries(
        splitters=[splitter("shop", *splits, **more), splitter("api", {"Weight": 100})],
        resolvers=[resolver("shop", VERSIONS)],
    )
    refusal = one(entries)
    assert isinstance(refusal, str)
    assert refusal.startswith("consul config service-splitter/shop: "), refusal
    assert message in refusal
    assert one(entries, "api") == {"by": "tag", "groups": {}}  # the other service applies


RESOLVER_REFUSALS = [
    ({"Redirect": {"Service": "web", "Datacenter": "dc2"}}, "Redirect: it sends"),
    ({"Failover": {"*": {"Datacenters": ["dc2"]}}}, "Failover: a resolver's failover"),
    ({"LoadBalancer": {"Policy": "maglev"}}, "LoadBalancer: the balancing policy"),
    ({"PrioritizeByLocality": {"Mode": "failover"}}, "PrioritizeByLocality"),
    ({"Partition": "team"}, "Partition 'team' is not default"),
    ({"DefaultSubset": "v9"}, "DefaultSubset 'v9' is not among its Subsets"),
    ({"Subsets": "v1"}, "Subsets must be an object"),
    ({"Subsets": {**VERSIONS, "v2": "Service.Meta.version != v1"}}, "subset v2"),
    (
        {"Subsets": {"v1": "Service.Meta.version == v1", "v2": '"v2" in Service.Tags'}},
        "its subsets v1 (meta:version), v2 (tag) group by different things",
    ),
    (
        {"Subsets": {"v1": "Service.Meta.version == v1", "v2": "Service.Meta.release == v2"}},
        "its subsets v1 (meta:version), v2 (meta:release) group by different things",
    ),
]


@pytest.mark.parametrize(("more", "message"), RESOLVER_REFUSALS)
def test_a_resolver_lbsync_cannot_carry_out_is_refused_by_name(
    more: dict[str, Any], message: str
) -> None:
    body = resolver("shop", VERSIONS)
    for field, value in more.items():
        subsets = field == "Subsets" and isinstance(value, dict)
        body[field] = {n: {"Filter": f} for n, f in value.items()} if subsets else value
    entries = parse_config_entries(splitters=[splitter("shop", *EIGHTY_TWENTY)], resolvers=[body])
    refusal = one(entries)
    assert isinstance(refusal, str)
    assert refusal.startswith("consul config service-resolver/shop: "), refusal
    assert message in refusal


def test_a_resolver_alone_gives_nothing_and_is_not_judged() -> None:
    odd = resolver("api", {"x": "Node.Meta.rack == a"}, Redirect={"Service": "web"})
    entries = parse_config_entries(splitters=[], resolvers=[odd])
    assert entries == EntrySplits()


def test_entries_without_a_name_or_listed_twice_are_refused() -> None:
    entries = parse_config_entries(
        splitters=[
            {"Kind": SPLITTER, "Splits": []},
            "shop",
            splitter("db", {"Weight": 100}),
            splitter("db", {"Weight": 100}),
            {"Kind": RESOLVER, "Name": "web", "Splits": [{"Weight": 100}]},
            splitter("shop", *EIGHTY_TWENTY),
        ],
        resolvers=[resolver("shop", VERSIONS), resolver("shop", VERSIONS)],
    )
    refused = {(name, refusal.kind, refusal.why) for name, refusal in entries.refused}
    assert refused == {
        ("#1", SPLITTER, "an entry without a Name"),
        ("#2", SPLITTER, "an entry without a Name"),
        ("db", SPLITTER, "listed twice"),
        ("web", SPLITTER, "an entry of another kind in the service-splitter list"),
        ("shop", RESOLVER, "listed twice"),
    }
    assert entries.split_value("db") is None  # which of the two is meant cannot be told
    assert entries.split_value("shop") is None


def test_the_snapshot_takes_entries_where_neither_kv_nor_fabio_gives_a_split() -> None:
    kv = kv_view([("lbsync/services/web/split", b'{"groups": {"blue": 50}}')], prefix="lbsync/")
    fabio = parse_fabio_config('route weight api /api weight 0.3 tags "v2"\n')
    split = (splitter(name, *EIGHTY_TWENTY) for name in ("shop", "web", "api", "db", "bad name"))
    entries = parse_config_entries(
        splitters=list(split),
        resolvers=[resolver(name, VERSIONS) for name in ("shop", "web", "api", "bad name")],
    )
    snapshot = compose(
        source="consul", kv=kv, catalog={}, services={}, fabio=fabio, entries=entries
    )
    found = dict(snapshot.entries)
    shop = found["services/shop/split"]
    assert isinstance(shop, Split) and shop.by == "meta:version"
    assert shop.groups == (("v1", 80.0), ("v2", 20.0))
    web = found["services/web/split"]
    assert isinstance(web, Split) and web.groups == (("blue", 50.0),)  # KV wins
    api = found["services/api/split"]
    assert isinstance(api, Split) and api.groups == (("v2", 30.0),)  # Fabio's lines win
    rejected = dict(snapshot.rejected)
    db = rejected["services/db/split"]
    assert isinstance(db, Rejection)
    assert (
        str(db) == "consul config service-splitter/db: no service-resolver db defines subset 'v1'"
    )
    named = rejected["consul-config/service-splitter/bad name"]
    assert "consul config service-splitter/bad name: the name must be" in str(named)
