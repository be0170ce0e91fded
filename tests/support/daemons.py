"""`lbsync run` processes for the rollout tests: each with its own site (an HAProxy target,
by default written but not reloaded), logging to a file, killed by PID when a test says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.ports import free_port
from support.processes import stop_process
from support.site import Site


class Daemon:
    """One `lbsync run` with its own site (an unreloaded HAProxy file), logging to a file."""

    def __init__(
        self,
        root: Path,
        source: str,
        ttl: str,
        *,
        extra: str = "",
        reload: str = '{ method = "none" }',
        template: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.site = Site(root=root, kind="haproxy", port=port or free_port())
        self.site.write_config(
            source=f'{source}\n[rollout]\nlease_ttl = "{ttl}"\n{extra}',
            reload=reload,
            template=template,
        )
        self.log = root / "lbsync.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lbsync", "-c", str(self.site.config_path), "run"],
                stdout=subprocess.DEVNULL,
                stderr=output,
                cwd=self.site.root,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@contextmanager
def daemons(root: Path, source: str, ttl: str, count: int = 2) -> Iterator[list[Daemon]]:
    """`count` daemons started, stopped at the end."""
    found = [Daemon(root / f"daemon-{n}", source, ttl) for n in range(count)]
    try:
        for daemon in found:
            daemon.start()
        yield found
    finally:
        for daemon in found:
            daemon.stop()
