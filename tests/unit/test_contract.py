"""The KV contract: valid entries are normalised, and every bad key or value is refused by name."""

from __future__ import annotations

import json
import re

import pytest

from lbsync.model.contract import ContractError, parse_entry, parse_raw, parse_values
from lbsync.model.values import (
    Balance,
    Health,
    HealthCheck,
    Instance,
    OnEmpty,
    Pin,
    Redirect,
    Rejection,
    Route,
    Setting,
    Split,
    Sticky,
    Upstream,
)

ROUTE = "services/shop/route"
SPLIT = "services/shop/split"
BLUE = "services/shop/instances/blue-1"
GOOD_INSTANCE = {"address": "10.0.0.5", "port": 8080}


def describe(key: str) -> str:
    return f"etcd lbsync/{key}"


def inst(**changes: object) -> dict[str, object]:
    return {**GOOD_INSTANCE, **changes}


def test_a_route_is_parsed_with_hosts_normalised_and_the_path_without_its_trailing_slash() -> None:
    value = {
        "hosts": ["Shop.Example.com", "a.example.com", "shop.example.com"],
        "path": "/api/",
        "balance": "leastconn",
        "check": {"path": "/health", "interval_ms": 500},
    }
    assert parse_entry(ROUTE, value) == Route(
        service="shop",
        hosts=("a.example.com", "shop.example.com"),
        path="/api",
        balance=Balance.LEASTCONN,
        check=HealthCheck(path="/health", interval_ms=500),
    )


def test_a_route_has_defaults_for_every_field() -> None:
    assert parse_entry(ROUTE, {}) == Route(service="shop", hosts=(), path="/", check=None)


def test_a_route_may_strip_its_prefix_and_reach_https_instances() -> None:
    value = {"path": "/api/v1/", "strip": "/api/", "upstream": "https", "tls_verify": False}
    assert parse_entry(ROUTE, value) == Route(
        service="shop", path="/api/v1", strip="/api", upstream=Upstream.HTTPS, tls_verify=False
    )
    whole = parse_entry(ROUTE, {"path": "/v1.2", "strip": "/v1.2", "upstream": "https"})
    assert whole == Route(service="shop", path="/v1.2", strip="/v1.2", upstream=Upstream.HTTPS)


IPV6_URL = "http://[::1]:8080/a?b=1&c=%20"


@pytest.mark.parametrize(
    ("to", "expected", "base", "keeps_path"),
    [
        ("https://example.com$path", "https://example.com$path", "https://example.com", True),
        ("https://example.com/$path", "https://example.com$path", "https://example.com", True),
        ("https://x.com/new/$path", "https://x.com/new$path", "https://x.com/new", True),
        ("http://[::1]:8080/a?b=1&c=%20", "http://[::1]:8080/a?b=1&c=%20", IPV6_URL, False),
    ],
)
def test_a_route_may_answer_with_a_redirect_that_keeps_the_request_path(
    to: str, expected: str, base: str, keeps_path: bool
) -> None:
    route = parse_entry(ROUTE, {"hosts": ["old.example.com"], "redirect": {"code": 308, "to": to}})
    assert isinstance(route, Route) and route.redirect == Redirect(code=308, to=expected)
    assert (route.redirect.base, route.redirect.keeps_path) == (base, keeps_path)


def test_a_split_keeps_its_groups_in_key_order() -> None:
    value = {"by": "meta:version", "groups": {"1.5": 10, "1.4": 90}, "on_empty": "fail"}
    assert parse_entry(SPLIT, value) == Split(
        service="shop",
        by="meta:version",
        groups=(("1.5", 10.0), ("1.4", 90.0)),
        on_empty=OnEmpty.FAIL,
    )


def test_a_route_may_keep_its_clients_in_their_group_by_a_cookie() -> None:
    parsed = parse_entry(ROUTE, {"sticky": {"cookie": "lbsync.shop"}})
    assert parsed == Route(service="shop", sticky=Sticky(cookie="lbsync.shop"))
    assert parse_entry(ROUTE, {"sticky": None}) == Route(service="shop")


