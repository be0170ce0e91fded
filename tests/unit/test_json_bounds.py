"""`decode_json` skips the walk of small values (their length bounds them): its verdict is the
walk's for any value, deep, wide or long."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from lbsync.model.checks import ContractError
from lbsync.model.jsonvalues import (
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_VALUE_BYTES,
    check_bounds,
    decode_json,
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**40), 10**40), st.text(max_size=5))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=40,
)


def walked(text: str) -> str:
    """The verdict of a plain decode and the whole walk."""
    try:
        check_bounds(json.loads(text))
    except ContractError:
        return "refused"
    return "accepted"


def decoded(text: str) -> str:
    try:
        decode_json(text)
    except ContractError:
        return "refused"
    return "accepted"


@settings(max_examples=300, deadline=None)
@given(values, st.integers(0, MAX_DEPTH + 2))
def test_the_verdict_is_the_walks(value: object, wrap: int) -> None:
    text = "[" * wrap + json.dumps(value) + "]" * wrap
    assert decoded(text) == walked(text)


def test_a_deep_or_wide_value_is_still_walked() -> None:
    assert decoded("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH) == "refused"
    assert decoded("[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1)) == "accepted"
    assert decoded("[" + ",".join(["1"] * MAX_ITEMS) + "]") == "refused"


def nested(depth: int) -> object:
    """A list `depth` levels deep around one integer."""
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return value


def verdict(value: object) -> str:
    try:
        check_bounds(value)
    except ContractError as error:
        return str(error)
    return "accepted"


def test_each_bound_is_kept_at_its_limit_and_refused_past_it() -> None:
    assert verdict(nested(MAX_DEPTH)) == "accepted"
    assert "levels deep" in verdict(nested(MAX_DEPTH + 1))
    assert verdict(list(range(MAX_ITEMS - 1))) == "accepted"  # the list is an item too
    assert "items" in verdict(list(range(MAX_ITEMS)))
    assert verdict("x" * MAX_VALUE_BYTES) == "accepted"
    assert "characters of text" in verdict(["x" * MAX_VALUE_BYTES, "y"])
    assert "characters of text" in verdict({"k" * MAX_VALUE_BYTES: 1, "j": None})
    assert verdict(10**32 - 1) == "accepted"
    assert "digits" in verdict({"a": [10**32]})
    assert "not a string" in verdict({1: "one"})
    assert "not a JSON value" in verdict({"when": ({1},)})
    assert verdict({"ok": [True, None, 1.5, "text", {"deep": [1]}]}) == "accepted"
