"""The observed traffic per group: rates between two readings of HAProxy's counters."""

from __future__ import annotations

from lbsync.daemon.observed import rates
from lbsync.haproxy.stats import ErrorCounts


def test_a_rate_is_the_responses_per_second_and_the_errors_among_them() -> None:
    before = (100.0, {"blue": ErrorCounts(100, 0), "green": ErrorCounts(10, 0)})
    now = (
        105.0,
        {"blue": ErrorCounts(600, 5), "green": ErrorCounts(60, 10), "new": ErrorCounts(1, 0)},
    )
    assert rates(before, now) == {"blue": (105.0, 100.0, 0.01), "green": (105.0, 10.0, 0.2)}


def test_counters_that_went_down_give_no_rate() -> None:
    before = (100.0, {"blue": ErrorCounts(600, 5)})
    assert rates(before, (105.0, {"blue": ErrorCounts(3, 0)})) == {}  # HAProxy reloaded
    assert rates(before, (100.0, {"blue": ErrorCounts(700, 5)})) == {}  # no time passed
