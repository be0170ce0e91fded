"""Validation with the real binary (`haproxy -c`, `nginx -t`) on the staged file.

The argv is a list from the configuration, `{staged}` replaced by the staged path; never a shell.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Validation:
    """The verdict of one validator run."""

    ok: bool
    argv: tuple[str, ...]
    output: str
    seconds: float

    @property
    def summary(self) -> str:
        """The validator's complaint, trimmed for logs and status."""
        lines = [line for line in self.output.splitlines() if line.strip()]
        return "\n".join(lines[-12:]) or ("ok" if self.ok else "failed without output")


def command(template: tuple[str, ...], staged: Path) -> tuple[str, ...]:
    """The validator's argv for one staged file."""
    return tuple(arg.replace("{staged}", str(staged)) for arg in template)


async def run(template: tuple[str, ...], staged: Path, *, timeout: float) -> Validation:
    """Run the validator; a missing binary or a timeout is a failed validation, not a crash."""
    argv = command(template, staged)
    started = time.monotonic()
    if not argv:
        return Validation(ok=True, argv=argv, output="no validator configured", seconds=0.0)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as error:
        return Validation(
            ok=False,
            argv=argv,
            output=f"cannot run validator {argv[0]}: {error.strerror or error}",
            seconds=time.monotonic() - started,
        )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return Validation(
            ok=False,
            argv=argv,
            output=f"validator {argv[0]} timed out after {timeout:g}s",
            seconds=time.monotonic() - started,
        )
    return Validation(
        ok=process.returncode == 0,
        argv=argv,
        output=output.decode(errors="replace"),
        seconds=time.monotonic() - started,
    )
