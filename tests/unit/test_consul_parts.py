"""The Consul snapshot composed by part is the one composed whole, and keeps as the same objects
the parts whose inputs did not change: KV keys, catalog tags and service views changed at random.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbsync.core.state import BuildCache, build
from lbsync.model import checks
from lbsync.model.catalog import MergeCache, merge
from lbsync.model.checks import ContractError
from lbsync.model.contract import decode_raw, parse_raw
from lbsync.model.keys import route_key
from lbsync.model.text import shown
from lbsync.model.values import Entry, Rejection, Snapshot, part_of
from lbsync.sources.consul.mapping import (
    ROUTE_TAG,
    ServiceView,
    kv_keys,
    kv_view,
    service_view,
    tag_route,
)
from lbsync.sources.consul.parts import ComposeCache, compose

PREFIX = "lbsync/"


def describe(relative: str) -> str:
    return f"consul key {PREFIX}{relative}"


def whole(
    items: Iterable[tuple[str, bytes | None]],
    catalog: Mapping[str, Sequence[str]],
    services: Mapping[str, ServiceView],
) -> Snapshot:
    """The reference: every key, tag and instance composed at once, from flat pairs (the
    composition as it was before it went by part)."""
    relative_items = [
        (key[len(PREFIX) :], value or b"")
        for key, value in items
        if key.startswith(PREFIX) and key[len(PREFIX) :] and not (key.endswith("/") and not value)
    ]
    texts, refused = decode_raw(relative_items, describe=describe)
    kv_entries, kv_rejected = parse_raw(texts, describe=describe)
    raw = tuple(sorted(texts.items()))
    entries: dict[str, Entry] = dict(kv_entries)
    rejected: list[tuple[str, Rejection]] = sorted(kv_rejected + refused, key=lambda p: p[0])
    owned_by_kv = {key for key, _ in raw}
    routed_in_kv = set()
    for key, _ in raw:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "services" and parts[2] == "route":
            routed_in_kv.add(parts[1])
    for service in sorted(set(catalog) - routed_in_kv):
        if checks.NAME_RE.fullmatch(service) is None:
            if any(tag.startswith(ROUTE_TAG) for tag in catalog[service]):
                rejected.append(
                    (
                        f"services/{shown(service, 128)}",
                        Rejection(
                            where=f"consul service {service}",
                            message="the name must be letters, digits, '.', '_' or '-' "
                            "(max 128); not exposed",
                        ),
                    )
                )
            continue
        try:
            route = tag_route(service, catalog[service])
        except ContractError as error:
            where = f"consul service {service} tags"
            rejected.append((route_key(service), Rejection(where=where, message=str(error))))
            continue
        if route is not None:
            entries[route_key(service)] = route
    for service in sorted(services):
        view = services[service]
        rejected.extend(view.rejected)
        for key, instance in view.entries:
            if key in owned_by_kv:
                where = f"consul service {service} instance {instance.id}"
                message = "the KV key with the same instance id is used instead"
                rejected.append((key, Rejection(where=where, message=message)))
            else:
                entries[key] = instance
    return Snapshot(
        source="consul:test",
        entries=tuple(sorted(entries.items(), key=lambda pair: pair[0])),
        rejected=tuple(sorted(rejected, key=lambda pair: pair[0])),
        raw=raw,
    )


KEYS = [
    "services/shop/route",
    "services/shop/split",
    "services/shop/instances/web-1",  # also a catalog instance's key: KV wins
    "services/shop/",  # a folder marker when empty
    "services/cart/route",
    "services/api/instances/web-9",
    "services/bad name!/route",  # KV routes a name the catalog cannot expose
    "services//route",
    "services/loose",  # in the part "", refused
    "settings/owner",
    "app/motd",
]
VALUES = [
    json.dumps({"hosts": ["shop.example.com"]}).encode(),
    json.dumps({"path": "/cart"}).encode(),
    json.dumps({"groups": {"blue": 90, "green": 10}}).encode(),
    json.dumps({"address": "10.1.1.1", "port": 80}).encode(),
    json.dumps({"address": "10.1.1.1\n", "port": 80}).encode(),
    b'"platform"',
    b"{not json",
    b"\xff\xfe",
    b"",
]
NAMES = [
    "shop",
    "cart",
    "api",
    "consul",
    "bad name!",
    "shop/route",  # refused at services/shop/route, in the part services/shop
    "shop/instances/web-1",  # refused at a catalog instance's key
    "a/b",  # refused in the part services/a, which nothing else holds
    "long " + "x" * 201,  # its key is cut at 128 characters: the same as the next one's
    "long " + "x" * 200,
]
TAGS = [
    (),
    ("blue",),
    ("lbsync.route=shop.example.com/",),
    ("green", "lbsync.route=/api"),
    ("lbsync.route=",),
    ("lbsync.route=/a", "lbsync.route=/b"),
]


def node(
    service_id: str, *, address: str = "", port: int = 8080, tags: Sequence[str] = ()
) -> dict[str, Any]:
    """One `/v1/health/service/<svc>` item."""
    return {
        "Node": {"Node": "node-a", "Address": "10.0.0.1"},
        "Service": {"ID": service_id, "Address": address, "Port": port, "Tags": list(tags)},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""}],
    }


ANSWERS: list[list[dict[str, Any]]] = [
    [],
    [node("web-1"), node("web-2", port=9000, tags=["blue"])],
    [node("web-1", address="10.0.0.9\nbind :80"), node("web-3", tags=["blue", "bad tag!"])],
    [node("web-1", port=9001)],
]
EXPOSED = ["shop", "cart", "api", "ghost"]  # ghost: exposed but gone from the catalog
VIEWS = {service: [service_view(service, answer) for answer in ANSWERS] for service in EXPOSED}

changes = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from(VALUES)),
        st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(b"")),
        st.tuples(
            st.just("read"),
            st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=5),
            st.just(b""),
        ),
        st.tuples(st.just("tags"), st.sampled_from(NAMES), st.sampled_from(TAGS)),
        st.tuples(st.just("uncatalog"), st.sampled_from(NAMES), st.just(())),
        st.tuples(st.just("view"), st.sampled_from(EXPOSED), st.integers(0, len(ANSWERS) - 1)),
        st.tuples(  # the same answer read again: an equal view, a new object
            st.just("reread"), st.sampled_from(EXPOSED), st.integers(0, len(ANSWERS) - 1)
        ),
        st.tuples(st.just("unview"), st.sampled_from(EXPOSED), st.just(0)),
    ),
    max_size=14,
)


class World:
    """What Consul holds and what the watchers made of it, changed one step at a time."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.catalog: dict[str, tuple[str, ...]] = {}
        self.services: dict[str, ServiceView] = {}

    def apply(self, step: tuple[str, Any, Any]) -> None:
        kind, what, value = step
        if kind == "put":
            self.values[what] = value
        elif kind == "delete":
            self.values.pop(what, None)
        elif kind == "read":
            self.values = dict(what)
        elif kind == "tags":
            self.catalog = {**self.catalog, what: value}  # a new catalog answer
        elif kind == "uncatalog":
            self.catalog = {name: t for name, t in self.catalog.items() if name != what}
        elif kind == "view":
            self.services[what] = VIEWS[what][value]
        elif kind == "reread":
            self.services[what] = service_view(what, ANSWERS[value])
        else:
            self.services.pop(what, None)

    def items(self) -> list[tuple[str, bytes | None]]:
        return [(PREFIX + key, value) for key, value in self.values.items()]


