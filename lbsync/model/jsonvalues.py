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
from itertools import repeat
from typing import Final

from lbsync.model.checks import ContractError

MAX_VALUE_BYTES: Final = 1 << 20
MAX_INTEGER_DIGITS: Final = 32
MAX_DEPTH: Final = 32
MAX_ITEMS: Final = 10_000
_LARGEST: Final = 10**MAX_INTEGER_DIGITS


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

    Iterative on purpose: the check itself must not recurse into what it refuses. Decoders
    give exact types (`type(...) is`), which is checked first: this runs on every key of a
    whole read."""
    stack: list[tuple[object, int]] = [(value, 1)]
    items = 0
    text = 0
    while stack:
        current, depth = stack.pop()
        items += 1
        if depth > MAX_DEPTH:
            raise ContractError(f"nested more than {MAX_DEPTH} levels deep")
        if items > MAX_ITEMS:
            raise ContractError(f"more than {MAX_ITEMS} items")
        kind = type(current)
        if kind not in _JSON_TYPES:
            kind = _json_type(current)
        if kind is str:
            text += len(current)  # type: ignore[arg-type]
            if text > MAX_VALUE_BYTES:
                raise ContractError(f"more than {MAX_VALUE_BYTES:,} characters of text")
        elif kind is dict:
            assert isinstance(current, dict)
            if not all(isinstance(key, str) for key in current):
                raise ContractError("an object key is not a string")
            text += sum(map(len, current))
            stack.extend(zip(current.values(), repeat(depth + 1)))
        elif kind is list:
            assert isinstance(current, list)
            stack.extend(zip(current, repeat(depth + 1)))
        elif kind is int and not -_LARGEST < current < _LARGEST:  # type: ignore[operator]
            raise ContractError(f"number of more than {MAX_INTEGER_DIGITS} digits")
        # bool, float, None: a float that is not finite is refused by the field that holds it


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


def canonical_json(value: object) -> str:
    """The one text of a JSON value: sorted keys, no spaces (after `check_bounds`)."""
    check_bounds(value)
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as error:
        raise ContractError(f"not a JSON value: {error}") from error
