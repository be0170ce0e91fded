"""Applying a written file: the HAProxy master CLI, a signal to a pidfile, or a command.

Each method confirms that the proxy took the new configuration:
- master CLI: `reload`, then poll `show proc` until a new worker serves (success) or the
  master's failed-reload count rises (failure; the old worker keeps serving);
- signal: the master's children change (a new worker was forked) within the timeout;
- command: its exit status.
`ReloadUnavailable` means the proxy could not be reached at all (not running yet): the new,
valid file stays and the reload is retried. `ReloadFailed` means the proxy refused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal as signals
import time
from dataclasses import dataclass
from pathlib import Path

from lbsync import fsio
from lbsync.config import ReloadConfig, ReloadMethod
from lbsync.mastercli import master_cli as master_cli  # `lbsync rollout` imports it from here

POLL_SECONDS = 0.02


class ReloadError(Exception):
    """A reload that did not happen."""


class ReloadFailed(ReloadError):
    """The proxy was asked to reload and refused or did not confirm it."""


class ReloadUnavailable(ReloadError):
    """The proxy could not be reached: nothing was asked of it."""


@dataclass(frozen=True)
class Reloaded:
    """A confirmed reload."""

    method: ReloadMethod
    seconds: float
    detail: str


@dataclass(frozen=True)
class ProcTable:
    """What HAProxy's master CLI `show proc` says."""

    master: int
    reloads: int
    failed: int
    workers: tuple[int, ...]


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.MULTILINE)
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s", re.MULTILINE)


def parse_show_proc(text: str) -> ProcTable:
    """Parse `show proc`: the master line and the current (not the old) workers."""
    master = _MASTER_LINE.search(text)
    if master is None:
        raise ReloadFailed(f"unexpected `show proc` answer: {text[:200]!r}")
    current = text.split("# old workers", 1)[0]
    return ProcTable(
        master=int(master.group(1)),
        reloads=int(master.group(2)),
        failed=int(master.group(3)),
        workers=tuple(int(pid) for pid in _WORKER_LINE.findall(current)),
    )


async def _show_proc(socket: Path, deadline: float) -> ProcTable:
    """`show proc`, retried while the master re-executes (its socket refuses for a moment)."""
    while True:
        try:
            return parse_show_proc(await master_cli(socket, "show proc"))
        except (OSError, TimeoutError, ReloadFailed) as error:
            if time.monotonic() >= deadline:
                raise ReloadFailed(f"master CLI {socket}: no answer: {error}") from error
        await asyncio.sleep(POLL_SECONDS)


async def save_server_state(socket: Path, state_file: Path) -> None:
    """Dump the current worker's server states where `load-server-state-from-file` reads them,
    so the new worker starts with the servers' check results instead of assuming them up."""
    text = await master_cli(socket, "@1 show servers state")
    if text.startswith("1\n# be_id"):  # format version 1, then the column header
        fsio.write_atomic(state_file, text.encode(), 0o600)


async def reload_master_cli(socket: Path, timeout: float, state_file: Path | None) -> Reloaded:
    """Reload through the master CLI and wait for a new worker or a failed count."""
    started = time.monotonic()
    try:
        before = parse_show_proc(await master_cli(socket, "show proc"))
        if state_file is not None:
            await save_server_state(socket, state_file)
    except (OSError, TimeoutError) as error:
        raise ReloadUnavailable(f"master CLI {socket} unreachable: {error}") from error
    deadline = started + timeout
    # The master may drop this connection as it re-executes; `show proc` tells what happened.
    with contextlib.suppress(OSError, TimeoutError):
        await master_cli(socket, "reload")
    while True:
        after = await _show_proc(socket, deadline)
        if after.failed > before.failed:
            raise ReloadFailed(
                "HAProxy refused the new configuration (failed reloads "
                f"{before.failed} -> {after.failed}); the old worker keeps serving"
            )
        fresh = set(after.workers) - set(before.workers)
        if fresh:
            return Reloaded(
                method=ReloadMethod.MASTER_CLI,
                seconds=time.monotonic() - started,
                detail=f"worker {','.join(map(str, sorted(fresh)))} serving",
            )
        if time.monotonic() >= deadline:
            raise ReloadFailed(f"no new HAProxy worker within {timeout:g}s")
        await asyncio.sleep(POLL_SECONDS)


def _children(pid: int) -> set[int]:
    """The child processes of a pid (the proxy's workers)."""
    children: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            children.update(int(child) for child in text.split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return children


async def reload_signal(pidfile: Path, signal_name: str, timeout: float) -> Reloaded:
    """Signal the master in a pidfile, then wait until it has forked a new worker."""
    started = time.monotonic()
    try:
        pid = int(pidfile.read_text().split()[0])
        number = signals.Signals[f"SIG{signal_name}"]
        before = _children(pid)
        os.kill(pid, number)
    except (OSError, ValueError, IndexError, KeyError) as error:
        raise ReloadUnavailable(f"cannot signal the process in {pidfile}: {error}") from error
    while time.monotonic() - started < timeout:
        fresh = _children(pid) - before
        if fresh:
            return Reloaded(
                method=ReloadMethod.SIGNAL,
                seconds=time.monotonic() - started,
                detail=f"SIG{signal_name} to {pid}; new worker {min(fresh)}",
            )
        await asyncio.sleep(POLL_SECONDS)
    raise ReloadFailed(f"SIG{signal_name} to {pid}: no new worker within {timeout:g}s")


async def reload_command(argv: tuple[str, ...], timeout: float) -> Reloaded:
    """Run a reload command; exit status 0 means reloaded."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as error:
        raise ReloadUnavailable(f"cannot run {argv[0]}: {error.strerror or error}") from error
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ReloadFailed(f"{argv[0]} timed out after {timeout:g}s") from None
    if process.returncode != 0:
        text = output.decode(errors="replace").strip()[-500:]
        raise ReloadFailed(f"{argv[0]} exited with {process.returncode}: {text}")
    return Reloaded(method=ReloadMethod.COMMAND, seconds=time.monotonic() - started, detail=argv[0])


async def reload(config: ReloadConfig) -> Reloaded | None:
    """Apply the written file with the configured method; None when the method is `none`."""
    match config.method:
        case ReloadMethod.MASTER_CLI:
            assert config.socket is not None
            return await reload_master_cli(config.socket, config.timeout, config.server_state_file)
        case ReloadMethod.SIGNAL:
            assert config.pidfile is not None
            return await reload_signal(config.pidfile, config.signal, config.timeout)
        case ReloadMethod.COMMAND:
            return await reload_command(config.argv, config.timeout)
        case ReloadMethod.NONE:
            return None
