"""The services file: TOML in the KV contract's shapes, read into one snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbsync.model.values import Instance, Route, Setting, Split
from lbsync.sources.file import read_snapshot

SHOP = """
[services.shop.route]
hosts = ["shop.localhost"]

[services.shop.split]
groups = { blue = 90, green = 10 }

[services.shop.instances.blue-1]
address = "127.0.0.1"
port = 9101
tags = ["blue"]

[services.shop.instances.green-1]
address = "127.0.0.1"
port = 9103
tags = ["green"]
"""

WEB = """
[services.web.route]
path = "/web"

[services.web.instances.w-1]
address = "127.0.0.1"
port = 9201
"""


@pytest.fixture
def services(tmp_path: Path) -> Path:
    return tmp_path / "services.toml"


def test_a_valid_file_gives_one_entry_per_key(services: Path) -> None:
    services.write_text(SHOP + '[settings]\nowner = "platform"\n')
    snapshot = read_snapshot(services, source="file:test")
    assert (snapshot.source, snapshot.usable, snapshot.error) == ("file:test", True, None)
    assert snapshot.rejected == ()
    entries = dict(snapshot.entries)
    assert list(entries) == [
        "services/shop/instances/blue-1",
        "services/shop/instances/green-1",
        "services/shop/route",
        "services/shop/split",
        "settings/owner",
    ]
    assert entries["services/shop/route"] == Route(service="shop", hosts=("shop.localhost",))
    assert entries["services/shop/split"] == Split(
        service="shop", groups=(("blue", 90.0), ("green", 10.0))
    )
    assert entries["services/shop/instances/green-1"] == Instance(
        service="shop", id="green-1", address="127.0.0.1", port=9103, tags=("green",)
    )
    assert entries["settings/owner"] == Setting(key="owner", json_text='"platform"')


def test_a_toml_syntax_error_makes_the_snapshot_unusable_naming_file_and_line(
    services: Path,
) -> None:
    services.write_text('[services.web.route]\npath = "/web"\n[settings]\nowner = platform\n')
    snapshot = read_snapshot(services)
    assert not snapshot.usable
    assert snapshot.entries == ()
    assert snapshot.error is not None
    assert snapshot.error.startswith(f"{services}: not valid TOML")
    assert "line 4" in snapshot.error


def test_the_same_instance_declared_twice_is_a_toml_error_naming_the_file(
    services: Path,
) -> None:
    services.write_text(SHOP + '[services.shop.instances.blue-1]\naddress = "::1"\nport = 1\n')
    snapshot = read_snapshot(services)
    assert not snapshot.usable
    assert snapshot.error is not None
    assert str(services) in snapshot.error
    assert "line 17" in snapshot.error


def test_a_missing_file_is_unusable_and_named(services: Path) -> None:
    snapshot = read_snapshot(services)
    assert not snapshot.usable
    assert snapshot.error is not None
    assert snapshot.error.startswith(f"{services}: cannot read")


def test_a_file_that_is_not_utf8_is_unusable(services: Path) -> None:
    services.write_bytes(b'[settings]\nowner = "\xff"\n')
    snapshot = read_snapshot(services)
    assert not snapshot.usable
    assert snapshot.error is not None
    assert str(services) in snapshot.error


def test_an_unknown_section_is_refused_with_the_file_named(services: Path) -> None:
    services.write_text(WEB + '[colour]\nblue = "#00f"\n')
    snapshot = read_snapshot(services)
    assert snapshot.usable
    assert [(key, r.where) for key, r in snapshot.rejected] == [("colour", f"{services} [colour]")]
    assert "unknown section" in snapshot.rejected[0][1].message
    assert [key for key, _ in snapshot.entries] == [
        "services/web/instances/w-1",
        "services/web/route",
    ]


def test_a_bad_split_in_one_service_does_not_hide_the_others(services: Path) -> None:
    services.write_text(SHOP.replace("blue = 90, green = 10", "blue = 95, green = 35") + WEB)
    snapshot = read_snapshot(services)
    assert [(key, r.where) for key, r in snapshot.rejected] == [
        ("services/shop/split", f"{services} [services.shop.split]")
    ]
    assert "sum to 130" in snapshot.rejected[0][1].message
    assert [key for key, _ in snapshot.entries] == [
        "services/shop/instances/blue-1",
        "services/shop/instances/green-1",
        "services/shop/route",
        "services/web/instances/w-1",
        "services/web/route",
    ]


@pytest.mark.parametrize(
    ("text", "key", "named"),
    [
        pytest.param("[services]\nshop = 1\n", "services/shop", "must be a table", id="service"),
        pytest.param(
            "[services.shop]\ninstances = 3\n",
            "services/shop/instances",
            "must be a table of instances",
            id="instances",
        ),
        pytest.param(
            '[services.shop.instances."a b"]\naddress = "::1"\nport = 1\n',
            "services/shop/instances/a b",
            "instance id",
            id="instance id with space",
        ),
        pytest.param(
            '[services.shop.instances."a/b"]\naddress = "::1"\nport = 1\n',
            "services/shop/instances/a/b",
            "unknown key",
            id="instance id with slash",
        ),
        pytest.param(
            '[services.shop.instances.a]\naddress = "::1"\nport = 1\nweight = inf\n',
            "services/shop/instances/a",
            "weight must be an integer",
            id="infinite weight",
        ),
        pytest.param(
            "[services.shop.split]\ngroups = { blue = nan }\n",
            "services/shop/split",
            "groups.blue",
            id="NaN share",
        ),
    ],
)
def test_a_misshapen_entry_is_refused_by_key(
    services: Path, text: str, key: str, named: str
) -> None:
    services.write_text(text + WEB)
    snapshot = read_snapshot(services)
    assert [k for k, _ in snapshot.rejected] == [key]
    assert named in snapshot.rejected[0][1].message
    assert str(services) in snapshot.rejected[0][1].where
    assert "services/web/route" in dict(snapshot.entries)


def test_kv_raw_keys_appear_in_the_snapshots_raw_and_not_as_entries(services: Path) -> None:
    services.write_text(
        WEB + '[kv]\n"app/motd" = "hello"\n[kv.feature]\nflag = true\nlimits = { rps = 5 }\n'
    )
    snapshot = read_snapshot(services)
    raw = dict(snapshot.raw)
    assert raw["app/motd"] == "hello"
    assert raw["feature/flag"] == "true"
    assert raw["feature/limits/rps"] == "5"
    assert [key for key, _ in snapshot.raw] == sorted(raw)
    assert not any(key.startswith(("app/", "feature/")) for key, _ in snapshot.entries)


def test_reading_the_same_file_twice_gives_equal_snapshots(services: Path) -> None:
    services.write_text(SHOP + WEB)
    assert read_snapshot(services) == read_snapshot(services)


def test_a_services_value_that_is_not_a_table_is_refused(services: Path) -> None:
    services.write_text('services = 1\n[settings]\nowner = "platform"\n')
    snapshot = read_snapshot(services)
    assert [(key, r.message) for key, r in snapshot.rejected] == [("services", "must be a table")]
    assert [key for key, _ in snapshot.entries] == ["settings/owner"]
