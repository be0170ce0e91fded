"""Consul's catalog and KV answers mapped to KV-contract entries: pure functions, tables."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from typing import Any

import pytest

from lbsync.kv.consul import Unavailable
from lbsync.model.checks import ContractError
from lbsync.model.values import Health, HealthCheck, Instance, Redirect, Rejection, Route, Upstream
from lbsync.sources.consul.mapping import (
    KVView,
    exposed,
    instance_health,
    instance_weight,
    kv_keys,
    kv_view,
    service_view,
    tag_route,
)
from lbsync.sources.consul.parts import compose
from lbsync.sources.consul.source import RETRY
from lbsync.sources.consul.watch import Retry, next_index


def check(check_id: str, status: str, service_id: str = "") -> dict[str, str]:
    return {"CheckID": check_id, "Status": status, "ServiceID": service_id}


def item(
    service_id: str,
    *,
    node: str = "node-a",
    node_address: str = "10.0.0.1",
    address: str = "",
    port: int = 8080,
    tags: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    weights: dict[str, int] | None = None,
    checks: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """One `/v1/health/service/<svc>` item, as Consul 1.8 answers it."""
    return {
        "Node": {"Node": node, "Address": node_address},
        "Service": {
            "ID": service_id,
            "Service": "shop",
            "Address": address,
            "Port": port,
            "Tags": tags if tags is not None else [],
            "Meta": meta,
            "Weights": weights if weights is not None else {"Passing": 1, "Warning": 1},
        },
        "Checks": checks if checks is not None else [check("serfHealth", "passing")],
    }


SERF_OK = check("serfHealth", "passing")


@pytest.mark.parametrize(
    ("checks", "health"),
    [
        ([], Health.PASSING),
        ([SERF_OK, check("service:web-1", "passing", "web-1")], Health.PASSING),
        ([SERF_OK, check("service:web-1", "warning", "web-1")], Health.WARNING),
        ([SERF_OK, check("service:web-1", "critical", "web-1")], Health.CRITICAL),
        ([check("serfHealth", "critical"), check("s", "passing", "web-1")], Health.CRITICAL),
        ([check("serfHealth", "warning"), check("s", "passing", "web-1")], Health.WARNING),
        ([SERF_OK, check("_node_maintenance", "critical")], Health.MAINTENANCE),
        (
            [SERF_OK, check("_service_maintenance:web-1", "critical", "web-1")],
            Health.MAINTENANCE,
        ),
        (
            [check("serfHealth", "critical"), check("_node_maintenance", "critical")],
            Health.MAINTENANCE,
        ),
        (
            [SERF_OK, check("s", "warning", "web-1"), check("t", "critical", "web-1")],
            Health.CRITICAL,
        ),
        ([SERF_OK, check("other", "critical", "web-2")], Health.PASSING),
        ([SERF_OK, check("s", "no-such-status", "web-1")], Health.CRITICAL),
    ],
    ids=[
        "no checks",
        "all passing",
        "service warning",
        "service critical",
        "serfHealth failing",
        "node check warning",
        "node maintenance",
        "service maintenance",
        "maintenance beats critical",
        "worst of two service checks",
        "another instance's check ignored",
        "unknown status is critical",
    ],
)
def test_health_is_the_worst_of_node_and_service_checks(
    checks: list[dict[str, str]], health: Health
) -> None:
    assert instance_health(checks, "web-1") is health


@pytest.mark.parametrize(
    ("weights", "health", "weight"),
    [
        ({"Passing": 3, "Warning": 1}, Health.PASSING, 3),
        ({"Passing": 3, "Warning": 1}, Health.WARNING, 1),
        ({"Passing": 3, "Warning": 0}, Health.WARNING, 0),
        ({"Passing": 3, "Warning": 1}, Health.CRITICAL, 3),
        (None, Health.PASSING, 1),
        (None, Health.WARNING, 1),
    ],
)
def test_weight_is_passing_or_warning_by_health(
    weights: dict[str, int] | None, health: Health, weight: int
) -> None:
    assert instance_weight(weights, health) == weight


def test_an_instance_gets_service_address_port_tags_meta_weight_and_health() -> None:
    view = service_view(
        "shop",
        [
            item(
                "web-1",
                address="10.0.0.5",
                tags=["green", "blue", "green"],
                meta={"version": "1.4"},
                weights={"Passing": 5, "Warning": 2},
                checks=[SERF_OK, check("service:web-1", "warning", "web-1")],
            )
        ],
    )
    assert view.rejected == ()
    assert view.entries == (
        (
            "services/shop/instances/web-1",
            Instance(
                service="shop",
                id="web-1",
                address="10.0.0.5",
                port=8080,
                tags=("blue", "green"),
                meta=(("version", "1.4"),),
                weight=2,
                health=Health.WARNING,
            ),
        ),
    )


def test_without_a_service_address_the_node_address_is_used() -> None:
    (_, instance), *_ = service_view("shop", [item("web-1", node_address="10.9.8.7")]).entries
    assert instance.address == "10.9.8.7"


def test_the_same_id_on_two_nodes_is_told_apart_by_node() -> None:
    view = service_view(
        "shop", [item("api-1", node="node-a"), item("api-1", node="node-b"), item("api-2")]
    )
    assert [key for key, _ in view.entries] == [
        "services/shop/instances/api-2",
        "services/shop/instances/node-a:api-1",
        "services/shop/instances/node-b:api-1",
    ]
    assert [instance.id for _, instance in view.entries] == [
        "api-2",
        "node-a:api-1",
        "node-b:api-1",
    ]


@pytest.mark.parametrize(
    ("registration", "where", "message"),
    [
        (
            item("web-1", address="10.0.0.1\nbind :80"),
            "consul service shop instance web-1",
            "address must be an IP address or a DNS host name",
        ),
        (item("web-1", port=0), "consul service shop instance web-1", "port must be between"),
        (
            item("web 1"),
            "consul service shop instance 'web 1'",
            "instance id must be letters, digits",
        ),
        (
            item("web-1", weights={"Passing": 70000, "Warning": 1}),
            "consul service shop instance web-1",
            "weight must be between 0 and 65535",
        ),
    ],
    ids=["address with a newline", "port 0", "id with a space", "weight too large"],
)
def test_a_bad_catalog_value_refuses_that_instance_by_name(
    registration: dict[str, Any], where: str, message: str
) -> None:
    view = service_view("shop", [registration, item("web-2")])
    assert [key for key, _ in view.entries] == ["services/shop/instances/web-2"]
    [(_, rejection)] = view.rejected
    assert rejection.where == where
    assert rejection.message.startswith(message), rejection.message


def test_an_odd_tag_or_meta_is_left_out_and_reported_but_the_instance_stays() -> None:
    view = service_view(
        "shop",
        [item("web-1", tags=["blue", "urlprefix-/ strip=/"], meta={"ok": "1", "bad key": "x"})],
    )
    [(_, instance)] = view.entries
    assert (instance.tags, instance.meta) == (("blue",), (("ok", "1"),))
    assert [r.message.split(":")[0] for _, r in view.rejected] == [
        "tag left out",
        "meta left out",
    ]


@pytest.mark.parametrize(
    ("tags", "route"),
    [
        (["blue"], None),
        (
            ["lbsync.route=shop.example.com/api"],
            Route(service="shop", hosts=("shop.example.com",), path="/api"),
        ),
        (["lbsync.route=/api/"], Route(service="shop", hosts=(), path="/api")),
        (["lbsync.route=Shop.Example.com"], Route(service="shop", hosts=("shop.example.com",))),
        (
            ["lbsync.route=b.example.com/", "lbsync.route=a.example.com"],
            Route(service="shop", hosts=("a.example.com", "b.example.com")),
        ),
        (["lbsync.route=a.example.com/x", "lbsync.route=/x"], Route(service="shop", path="/x")),
    ],
    ids=["no route tag", "host and path", "any host", "host only", "two hosts", "any host wins"],
)
def test_a_route_tag_gives_hosts_and_path(tags: list[str], route: Route | None) -> None:
    assert tag_route("shop", tags) == route


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (["lbsync.route="], "names no host and no path"),
        (["lbsync.route=shop..example.com/"], "host in tag"),
        (["lbsync.route=shop.example.com/a b"], "path in tag"),
        (["lbsync.route=/a", "lbsync.route=/b"], "tags disagree on the path (/a, /b)"),
    ],
)
def test_a_bad_route_tag_is_refused(tags: list[str], message: str) -> None:
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tag_route("shop", tags)


def kv(**values: str) -> KVView:
    return kv_view(
        [(f"lbsync/{key.replace('__', '/')}", text.encode()) for key, text in values.items()],
        prefix="lbsync/",
    )


def test_kv_keys_are_parsed_by_the_contract_and_named_by_their_full_key() -> None:
    view = kv_view(
        [
            ("lbsync/services/shop/route", b'{"hosts": ["shop.example.com"]}'),
            ("lbsync/services/shop/split", b'{"groups": {"blue": 80, "green": 50}}'),
            ("lbsync/services/", None),
            ("lbsync/app/banner", "hé".encode()),
            ("lbsync/app/blob", b"\xff\xfe"),
        ],
        prefix="lbsync/",
    )
    assert view.raw == (
        ("app/banner", "hé"),
        ("services/shop/route", '{"hosts": ["shop.example.com"]}'),
        ("services/shop/split", '{"groups": {"blue": 80, "green": 50}}'),
    )
    assert [key for key, _ in view.entries] == ["services/shop/route"]
    assert [(key, r.where) for key, r in view.rejected] == [
        ("app/blob", "consul key lbsync/app/blob"),
        ("services/shop/split", "consul key lbsync/services/shop/split"),
    ]


def test_a_kv_read_with_one_changed_key_gives_one_new_part() -> None:
    held = kv_keys("lbsync/")
    items = [
        ("lbsync/services/shop/route", b'{"hosts": ["shop.example.com"]}'),
        ("lbsync/services/cart/route", b'{"path": "/cart"}'),
        ("lbsync/settings/owner", b'"platform"'),
    ]
    before = kv_view(items, prefix="lbsync/", held=held)
    after = kv_view(
        [*items, ("lbsync/services/shop/split", b'{"groups": {"blue": 100}}')],
        prefix="lbsync/",
        held=held,
    )
    assert after.parts.keys() == before.parts.keys() == {"", "services/shop", "services/cart"}
    assert [name for name, part in after.parts.items() if part is not before.parts[name]] == [
        "services/shop"
    ]
    assert after.routed == {"shop", "cart"}
    again = kv_view(
        [*items, ("lbsync/services/shop/split", b'{"groups": {"blue": 100}}')],
        prefix="lbsync/",
        held=held,
    )
    assert all(part is after.parts[name] for name, part in again.parts.items())


CATALOG = {
    "consul": (),
    "shop": ("blue", "lbsync.route=shop.example.com/"),
    "cart": ("green",),
    "api": ("lbsync.route=/api",),
    "bad name!": ("lbsync.route=/x",),
}


def test_exposed_services_are_routed_in_kv_or_by_tag_and_present_in_the_catalog() -> None:
    view = kv(services__cart__route='{"path": "/cart"}', services__gone__route="{}")
    assert exposed(view, CATALOG) == {"shop", "cart", "api"}


def test_a_kv_route_wins_over_the_tag_route_even_when_refused() -> None:
    view = kv(
        services__shop__route='{"hosts": ["kv.example.com"]}', services__api__route="{not json"
    )
    snapshot = compose(source="consul:test", kv=view, catalog=CATALOG, services={})
    routes = {key: entry for key, entry in snapshot.entries if key.endswith("/route")}
    assert routes == {"services/shop/route": Route(service="shop", hosts=("kv.example.com",))}
    # "bad name!" asks for a route by tag but its name is outside the contract: refused, named
    assert [key for key, _ in snapshot.rejected] == ["services/api/route", "services/bad name!"]


def test_tag_routes_are_emitted_where_kv_has_none() -> None:
    snapshot = compose(source="consul:test", kv=KVView(), catalog=CATALOG, services={})
    assert dict(snapshot.entries) == {
        "services/api/route": Route(service="api", path="/api"),
        "services/shop/route": Route(service="shop", hosts=("shop.example.com",)),
    }
    assert snapshot.usable and snapshot.raw == ()


def test_a_kv_instance_wins_over_a_catalog_instance_with_the_same_key() -> None:
    view = kv_view(
        [
            ("lbsync/services/shop/route", b'{"check": {"path": "/health"}}'),
            ("lbsync/services/shop/instances/web-1", b'{"address": "10.1.1.1", "port": 80}'),
        ],
        prefix="lbsync/",
    )
    services = {"shop": service_view("shop", [item("web-1"), item("web-2")])}
    snapshot = compose(source="consul:test", kv=view, catalog=CATALOG, services=services)
    entries = dict(snapshot.entries)
    assert entries["services/shop/route"] == Route(service="shop", check=HealthCheck("/health"))
    web_1 = entries["services/shop/instances/web-1"]
    web_2 = entries["services/shop/instances/web-2"]
    assert isinstance(web_1, Instance) and isinstance(web_2, Instance)
    assert (web_1.address, web_2.address) == ("10.1.1.1", "10.0.0.1")
    assert snapshot.rejected == (
        (
            "services/bad name!",
            Rejection(
                where="consul service bad name!",
                message="the name must be letters, digits, '.', '_' or '-' (max 128); not exposed",
            ),
        ),
        (
            "services/shop/instances/web-1",
            Rejection(
                where="consul service shop instance web-1",
                message="the KV key with the same instance id is used instead",
            ),
        ),
    )


@pytest.mark.parametrize(
    ("last_seen", "found", "index"),
    [(0, 12, 12), (12, 12, 12), (12, 40, 40), (40, 3, 0), (40, 0, 0), (0, 1, 1)],
    ids=["first", "same", "forward", "backwards resets", "zero is never blocked on", "one"],
)
def test_the_next_index_blocks_on_what_was_found_unless_it_went_backwards(
    last_seen: int, found: int, index: int
) -> None:
    assert next_index(last_seen, found) == index


def test_backoff_grows_to_retry_max_but_a_refused_connection_retries_within_a_second() -> None:
    backoff = Retry(RETRY, random.Random(4))
    failing = Unavailable("500 No cluster leader")
    refused = Unavailable("refused", connect=True)
    delays = [backoff.delay(n, failing) for n in range(1, 14)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(15.0 <= d <= 30.0 for d in delays[-3:])
    assert all(0.05 <= backoff.delay(n, refused) <= 1.0 for n in range(1, 40))


def test_a_weight_tag_gives_the_weight_of_a_registration_without_weights() -> None:
    view = service_view(
        "shop",
        [
            item("web-1", tags=["lbsync.weight=3"]),
            item("web-2", tags=["lbsync.weight=0"], weights={"Passing": 5, "Warning": 1}),
            item("web-3", tags=["lbsync.weight=lots"], weights={"Passing": 2, "Warning": 1}),
            item("web-4", tags=["lbsync.weight=1", "lbsync.weight=2"]),
        ],
    )
    weights = {instance.id: instance.weight for _, instance in view.entries}
    assert weights == {"web-1": 3, "web-2": 0, "web-3": 2, "web-4": 1}
    refused = {key.rsplit("/", 1)[1]: r.message for key, r in view.rejected}
    assert "lbsync.weight=lots: the weight must be a whole number" in refused["web-3"]
    assert "tags disagree" in refused["web-4"]


def test_fabios_urlprefix_tags_are_routes() -> None:
    route = tag_route(
        "shop", ["urlprefix-shop.example.com/", "urlprefix-www.example.com/ proto=http"]
    )
    assert route is not None and (route.hosts, route.path) == (
        ("shop.example.com", "www.example.com"),
        "/",
    )
    api = tag_route("api", ["urlprefix-/api", "blue"])
    assert api is not None and (api.hosts, api.path) == ((), "/api")
    assert tag_route("db", ["blue", "urlprefixed"]) is None


@pytest.mark.parametrize(
    ("tags", "fields"),
    [
        (["urlprefix-/api strip=/api"], {"path": "/api", "strip": "/api"}),
        (["urlprefix-/api/v1 strip=/api proto=http"], {"path": "/api/v1", "strip": "/api"}),
        (
            ["urlprefix-/ redirect=301,https://example.com$path"],
            {"redirect": Redirect(301, "https://example.com$path")},
        ),
        (  # Fabio drops the `/` before `$path`
            ["urlprefix-old.example.com/ redirect=308,https://new.example.com/$path"],
            {
                "hosts": ("old.example.com",),
                "redirect": Redirect(308, "https://new.example.com$path"),
            },
        ),
        (
            ["urlprefix-/x redirect=302,https://example.com/welcome"],
            {"path": "/x", "redirect": Redirect(302, "https://example.com/welcome")},
        ),
        (["urlprefix-/x proto=https"], {"path": "/x", "upstream": Upstream.HTTPS}),
        (
            ["urlprefix-/x proto=https tlsskipverify=true"],
            {"path": "/x", "upstream": Upstream.HTTPS, "tls_verify": False},
        ),
        (
            ["urlprefix-/x tlsskipverify=false proto=https"],
            {"path": "/x", "upstream": Upstream.HTTPS, "tls_verify": True},
        ),
        # without proto=https Fabio ignores tlsskipverify, and so does lbsync
        (["urlprefix-/x tlsskipverify=true"], {"path": "/x"}),
        (
            ["urlprefix-a.example.com/x proto=https", "urlprefix-b.example.com/x proto=https"],
            {"hosts": ("a.example.com", "b.example.com"), "path": "/x", "upstream": Upstream.HTTPS},
        ),
    ],
)
def test_fabios_strip_redirect_and_https_options_are_route_fields(
    tags: list[str], fields: dict[str, Any]
) -> None:
    assert tag_route("shop", tags) == replace(Route(service="shop"), **fields)


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        (
            "urlprefix-:3306 proto=tcp",
            "the option 'proto=tcp' is not carried out by lbsync (lbsync routes HTTP, not TCP)",
        ),
        (
            "urlprefix-/x proto=grpc",
            "the option 'proto=grpc' is not carried out by lbsync (lbsync does not proxy gRPC)",
        ),
        ("urlprefix-/x proto=grpcs", "'proto=grpcs' is not carried out"),
        ("urlprefix-/x proto=udp", "the option 'proto' is not carried out by lbsync;"),
        ("urlprefix-/x colour=blue", "the option 'colour' is not carried out by lbsync;"),
        (
            "urlprefix-/x host=dst",
            "'host' is not carried out by lbsync (the instances receive the client's Host header)",
        ),
        (
            "urlprefix-/x register=www",
            "'register' is not carried out by lbsync (lbsync registers nothing",
        ),
        (
            "urlprefix-/x auth=basic",
            "'auth' is not carried out by lbsync (lbsync has no authentication",
        ),
        ("urlprefix-/x prepend=/v2", "the option 'prepend' is not carried out"),
        ("urlprefix-/x allow=ip:10.0.0.0/8", "the option 'allow' is not carried out"),
        ("urlprefix-/x weight=0.5", "the option 'weight' is not carried out"),
        ("urlprefix-/x tlsskipverify=yes", "tlsskipverify must be true or false"),
        ("urlprefix-/x strip=/y", "strip '/y' must be the route's path '/x' or whole segments"),
        ("urlprefix-/api strip=/ap", "strip '/ap' must be the route's path"),
        ("urlprefix-/x strip=/", "strip must be a path prefix other than '/'"),
        ("urlprefix-/x redirect=301", "redirect must be redirect=<code>,<url>"),
        ("urlprefix-/x redirect=abc,https://x.com", "redirect must be redirect=<code>,<url>"),
        ("urlprefix-/x redirect=300,https://x.com", "redirect.code must be one of 301, 302"),
        ("urlprefix-/x redirect=301,/relative", "redirect.to must be an http:// or https:// URL"),
        ("urlprefix-/x redirect=301,https://x.com/a'b", "redirect.to must be an http"),
        (
            "urlprefix-/x strip=/x redirect=301,https://x.com",
            "redirect answers every request itself, so strip has nothing to act on",
        ),
        (
            "urlprefix-/x proto=https redirect=301,https://x.com",
            "so upstream has nothing to act on",
        ),
        ("urlprefix-:3306", "a port in the prefix"),
        ("urlprefix-shop.example.com:8443/", "a port in the prefix"),
        ("urlprefix-", "names no host and no path"),
        ("urlprefix-bad host/", "the option 'host/' is not carried out"),
    ],
)
def test_a_fabio_tag_lbsync_cannot_carry_out_is_refused_by_name(tag: str, message: str) -> None:
    with pytest.raises(ContractError, match=re.escape(message)) as refused:
        tag_route("shop", [tag])
    assert repr(tag) in str(refused.value) or tag == "urlprefix-"


def test_route_tags_that_disagree_on_their_options_are_refused() -> None:
    with pytest.raises(ContractError, match="route tags disagree on their options"):
        tag_route("shop", ["urlprefix-a.example.com/x strip=/x", "urlprefix-b.example.com/x"])
