"""HAProxy's master CLI helper hands a cancellation on, whenever it arrives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lbsync.haproxy.mastercli import master_cli


@pytest.mark.parametrize("steps", range(6))
async def test_a_cancelled_call_raises_the_cancellation_at_any_step(
    tmp_path: Path, steps: int
) -> None:
    """A socket nobody listens on (HAProxy stopped), as the rollout's error gate may ask: the
    call fails at once, so a cancellation lands right as it finishes, where Python 3.11's
    `wait_for` used to return the call's outcome and drop the cancellation."""
    task = asyncio.create_task(master_cli(tmp_path / "master.sock", "show stat"))
    for _ in range(steps):
        await asyncio.sleep(0)  # one loop step each: the cancellation lands at another point
    if task.cancel():
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(FileNotFoundError):
            await task
