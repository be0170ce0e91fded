"""The pure parts of `split` and `rollout`: step splits, argument parsing, HAProxy counters."""

from __future__ import annotations

from typing import Any

import pytest

from lbsync.haproxy.stats import ErrorCounts, parse_show_stat
from lbsync.traffic.rollout.spec import parse_steps, step_split
from lbsync.traffic.splits import SplitError, parse_assignments, promoted, with_groups


@pytest.mark.parametrize(
    ("start", "to", "share", "expected"),
    [
        ({"groups": {"blue": 100, "green": 0}}, "green", 25, {"blue": 75, "green": 25}),
        ({"groups": {"blue": 100, "green": 0}}, "green", 100, {"blue": 0, "green": 100}),
        ({"groups": {"canary": 0}}, "canary", 5, {"canary": 5}),
        (None, "canary", 5, {"canary": 5}),
        (
            {"groups": {"a": 40, "b": 20, "c": 0}},
            "c",
            50,
            {"a": 20, "b": 10, "c": 50},  # and the default group: 40 -> 20
        ),
        ({"groups": {"green": 0, "blue": 100}}, "green", 10, {"green": 10, "blue": 90}),
        ({"groups": {"a": 30, "b": 30}}, "b", 65, {"a": 15, "b": 65}),
    ],
    ids=["blue-green", "full", "canary", "no split yet", "three", "order", "from non-zero"],
)
def test_a_step_gives_the_target_its_share_and_the_others_keep_their_proportions(
    start: dict[str, Any] | None, to: str, share: float, expected: dict[str, float]
) -> None:
    value = step_split(start, to, share)
    assert value["groups"] == expected
    assert list(value["groups"]) == list(expected)  # key order decides multi-group matches


def test_a_step_keeps_by_and_on_empty() -> None:
    start = {"by": "meta:version", "groups": {"v1": 100}, "on_empty": "fail"}
    value = step_split(start, "v2", 10)
    assert (value["by"], value["on_empty"]) == ("meta:version", "fail")


def test_assignments_parse_and_malformed_pairs_are_named() -> None:
    assert parse_assignments(["blue=90", "green=10.5"]) == {"blue": 90, "green": 10.5}
    for bad in (["blue"], ["blue=x"], ["=5x"]):
        with pytest.raises(SplitError, match="expected GROUP=SHARE"):
            parse_assignments(bad)


def test_promote_gives_one_group_everything() -> None:
    assert promoted({"groups": {"blue": 90, "green": 10}}, "green") == {"blue": 0, "green": 100}
    assert with_groups({"by": "tag", "on_empty": "fail"}, {"a": 50.0}) == {
        "by": "tag",
        "on_empty": "fail",
        "groups": {"a": 50},
    }


@pytest.mark.parametrize("text", ["", "5,5", "50,25", "0,10", "10,101", "a,b"])
def test_steps_must_rise_within_0_and_100(text: str) -> None:
    with pytest.raises(SplitError, match="--steps"):
        parse_steps(text)


SHOW_STAT = """# pxname,svname,econ,eresp,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,
lbsync-http,FRONTEND,,,0,900,0,0,3,0,
shop,blue-1,0,0,0,600,0,0,0,0,
shop,green-1,2,1,0,90,0,5,7,0,
shop,BACKEND,2,1,0,690,0,5,7,0,
"""


def test_show_stat_sums_the_group_servers_responses_and_errors() -> None:
    counts = parse_show_stat(SHOW_STAT, "shop", {"green-1"})
    assert (counts.responses, counts.errors) == (90 + 5 + 7 + 2 + 1, 7 + 2 + 1)
    ratio, total = counts.ratio_since(ErrorCounts())
    assert total == 105 and ratio == pytest.approx(10 / 105)


def test_show_stat_counts_the_group_servers_in_the_service_group_backends_too() -> None:
    text = SHOW_STAT + (
        "shop:sticky:green,green-1,0,0,0,40,0,0,4,0,\n"
        "shop:pin:green,green-1,0,0,0,10,0,0,1,0,\n"
        "shopping,green-1,0,0,0,1000,0,0,1000,0,\n"  # another service: not counted
    )
    counts = parse_show_stat(text, "shop", {"green-1"})
    assert (counts.responses, counts.errors) == (105 + 44 + 11, 10 + 4 + 1)


def test_show_stat_without_a_header_is_refused() -> None:
    with pytest.raises(ValueError, match="not `show stat` output"):
        parse_show_stat("Unknown command\n", "shop", {"green-1"})