@pytest.mark.parametrize(
    ("pin", "expected"),
    [
        ({"header": "X-Canary", "cookie": "canary"}, Pin(header="X-Canary", cookie="canary")),
        ({"header": "X-Canary"}, Pin(header="X-Canary")),
        ({"cookie": "canary"}, Pin(cookie="canary")),
    ],
)
def test_a_split_may_pin_by_a_header_a_cookie_or_both(pin: dict[str, str], expected: Pin) -> None:
    parsed = parse_entry(SPLIT, {"groups": {"green": 0}, "pin": pin})
    assert isinstance(parsed, Split)
    assert parsed.pin == expected


def test_a_split_may_sum_to_exactly_100_or_less() -> None:
    parsed = parse_entry(SPLIT, {"groups": {"blue": 33.3, "green": 66.7}})
    assert isinstance(parsed, Split)
    assert parsed.named_total == pytest.approx(100)
    assert parsed.on_empty is OnEmpty.REDISTRIBUTE
    assert parse_entry(SPLIT, {}) == Split(service="shop", by="tag", groups=())


def test_an_instance_is_parsed_with_tags_sorted_and_deduplicated() -> None:
    value = {
        "address": "2001:DB8::0:1",
        "port": 8080,
        "tags": ["green", "canary", "green"],
        "meta": {"version": "1.4", "az": "b"},
        "weight": 3,
        "health": "warning",
    }
    assert parse_entry(BLUE, value) == Instance(
        service="shop",
        id="blue-1",
        address="2001:db8::1",
        port=8080,
        tags=("canary", "green"),
        meta=(("az", "b"), ("version", "1.4")),
        weight=3,
        health=Health.WARNING,
    )


def test_an_integral_float_is_accepted_as_an_integer() -> None:
    parsed = parse_entry(BLUE, inst(port=8080.0, weight=2.0))
    assert isinstance(parsed, Instance)
    assert (parsed.port, parsed.weight) == (8080, 2)


def test_a_setting_keeps_canonical_json() -> None:
    parsed = parse_entry("settings/db/pool", {"size": 5, "hosts": ["a", "b"]})
    assert parsed == Setting(key="db/pool", json_text='{"hosts":["a","b"],"size":5}')


def test_a_key_outside_services_and_settings_is_raw_only() -> None:
    assert parse_entry("app/feature-flag", "anything at all") is None


