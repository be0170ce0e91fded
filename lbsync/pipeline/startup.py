"""What a target's proxy runs when lbsync starts: the file on disk only if the proxy loaded it.

lbsync can be killed between writing a file and applying it (the reload, or the runtime
commands): the file on disk is then newer than what runs, and taking it for what runs would
leave the change unapplied for good. So at start each target asks its proxy when its current
worker started. A worker that started after the file was last written has loaded it;
otherwise, or when the proxy cannot tell, nothing is assumed and the first cycle reloads (a
hitless reload, once), then reads the servers back.

- master CLI: the current workers' pids from `show proc`, their start time from /proc when the
  pids are in lbsync's pid namespace (to 10 ms), else their uptime from `show proc` (whole
  seconds, so a file written within the second before is not trusted);
- signal: the newest worker of the master in the pidfile, from /proc;
- docker: as the master CLI when HAProxy's master socket is shared, else unknown;
- command: unknown, always (one reload at start);
- none: nothing runs that could differ from the file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from lbsync.common import procinfo
from lbsync.config import ReloadConfig, ReloadMethod
from lbsync.haproxy import master

UPTIME_RESOLUTION: Final = 1.0  # `show proc` counts whole seconds
HAPROXY: Final = "haproxy"


async def _haproxy_workers_started(socket: Path) -> float | None:
    """The latest start time of HAProxy's current workers."""
    table = await master.proc_table(socket)
    precise = [procinfo.started_at(pid, command=HAPROXY) for pid in table.workers]
    if precise and all(start is not None for start in precise):
        return max(start for start in precise if start is not None)
    if not table.uptimes:
        return None
    return time.time() - min(table.uptimes) - UPTIME_RESOLUTION


def _signalled_workers_started(pidfile: Path) -> float | None:
    """The latest start time of the workers of the master named in a pidfile."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # the pidfile's process and its children are in lbsync's pid namespace: any command
    starts = [procinfo.started_at(child, command=None) for child in procinfo.children(pid)]
    known = [start for start in starts if start is not None]
    return max(known) if known else None


async def loaded(reload: ReloadConfig, written_at: float) -> bool:
    """Whether the proxy's current workers started after `written_at` (the file's mtime)."""
    started: float | None
    match reload.method:
        case ReloadMethod.MASTER_CLI | ReloadMethod.DOCKER if reload.master_socket is not None:
            try:
                started = await _haproxy_workers_started(reload.master_socket)
            except (master.MasterUnreachable, master.ReloadRefused):
                return False
        case ReloadMethod.SIGNAL:
            assert reload.pidfile is not None
            started = _signalled_workers_started(reload.pidfile)
        case ReloadMethod.COMMAND | ReloadMethod.DOCKER | ReloadMethod.MASTER_CLI:
            return False
        case ReloadMethod.NONE:
            return True
    return started is not None and written_at < started
