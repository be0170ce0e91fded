"""Keeping last good values (carry_forward) and merging sources into one catalog (merge)."""

from __future__ import annotations

import json

from lbsync.model.catalog import carry_forward, merge
from lbsync.model.contract import parse_raw
from lbsync.model.values import (
    Instance,
    Rejection,
    Route,
    ServiceSpec,
    Setting,
    Snapshot,
    Split,
)

SPLIT = "services/shop/split"
BLUE = "services/shop/instances/blue-1"


def snapshot(raw: dict[str, object], *, source: str = "etcd") -> Snapshot:
    """A snapshot as a KV source builds it: JSON texts parsed by the contract."""
    texts = {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()
    }
    entries, rejected = parse_raw(texts, describe=lambda key: f"{source} {key}")
    raw_texts = tuple(sorted(texts.items()))
    return Snapshot(source=source, entries=entries, rejected=rejected, raw=raw_texts)


def instance(id_: str, port: int, service: str = "shop") -> Instance:
    return Instance(service=service, id=id_, address="10.0.0.5", port=port)


GOOD = {
    SPLIT: {"groups": {"blue": 90, "green": 10}},
    BLUE: {"address": "10.0.0.5", "port": 8080},
}


def test_without_a_previous_snapshot_the_current_one_is_used_as_is() -> None:
    current = snapshot({SPLIT: {"groups": {"blue": 130}}})
    assert carry_forward(None, current) is current


def test_an_invalid_split_leaves_the_previous_split_in_force() -> None:
    previous = snapshot(GOOD)
    current = snapshot({**GOOD, SPLIT: {"groups": {"blue": 100, "green": 30}}})
    kept = carry_forward(previous, current)
    assert dict(kept.entries)[SPLIT] == Split(
        service="shop", groups=(("blue", 90.0), ("green", 10.0))
    )
    assert [key for key, _ in kept.rejected] == [SPLIT]
    assert "sum to 130" in kept.rejected[0][1].message
    assert kept.usable


def test_a_refused_key_that_never_was_good_stays_absent() -> None:
    previous = snapshot({BLUE: GOOD[BLUE]})
    kept = carry_forward(previous, snapshot({BLUE: GOOD[BLUE], SPLIT: "not json"}))
    assert [key for key, _ in kept.entries] == [BLUE]
    assert [key for key, _ in kept.rejected] == [SPLIT]


def test_a_deleted_key_is_not_carried_forward() -> None:
    previous = snapshot(GOOD)
    current = snapshot({BLUE: GOOD[BLUE]})
    assert carry_forward(previous, current) == current


def test_an_unusable_snapshot_keeps_the_previous_whole_and_carries_the_error() -> None:
    previous = snapshot(GOOD)
    failed = Snapshot(source="etcd", usable=False, error="etcd: connection refused")
    kept = carry_forward(previous, failed)
    assert (kept.entries, kept.raw, kept.rejected) == (
        previous.entries,
        previous.raw,
        previous.rejected,
    )
    assert not kept.usable
    assert kept.error == "etcd: connection refused"


def test_a_good_snapshot_after_an_unusable_one_is_usable_again() -> None:
    previous = carry_forward(snapshot(GOOD), Snapshot(source="etcd", usable=False, error="down"))
    recovered = carry_forward(previous, snapshot({BLUE: GOOD[BLUE]}))
    assert recovered.usable
    assert recovered.error is None
    assert [key for key, _ in recovered.entries] == [BLUE]


def test_merge_lets_the_first_source_win_a_shared_key_and_reports_the_loser() -> None:
    first = snapshot({BLUE: {"address": "10.0.0.5", "port": 8080}}, source="file")
    second = snapshot({BLUE: {"address": "10.0.0.5", "port": 9090}}, source="consul")
    catalog = merge([first, second])
    assert catalog.services == (ServiceSpec(name="shop", instances=(instance("blue-1", 8080),)),)
    assert catalog.rejected == (
        Rejection(where=f"consul key {BLUE}", message="also set by file, whose value is used"),
    )


def test_merge_keeps_the_rejections_of_every_source() -> None:
    first = snapshot({SPLIT: {"by": "colour"}}, source="file")
    second = snapshot({"services/web/route": {"path": "web"}}, source="etcd")
    wheres = [rejection.where for rejection in merge([first, second]).rejected]
    assert wheres == [f"file {SPLIT}", "etcd services/web/route"]


def test_merge_groups_services_by_name_and_sorts_them_and_their_instances() -> None:
    catalog = merge(
        [
            snapshot(
                {
                    "services/web/instances/w-2": {"address": "10.0.0.5", "port": 2},
                    "services/web/instances/w-1": {"address": "10.0.0.5", "port": 1},
                    "services/api/route": {"path": "/api"},
                    "settings/zeta": 1,
                }
            ),
            snapshot(
                {
                    "services/web/route": {},
                    "services/api/split": {"groups": {"v2": 10}},
                    "settings/alpha": {"x": True},
                },
                source="consul",
            ),
        ]
    )
    assert [spec.name for spec in catalog.services] == ["api", "web"]
    api, web = catalog.services
    assert api.route == Route(service="api", path="/api")
    assert api.split == Split(service="api", groups=(("v2", 10.0),))
    assert api.instances == ()
    assert web.route == Route(service="web")
    assert web.instances == (instance("w-1", 1, "web"), instance("w-2", 2, "web"))
    assert catalog.settings == (
        Setting(key="alpha", json_text='{"x":true}'),
        Setting(key="zeta", json_text="1"),
    )


def test_merge_keeps_raw_keys_sorted_with_the_first_source_winning() -> None:
    first = Snapshot(source="file", raw=(("app/b", "1"), ("app/x", "from file")))
    second = Snapshot(source="etcd", raw=(("app/a", "2"), ("app/x", "from etcd")))
    assert merge([first, second]).raw.pairs == (
        ("app/a", "2"),
        ("app/b", "1"),
        ("app/x", "from file"),
    )