case = pytest.param
BAD_VALUES = [
    case(ROUTE, {"hosts": [], "port": 80}, "route has unknown field(s)", id="route unknown field"),
    case(BLUE, inst(colour="blue"), "unknown field(s): colour", id="instance unknown"),
    case(SPLIT, {"groups": {}, "extra": 1}, "unknown field(s): extra", id="split unknown"),
    case(ROUTE, {"check": {"path": "/", "timeout": 1}}, "check has unknown", id="check unknown"),
    case(SPLIT, {"groups": {"blue": -5}}, "groups.blue", id="negative share"),
    case(SPLIT, {"groups": {"blue": 100, "green": 30}}, "sum to 130", id="sum 130"),
    case(SPLIT, {"groups": {"blue": "10"}}, "groups.blue must be a number", id="share as string"),
    case(SPLIT, {"groups": {"blue": True}}, "groups.blue must be a number", id="share true"),
    case(SPLIT, {"groups": {"blue green": 10}}, "group name", id="group name with space"),
    case(SPLIT, {"groups": ["blue"]}, "groups must be a JSON object", id="groups as list"),
    case(SPLIT, {"by": "colour"}, "by must be", id="unknown by"),
    case(SPLIT, {"by": "meta:"}, "meta key", id="by meta without key"),
    case(SPLIT, {"on_empty": "drop"}, "on_empty must be one of", id="unknown on_empty"),
    case(BLUE, inst(weight=-1), "weight must be between 0 and 65535", id="weight -1"),
    case(BLUE, inst(weight=70000), "weight must be between", id="weight 70000"),
    case(BLUE, inst(weight=True), "weight must be an integer", id="weight true"),
    case(BLUE, inst(weight=1.5), "weight must be an integer", id="weight 1.5"),
    case(BLUE, inst(port=0), "port must be between 1 and 65535", id="port 0"),
    case(BLUE, inst(port=65536), "port must be between", id="port 65536"),
    case(BLUE, inst(port="80"), "port must be an integer", id="port as string"),
    case(BLUE, {"address": "10.0.0.5"}, "address and port", id="port missing"),
    case(BLUE, inst(address="10.0.0.5 backup"), "address", id="address with space"),
    case(BLUE, inst(address="a\nserver x"), "address", id="address with newline"),
    case(BLUE, inst(address="a#b"), "address", id="address with hash"),
    case(BLUE, inst(address='a"b'), "address", id="address with quote"),
    case(BLUE, inst(address="a}b"), "address", id="address with brace"),
    case(BLUE, inst(address="a;b"), "address", id="address with semicolon"),
    case(BLUE, inst(address=167772165), "address must be a string", id="address as number"),
    case(BLUE, inst(address="fe80::1%eth0;\n#{}"), "address", id="IPv6 zone with a directive"),
    case(BLUE, inst(health="sick"), "health must be one of", id="unknown health"),
    case(BLUE, inst(tags=["a b"]), "tags[0]", id="tag with space"),
    case(BLUE, inst(tags="blue"), "tags must be a list", id="tags as string"),
    case(BLUE, inst(meta={"a b": "x"}), "meta key", id="meta key with space"),
    case(BLUE, inst(meta={"v": "a\nb"}), "meta.v", id="meta value with newline"),
    case(ROUTE, {"hosts": ["shop example.com"]}, "hosts[0]", id="host with space"),
    case(ROUTE, {"hosts": ["ok.com", "shop\texample"]}, "hosts[1]", id="host with tab"),
    case(ROUTE, {"hosts": ["shop{.com"]}, "hosts[0]", id="host with brace"),
    case(ROUTE, {"hosts": "shop.com"}, "hosts must be a list", id="hosts as string"),
    case(ROUTE, {"path": "api"}, "path must be a URL path", id="path without slash"),
    case(ROUTE, {"path": "/a b"}, "path", id="path with space"),
    case(ROUTE, {"path": '/a"b'}, "path", id="path with quote"),
    case(ROUTE, {"path": "/a{b"}, "path", id="path with brace"),
    case(ROUTE, {"path": "/a\nb"}, "path", id="path with newline"),
    case(ROUTE, {"balance": "source"}, "balance must be one of", id="unknown balance"),
    case(ROUTE, {"check": {"path": "health"}}, "check.path", id="check path without slash"),
    case(ROUTE, {"check": {"interval_ms": 5}}, "check.interval_ms", id="check too often"),
    case(ROUTE, ["shop.example.com"], "route must be a JSON object", id="route as list"),
    case(ROUTE, {"sticky": {}}, "sticky needs a cookie name", id="sticky without cookie"),
    case(ROUTE, {"sticky": "lb"}, "sticky must be a JSON object", id="sticky as string"),
    case(ROUTE, {"sticky": {"cookie": "lb", "ttl": 1}}, "sticky has unknown", id="sticky unknown"),
    case(ROUTE, {"sticky": {"cookie": "a b"}}, "sticky.cookie must be", id="sticky cookie space"),
    case(ROUTE, {"sticky": {"cookie": "a;b"}}, "sticky.cookie must be", id="sticky cookie ;"),
    case(ROUTE, {"sticky": {"cookie": "a\nb"}}, "sticky.cookie must be", id="sticky cookie LF"),
    case(ROUTE, {"sticky": {"cookie": 'a"b'}}, "sticky.cookie must be", id="sticky cookie quote"),
    case(ROUTE, {"sticky": {"cookie": "a#b"}}, "sticky.cookie must be", id="sticky cookie #"),
    case(ROUTE, {"sticky": {"cookie": "$a"}}, "sticky.cookie must be", id="sticky cookie $"),
    case(ROUTE, {"sticky": {"cookie": ""}}, "sticky.cookie must be", id="sticky cookie empty"),
    case(ROUTE, {"sticky": {"cookie": "c" * 65}}, "sticky.cookie must be", id="sticky cookie long"),
    case(ROUTE, {"sticky": {"cookie": 7}}, "sticky.cookie must be a string", id="sticky cookie 7"),
    case(SPLIT, {"pin": {}}, "pin needs a header or a cookie", id="pin empty"),
    case(SPLIT, {"pin": "X-Canary"}, "pin must be a JSON object", id="pin as string"),
    case(SPLIT, {"pin": {"query": "x"}}, "pin has unknown field(s): query", id="pin unknown"),
    case(SPLIT, {"pin": {"header": "X Canary"}}, "pin.header must be", id="pin header space"),
    case(SPLIT, {"pin": {"header": "X-Canary\r\nX"}}, "pin.header must be", id="pin header CRLF"),
    case(SPLIT, {"pin": {"header": "X-Can;ary"}}, "pin.header must be", id="pin header ;"),
    case(SPLIT, {"pin": {"header": "X_Canary"}}, "pin.header must be", id="pin header _"),
    case(SPLIT, {"pin": {"header": "X-Canary}"}}, "pin.header must be", id="pin header brace"),
    case(SPLIT, {"pin": {"cookie": "can ary"}}, "pin.cookie must be", id="pin cookie space"),
    case(SPLIT, {"pin": {"cookie": "c'x"}}, "pin.cookie must be", id="pin cookie quote"),
    case(SPLIT, {"pin": {"header": "X-C", "cookie": "c\\x"}}, "pin.cookie", id="pin cookie \\"),
    case("services/shop/foo", {}, "unknown key", id="unknown key under a service"),
    case("services/shop", {}, "unknown key", id="service without a kind"),
    case("services/shop/instances", {}, "unknown key", id="instances without id"),
    case("services/shop/instances/a/b", GOOD_INSTANCE, "unknown key", id="instance id with slash"),
    case("services/shop/instances/a b", GOOD_INSTANCE, "instance id", id="instance id with space"),
    case("services/sh op/route", {}, "service name", id="service name with space"),
    case("services/-shop/route", {}, "service name", id="service name with leading dash"),
    case("services/shop;x/route", {}, "service name", id="service name with semicolon"),
    case("settings", 1, "a setting needs a name", id="setting without name"),
    case("settings/a//b", 1, "a setting needs a name", id="setting with empty part"),
]  # fmt: skip


