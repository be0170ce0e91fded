"""No value, key name or file content raises out of a source: each is refused, named, and the
source carries on with the other keys (real etcd, real Consul, a real services file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.consul import ConsulAgent, following
from support.etcd import EtcdServer

from lbsync.config import ConsulSourceConfig, EtcdSourceConfig
from lbsync.kv.etcd import EtcdClient
from lbsync.model.values import Snapshot
from lbsync.sources.consul import ConsulSource
from lbsync.sources.etcd import EtcdSource
from lbsync.sources.file import read_snapshot

HUGE = "7" * 5000  # Python refuses to convert 4,300 digits: a plain ValueError
ROUTE = json.dumps({"hosts": ["shop.example.com"]})


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


HOSTILE: dict[str, bytes] = {
    "services/shop/instances/huge": (
        '{"address": "10.0.0.1", "port": 80, "weight": ' + HUGE + "}"
    ).encode(),
    "settings/stack": deep(1000).encode(),  # past json's recursion
    "settings/deep": deep(40).encode(),  # past MAX_DEPTH, not past the stack
    "settings/binary": b'"\xff\xfe"',  # not UTF-8
    "settings/newline": json.dumps("a\nbind :1").encode(),
    "app/\x1b[31mred": b"x",  # a raw key with a terminal escape
}
ESCAPED_KEY = "app/\x1b[31mred"


def refused(snapshot: Snapshot) -> dict[str, str]:
    return {key: f"{rejection.where}: {rejection.message}" for key, rejection in snapshot.rejected}


def assert_each_refused_and_named(snapshot: Snapshot, named: str, keys: set[str]) -> None:
    assert snapshot.usable, snapshot.error
    reasons = refused(snapshot)
    assert set(reasons) == keys
    for key in keys:
        assert key in reasons, (key, reasons)
        assert named in reasons[key]
        assert "\n" not in reasons[key] and "\x1b" not in reasons[key]
    assert "services/shop/route" in dict(snapshot.entries)
    assert "digits" in reasons["services/shop/instances/huge"]
    assert "nested" in reasons["settings/stack"] and "nested" in reasons["settings/deep"]
    assert "UTF-8" in reasons["settings/binary"]
    assert "control character" in reasons["settings/newline"]
    if ESCAPED_KEY in keys:
        assert "control character" in reasons[ESCAPED_KEY]


async def test_hostile_etcd_values_and_keys_are_refused_by_name_and_the_watch_goes_on(
    etcd: EtcdServer, client: EtcdClient
) -> None:
    await client.put("lbsync/services/shop/route", ROUTE)
    for key, value in HOSTILE.items():
        await client.put("lbsync/" + key, value)
    source = EtcdSource(EtcdSourceConfig(endpoints=(etcd.url,)))
    async with following(source) as snapshots:
        first = await snapshots.next(lambda s: True, 10, "the first snapshot")
        assert_each_refused_and_named(first, "etcd key lbsync/", set(HOSTILE))
        await client.put("lbsync/settings/after", '"still watching"')
        later = await snapshots.next(lambda s: "settings/after" in dict(s.entries), 10, "a write")
        assert set(refused(later)) == set(HOSTILE)


async def test_hostile_consul_values_and_keys_are_refused_by_name_and_the_watch_goes_on(
    agent: ConsulAgent,
) -> None:
    await agent.kv_put("lbsync/services/shop/route", ROUTE)
    with pytest.raises(AssertionError, match="400"):  # Consul itself refuses such a key name
        await agent.call("PUT", "/v1/kv/lbsync/app/%1B[31mred", b"x")
    keys = set(HOSTILE) - {ESCAPED_KEY}
    for key in keys:
        assert await agent.call("PUT", "/v1/kv/lbsync/" + key, HOSTILE[key]) is True
    source = ConsulSource(ConsulSourceConfig(addresses=(agent.address,), wait=2.0))
    async with following(source) as snapshots:
        first = await snapshots.next(lambda s: True, 10, "the first snapshot")
        assert_each_refused_and_named(first, "consul key lbsync/", keys)
        await agent.kv_put("lbsync/settings/after", '"still watching"')
        later = await snapshots.next(lambda s: "settings/after" in dict(s.entries), 10, "a write")
        assert set(refused(later)) == keys


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            f"[services.shop.instances.a]\naddress = '10.0.0.1'\nport = 80\nweight = {HUGE}\n",
            "not valid TOML",
        ),
        ("[settings]\nx = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        (b"[settings]\nx = 1\n\xff\n", "not valid TOML"),
    ],
    ids=["an integer of 5,000 digits", "arrays nested 3,000 deep", "bytes that are not UTF-8"],
)
def test_a_services_file_that_cannot_be_read_is_unusable_naming_the_file(
    tmp_path: Path, content: str | bytes, reason: str
) -> None:
    path = tmp_path / "services.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    snapshot = read_snapshot(path)
    assert not snapshot.usable
    assert snapshot.error is not None and str(path) in snapshot.error
    assert reason in snapshot.error


def test_a_services_file_entry_nested_past_the_bound_is_refused_and_the_others_apply(
    tmp_path: Path,
) -> None:
    path = tmp_path / "services.toml"
    nested = "[" * 40 + "]" * 40
    path.write_text(
        "[services.shop.route]\nhosts = ['shop.example.com']\n\n"
        f"[settings]\ndeep = {nested}\nfine = 'yes'\nline = \"a\\nb\"\n"
    )
    snapshot = read_snapshot(path)
    assert snapshot.usable
    reasons = refused(snapshot)
    assert set(reasons) == {"settings/deep", "settings/line"}
    assert "nested more than 32" in reasons["settings/deep"]
    assert f"{path} [settings.deep]" in reasons["settings/deep"]
    assert {"services/shop/route", "settings/fine"} <= set(dict(snapshot.entries))
