"""What a daemon reads of a rollout record: anyone can write the key, so every field is
checked before a daemon drives it, and only daemons' active rollouts are contended for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lbsync.model.values import RawKeys
from lbsync.traffic.rollout.drivers import driven_services
from lbsync.traffic.rollout.spec import RolloutSpec, from_record
from lbsync.traffic.splits import SplitError

SPEC = RolloutSpec(
    service="shop", to="green", steps=(10.0, 50.0, 100.0), interval=30.0, pause_at=(50.0,)
)


def test_a_spec_comes_back_from_its_record() -> None:
    assert from_record("shop", SPEC.fields()) == SPEC


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"to": "gr een"}, "to"),
        ({"to": None}, "to"),
        ({"steps": [50, 10]}, "steps"),
        ({"steps": "10,50"}, "steps"),
        ({"steps": [True]}, "steps"),
        ({"interval": -1}, "interval"),
        ({"interval": "30s"}, "interval"),
        ({"max_error_rate": 2}, "max_error_rate"),
        ({"min_healthy": -1}, "min_healthy"),
        ({"pause_at": [0]}, "pause_at"),
    ],
)
def test_a_record_field_that_is_wrong_is_refused_by_name(
    change: dict[str, Any], named: str
) -> None:
    with pytest.raises(SplitError, match=named):
        from_record("shop", {**SPEC.fields(), **change})


def record(**fields: Any) -> str:
    return json.dumps({**SPEC.fields(), "mode": "daemon", "phase": "running", **fields})


def test_only_active_rollouts_the_daemons_drive_are_contended_for() -> None:
    raw = RawKeys.of(
        [
            ("services/a/rollout", record()),
            ("services/b/rollout", record(phase="paused")),
            ("services/c/rollout", record(mode="foreground")),
            ("services/d/rollout", record(phase="done")),
            ("services/e/rollout", "not json"),
            ("services/f/split", record()),
            ("settings/rollout", record()),
        ]
    )
    assert sorted(driven_services(raw)) == ["a", "b"]
