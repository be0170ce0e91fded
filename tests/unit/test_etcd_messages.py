"""The etcd client's boundary: gateway JSON (base64, int64 strings, omitted zero values) in,
frozen values out; prefix ranges; gateway errors mapped onto the error taxonomy."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from lbsync.kv.etcd import (
    EtcdAuthError,
    EtcdError,
    EtcdRequestError,
    EtcdUnavailable,
    EventType,
    KeyValue,
    LeaseExpired,
    PermissionDenied,
    TokenExpired,
    WatchResponse,
)
from lbsync.kv.etcd.messages import prefix_range
from lbsync.kv.etcd.transport import check_endpoint, error_from


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("prefix", "start", "end"),
    [
        ("lbsync/", b"lbsync/", b"lbsync0"),
        ("a", b"a", b"b"),
        ("a\udcff", b"a\xff", b"b"),  # a trailing 0xff byte carries into the byte before
        ("\udcff\udcff", b"\xff\xff", b"\0"),  # nothing to carry into: to the end
        ("", b"\0", b"\0"),  # everything
    ],
)
def test_a_prefix_range_ends_just_past_the_prefix(prefix: str, start: bytes, end: bytes) -> None:
    assert prefix_range(prefix) == {"key": b64(start), "range_end": b64(end)}


def test_omitted_fields_are_zero_and_int64_strings_are_ints() -> None:
    kv = KeyValue.from_json({"key": b64("k\xe9".encode()), "mod_revision": "9"})
    assert kv == KeyValue(key="k\xe9", value=b"", mod_revision=9)


def test_a_non_utf8_key_round_trips_through_surrogate_escapes() -> None:
    kv = KeyValue.from_json({"key": b64(b"k\xff"), "value": b64(b"\x00\xff")})
    assert kv.key.encode("utf-8", "surrogateescape") == b"k\xff"
    assert kv.value == b"\x00\xff"


def test_a_watch_event_without_a_type_is_a_put() -> None:
    response = WatchResponse.from_json(
        {
            "header": {"revision": "12"},
            "events": [
                {"kv": {"key": b64(b"a"), "value": b64(b"1"), "mod_revision": "11"}},
                {"type": "DELETE", "kv": {"key": b64(b"b"), "mod_revision": "12"}},
            ],
        }
    )
    assert [event.type for event in response.events] == [EventType.PUT, EventType.DELETE]
    assert response.revision == 12 and not response.is_progress_notify


def test_a_header_only_response_is_a_progress_notification() -> None:
    response = WatchResponse.from_json({"header": {"revision": "40"}})
    assert response.is_progress_notify and response.revision == 40
    assert not WatchResponse.from_json({"header": {}, "created": True}).is_progress_notify


def test_a_compaction_cancel_carries_its_revision_without_a_header_revision() -> None:
    response = WatchResponse.from_json(
        {"header": {"raft_term": "2"}, "canceled": True, "compact_revision": "5"}
    )
    assert (response.canceled, response.compact_revision, response.revision) == (True, 5, 0)


@pytest.mark.parametrize(
    "bad",
    [{"key": "not base64!"}, {"key": b64(b"k"), "version": "x"}, {"key": 5}, ["not", "a", "dict"]],
)
def test_malformed_gateway_json_is_an_etcd_error(bad: Any) -> None:
    with pytest.raises(EtcdError):
        KeyValue.from_json(bad)


@pytest.mark.parametrize(
    ("status", "message", "code", "expected"),
    [
        (401, "etcdserver: invalid auth token", 16, TokenExpired),
        (400, "etcdserver: user name is empty", 3, TokenExpired),
        (400, "etcdserver: authentication failed, invalid user ID or password", 3, EtcdAuthError),
        (403, "etcdserver: permission denied", 7, PermissionDenied),
        (404, "etcdserver: requested lease not found", 5, LeaseExpired),
        (503, "etcdserver: no leader", 14, EtcdUnavailable),
        (400, "etcdserver: mvcc: required revision has been compacted", 11, EtcdRequestError),
        (502, "", 0, EtcdUnavailable),  # a proxy's page instead of etcd's JSON
    ],
)
def test_gateway_errors_map_onto_the_taxonomy(
    status: int, message: str, code: int, expected: type[EtcdError]
) -> None:
    body = {"error": message, "message": message, "code": code} if message else {}
    error = error_from(status, body, "http://127.0.0.1:2379/v3/kv/put")
    assert type(error) is expected


@pytest.mark.parametrize("endpoint", ["ftp://h:1", "http://h:1/v3", "http://h:x", "http://"])
def test_an_endpoint_is_an_http_url_with_nothing_after_the_port(endpoint: str) -> None:
    with pytest.raises(ValueError, match="etcd endpoint"):
        check_endpoint(endpoint)
    assert check_endpoint("https://etcd.example:2379/") == "https://etcd.example:2379"
