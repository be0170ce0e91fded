"""Which services a change in Consul's health state or catalog asks lbsync to read again."""

from __future__ import annotations

from typing import Any

from lbsync.sources.consul.changes import (
    check_changes,
    explained,
    health_state,
    services_to_read,
    tags_moved,
)


def check(
    node: str,
    check_id: str,
    service: str = "",
    *,
    status: str = "passing",
    modified: int = 10,
    tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A row of `/v1/health/state/any` as Consul answers it."""
    return {
        "Node": node,
        "CheckID": check_id,
        "Name": check_id,
        "Status": status,
        "Output": f"output {modified}",
        "ServiceID": f"{service}-1" if service else "",
        "ServiceName": service,
        "ServiceTags": list(tags),
        "CreateIndex": 5,
        "ModifyIndex": modified,
    }


BASE = [
    check("n1", "serfHealth"),
    check("n2", "serfHealth"),
    check("n1", "service:shop-1", "shop"),
    check("n2", "service:cart-1", "cart"),
]
NODES_OF = {"shop": {"n1"}, "cart": {"n2"}, "api": {"n1", "n2"}}


def reads(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> set[str]:
    return services_to_read(health_state(5, before), health_state(6, after), nodes_of=NODES_OF)


def test_a_status_flip_reads_its_service_only() -> None:
    flipped = [*BASE[:2], check("n1", "service:shop-1", "shop", status="critical"), BASE[3]]
    assert reads(BASE, flipped) == {"shop"}


def test_an_output_only_update_reads_nothing() -> None:
    rewritten = [*BASE[:2], check("n1", "service:shop-1", "shop", modified=11), BASE[3]]
    assert reads(BASE, rewritten) == set()


def test_a_new_tag_on_a_check_reads_its_service() -> None:
    tagged = [*BASE[:2], check("n1", "service:shop-1", "shop", tags=("green",)), BASE[3]]
    assert reads(BASE, tagged) == {"shop"}


def test_a_node_check_reads_every_service_on_that_node() -> None:
    down = [check("n1", "serfHealth", status="critical"), *BASE[1:]]
    assert reads(BASE, down) == {"shop", "api"}


def test_an_instance_leaving_with_its_check_reads_its_service() -> None:
    assert reads(BASE, BASE[:3]) == {"cart"}


def test_changed_checks_give_their_modify_index_and_a_removal_the_state_index() -> None:
    old = health_state(20, BASE)
    flipped = [*BASE[:2], check("n1", "service:shop-1", "shop", status="warning", modified=21)]
    new = health_state(22, flipped)  # cart-1's check is gone too
    assert check_changes(old, new) == (21, 22)


def test_a_catalog_move_is_explained_only_by_a_check_change_in_the_same_write() -> None:
    assert explained((21, 25), at=25)
    assert not explained((21, 25), at=23)
    assert not explained((), at=23)


def test_catalog_tags_moved_when_a_service_comes_goes_or_changes_its_tags() -> None:
    old = {"shop": ("blue",), "cart": (), "api": ("x",)}
    new = {"shop": ("blue", "green"), "cart": (), "web": ()}
    assert tags_moved(old, new) == {"shop", "api", "web"}


def test_checks_of_odd_shapes_are_folded_without_an_exception() -> None:
    odd: list[dict[str, Any]] = [
        {"Node": 7, "CheckID": None, "ServiceID": "x-1", "ServiceName": "x", "ServiceTags": "t"},
        {"Node": "n1", "Status": ["passing"], "ModifyIndex": "12", "ServiceTags": [1, None]},
    ]
    state = health_state(3, odd)
    assert set(state.services) == {"x"} and set(state.nodes) == {"n1"}
    assert state.modified == {"x": frozenset({0})}
