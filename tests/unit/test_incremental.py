"""The incremental path gives what a whole rebuild gives, and keeps unchanged parts as the same
objects: held keys -> parts, parts -> merged catalog, catalog -> desired state."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from lbsync.core.state import BuildCache, build
from lbsync.model.catalog import MergeCache, merge
from lbsync.model.contract import decode_raw, parse_raw
from lbsync.model.held import HeldKeys
from lbsync.model.values import Snapshot

KEYS = [
    "services/shop/route",
    "services/shop/split",
    "services/shop/instances/a",
    "services/shop/instances/b",
    "services/shop/rollout",
    "services/cart/route",
    "services/cart/instances/a",
    "services/cart-v2/instances/a",
    "settings/owner",
    "app/motd",
]
VALUES = [
    json.dumps({"hosts": ["shop.example.com"]}).encode(),
    json.dumps({"hosts": ["cart.example.com"], "path": "/cart"}).encode(),
    json.dumps({"groups": {"blue": 90, "green": 10}}).encode(),
    json.dumps({"address": "127.0.0.1", "port": 9000, "tags": ["blue"]}).encode(),
    json.dumps({"address": "127.0.0.2", "port": 9001, "tags": ["green"]}).encode(),
    json.dumps({"address": "127.0.0.1\n", "port": 9000}).encode(),
    b'"platform"',
    b"{not json",
    b"\xff\xfe",
]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from(VALUES)),
        st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(b"")),
        st.tuples(
            st.just("replace"),
            st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=6),
            st.just(b""),
        ),
    ),
    max_size=12,
)


def describe(key: str) -> str:
    return f"etcd key lbsync/{key}"


def from_scratch(values: dict[str, bytes]) -> Snapshot:
    """The snapshot of every key, built whole."""
    raw, refused = decode_raw(values.items(), describe=describe)
    entries, rejected = parse_raw(raw, describe=describe)
    return Snapshot(
        source="etcd",
        entries=entries,
        rejected=tuple(sorted(rejected + refused, key=lambda pair: pair[0])),
        raw=tuple(sorted(raw.items())),
    )


def run(held: HeldKeys, values: dict[str, bytes], step: tuple[object, object, bytes]) -> None:
    kind, key, value = step
    if kind == "put":
        assert isinstance(key, str)
        held.put(key, value)
        values[key] = value
    elif kind == "delete":
        assert isinstance(key, str)
        held.delete(key)
        values.pop(key, None)
    else:
        assert isinstance(key, dict)
        held.replace(key.items())
        values.clear()
        values.update(key)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_held_keys_agree_with_a_whole_read_after_every_change(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    held = HeldKeys(describe)
    values: dict[str, bytes] = {}
    for step in steps:
        before = held.parts()
        run(held, values, step)
        after = held.parts()
        expected = from_scratch(values)
        snapshot = Snapshot(source="etcd", parts=after)
        assert snapshot == expected
        assert (snapshot.entries, snapshot.rejected, snapshot.raw) == (
            expected.entries,
            expected.rejected,
            expected.raw,
        )
        for name, part in after.items():  # a part no key of which changed is the same object
            if before.get(name) == part:
                assert before[name] is part


@settings(max_examples=100, deadline=None)
@given(operations, operations)
def test_the_cached_merge_and_build_agree_with_whole_ones(
    first: list[tuple],  # type: ignore[type-arg]
    second: list[tuple],  # type: ignore[type-arg]
) -> None:
    held = [HeldKeys(describe), HeldKeys(describe)]
    values: list[dict[str, bytes]] = [{}, {}]
    merges, builds = MergeCache(), BuildCache()
    previous: dict[str, tuple[tuple[object, ...], object]] = {}
    for index in range(max(len(first), len(second))):
        for side, steps in enumerate((first, second)):
            if index < len(steps):
                run(held[side], values[side], steps[index])
        snapshots = [
            Snapshot(source="file", parts=held[0].parts()),
            Snapshot(source="etcd", parts=held[1].parts()),
        ]
        catalog = merge(snapshots, merges)
        assert catalog == merge(snapshots)
        state = build(catalog, cache=builds)
        assert state == build(catalog)
        clashing = {r.where for r in state.rejected if "already routed" in r.message}
        now: dict[str, tuple[tuple[object, ...], object]] = {}
        for service in state.services:
            parts = tuple(s.parts.get(f"services/{service.name}") for s in snapshots)
            now[service.name] = (parts, service)
            known = previous.get(service.name)
            unchanged = known is not None and all(
                a is b for a, b in zip(known[0], parts, strict=True)
            )
            if unchanged and not any(service.name in where for where in clashing):
                assert known is not None
                assert service is known[1], f"{service.name} rebuilt from the same parts"
        previous = now


def test_one_changed_key_rebuilds_one_service_only() -> None:
    held = HeldKeys(describe)
    held.replace(
        [
            ("services/shop/route", VALUES[0]),
            ("services/shop/instances/a", VALUES[3]),
            ("services/cart/route", VALUES[1]),
            ("services/cart/instances/a", VALUES[4]),
        ]
    )
    merges, builds = MergeCache(), BuildCache()
    before = build(merge([Snapshot(source="etcd", parts=held.parts())], merges), cache=builds)
    held.put("services/shop/split", VALUES[2])
    after = build(merge([Snapshot(source="etcd", parts=held.parts())], merges), cache=builds)
    old, new = ({s.name: s for s in state.services} for state in (before, after))
    assert new["cart"] is old["cart"]
    assert new["shop"] is not old["shop"]
    assert new["shop"].split is not None
