"""Child processes never outlive the call that started them: timeouts and cancellation."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from support.waiting import async_wait_until

from lbsync.common import processes


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_command_that_ends_gives_its_status_and_output() -> None:
    done = await processes.run(
        [sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], timeout=30
    )
    assert (done.returncode, done.ok, done.timed_out) == (3, False, False)
    assert done.output.strip() == "out"


async def test_a_command_past_its_deadline_is_killed_and_reaped() -> None:
    done = await processes.run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert done.timed_out and not done.ok and done.returncode is None


async def test_a_cancelled_call_kills_its_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    task = asyncio.create_task(processes.run([sys.executable, "-c", script], timeout=60))

    async def started() -> bool:
        return pidfile.exists() and bool(pidfile.read_text())

    await async_wait_until(started, 30, "the child to start")
    pid = int(pidfile.read_text())
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)


async def test_a_missing_binary_is_an_os_error() -> None:
    with pytest.raises(OSError):
        await processes.run(["/nonexistent/validator"], timeout=5)
