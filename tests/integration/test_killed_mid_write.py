"""lbsync killed with SIGKILL while it rewrites the file: the file is always whole and valid."""

from __future__ import annotations

import functools
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from support.processes import Backends, HAProxy
from support.servicesfile import instance, services_toml, write_atomically
from support.site import Site
from support.waiting import wait_until

REWRITE_TIMEOUT = 30.0


def started(log: Path) -> bool:
    """Whether the daemon writing this log is running (it logs that before its first cycle)."""
    return "lbsync started" in log.read_text()


def test_sigkill_during_rewrites_never_leaves_a_partial_or_invalid_file(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, _ = haproxy_site
    port = backends(["blue-1"]).ports["blue-1"]
    rng = random.Random(7)

    def write(count: int) -> None:
        instances = {f"i{n}": instance(port, "blue") for n in range(count)}
        services = {"shop": {"route": {"hosts": ["shop.example.com"]}, "instances": instances}}
        write_atomically(site.services, services_toml(services))

    write(1)
    site.lbsync("once")  # the first file (pending: no HAProxy runs in this test)
    seen = {site.dest.read_bytes()}
    for round_number in range(5):
        log = site.root / f"lbsync-{round_number}.log"
        with log.open("w") as output:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "lbsync", "-c", str(site.config_path), "run"],
                stdout=subprocess.DEVNULL,
                stderr=output,
            )
        wait_until(functools.partial(started, log), 30, "lbsync to start")
        before = site.dest.read_bytes()
        give_up = time.monotonic() + REWRITE_TIMEOUT
        kill_at: float | None = None
        # A new, large instance set every few ms; once lbsync has rewritten the file, the kill
        # comes at a random moment of the rewrites that follow.
        while kill_at is None or time.monotonic() < kill_at:
            write(rng.randrange(1, 400))
            time.sleep(0.005)  # pacing the writer, not synchronising with lbsync
            if kill_at is None and site.dest.read_bytes() != before:
                kill_at = time.monotonic() + rng.uniform(0.1, 0.8)
            assert time.monotonic() < give_up, "lbsync never rewrote the file while it ran"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        check = subprocess.run(["haproxy", "-c", "-f", str(site.dest)], capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
        assert site.dest.read_text().startswith("# Rendered by lbsync")
        seen.add(site.dest.read_bytes())
    assert len(seen) > 2, "lbsync never rewrote the file while it ran"
    site.lbsync("once")
    assert not list(site.run_dir.glob(".haproxy.cfg.lbsync-*"))
