"""A service's servers by group (sticky and pinned routing) and the split as a draw (pure)."""

from __future__ import annotations

import pytest

from lbsync.core.bygroup import GroupServers
from lbsync.core.state import DesiredState, ServiceState, build
from lbsync.model.catalog import merge
from lbsync.model.contract import parse_values
from lbsync.model.values import Snapshot

Values = dict[str, object]


def shop(split: Values, **instances: Values) -> ServiceState:
    values: Values = {"services/shop/route": {}, "services/shop/split": split}
    values.update({f"services/shop/instances/{name}": at for name, at in instances.items()})
    entries, rejected = parse_values(values, describe=str)
    assert not rejected, rejected
    state: DesiredState = build(merge([Snapshot(source="test", entries=entries)]))
    found = state.service("shop")
    assert found is not None
    return found


def at(port: int, *tags: str, **fields: object) -> Values:
    return {"address": "127.0.0.1", "port": port, "tags": list(tags), **fields}


def weights(servers: tuple[object, ...]) -> dict[str, int]:
    return {server.name: server.weight for server in servers}  # type: ignore[attr-defined]


def by_key(service: ServiceState) -> dict[str, GroupServers]:
    return {group.key: group for group in service.group_servers}


def test_groups_with_instances_come_in_the_split_order_with_the_default_group_last() -> None:
    service = shop(
        {"groups": {"green": 10, "blue": 60, "empty": 5}},
        **{"blue-1": at(1, "blue"), "green-1": at(2, "green"), "old-1": at(3)},
    )
    groups = service.group_servers
    assert [(g.name, g.key, g.position) for g in groups] == [
        ("green", "green", 1),
        ("blue", "blue", 2),
        ("", "_default", 3),
    ]
    assert [g.pinnable for g in groups] == [True, True, False]
    assert [g.label for g in groups] == ["green", "blue", "(default)"]


def test_pinned_weights_follow_the_instances_weights_whatever_the_share() -> None:
    service = shop(
        {"groups": {"blue": 100, "green": 0}},
        **{
            "blue-1": at(1, "blue"),
            "green-1": at(2, "green", weight=1),
            "green-2": at(3, "green", weight=3),
            "green-3": at(4, "green", health="critical"),
        },
    )
    green = by_key(service)["green"]
    assert weights(green.servers) == {"green-1": 0, "green-2": 0, "green-3": 0}
    assert weights(green.pinned) == {"green-1": 85, "green-2": 256, "green-3": 0}
    assert not green.has_share and green.reachable
    assert by_key(service)["blue"].has_share


def test_a_group_whose_instances_are_all_down_is_not_reachable() -> None:
    service = shop(
        {"groups": {"blue": 90, "green": 10}},
        **{"blue-1": at(1, "blue"), "green-1": at(2, "green", health="critical")},
    )
    green = by_key(service)["green"]
    assert not green.reachable and not green.has_share


def test_group_servers_are_the_split_servers_of_their_group() -> None:
    service = shop(
        {"groups": {"blue": 90, "green": 10}},
        **{"blue-1": at(1, "blue"), "blue-2": at(2, "blue"), "green-1": at(3, "green")},
    )
    blue = by_key(service)["blue"]
    assert blue.servers == tuple(s for s in service.servers if s.group == "blue")
    assert weights(service.servers) == {"blue-1": 256, "blue-2": 256, "green-1": 57}


@pytest.mark.parametrize(
    ("split", "instances", "expected"),
    [
        pytest.param(
            {"groups": {"blue": 90, "green": 10}},
            {"blue-1": at(1, "blue"), "green-1": at(2, "green")},
            [("blue", 9000), ("green", 1000)],
            id="90/10",
        ),
        pytest.param(
            {"groups": {"blue": 100, "green": 0}},
            {"blue-1": at(1, "blue"), "green-1": at(2, "green")},
            [("blue", 10000)],
            id="a group at 0 is not drawn",
        ),
        pytest.param(
            {"groups": {"blue": 66.666, "green": 33.334}},
            {"blue-1": at(1, "blue"), "green-1": at(2, "green")},
            [("blue", 6666), ("green", 3333)],
            id="rounded down, the last takes the rest",
        ),
        pytest.param(
            {"groups": {"green": 10, "gone": 5}, "on_empty": "fail"},
            {"stable-1": at(1), "green-1": at(2, "green")},
            [(None, 500), ("green", 1000), ("_default", 8500)],
            id="the unserved share first",
        ),
        pytest.param(
            {"groups": {"green": 10}},
            {"stable-1": at(1, health="critical"), "green-1": at(2, "green", health="critical")},
            [(None, 10000)],
            id="nothing eligible: all unserved",
        ),
        pytest.param(
            {"groups": {"green": 0.005, "blue": 99.995}},
            {"blue-1": at(1, "blue"), "green-1": at(2, "green")},
            [("blue", 10000)],
            id="a share below 0.01 % is left out of the draw",
        ),
    ],
)
def test_the_draw_gives_each_group_with_a_share_its_basis_points(
    split: Values, instances: dict[str, Values], expected: list[tuple[str | None, int]]
) -> None:
    service = shop(split, **instances)
    drawn = [(step.group.key if step.group else None, step.basis_points) for step in service.draw]
    assert drawn[:-1] == expected[:-1]
    assert drawn[-1][0] == expected[-1][0]  # the last one is `*`: whatever is left


def test_services_without_sticky_or_pin_do_not_route_by_group() -> None:
    service = shop({"groups": {"blue": 100}}, **{"blue-1": at(1, "blue")})
    assert not service.routes_by_group and service.pin is None and service.sticky_cookie is None
    pinned = shop(
        {"groups": {"blue": 100}, "pin": {"cookie": "canary"}}, **{"blue-1": at(1, "blue")}
    )
    assert pinned.routes_by_group and pinned.pin is not None and pinned.pin.cookie == "canary"
