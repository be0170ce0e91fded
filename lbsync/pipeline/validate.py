"""Validation with the real binary (`haproxy -c`, `nginx -t`) on the staged file.

The argv is a list from the configuration, `{staged}` replaced by the staged path; never a shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lbsync.common import processes

SUMMARY_LINES = 12


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
        return "\n".join(lines[-SUMMARY_LINES:]) or ("ok" if self.ok else "failed without output")


def command(template: tuple[str, ...], staged: Path) -> tuple[str, ...]:
    """The validator's argv for one staged file."""
    return tuple(arg.replace("{staged}", str(staged)) for arg in template)


async def run(template: tuple[str, ...], staged: Path, *, timeout: float) -> Validation:
    """Run the validator; a missing binary or a timeout is a failed validation, not a crash."""
    argv = command(template, staged)
    if not argv:
        return Validation(ok=True, argv=argv, output="no validator configured", seconds=0.0)
    try:
        finished = await processes.run(argv, timeout=timeout)
    except OSError as error:
        return Validation(
            ok=False,
            argv=argv,
            output=f"cannot run validator {argv[0]}: {error.strerror or error}",
            seconds=0.0,
        )
    output = (
        f"validator {argv[0]} timed out after {timeout:g}s"
        if finished.timed_out
        else finished.output
    )
    return Validation(ok=finished.ok, argv=argv, output=output, seconds=finished.seconds)
