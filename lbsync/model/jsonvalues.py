"""JSON values at the boundary: decoded, bounded, and written one way.

Every value a source hands the contract passes `check_bounds` first, so nothing later can fail
on it (a value that did would end the daemon's task group):
- text of at most `MAX_VALUE_BYTES` (etcd takes 1.5 MiB per request, Consul 512 KiB per value);
- integers of at most `MAX_INTEGER_DIGITS` digits: Python refuses to convert 4,300 digits with
  a plain ValueError, and no weight, port or share needs more than a few;
- finite numbers in JSON text (JSON has no NaN or Infinity; a TOML `inf` is refused by the
  field that holds it, with the field's name);
- nesting at most `MAX_DEPTH` deep: `json` and the templates recurse, and about 980 levels
  exhaust Python's stack;
- at most `MAX_ITEMS` items and `MAX_VALUE_BYTES` characters of text in all, so one value
  cannot make a cycle slow;
- only JSON's types (a TOML date is not one);
- no object with the same name twice (readers disagree on which one counts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Final

from lbsync.model.checks import ContractError

MAX_VALUE_BYTES: Final = 1 << 20
MAX_INTEGER_DIGITS: Final = 32
MAX_DEPTH: Final = 32
MAX_ITEMS: Final = 10_000
_LARGEST: Final = 10**MAX_INTEGER_DIGITS
# one encoder for every value (it holds only its options): `json.dumps` with options makes a
# new one per call, a third of the cost of a small value. No circular check: every value it
# encodes was bounded first, and a cycle is deeper than any bound
_CANONICAL: Final = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
)


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ContractError(f"number of {len(text)} digits is too large")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ContractError(f"number {text[:40]} is too large")
    return value


def _refuse_constant(constant: str) -> object:
    raise ContractError(f"not valid JSON: {constant} is not a JSON number")


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object whose names are all different: `json` keeps the last of two equal names,
    another reader may keep the first, so `{"blue": 90, "blue": 10}` has no one meaning."""
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ContractError(f"the name {name!r} appears twice in one object")
            seen.add(name)
    return value


def check_bounds(value: object) -> None:
    """ContractError when a decoded value is deeper, larger or of another type than allowed.

    Recursive, but never past `MAX_DEPTH` frames: a level is refused before the check
    descends into it. Decoders give exact types (`type(...) is`), which is checked first, and
    a container's scalars are counted in its own loop: this runs on every key of a whole read."""
    counted = [0, 0]  # items, characters of text
    _within((value,), 0, counted)


def _within(items: Iterable[object], depth: int, counted: list[int]) -> None:
    """`check_bounds` for the items of one container at `depth` (the top value is the one item
    at depth 0); `counted` holds the items and characters of text seen so far."""
    for item in items:
        if depth >= MAX_DEPTH:
            raise ContractError(f"nested more than {MAX_DEPTH} levels deep")
        counted[0] += 1
        kind = type(item)
        if kind is str:
            counted[1] += len(item)  # type: ignore[arg-type]
            continue
        if kind not in _JSON_TYPES:
            kind = _json_type(item)
        if kind is dict:
            assert isinstance(item, dict)
            for key in item:
                if not isinstance(key, str):
                    raise ContractError("an object key is not a string")
            counted[1] += sum(map(len, item))
            _within(item.values(), depth + 1, counted)
        elif kind is list:
            assert isinstance(item, list)
            _within(item, depth + 1, counted)
        elif kind is str:  # a subclass
            counted[1] += len(item)  # type: ignore[arg-type]
        elif kind is int and not -_LARGEST < item < _LARGEST:  # type: ignore[operator]
            raise ContractError(f"number of more than {MAX_INTEGER_DIGITS} digits")
        # bool, float, None: a float that is not finite is refused by the field that holds it
    if counted[0] > MAX_ITEMS:
        raise ContractError(f"more than {MAX_ITEMS} items")
    if counted[1] > MAX_VALUE_BYTES:
        raise ContractError(f"more than {MAX_VALUE_BYTES:,} characters of text")


_JSON_TYPES: Final = frozenset({str, dict, list, int, bool, float, type(None)})


def _json_type(value: object) -> type:
    """The JSON type a value of another type stands for (a subclass); ContractError for a
    value that is none (a TOML date, say)."""
    for kind in (bool, str, dict, list, int, float):
        if isinstance(value, kind):
            return kind
    raise ContractError(f"not a JSON value: {type(value).__name__}")


def decode_json(text: str | bytes) -> object:
    """Decode one JSON value within the bounds above; ContractError says what is wrong."""
    if len(text) > MAX_VALUE_BYTES:
        raise ContractError(f"a value of {len(text):,} bytes, more than {MAX_VALUE_BYTES:,}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique,
            parse_constant=_refuse_constant,
            parse_float=_finite,
            parse_int=_integer,
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ContractError(f"not valid JSON: {error}") from error
    except RecursionError as error:
        raise ContractError(f"nested more than {MAX_DEPTH} levels deep") from error
    except ValueError as error:  # what the number parsers raise beyond their limits
        raise ContractError(f"not valid JSON: {error}") from error
    if not _within_bounds_by_length(text):
        check_bounds(value)
    return value


def _within_bounds_by_length(text: str | bytes) -> bool:
    """Whether a decoded text's value is within the bounds without walking it: every item
    takes a character of the text, every level an opening bracket, its text is at most the
    text's length (checked), and the parse hooks bound every number. Most values are small."""
    if len(text) > MAX_ITEMS:
        return False
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{") < MAX_DEPTH
    return text.count("[") + text.count("{") < MAX_DEPTH


def json_or_str(value: object, *, checked: bool = False) -> str:
    """A value's text as a `kv` key shows it: its canonical JSON, or `str(value)` when it has
    none (too large, not JSON, not finite)."""
    try:
        return canonical_json(value, checked=checked)
    except ContractError:
        return str(value)


def canonical_json(value: object, *, checked: bool = False) -> str:
    """The one text of a JSON value: sorted keys, no spaces (after `check_bounds`, unless
    `checked`: the caller bounded it already)."""
    if not checked:
        check_bounds(value)
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise ContractError(f"not a JSON value: {error}") from error
