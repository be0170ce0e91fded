"""Bad input and failures never reach HAProxy: the file stays byte-identical and the old
worker keeps serving; the error is reported."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.ports import free_port
from support.processes import Backends, HAProxy
from support.servicesfile import instance, write_atomically
from support.site import Site, next_cycle, running_daemon
from support.traffic import tally

from lbsync.config import TEMPLATES_DIR
from lbsync.daemon.daemon import Daemon
from lbsync.daemon.status import Status
from lbsync.pipeline.report import ApplyReport, Outcome

HOST = "shop.example.com"
EXTRA_BIND = (
    "{% if settings.extra_bind is defined %}\n    bind {{ settings.extra_bind }}\n{% endif %}\n"
)


def services(ports: dict[str, int], split: dict[str, Any]) -> dict[str, Any]:
    return {
        "shop": {
            "route": {"hosts": [HOST]},
            "split": split,
            "instances": {
                "blue-1": instance(ports["blue-1"], "blue"),
                "green-1": instance(ports["green-1"], "green"),
            },
        }
    }


@dataclass
class Running:
    site: Site
    proxy: HAProxy
    daemon: Daemon
    ports: dict[str, int]
    template: Path

    async def next_cycle(self, change: Callable[[], None]) -> ApplyReport:
        return (await next_cycle(self.daemon, change)).targets[0]

    async def still_serving(self, worker: tuple[int, ...]) -> None:
        assert self.proxy.worker_pids() == worker
        counts = await tally(self.site.port, HOST, 200)
        assert sum(counts.values()) == 200 and not any(k.startswith("HTTP") for k in counts)


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
    ports = backends(["blue-1", "green-1"]).ports
    site.write_services(services(ports, {"groups": {"blue": 50, "green": 50}}))
    site.lbsync("once")
    proxy.start()
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        yield Running(site, proxy, daemon, ports, template)


def rejected(status: Status) -> list[str]:
    assert status.state is not None
    return [str(rejection) for rejection in status.state.rejected]


async def test_a_template_error_leaves_the_file_and_haproxy_untouched(running: Running) -> None:
    before, worker = running.site.dest.read_bytes(), running.proxy.worker_pids()
    text = running.template.read_text() + "{{ no_such_variable }}\n"
    report = await running.next_cycle(lambda: write_atomically(running.template, text))
    assert report.outcome is Outcome.RENDER_FAILED
    assert report.error is not None and str(running.template) in report.error
    assert "no_such_variable" in report.error
    assert running.site.dest.read_bytes() == before
    await running.still_serving(worker)


async def test_an_invalid_split_is_refused_naming_the_entry_and_the_old_split_stays(
    running: Running,
) -> None:
    before, worker = running.site.dest.read_bytes(), running.proxy.worker_pids()
    bad = services(running.ports, {"groups": {"blue": 80, "green": 50}})
    report = await running.next_cycle(lambda: running.site.write_services(bad))
    assert report.outcome is Outcome.UNCHANGED
    messages = rejected(running.daemon.status)
    assert any("services.shop.split" in m and "sum to 130" in m for m in messages), messages
    assert running.site.dest.read_bytes() == before
    await running.still_serving(worker)


async def test_a_config_haproxy_rejects_is_never_written(running: Running) -> None:
    before, worker = running.site.dest.read_bytes(), running.proxy.worker_pids()
    text = running.template.read_text().replace(
        "    option redispatch", "    option no-such-option"
    )
    report = await running.next_cycle(lambda: write_atomically(running.template, text))
    assert report.outcome is Outcome.INVALID
    assert report.error is not None and "no-such-option" in report.error
    assert running.site.dest.read_bytes() == before
    assert not list(running.site.run_dir.glob(".haproxy.cfg.lbsync-*"))
    await running.still_serving(worker)


async def test_a_reload_haproxy_refuses_restores_the_backup_and_keeps_the_old_worker(
    running: Running,
) -> None:
    before, worker = running.site.dest.read_bytes(), running.proxy.worker_pids()
    failed_before = running.proxy.failed_reloads()
    with socket.socket() as occupied:  # passes `haproxy -c`, but the new worker cannot bind
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        text = running.site.services.read_text() + f'[settings]\nextra_bind = "127.0.0.1:{port}"\n'
        report = await running.next_cycle(lambda: write_atomically(running.site.services, text))
    assert report.outcome is Outcome.RELOAD_FAILED, report
    assert report.error is not None and "restored" in report.error
    assert running.proxy.failed_reloads() > failed_before
    assert running.site.dest.read_bytes() == before
    await running.still_serving(worker)


async def test_a_missing_validator_binary_is_reported_and_nothing_is_written(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, _ = haproxy_site
    site.write_config(extra='validate = ["/nonexistent/haproxy", "-c", "-f", "{staged}"]')
    ports = backends(["blue-1", "green-1"]).ports
    site.write_services(services(ports, {"groups": {"blue": 50}}))
    result = site.lbsync("once")
    assert result.returncode == 1
    assert "cannot run validator /nonexistent/haproxy" in result.stderr
    assert not site.dest.exists()


async def test_a_missing_template_is_reported_naming_the_file(
    haproxy_site: tuple[Site, HAProxy],
) -> None:
    site, _ = haproxy_site
    missing = site.root / "missing.j2"
    site.write_config(template=missing)
    site.write_services({})
    result = site.lbsync("once")
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert not site.dest.exists()


async def test_a_staged_file_left_by_a_killed_lbsync_is_removed_at_start(
    running: Running,
) -> None:
    """A killed lbsync leaves at most a staged file; the next start removes it."""
    before = running.site.dest.read_bytes()
    leftover = running.site.run_dir / ".haproxy.cfg.lbsync-crashed"
    leftover.write_bytes(before[: len(before) // 2])
    async with running_daemon(running.site.config()) as second:
        await second.wait_for(lambda status: status.ready, 10)
    assert not leftover.exists()
    assert running.site.dest.read_bytes() == before


async def test_server_states_that_cannot_be_saved_do_not_stop_the_reload(
    running: Running,
) -> None:
    """Before a reload lbsync dumps the servers' states for the new worker; when that file
    cannot be written (here a directory stands in its place, as a full disk would refuse it)
    the reload still happens, with the servers assumed up until their first check."""
    state_file = running.site.run_dir / "haproxy.state"
    state_file.unlink(missing_ok=True)
    state_file.mkdir()
    worker = running.proxy.worker_pids()
    extra = f"127.0.0.1:{free_port()}"
    text = running.site.services.read_text() + f'[settings]\nextra_bind = "{extra}"\n'
    report = await running.next_cycle(lambda: write_atomically(running.site.services, text))
    assert report.outcome is Outcome.APPLIED, report
    assert running.proxy.worker_pids() != worker
    assert f"bind {extra}" in running.site.dest.read_text()
    await running.still_serving(running.proxy.worker_pids())