def inputs(world: World, kv: Mapping[str, object], name: str) -> tuple[object, ...]:
    """What the part `name` is made of, as the test sees it: KV's part and the service view
    (objects), the service's tags and the catalog names refused into this part (values)."""
    service = name.removeprefix("services/")
    valid = bool(name) and checks.NAME_RE.fullmatch(service) is not None
    names = sorted(  # a refused name, its tags, and the KV part that may route it
        (bad, world.catalog[bad], kv.get(part_of(route_key(bad))))
        for bad in world.catalog
        if checks.NAME_RE.fullmatch(bad) is None and part_of(f"services/{shown(bad, 128)}") == name
    )
    return (
        kv.get(name),
        world.services.get(service) if valid else None,
        world.catalog.get(service) if valid else None,
        names,
    )


def unchanged(before: tuple[object, ...], after: tuple[object, ...]) -> bool:
    """The same KV part and service view (objects), equal tags and refused names."""
    kv, view, *values = before
    return kv is after[0] and view is after[1] and values == list(after[2:])


@settings(max_examples=300, deadline=None)
@given(changes)
def test_the_parts_agree_with_a_whole_composition_and_unchanged_ones_are_kept(
    steps: list[tuple[str, Any, Any]],
) -> None:
    world = World()
    held, cache = kv_keys(PREFIX), ComposeCache()
    previous: Snapshot | None = None
    seen: dict[str, tuple[object, ...]] = {}
    kv_before: Mapping[str, object] = {}
    for step in steps:
        world.apply(step)
        kv = kv_view(world.items(), prefix=PREFIX, held=held)
        snapshot = compose(
            source="consul:test",
            kv=kv,
            catalog=world.catalog,
            services=world.services,
            cache=cache,
        )
        expected = whole(world.items(), world.catalog, world.services)
        assert snapshot == expected
        assert (snapshot.entries, snapshot.rejected, snapshot.raw) == (
            expected.entries,
            expected.rejected,
            expected.raw,
        )
        for name, part in kv.parts.items():  # KV: a part equal to the last read's is its object
            if kv_before.get(name) == part:
                assert kv_before[name] is part
        now = {name: inputs(world, kv.parts, name) for name in snapshot.parts}
        for name, part in snapshot.parts.items():
            old = previous.parts.get(name) if previous is not None else None
            if name in seen and unchanged(seen[name], now[name]):
                assert old is part, f"{name!r} made again from the same inputs"
            if old == part:
                assert old is part, f"{name!r} made again, equal, but a new object"
        previous, seen, kv_before = snapshot, now, kv.parts