def moved(to: str = "https://x.com", code: object = 301, **beside: object) -> dict[str, object]:
    """A route that redirects, with other route fields beside."""
    return {"redirect": {"code": code, "to": to}, **beside}


BAD_ROUTE_OPTIONS = [
    case(
        {"path": "/api", "strip": "/ap"}, "strip '/ap' must be the route's path", id="mid-segment"
    ),
    case({"path": "/api", "strip": "/web"}, "strip '/web' must be", id="strip elsewhere"),
    case(
        {"path": "/api", "strip": "/"}, "strip must be a path prefix other than '/'", id="strip /"
    ),
    case({"path": "/a%20b", "strip": "/a%20b"}, "strip must not hold '%'", id="strip %"),
    case({"path": "/api", "strip": "api"}, "strip must be a URL path", id="strip no slash"),
    case({"path": "/api", "strip": "/api\n"}, "strip must be a URL path", id="strip LF"),
    case({"path": "/a", "strip": "/a;b"}, "strip must be a URL path", id="strip ;"),
    case({"upstream": "tcp"}, "upstream must be one of http, https", id="upstream tcp"),
    case({"upstream": "https", "tls_verify": "no"}, "tls_verify must be true or", id="verify str"),
    case({"tls_verify": False}, 'tls_verify applies to "upstream": "https"', id="verify http"),
    case({"redirect": "https://x.com"}, "redirect must be a JSON object", id="redirect str"),
    case({"redirect": {"code": 301}}, "redirect needs a code and a URL", id="redirect no to"),
    case({"redirect": {"to": "https://x.com", "code": 301, "keep": 1}}, "redirect has unknown"),
    case(moved(code=300), "redirect.code must be one of 301, 302, 303, 307, 308", id="code 300"),
    case(moved(code="301"), "redirect.code must be one of", id="code str"),
    case(moved(code=301.0), "redirect.code must be one of", id="code float"),
    case(moved(code=True), "redirect.code must be one of", id="code true"),
    case(moved("/elsewhere"), "redirect.to must be an http", id="relative"),
    case(moved("https://x.com/a b"), "redirect.to must be", id="space"),
    case(moved("https://x.com/\nlisten 1"), "redirect.to must be", id="LF"),
    case(moved('https://x.com/"'), "redirect.to must be", id="double quote"),
    case(moved("https://x.com/'"), "redirect.to must be", id="quote"),
    case(moved("https://x.com/a;b"), "redirect.to must be", id=";"),
    case(moved("https://x.com/#top"), "redirect.to must be", id="#"),
    case(moved("https://x.com/{a}"), "redirect.to must be", id="brace"),
    case(moved("https://x.com/a\\b"), "redirect.to must be", id="backslash"),
    case(moved("https://x.com/$host"), "redirect.to must be", id="$host"),
    case(moved("https://x.com$path/x"), "redirect.to must be", id="$path inside"),
    case(moved("https://x.com/%2"), "redirect.to must be", id="bad escape"),
    case(moved("https://x.com/" + "a" * 1024), "longer than 1024", id="long"),
    case(moved("https://x.com/?a=1$path"), "must not hold a query", id="query and $path"),
    case(moved(check={}), "so check has nothing to act on", id="redirect and check"),
    case(moved(sticky={"cookie": "a"}), "so sticky has nothing", id="redirect and sticky"),
    case(moved(upstream="https"), "so upstream has nothing", id="redirect and https"),
    case(moved(strip="/"), "strip must be a path prefix", id="redirect and strip /"),
    case(moved(path="/a", strip="/a"), "so strip has nothing", id="redirect and strip"),
]


