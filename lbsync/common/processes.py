"""Running a command (an argv list, never a shell string) with a deadline.

The child never outlives the call: on a timeout, and when the awaiting task is cancelled (a
daemon stopping mid-validation), it is killed and reaped, so no validator or reload command is
left running behind lbsync.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    """How a command ended: its exit status (None when it was killed at its deadline), its
    output (stdout and stderr together) and how long it ran."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        """Exited with status 0."""
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        """Killed at its deadline."""
        return self.returncode is None


async def run(argv: Sequence[str], *, timeout: float) -> Finished:
    """Run `argv` to its end or its deadline; OSError when it cannot be started at all."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation that arrives as
        # the call it wraps ends, and a stopping daemon must stop
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        output, returncode = b"", None
    else:
        returncode = process.returncode
    finally:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(ProcessLookupError, asyncio.CancelledError):
                await asyncio.shield(process.wait())
    return Finished(
        argv=tuple(argv),
        returncode=returncode,
        output=output.decode(errors="replace"),
        seconds=loop.time() - started,
    )