def test_one_changed_key_one_health_answer_or_one_tag_change_gives_one_new_part() -> None:
    held, cache = kv_keys(PREFIX), ComposeCache()
    values = {
        "services/shop/route": VALUES[0],
        "services/cart/route": VALUES[1],
        "settings/owner": VALUES[5],
    }
    catalog = {"shop": ("blue",), "cart": (), "api": ("lbsync.route=/api",)}
    services = {name: VIEWS[name][1] for name in ("shop", "cart", "api")}

    def composed() -> Snapshot:
        kv = kv_view([(PREFIX + k, v) for k, v in values.items()], prefix=PREFIX, held=held)
        return compose(source="consul:test", kv=kv, catalog=catalog, services=services, cache=cache)

    def new_parts(before: Snapshot, after: Snapshot) -> set[str]:
        assert after.parts.keys() == before.parts.keys()
        return {name for name, part in after.parts.items() if before.parts[name] is not part}

    first = composed()
    values["services/shop/split"] = VALUES[2]
    split = composed()
    assert new_parts(first, split) == {"services/shop"}
    services = {**services, "cart": VIEWS["cart"][3]}
    health = composed()
    assert new_parts(split, health) == {"services/cart"}
    catalog = {**catalog, "api": ("lbsync.route=/v2",), "shop": ("green",)}
    tags = composed()
    assert new_parts(health, tags) == {"services/api"}  # shop's tags: KV routes shop
    catalog = {**catalog, "bad name!": ("lbsync.route=/x",)}
    refused = composed()
    assert new_parts(tags, refused) == {""}
    again = composed()
    assert again.parts.keys() == refused.parts.keys()
    assert all(again.parts[name] is part for name, part in refused.parts.items())


def test_a_health_change_of_one_service_builds_only_that_service_again() -> None:
    cache, merges, builds = ComposeCache(), MergeCache(), BuildCache()
    held = kv_keys(PREFIX)
    kv = kv_view(
        [(PREFIX + "services/shop/route", VALUES[0]), (PREFIX + "services/cart/route", VALUES[1])],
        prefix=PREFIX,
        held=held,
    )
    catalog = {"shop": (), "cart": ()}
    views = {"shop": VIEWS["shop"][1], "cart": VIEWS["cart"][1]}

    def state(services: Mapping[str, ServiceView]) -> dict[str, object]:
        snapshot = compose(
            source="consul:test", kv=kv, catalog=catalog, services=services, cache=cache
        )
        built = build(merge([snapshot], merges), cache=builds)
        return {service.name: service for service in built.services}

    before = state(views)
    after = state({**views, "cart": VIEWS["cart"][3]})
    assert after["shop"] is before["shop"]
    assert after["cart"] != before["cart"]


def test_refusals_with_the_same_key_come_in_the_whole_compositions_order() -> None:
    items: list[tuple[str, bytes | None]] = [(PREFIX + "services/shop/route", b"\xff")]
    catalog = {  # the later name first: the catalog's order is not the refusals' order
        "long " + "x" * 201: ("lbsync.route=/x",),
        "long " + "x" * 200: ("lbsync.route=/x",),
        "shop/instances/web-1": ("lbsync.route=/x",),
        "shop/route": ("lbsync.route=/x",),
        "shop": ("lbsync.route=",),
    }
    services = {"shop": VIEWS["shop"][2]}
    snapshot = compose(
        source="consul:test",
        kv=kv_view(items, prefix=PREFIX),
        catalog=catalog,
        services=services,
    )
    expected = whole(items, catalog, services)
    assert snapshot.parts == expected.parts
    cut = "services/long " + "x" * 120 + "..."
    assert [(key, r.where) for key, r in snapshot.rejected] == [
        (cut, "consul service long " + "x" * 200),
        (cut, "consul service long " + "x" * 201),
        ("services/shop/instances/web-1", "consul service shop/instances/web-1"),
        ("services/shop/instances/web-1", "consul service shop instance web-1"),
        ("services/shop/instances/web-3", "consul service shop instance web-3"),
        ("services/shop/route", "consul key lbsync/services/shop/route"),
        ("services/shop/route", "consul service shop tags"),
        ("services/shop/route", "consul service shop/route"),
    ]
