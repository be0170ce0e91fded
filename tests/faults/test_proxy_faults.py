"""HAProxy killed, its reload refused, its master socket gone: each is reported, retried with
backoff (1 s, then 2 s, ...), and the file on disk is always one HAProxy accepted or can load."""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from faults.figures import Figures
from support.ports import free_port
from support.processes import Backends, HAProxy
from support.servicesfile import instance, services_toml, write_atomically
from support.site import Site, running_daemon, until_live

from lbsync.config import TEMPLATES_DIR
from lbsync.daemon.daemon import Daemon
from lbsync.daemon.status import Status
from lbsync.pipeline.report import Outcome

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

HOST = "shop.example.com"
EXTRA_BIND = (
    "{% if settings.extra_bind is defined %}\n    bind {{ settings.extra_bind }}\n{% endif %}\n"
)
WAIT = 20.0


def write(site: Site, ports: dict[str, int], *, extra_bind: str | None = None) -> None:
    """The shop with these instances; `extra_bind` adds a frontend bind (a setting)."""
    text = services_toml(
        {
            "shop": {
                "route": {"hosts": [HOST]},
                "instances": {name: instance(port, "blue") for name, port in ports.items()},
            }
        }
    )
    if extra_bind is not None:
        text += f'\n[settings]\nextra_bind = "{extra_bind}"\n'
    write_atomically(site.services, text)


@dataclass
class Running:
    site: Site
    proxy: HAProxy
    daemon: Daemon
    ports: dict[str, int]


@pytest.fixture
async def running(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> AsyncIterator[Running]:
    site, proxy = haproxy_site
    template = site.root / "haproxy.cfg.j2"
    builtin = (TEMPLATES_DIR / "haproxy.cfg.j2").read_text()
    template.write_text(
        builtin.replace("    http-request set-var", EXTRA_BIND + "    http-request set-var", 1)
    )
    site.write_config(template=template)
    ports = backends(["blue-1", "blue-2"]).ports
    write(site, ports)
    site.lbsync("once")
    proxy.start()
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, WAIT)
        yield Running(site, proxy, daemon, ports)


def retries(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The retry delays the daemon announced, in order."""
    return [
        int(m.group(1))
        for r in caplog.records
        if (m := re.match(r"retrying in (\d+)s", r.getMessage()))
    ]


def failed_with(outcome: Outcome, text: str) -> Callable[[Status], bool]:
    def done(status: Status) -> bool:
        report = status.targets[0] if status.targets else None
        return report is not None and report.outcome is outcome and text in (report.error or "")

    return done


def record(figures: Figures, fault: str, site: Site) -> None:
    """One fault injected; the file on disk counted as invalid unless HAProxy accepts it."""
    figures.add(fault, faults_injected=1, invalid_files_written=int(not haproxy_accepts(site)))
    assert haproxy_accepts(site)


def haproxy_accepts(site: Site) -> bool:
    return (
        subprocess.run(["haproxy", "-c", "-f", str(site.dest)], capture_output=True).returncode == 0
    )


async def test_haproxy_killed_is_reported_retried_with_backoff_and_caught_up_when_it_is_back(
    running: Running, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    caplog.set_level(logging.INFO, logger="lbsync")
    assert running.proxy.process is not None
    running.proxy.process.send_signal(signal.SIGKILL)
    running.proxy.process.wait(10)
    write(running.site, {**running.ports, "blue-3": running.ports["blue-1"]})
    await running.daemon.wait_for(failed_with(Outcome.PENDING, "master CLI"), WAIT)
    await running.daemon.wait_for(lambda s: len(retries(caplog)) >= 2, WAIT)
    assert retries(caplog)[:2] == [1, 2]
    assert haproxy_accepts(running.site)  # the new file, validated: HAProxy can load it
    running.proxy.start()
    await until_live(running.daemon, running.site.dest, lambda text: "blue-3" in text, WAIT)
    record(figures, "HAProxy killed", running.site)


async def test_a_refused_reload_restores_the_file_is_retried_and_applied_once_possible(
    running: Running, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    caplog.set_level(logging.INFO, logger="lbsync")
    before = running.site.dest.read_bytes()
    worker = running.proxy.worker_pids()
    occupied = socket.socket()
    occupied.bind(("127.0.0.1", 0))
    occupied.listen()
    port = occupied.getsockname()[1]
    try:  # passes `haproxy -c`, but the new worker cannot bind: HAProxy refuses the reload
        write(running.site, running.ports, extra_bind=f"127.0.0.1:{port}")
        status = await running.daemon.wait_for(failed_with(Outcome.RELOAD_FAILED, "restored"), WAIT)
        assert running.site.dest.read_bytes() == before
        assert running.proxy.worker_pids() == worker
        await running.daemon.wait_for(lambda s: len(retries(caplog)) >= 2, WAIT)
        assert retries(caplog)[:2] == [1, 2]
        assert running.site.dest.read_bytes() == before  # every retry refused, restored again
    finally:
        occupied.close()
    await until_live(
        running.daemon, running.site.dest, lambda text: f"bind 127.0.0.1:{port}" in text, 40
    )
    assert running.proxy.worker_pids() != worker
    record(figures, "reload refused", running.site)
    assert status.targets[0].error is not None


async def test_a_missing_master_socket_is_reported_and_caught_up_after_haproxy_restarts(
    running: Running, caplog: pytest.LogCaptureFixture, figures: Figures
) -> None:
    caplog.set_level(logging.INFO, logger="lbsync")
    running.site.master_socket.unlink()
    extra = f"127.0.0.1:{free_port()}"  # a structural change: it needs a reload, new connections
    write(running.site, running.ports, extra_bind=extra)
    await running.daemon.wait_for(failed_with(Outcome.PENDING, "No such file"), WAIT)
    await running.daemon.wait_for(lambda s: len(retries(caplog)) >= 2, WAIT)
    running.proxy.stop()
    running.proxy.start()  # a restarted HAProxy opens its master socket again
    await until_live(running.daemon, running.site.dest, lambda text: f"bind {extra}" in text, WAIT)
    record(figures, "master socket missing", running.site)
