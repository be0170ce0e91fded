"""The split math (lbsync.core.weights.allocate): table tests for each rule, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbsync.core.health import admits, is_eligible, worst
from lbsync.core.weights import HAPROXY_MAX_WEIGHT, Allocation, allocate, group_of
from lbsync.model.contract import ContractError, parse_split
from lbsync.model.values import Health, HealthMode, Instance, OnEmpty, Split


def inst(
    id_: str,
    *tags: str,
    meta: dict[str, str] | None = None,
    weight: int = 1,
    health: Health = Health.PASSING,
) -> Instance:
    return Instance(
        service="shop",
        id=id_,
        address="127.0.0.1",
        port=9000,
        tags=tuple(sorted(tags)),
        meta=tuple(sorted((meta or {}).items())),
        weight=weight,
        health=health,
    )


def split(
    groups: dict[str, float], *, by: str = "tag", on_empty: OnEmpty = OnEmpty.REDISTRIBUTE
) -> Split:
    return Split(service="shop", by=by, groups=tuple(groups.items()), on_empty=on_empty)


def shares(allocation: Allocation) -> dict[str, float]:
    return {server.instance.id: server.share for server in allocation.servers}


def weights(allocation: Allocation) -> dict[str, int]:
    return {server.instance.id: server.weight for server in allocation.servers}


DOWN = Health.CRITICAL

SHARE_CASES = [
    pytest.param(
        (inst("a"), inst("b"), inst("c", weight=2)),
        None,
        {"a": 25, "b": 25, "c": 50},
        0,
        id="no split: even by weight",
    ),
    pytest.param(
        (inst("blue-1", "blue"), inst("blue-2", "blue"), inst("green-1", "green")),
        split({"blue": 90, "green": 10}),
        {"blue-1": 45, "blue-2": 45, "green-1": 10},
        0,
        id="90/10 with 2 blue and 1 green",
    ),
    pytest.param(
        (inst("old", "1.5", meta={"version": "1.4"}), inst("new", meta={"version": "1.5"})),
        split({"1.4": 80, "1.5": 20}, by="meta:version"),
        {"old": 80, "new": 20},
        0,
        id="meta:<key> groups by the metadata value, not by tags",
    ),
    pytest.param(
        (inst("both", "blue", "green"), inst("blue-1", "blue")),
        split({"green": 30, "blue": 70}),
        {"both": 30, "blue-1": 70},
        0,
        id="an instance in several groups takes the first in split key order",
    ),
    pytest.param(
        (inst("canary-1", "canary"), inst("stable-1"), inst("stable-2")),
        split({"canary": 5}),
        {"canary-1": 5, "stable-1": 47.5, "stable-2": 47.5},
        0,
        id="the default group gets 100 minus the named shares",
    ),
    pytest.param(
        (inst("a", "red"), inst("b")),
        split({"blue": 90, "green": 10}),
        {"a": 50, "b": 50},
        0,
        id="named groups without any instance: plain balancing",
    ),
    pytest.param(
        (inst("b", "blue"), inst("g", "green"), inst("r", "red", health=DOWN)),
        split({"blue": 60, "green": 20, "red": 20}),
        {"b": 75, "g": 25, "r": 0},
        0,
        id="redistribute hands an empty group's share out in proportion",
    ),
    pytest.param(
        (inst("blue-1", "blue", health=DOWN), inst("green-1", "green"), inst("green-2", "green")),
        split({"blue": 100, "green": 0}),
        {"blue-1": 0, "green-1": 50, "green-2": 50},
        0,
        id="100/0 with blue down: green serves",
    ),
    pytest.param(
        (inst("blue-1", "blue"), inst("blue-2", "blue"), inst("green-1", "green", health=DOWN)),
        split({"blue": 90, "green": 10}, on_empty=OnEmpty.FAIL),
        {"blue-1": 45, "blue-2": 45, "green-1": 0},
        10,
        id="on_empty fail leaves the empty group's share unserved",
    ),
    pytest.param(
        (inst("blue-1", "blue", health=DOWN), inst("green-1", "green", health=DOWN)),
        split({"blue": 90, "green": 10}),
        {"blue-1": 0, "green-1": 0},
        100,
        id="no eligible instance at all: everything unserved",
    ),
    pytest.param((), None, {}, 100, id="no instance at all: everything unserved"),
    pytest.param(
        (inst("drained", weight=0), inst("live")),
        None,
        {"drained": 0, "live": 100},
        0,
        id="instance weight 0 is drained",
    ),
    pytest.param(
        (inst("blue-1", "blue", weight=2), inst("blue-2", "blue"), inst("green-1", "green")),
        split({"blue": 90, "green": 10}),
        {"blue-1": 60, "blue-2": 30, "green-1": 10},
        0,
        id="relative weights divide a group's share",
    ),
]


@pytest.mark.parametrize(("instances", "the_split", "expected", "unserved"), SHARE_CASES)
def test_allocate_gives_each_server_its_share(
    instances: tuple[Instance, ...],
    the_split: Split | None,
    expected: dict[str, float],
    unserved: float,
) -> None:
    allocation = allocate(instances, the_split)
    assert shares(allocation) == pytest.approx(expected)
    assert allocation.unserved == pytest.approx(unserved)


def test_a_split_is_in_force_only_when_a_named_group_has_instances() -> None:
    plain = allocate((inst("a"), inst("b")), split({"blue": 90}))
    assert not plain.split_in_force
    assert [group.label for group in plain.groups] == ["(default)"]
    canary = allocate((inst("a", "blue"), inst("b")), split({"blue": 90}))
    assert canary.split_in_force
    assert [(g.label, g.target) for g in canary.groups] == [("blue", 90), ("(default)", 10)]


def test_group_of_takes_the_first_group_in_split_key_order() -> None:
    both = inst("x", "blue", "green")
    assert group_of(both, split({"green": 10, "blue": 90})) == "green"
    assert group_of(both, split({"blue": 90, "green": 10})) == "blue"
    assert group_of(inst("y", "red"), split({"blue": 90})) == ""


def test_group_of_by_meta_ignores_tags_and_other_keys() -> None:
    by_meta = split({"1.5": 10}, by="meta:version")
    assert group_of(inst("a", "1.5"), by_meta) == ""
    assert group_of(inst("b", meta={"release": "1.5"}), by_meta) == ""
    assert group_of(inst("c", meta={"version": "1.5"}), by_meta) == "1.5"


def test_redistribution_is_reported_with_a_note() -> None:
    allocation = allocate(
        (inst("b", "blue"), inst("g", "green", health=DOWN)), split({"blue": 90, "green": 10})
    )
    green = next(group for group in allocation.groups if group.name == "green")
    assert (green.status, green.effective, green.eligible, green.instances) == (
        "redistributed",
        0,
        0,
        1,
    )
    assert allocation.notes == ("group green has no eligible instance: its 10% is redistributed",)


def test_on_empty_fail_reports_the_unserved_share_in_basis_points_and_a_note() -> None:
    allocation = allocate(
        (inst("b", "blue"), inst("g", "green", health=DOWN)),
        split({"blue": 87.5, "green": 12.5}, on_empty=OnEmpty.FAIL),
    )
    assert allocation.unserved_basis_points == 1250
    assert allocation.notes == (
        "group green has no eligible instance: its 12.5% is unserved (503)",
    )
    blue = next(group for group in allocation.groups if group.name == "blue")
    assert blue.achieved == pytest.approx(87.5)


def test_nothing_eligible_leaves_every_weight_at_zero_and_all_unserved() -> None:
    allocation = allocate((inst("a", health=DOWN), inst("b", weight=0)), None)
    assert weights(allocation) == {"a": 0, "b": 0}
    assert allocation.unserved_basis_points == 10000
    assert all(server.nginx_down for server in allocation.servers)


@pytest.mark.parametrize(
    ("health", "mode", "eligible"),
    [
        pytest.param(Health.PASSING, HealthMode.PASSING, True, id="passing/passing"),
        pytest.param(Health.WARNING, HealthMode.PASSING, False, id="warning/passing"),
        pytest.param(Health.CRITICAL, HealthMode.PASSING, False, id="critical/passing"),
        pytest.param(Health.MAINTENANCE, HealthMode.PASSING, False, id="maintenance/passing"),
        pytest.param(Health.PASSING, HealthMode.WARNING, True, id="passing/warning"),
        pytest.param(Health.WARNING, HealthMode.WARNING, True, id="warning/warning"),
        pytest.param(Health.CRITICAL, HealthMode.WARNING, False, id="critical/warning"),
        pytest.param(Health.MAINTENANCE, HealthMode.WARNING, False, id="maintenance/warning"),
    ],
)
def test_the_health_filter_admits_by_mode(health: Health, mode: HealthMode, eligible: bool) -> None:
    assert admits(mode, health) is eligible
    allocation = allocate((inst("x", health=health), inst("ok")), None, mode)
    assert shares(allocation)["x"] == pytest.approx(50 if eligible else 0)
    assert allocation.servers[0].eligible is eligible


def test_a_drained_instance_is_not_eligible_whatever_its_health() -> None:
    assert not is_eligible(inst("x", weight=0), HealthMode.WARNING)


def test_worst_picks_the_worst_state_and_passing_for_none() -> None:
    assert worst([Health.WARNING, Health.MAINTENANCE, Health.CRITICAL]) is Health.MAINTENANCE
    assert worst([]) is Health.PASSING


def test_haproxy_weights_scale_the_largest_share_to_256() -> None:
    allocation = allocate(
        (inst("blue-1", "blue"), inst("blue-2", "blue"), inst("green-1", "green")),
        split({"blue": 90, "green": 10}),
    )
    # green: 10 / 45 * 256 = 56.9 -> 57
    assert weights(allocation) == {"blue-1": 256, "blue-2": 256, "green-1": 57}


def test_a_tiny_share_keeps_weight_one() -> None:
    allocation = allocate((inst("a", "a"), inst("b", "b")), split({"a": 99.9, "b": 0.1}))
    assert weights(allocation) == {"a": 256, "b": 1}


def test_a_zero_share_is_weight_zero_and_nginx_down() -> None:
    allocation = allocate((inst("blue-1", "blue"), inst("green-1", "green")), split({"blue": 100}))
    by_id = {server.instance.id: server for server in allocation.servers}
    assert (by_id["green-1"].weight, by_id["green-1"].nginx_down) == (0, True)
    assert (by_id["blue-1"].weight, by_id["blue-1"].nginx_down) == (256, False)


# --- properties ---

TAGS = ("blue", "green", "canary")


@st.composite
def instance_sets(draw: st.DrawFn) -> tuple[Instance, ...]:
    count = draw(st.integers(min_value=0, max_value=8))
    return tuple(
        inst(
            f"i{index}",
            *draw(st.sets(st.sampled_from(TAGS), max_size=2)),
            weight=draw(st.integers(min_value=0, max_value=20)),
            health=draw(st.sampled_from(list(Health))),
        )
        for index in range(count)
    )


@st.composite
def splits(draw: st.DrawFn) -> Split | None:
    names = draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=3))
    if not names and draw(st.booleans()):
        return None
    raw = [draw(st.floats(min_value=0, max_value=100)) for _ in names]
    total = sum(raw)
    values = [value * 100 / total for value in raw] if total > 100 else raw
    return split(dict(zip(names, values, strict=True)), on_empty=draw(st.sampled_from(OnEmpty)))


modes = st.sampled_from(list(HealthMode))
property_settings = settings(max_examples=60, deadline=None)


@property_settings
@given(instance_sets(), splits(), modes)
def test_the_same_input_always_gives_the_same_allocation(
    instances: tuple[Instance, ...], the_split: Split | None, mode: HealthMode
) -> None:
    assert allocate(instances, the_split, mode) == allocate(instances, the_split, mode)


@property_settings
@given(instance_sets(), splits(), modes)
def test_a_non_zero_share_never_becomes_weight_zero(
    instances: tuple[Instance, ...], the_split: Split | None, mode: HealthMode
) -> None:
    for server in allocate(instances, the_split, mode).servers:
        assert (server.weight > 0) == (server.share > 0)


@property_settings
@given(instance_sets(), splits(), modes)
def test_all_weights_are_within_0_to_256_and_the_largest_is_256(
    instances: tuple[Instance, ...], the_split: Split | None, mode: HealthMode
) -> None:
    found = [server.weight for server in allocate(instances, the_split, mode).servers]
    assert all(0 <= weight <= HAPROXY_MAX_WEIGHT for weight in found)
    if any(found):
        assert max(found) == HAPROXY_MAX_WEIGHT


@property_settings
@given(instance_sets(), splits(), modes)
def test_each_achieved_share_is_within_the_documented_bound(
    instances: tuple[Instance, ...], the_split: Split | None, mode: HealthMode
) -> None:
    allocation = allocate(instances, the_split, mode)
    total = sum(server.weight for server in allocation.servers)
    bound = 100 * (1 + len(allocation.servers)) / total if total else 0.0
    for server in allocation.servers:
        assert abs(server.achieved - server.share) <= bound + 1e-9


@property_settings
@given(instance_sets(), splits(), modes)
def test_group_shares_and_the_unserved_share_add_up_to_100(
    instances: tuple[Instance, ...], the_split: Split | None, mode: HealthMode
) -> None:
    allocation = allocate(instances, the_split, mode)
    achieved = sum(group.achieved for group in allocation.groups)
    if any(server.weight for server in allocation.servers):
        assert achieved + allocation.unserved == pytest.approx(100)
    else:
        assert allocation.unserved == pytest.approx(100)
    assert sum(server.share for server in allocation.servers) + allocation.unserved == (
        pytest.approx(100)
    )


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=5))
def test_shares_summing_over_100_are_refused(values: list[int]) -> None:
    groups = {f"g{index}": value for index, value in enumerate(values)}
    if sum(values) > 100:
        with pytest.raises(ContractError, match="more than 100"):
            parse_split("shop", {"groups": groups})
    else:
        assert parse_split("shop", {"groups": groups}).named_total == sum(values)