@pytest.mark.parametrize(("value", "named"), BAD_ROUTE_OPTIONS)
def test_a_bad_strip_upstream_or_redirect_is_refused_naming_the_field(
    value: object, named: str
) -> None:
    with pytest.raises(ContractError, match=re.escape(named)):
        parse_entry(ROUTE, value)


@pytest.mark.parametrize(("key", "value", "named"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_the_field(key: str, value: object, named: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_entry(key, value)
    assert named in str(caught.value)


@pytest.mark.parametrize(("key", "value", "named"), BAD_VALUES)
def test_a_bad_value_is_rejected_by_parse_raw_naming_the_key(
    key: str, value: object, named: str
) -> None:
    entries, rejected = parse_raw({key: json.dumps(value)}, describe=describe)
    assert entries == ()
    assert len(rejected) == 1
    assert rejected[0][0] == key
    assert rejected[0][1].where == f"etcd lbsync/{key}"
    assert named in rejected[0][1].message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param('{"address": "10.0.0.5", "port": ', "not valid JSON", id="malformed"),
        pytest.param('{"address": "10.0.0.5", "port": NaN}', "NaN", id="NaN"),
        pytest.param('{"address": "10.0.0.5", "port": Infinity}', "Infinity", id="Infinity"),
        pytest.param('{"address": "10.0.0.5", "port": -Infinity}', "-Infinity", id="-Infinity"),
        pytest.param("", "not valid JSON", id="empty text"),
    ],
)
def test_text_that_is_not_json_is_rejected_naming_the_key(text: str, named: str) -> None:
    entries, rejected = parse_raw({BLUE: text}, describe=describe)
    assert entries == ()
    assert [(key, r.where) for key, r in rejected] == [(BLUE, f"etcd lbsync/{BLUE}")]
    assert "not valid JSON" in rejected[0][1].message
    assert named in rejected[0][1].message


def test_a_number_too_large_for_a_float_never_becomes_infinity() -> None:
    entries, rejected = parse_raw({"settings/limit": "1e400"}, describe=describe)
    assert [e.json_text for _, e in entries if isinstance(e, Setting)] == []
    assert [key for key, _ in rejected] == ["settings/limit"]


def test_one_bad_key_never_hides_the_others() -> None:
    raw = {
        BLUE: json.dumps(GOOD_INSTANCE),
        SPLIT: json.dumps({"groups": {"blue": 100, "green": 30}}),
        ROUTE: json.dumps({"hosts": ["shop.example.com"]}),
    }
    entries, rejected = parse_raw(raw, describe=describe)
    assert [key for key, _ in entries] == [BLUE, ROUTE]
    assert rejected == (
        (SPLIT, Rejection(f"etcd lbsync/{SPLIT}", "group shares sum to 130, more than 100")),
    )


def test_parse_raw_ignores_raw_only_keys_even_when_they_are_not_json() -> None:
    entries, rejected = parse_raw(
        {"app/motd": "hello, not JSON", "settings/owner": '"platform"'}, describe=describe
    )
    assert entries == (("settings/owner", Setting(key="owner", json_text='"platform"')),)
    assert rejected == ()


def test_parse_values_sorts_entries_and_rejections_by_key() -> None:
    values: dict[str, object] = {
        "services/b/instances/x": GOOD_INSTANCE,
        "services/a/instances/y": GOOD_INSTANCE,
        "services/b/route": {"path": "b"},
        "services/a/route": {"path": "a"},
    }
    entries, rejected = parse_values(values, describe=describe)
    assert [key for key, _ in entries] == ["services/a/instances/y", "services/b/instances/x"]
    assert [key for key, _ in rejected] == ["services/a/route", "services/b/route"]
