"""What Linux's /proc says about a process: its children, and when it started.

Used to tell which configuration a proxy runs (a worker that started after the file was
written has loaded it) and to confirm a reload by signal (a new worker). Every read may fail
(a pid from another pid namespace, /proc mounted without access): that is "unknown", never an
error, because the callers then take the safe path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC = Path("/proc")


def children(pid: int) -> set[int]:
    """The child processes of a pid (a proxy's workers); empty when /proc does not say."""
    found: set[int] = set()
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            found.update(int(child) for child in (task / "children").read_text().split())
    except (OSError, ValueError):
        return found
    return found


def _seconds_since_boot() -> float | None:
    try:
        return float((PROC / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def started_at(pid: int, *, command: str | None) -> float | None:
    """When a process started (seconds since the epoch, to 1/CLK_TCK), or None when /proc has
    no such process, or it does not run `command` (when given: a pid that came from another
    pid namespace names someone else here)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22, starttime
        clock = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    since_boot = _seconds_since_boot()
    if (command is not None and name != command[:15]) or since_boot is None or clock <= 0:
        # /proc cuts a command's name at 15 characters
        return None
    # The process's age on the boot clock, taken from now on the wall clock: /proc's btime is
    # whole seconds and drifts from the wall clock by up to a second, the age does not.
    return time.time() - (since_boot - ticks / clock)
