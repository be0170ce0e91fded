"""A test site: a temporary directory with lbsync.toml, a services file and a run directory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbsync.config import Config, load
from lbsync.daemon.daemon import Daemon
from lbsync.daemon.status import Status
from lbsync.pipeline.report import Outcome
from lbsync.sources import Source
from support.commandline import Finished, run_main_blocking, run_main_elsewhere
from support.servicesfile import services_toml, write_atomically
from support.waiting import async_wait_until


@dataclass
class Site:
    """Everything one lbsync instance under test reads and writes."""

    root: Path
    kind: str
    port: int

    @property
    def services(self) -> Path:
        return self.root / "services.toml"

    @property
    def config_path(self) -> Path:
        return self.root / "lbsync.toml"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def dest(self) -> Path:
        return self.run_dir / ("haproxy.cfg" if self.kind == "haproxy" else "nginx.conf")

    @property
    def master_socket(self) -> Path:
        return self.run_dir / "master.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "nginx.pid"

    def write_config(
        self,
        *,
        template: Path | None = None,
        extra: str = "",
        source: str | None = None,
        reload: str | None = None,
        api: str = 'listen = "127.0.0.1:0"',  # a free port: tests never collide on 9180
    ) -> None:
        """lbsync.toml for one target of this site's kind, reloading its real process (unless
        `reload` gives another method); the services file is the source unless `source` gives
        the `[source.*]` tables, and `api` is the `[api]` table's body."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "haproxy":
            default = f'{{ method = "master-cli", socket = "{self.master_socket}" }}'
            variables = f'bind = ["127.0.0.1:{self.port}"]\nhard_stop_after = "30s"\n'
        else:
            default = f'{{ method = "signal", pidfile = "{self.pidfile}", signal = "HUP" }}'
            variables = f'bind = ["127.0.0.1:{self.port}"]\nworker_processes = 1\n'
        template_line = f'template = "{template}"\n' if template else ""
        reload = reload or default
        if source is None:
            source = f'[source.file]\npath = "{self.services}"\n'
        self.config_path.write_text(
            f"{source}\n"
            '[apply]\nmin_wait = "50ms"\nmax_wait = "500ms"\n\n'
            f"[api]\n{api}\n\n"
            f'[[target]]\nname = "{self.kind}"\nkind = "{self.kind}"\n'
            f'dest = "{self.dest}"\n{template_line}reload = {reload}\n{extra}\n'
            f"[target.vars]\n{variables}"
        )

    def write_services(
        self, services: dict[str, dict[str, Any]], settings: dict[str, Any] | None = None
    ) -> None:
        write_atomically(self.services, services_toml(services, settings))

    def config(self) -> Config:
        return load(self.config_path, environ={})

    async def lbsync_async(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        """`lbsync` (see `lbsync`) without blocking the event loop a daemon under test runs in:
        exit status, stdout, stderr."""
        finished = await run_main_elsewhere(
            self._argv(args), environ=dict(os.environ), cwd=Path.cwd(), timeout=timeout
        )
        return self._status(args, finished, timeout), finished.stdout, finished.stderr

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return ["-c", str(self.config_path), *args]

    @staticmethod
    def _status(args: tuple[str, ...], finished: Finished, timeout: float) -> int:
        if finished.status is None:
            raise AssertionError(
                f"lbsync {' '.join(args)} gave no exit status (still running after {timeout}s, "
                f"or killed): {finished.stderr}"
            )
        return finished.status

    def start_lbsync(self, *args: str) -> subprocess.Popen[str]:
        """The real command line started in the background (a rollout to interrupt or kill)."""
        return subprocess.Popen(
            [sys.executable, "-m", "lbsync", "-c", str(self.config_path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def lbsync(
        self, *args: str, timeout: float = 60, under: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run the `lbsync` command line against this site: its `main()` in a process of its
        own with this process's environment and directory, forked from one that imported lbsync
        once (support/commandline.py: a fresh interpreter costs over a second of CPU, and the
        suite runs well over a hundred commands). `under` runs before it (`prlimit
        --nofile=...` for limits of its own), so that is a fresh `python -m lbsync`."""
        if under:
            return subprocess.run(
                [*under, sys.executable, "-m", "lbsync", *self._argv(args)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        finished = run_main_blocking(
            self._argv(args), environ=dict(os.environ), cwd=Path.cwd(), timeout=timeout
        )
        status = self._status(args, finished, timeout)
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "lbsync", *self._argv(args)],
            status,
            finished.stdout,
            finished.stderr,
        )


async def next_cycle(daemon: Daemon, change: Callable[[], None], timeout: float = 10) -> Status:
    """Make a change and wait for the daemon's next apply cycle."""
    cycles = daemon.status.cycles
    change()
    return await daemon.wait_for(lambda status: status.cycles > cycles, timeout)


def is_live(status: Status, dest: Path) -> bool:
    """Whether the first target's last cycle ended with the file on disk running."""
    if not status.targets or status.targets[0].outcome not in (Outcome.APPLIED, Outcome.UNCHANGED):
        return False
    on_disk = hashlib.sha256(dest.read_bytes()).hexdigest()[:16] if dest.exists() else None
    return status.targets[0].digest == on_disk


async def until_status(
    daemon: Daemon, predicate: Callable[[Status], bool], timeout: float
) -> Status:
    """Poll the daemon's status until `predicate` holds (TimeoutError otherwise): for
    predicates that also read the file on disk, which the fast lane writes after it publishes
    its report, so that no status change follows the write."""

    async def holds() -> bool:
        return predicate(daemon.status)

    try:
        await async_wait_until(holds, timeout, "the daemon's status")
    except AssertionError as error:
        raise TimeoutError(str(error)) from error
    return daemon.status


async def until_live(
    daemon: Daemon, dest: Path, condition: Callable[[str], bool], timeout: float = 10
) -> Status:
    """Wait until the file on disk satisfies `condition` and the proxy runs it (polled: the
    fast lane writes the file after its report is published)."""

    async def done() -> bool:
        status = daemon.status
        return dest.exists() and condition(dest.read_text()) and is_live(status, dest)

    try:
        await async_wait_until(done, timeout, f"{dest} to become live as expected")
    except AssertionError:
        raise AssertionError(
            f"{dest} never became live as expected: {daemon.status.targets}"
        ) from None
    return daemon.status


@contextlib.asynccontextmanager
async def running_daemon(
    config: Config, *, sources: Sequence[Source] | None = None
) -> AsyncIterator[Daemon]:
    """An lbsync daemon in this event loop (with the configuration's sources unless `sources`
    are given), stopped (and checked for errors) on exit."""
    daemon = Daemon(config, sources=sources)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
