"""Applying a written file: the HAProxy master CLI, a signal (to a pidfile or a container),
or a command.

Each method confirms that the proxy took the new configuration:
- master CLI: `reload`, confirmed by a new worker in `show proc` (`haproxy.master`);
- signal: the master's children change (a new worker was forked) within the timeout;
- command: its exit status;
- docker: a signal to the proxy's container through the engine's API, confirmed by the master
  CLI when HAProxy's master socket is shared, else by a new process in the container.
`ReloadUnavailable` means the proxy could not be reached at all (not running yet): the new,
valid file stays and the reload is retried. `ReloadFailed` means the proxy refused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signals
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lbsync import containers
from lbsync.common import processes, procinfo
from lbsync.config import ReloadConfig, ReloadMethod
from lbsync.haproxy import master
from lbsync.pipeline import fsio

log = logging.getLogger("lbsync")

POLL_SECONDS = 0.02
STATE_FILE_MODE = 0o600


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


async def reload_master_cli(
    socket: Path,
    timeout: float,
    state_file: Path | None,
    *,
    trigger: Callable[[], Awaitable[None]] | None = None,
) -> Reloaded:
    """Reload through the master CLI, saving the server states first (see `haproxy.master`);
    `trigger`, when given, asks for the reload instead of the CLI's `reload` command."""
    started = asyncio.get_running_loop().time()

    def save_state(text: bytes) -> None:
        """Keep the server states for the new worker; without them it assumes every server up
        until its first check, which is no reason to refuse the reload (a full disk, say)."""
        if state_file is None:
            return
        try:
            fsio.write_atomic(state_file, text, STATE_FILE_MODE)
        except OSError as error:
            log.warning("cannot save HAProxy's server states to %s: %s", state_file, error)

    try:
        workers = await master.reload(
            socket, timeout=timeout, save_state=save_state, trigger=trigger
        )
    except master.MasterUnreachable as error:
        raise ReloadUnavailable(str(error)) from error
    except master.ReloadRefused as error:
        raise ReloadFailed(str(error)) from error
    return Reloaded(
        method=ReloadMethod.MASTER_CLI,
        seconds=asyncio.get_running_loop().time() - started,
        detail=f"worker {','.join(map(str, workers))} serving",
    )


async def reload_signal(pidfile: Path, signal_name: str, timeout: float) -> Reloaded:
    """Signal the master in a pidfile, then wait until it has forked a new worker."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        pid = int(pidfile.read_text().split()[0])
        number = signals.Signals[f"SIG{signal_name}"]
        before = procinfo.children(pid)
        os.kill(pid, number)
    except (OSError, ValueError, IndexError, KeyError) as error:
        raise ReloadUnavailable(f"cannot signal the process in {pidfile}: {error}") from error
    while loop.time() - started < timeout:
        fresh = procinfo.children(pid) - before
        if fresh:
            return Reloaded(
                method=ReloadMethod.SIGNAL,
                seconds=loop.time() - started,
                detail=f"SIG{signal_name} to {pid}; new worker {min(fresh)}",
            )
        await asyncio.sleep(POLL_SECONDS)
    raise ReloadFailed(f"SIG{signal_name} to {pid}: no new worker within {timeout:g}s")


async def reload_command(argv: tuple[str, ...], timeout: float) -> Reloaded:
    """Run a reload command; exit status 0 means reloaded."""
    try:
        finished = await processes.run(argv, timeout=timeout)
    except OSError as error:
        raise ReloadUnavailable(f"cannot run {argv[0]}: {error.strerror or error}") from error
    if finished.timed_out:
        raise ReloadFailed(f"{argv[0]} timed out after {timeout:g}s")
    if not finished.ok:
        text = finished.output.strip()[-500:]
        raise ReloadFailed(f"{argv[0]} exited with {finished.returncode}: {text}")
    return Reloaded(method=ReloadMethod.COMMAND, seconds=finished.seconds, detail=argv[0])


def engine_for(config: ReloadConfig) -> containers.Engine | None:
    """The container engine a `docker` reload talks to (None for the other methods)."""
    if config.method is not ReloadMethod.DOCKER:
        return None
    return containers.Engine(config.docker_host, timeout=config.timeout)


async def reload_docker(config: ReloadConfig, engine: containers.Engine) -> Reloaded:
    """Signal the proxy's container through the engine's API; confirmed by HAProxy's master
    socket when it is shared, else by the container's processes and logs (`containers.confirm`)."""
    try:
        if config.socket is not None:
            confirmed = await reload_master_cli(
                config.socket,
                config.timeout,
                config.server_state_file,
                trigger=lambda: engine.signal(config.container, config.signal),
            )
            signalled = f"SIG{config.signal} to container {config.container}"
            return replace(
                confirmed, method=ReloadMethod.DOCKER, detail=f"{signalled}; {confirmed.detail}"
            )
        started = asyncio.get_running_loop().time()
        detail = await containers.signal_and_confirm(
            engine, config.container, signal_name=config.signal, timeout=config.timeout
        )
    except (
        containers.EngineUnreachable,
        containers.ContainerUnknown,
        containers.ContainerNotRunning,
    ) as error:
        raise ReloadUnavailable(str(error)) from error
    except containers.EngineError as error:
        raise ReloadFailed(str(error)) from error
    return Reloaded(
        method=ReloadMethod.DOCKER,
        seconds=asyncio.get_running_loop().time() - started,
        detail=detail,
    )


async def reload(
    config: ReloadConfig, *, engine: containers.Engine | None = None
) -> Reloaded | None:
    """Apply the written file with the configured method; None when the method is `none`.
    A `docker` reload uses `engine` (kept by the caller), else a client of its own."""
    match config.method:
        case ReloadMethod.MASTER_CLI:
            assert config.socket is not None
            return await reload_master_cli(config.socket, config.timeout, config.server_state_file)
        case ReloadMethod.SIGNAL:
            assert config.pidfile is not None
            return await reload_signal(config.pidfile, config.signal, config.timeout)
        case ReloadMethod.COMMAND:
            return await reload_command(config.argv, config.timeout)
        case ReloadMethod.DOCKER if engine is not None:
            return await reload_docker(config, engine)
        case ReloadMethod.DOCKER:
            with contextlib.closing(
                containers.Engine(config.docker_host, timeout=config.timeout)
            ) as own:
                return await reload_docker(config, own)
        case ReloadMethod.NONE:
            return None
