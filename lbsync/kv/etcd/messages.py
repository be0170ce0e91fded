"""etcd's gateway JSON at the boundary: frozen values in, base64 and strings out.

The gRPC-JSON gateway speaks protobuf's JSON mapping: bytes fields (keys, values) are base64,
int64 fields are strings, and every field holding its zero value is left out (a PUT event has
no `type`, a missing `mod_revision` is 0, a false `succeeded` is absent). Everything that
crosses this module comes out typed and complete, so no caller sees those rules.

Keys are text for lbsync; a key that is not UTF-8 is decoded with `surrogateescape`, so it
still round-trips unchanged to etcd.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lbsync.kv.etcd.errors import EtcdError


def encode_key(key: str) -> bytes:
    """A key's bytes (surrogate escapes turn back into the original non-UTF-8 bytes)."""
    return key.encode("utf-8", "surrogateescape")


def decode_key(raw: bytes) -> str:
    """A key as text, lossless for any bytes."""
    return raw.decode("utf-8", "surrogateescape")


def b64(data: bytes) -> str:
    """Bytes as the gateway expects them in JSON."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str) -> bytes:
    """Bytes from the gateway's JSON (a missing field is empty)."""
    if text is None:
        return b""
    if not isinstance(text, str):
        raise EtcdError(f"etcd sent {what} that is not base64 text: {text!r:.80}")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise EtcdError(f"etcd sent {what} that is not valid base64") from error


def to_int(value: object, what: str) -> int:
    """An int64 from the gateway's JSON: a string, a number, or absent (zero)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EtcdError(f"etcd sent {what} that is not an integer: {value!r:.80}")
    try:
        return int(value)
    except ValueError as error:
        raise EtcdError(f"etcd sent {what} that is not an integer: {value!r:.80}") from error


def prefix_range(prefix: str) -> dict[str, str]:
    """`key` and `range_end` that select every key starting with `prefix`.

    The end is the prefix with its last byte that is not 0xff incremented (and the bytes after
    it dropped); an empty prefix, or one of only 0xff bytes, means "to the end of the keyspace",
    which etcd spells as a single zero byte.
    """
    start = encode_key(prefix)
    end = bytearray(start)
    while end and end[-1] == 0xFF:
        end.pop()
    if end:
        end[-1] += 1
    return {"key": b64(start or b"\0"), "range_end": b64(bytes(end) or b"\0")}


def header_revision(data: Mapping[str, Any]) -> int:
    """The store revision in a response's header (0 when etcd left it out)."""
    header = data.get("header")
    return to_int(header.get("revision"), "a header revision") if isinstance(header, dict) else 0


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it; revisions are etcd's, `lease` is 0 without a lease."""

    key: str
    value: bytes
    mod_revision: int = 0
    create_revision: int = 0
    version: int = 0
    lease: int = 0

    @property
    def text(self) -> str:
        """The value as UTF-8 text (lbsync's values are JSON); undecodable bytes replaced."""
        return self.value.decode("utf-8", "replace")

    @classmethod
    def from_json(cls, data: object) -> KeyValue:
        """A KeyValue from the gateway's `kv` object."""
        if not isinstance(data, dict):
            raise EtcdError(f"etcd sent a key-value that is not an object: {data!r:.80}")
        return cls(
            key=decode_key(unb64(data.get("key"), "a key")),
            value=unb64(data.get("value"), "a value"),
            mod_revision=to_int(data.get("mod_revision"), "a mod_revision"),
            create_revision=to_int(data.get("create_revision"), "a create_revision"),
            version=to_int(data.get("version"), "a version"),
            lease=to_int(data.get("lease"), "a lease"),
        )


class EventType(StrEnum):
    """What happened to a key; the gateway omits `type` for PUT, its zero value."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Event:
    """One change seen by a watch. A DELETE's `kv` has the key and the deleting revision."""

    type: EventType
    kv: KeyValue


@dataclass(frozen=True)
class WatchResponse:
    """One message of a watch stream.

    `revision` is the store revision in the header. A response without events that is neither
    `created` nor `canceled` is a progress notification: every change up to `revision` has
    been delivered. `compact_revision` is set when the start revision was compacted (then
    `canceled` is too); `EtcdWatch` turns canceled responses into exceptions.
    """

    revision: int
    events: tuple[Event, ...] = ()
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    cancel_reason: str = ""
    compact_revision: int = 0

    @property
    def is_progress_notify(self) -> bool:
        """Whether this is a progress notification (no events, nothing else either)."""
        return not (self.events or self.created or self.canceled)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WatchResponse:
        """A WatchResponse from the gateway's `result` object."""
        events = data.get("events") or []
        if not isinstance(events, list):
            raise EtcdError(f"etcd sent watch events that are not a list: {events!r:.80}")
        return cls(
            revision=header_revision(data),
            events=tuple(_event(item) for item in events),
            watch_id=to_int(data.get("watch_id"), "a watch_id"),
            created=data.get("created") is True,
            canceled=data.get("canceled") is True,
            cancel_reason=str(data.get("cancel_reason") or ""),
            compact_revision=to_int(data.get("compact_revision"), "a compact_revision"),
        )


def _event(data: object) -> Event:
    if not isinstance(data, dict):
        raise EtcdError(f"etcd sent a watch event that is not an object: {data!r:.80}")
    kind = data.get("type", "PUT")
    try:
        event_type = EventType(kind)
    except ValueError as error:
        raise EtcdError(f"etcd sent a watch event of unknown type {kind!r}") from error
    return Event(type=event_type, kv=KeyValue.from_json(data.get("kv")))
