"""The plan: nothing, reload only, or the full path, from rendered, on-disk and running bytes."""

from __future__ import annotations

import pytest

from lbsync.plan import Plan, plan

NEW = b"backend shop\n    server blue-1 127.0.0.1:9101 weight 256\n"
OLD = b"backend shop\n    server blue-1 127.0.0.1:9101 weight 128\n"


@pytest.mark.parametrize(
    ("rendered", "on_disk", "running", "expected"),
    [
        pytest.param(NEW, NEW, NEW, Plan.NOTHING, id="disk and proxy up to date"),
        pytest.param(NEW, NEW, OLD, Plan.RELOAD, id="disk right, proxy runs older bytes"),
        pytest.param(NEW, NEW, None, Plan.RELOAD, id="disk right, proxy state unknown"),
        pytest.param(NEW, OLD, OLD, Plan.FULL, id="new bytes"),
        pytest.param(NEW, OLD, NEW, Plan.FULL, id="disk lags although proxy runs them"),
        pytest.param(NEW, None, None, Plan.FULL, id="no file yet"),
        pytest.param(b"", None, None, Plan.FULL, id="empty render, no file"),
    ],
)
def test_plan_compares_rendered_disk_and_running_bytes(
    rendered: bytes, on_disk: bytes | None, running: bytes | None, expected: Plan
) -> None:
    assert plan(rendered, on_disk, running) is expected


def test_plan_values_are_their_names() -> None:
    assert [str(member) for member in Plan] == ["nothing", "reload", "full"]
