"""HAProxy's master process through its CLI: the process table and a confirmed reload.

`reload` alone returns no status, so the reload is confirmed by polling `show proc`: a new
current worker means the new file runs; a rising failed-reload count means HAProxy refused it
and the old worker keeps serving. While the master re-executes it refuses connections for a
few tens of milliseconds, so the polling retries until its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from lbsync.haproxy.mastercli import master_cli

POLL_SECONDS = 0.02
STATE_HEADER = "1\n# be_id"  # `show servers state` format 1, then its column header


class MasterUnreachable(Exception):
    """Nothing answered on the master socket: nothing was asked of HAProxy."""


class ReloadRefused(Exception):
    """HAProxy was asked to reload and refused, or did not confirm it in time."""


@dataclass(frozen=True)
class ProcTable:
    """What HAProxy's master CLI `show proc` says."""

    master: int
    reloads: int
    failed: int
    workers: tuple[int, ...]
    # seconds each current worker has run (`show proc` counts whole seconds)
    uptimes: tuple[int, ...] = ()


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.MULTILINE)
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s+\d+\s+(\S+)", re.MULTILINE)
_UPTIME = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_uptime(text: str) -> int:
    """`0d00h01m25s` as seconds; ReloadRefused for anything else."""
    match = _UPTIME.fullmatch(text)
    if match is None or not text:
        raise ReloadRefused(f"unexpected uptime in `show proc`: {text!r}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_show_proc(text: str) -> ProcTable:
    """Parse `show proc`: the master line and the current (not the old) workers."""
    master = _MASTER_LINE.search(text)
    if master is None:
        raise ReloadRefused(f"unexpected `show proc` answer: {text[:200]!r}")
    current = _WORKER_LINE.findall(text.split("# old workers", 1)[0])
    return ProcTable(
        master=int(master.group(1)),
        reloads=int(master.group(2)),
        failed=int(master.group(3)),
        workers=tuple(int(pid) for pid, _ in current),
        uptimes=tuple(parse_uptime(uptime) for _, uptime in current),
    )


async def proc_table(socket: Path) -> ProcTable:
    """`show proc` once; MasterUnreachable when nothing answers."""
    try:
        return parse_show_proc(await master_cli(socket, "show proc"))
    except (OSError, TimeoutError) as error:
        raise MasterUnreachable(f"master CLI {socket} unreachable: {error}") from error


async def _show_proc(socket: Path, deadline: float) -> ProcTable:
    """`show proc`, retried while the master re-executes (its socket refuses for a moment)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return parse_show_proc(await master_cli(socket, "show proc"))
        except (OSError, TimeoutError, ReloadRefused) as error:
            if loop.time() >= deadline:
                raise ReloadRefused(f"master CLI {socket}: no answer: {error}") from error
        await asyncio.sleep(POLL_SECONDS)


async def reload(
    socket: Path,
    *,
    timeout: float,
    save_state: Callable[[bytes], None] | None = None,
    trigger: Callable[[], Awaitable[None]] | None = None,
) -> tuple[int, ...]:
    """Reload through the master CLI and wait for a new worker (its pids are returned) or a
    failed count. `save_state` first receives the current worker's `show servers state`, for
    `load-server-state-from-file`: the new worker then starts with the servers' check results
    instead of assuming them up. `trigger` replaces the CLI's `reload` command (a USR2 sent to
    the master's container, say); the master socket still confirms what happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        before = parse_show_proc(await master_cli(socket, "show proc"))
        if save_state is not None:
            text = await master_cli(socket, "@1 show servers state")
            if text.startswith(STATE_HEADER):
                save_state(text.encode())
    except (OSError, TimeoutError) as error:
        raise MasterUnreachable(f"master CLI {socket} unreachable: {error}") from error
    if trigger is not None:
        await trigger()
    else:
        # The master may drop this connection as it re-executes; `show proc` tells what
        # happened.
        with contextlib.suppress(OSError, TimeoutError):
            await master_cli(socket, "reload")
    while True:
        after = await _show_proc(socket, deadline)
        if after.failed > before.failed:
            raise ReloadRefused(
                "HAProxy refused the new configuration (failed reloads "
                f"{before.failed} -> {after.failed}); the old worker keeps serving"
            )
        fresh = tuple(sorted(set(after.workers) - set(before.workers)))
        if fresh:
            return fresh
        if loop.time() >= deadline:
            raise ReloadRefused(f"no new HAProxy worker within {timeout:g}s")
        await asyncio.sleep(POLL_SECONDS)
