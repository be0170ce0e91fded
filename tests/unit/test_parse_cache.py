"""ParseCache gives exactly what parse_raw gives, across a sequence of changing snapshots."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from lbsync.model.contract import ParseCache, parse_raw

KEYS = [
    "services/shop/route",
    "services/shop/split",
    "services/shop/instances/a",
    "services/shop/instances/b",
    "services/shop/rollout",
    "services/shop/bogus",
    "settings/owner",
    "app/motd",
]
TEXTS = [
    json.dumps({"hosts": ["shop.example.com"]}),
    json.dumps({"groups": {"blue": 90, "green": 10}}),
    json.dumps({"groups": {"blue": 90, "green": 30}}),
    json.dumps({"address": "127.0.0.1", "port": 9000, "tags": ["blue"]}),
    json.dumps({"address": "127.0.0.1\n", "port": 9000}),
    '"platform"',
    "{not json",
    "",
]


def describe(key: str) -> str:
    return f"etcd key lbsync/{key}"


@settings(max_examples=80)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(TEXTS)), max_size=6))
def test_the_cache_agrees_with_a_full_parse_at_every_step(
    sequence: list[dict[str, str]],
) -> None:
    cache = ParseCache()
    for raw in sequence:
        assert cache.parse(raw, describe=describe) == parse_raw(raw, describe=describe)


def test_an_unchanged_key_is_not_parsed_again() -> None:
    cache = ParseCache()
    first = cache.parse({"services/shop/route": TEXTS[0]}, describe=describe)
    second = cache.parse({"services/shop/route": TEXTS[0]}, describe=describe)
    assert first[0][0][1] is second[0][0][1]  # the same parsed object, not a new parse
