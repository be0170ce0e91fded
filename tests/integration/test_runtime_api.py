"""Weights and servers joining or leaving go through HAProxy's runtime API without a reload;
structural changes reload once; runtime values survive reloads. Real HAProxy, real backends."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support.load import exchange
from support.processes import Backends, HAProxy, master_cli
from support.servicesfile import instance, services_toml, write_atomically
from support.site import Site, next_cycle, running_daemon
from support.traffic import tally
from support.waiting import async_wait_until

from lbsync.config import TEMPLATES_DIR
from lbsync.daemon.daemon import Daemon
from lbsync.pipeline.decision import Plan
from lbsync.pipeline.report import ApplyReport, Outcome

HOST = "shop.example.com"
NAMES = ["blue-1", "blue-2", "green-1"]
_SERVER_LINE = re.compile(r"^\s+server (\S+) \S+ weight (\d+)", re.MULTILINE)


def shop(
    ports: dict[str, int],
    names: list[str],
    groups: dict[str, float] | None = None,
    hosts: tuple[str, ...] = (HOST,),
) -> dict[str, dict[str, Any]]:
    service: dict[str, Any] = {
        "route": {"hosts": list(hosts)},
        "instances": {name: instance(ports[name], name.split("-")[0]) for name in names},
    }
    if groups is not None:
        service["split"] = {"by": "tag", "groups": groups}
    return {"shop": service}


@dataclass
class Running:
    site: Site
    proxy: HAProxy
    daemon: Daemon
    ports: dict[str, int]

    async def change(self, services: dict[str, dict[str, Any]]) -> ApplyReport:
        """Write the services file and return the report of the first cycle that did
        something (the fast lane's, when it took the change; the whole cycle then follows)."""
        report = await first_report(self.daemon, lambda: self.site.write_services(services))
        for runner in self.daemon.runners:
            await runner.flush()  # the fast lane writes its file after the runtime commands
        return report

    def file_weights(self) -> dict[str, int]:
        text = self.site.dest.read_text()
        return {name: int(weight) for name, weight in _SERVER_LINE.findall(text)}


async def first_report(daemon: Daemon, change: Callable[[], None]) -> ApplyReport:
    """Make a change and return the first report after it that did something, or the report
    of a whole cycle that changed nothing (events keep every report that did something)."""
    seen, cycles = len(daemon.status.events), daemon.status.cycles
    change()
    status = await daemon.wait_for(
        lambda status: (
            len(status.events) > seen
            or (status.cycles > cycles and status.targets[0].outcome is Outcome.UNCHANGED)
        ),
        10,
    )
    return status.events[seen] if seen < len(status.events) else status.targets[0]


@contextlib.asynccontextmanager
async def started(
    site: Site, proxy: HAProxy, ports: dict[str, int], groups: dict[str, float]
) -> AsyncIterator[Running]:
    """blue-1 and green-1 split by `groups`: the first file, HAProxy, then the daemon."""
    site.write_services(shop(ports, ["blue-1", "green-1"], groups))
    site.lbsync("once")  # the first file; no HAProxy runs yet
    proxy.start()
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, 10)
        yield Running(site, proxy, daemon, ports)


@pytest.fixture
async def running(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> AsyncIterator[Running]:
    site, proxy = haproxy_site
    async with started(site, proxy, backends(NAMES).ports, {"blue": 50, "green": 50}) as rig:
        yield rig


async def test_an_instance_joins_and_leaves_without_a_reload(running: Running) -> None:
    worker, reloads = running.proxy.worker_pids(), running.proxy.reloads()
    joined = await running.change(shop(running.ports, NAMES, {"blue": 50, "green": 50}))
    assert (joined.outcome, joined.plan) == ("applied", "runtime"), joined
    assert running.proxy.weights("shop") == running.file_weights()
    assert set(running.file_weights()) == set(NAMES)
    counts = await tally(running.site.port, HOST, 400)
    assert counts["blue-2"] > 50 and sum(counts.values()) == 400, counts

    left = await running.change(shop(running.ports, ["blue-2", "green-1"], {"blue": 50}))
    assert (left.outcome, left.plan) == ("applied", "runtime"), left
    assert set(running.proxy.weights("shop")) == {"blue-2", "green-1"}
    counts = await tally(running.site.port, HOST, 400)
    assert counts["blue-1"] == 0 and sum(counts.values()) == 400, counts
    assert running.proxy.worker_pids() == worker and running.proxy.reloads() == reloads


async def test_a_structural_change_reloads_once_and_is_confirmed(running: Running) -> None:
    worker, reloads = running.proxy.worker_pids(), running.proxy.reloads()
    other = "www.shop.example.com"
    services = shop(running.ports, ["blue-1", "green-1"], {"blue": 50}, hosts=(HOST, other))
    report = await running.change(services)
    assert (report.outcome, report.plan) == ("applied", "full"), report
    assert report.detail is not None and "serving" in report.detail
    assert running.proxy.reloads() == reloads + 1
    assert running.proxy.worker_pids() != worker
    counts = await tally(running.site.port, other, 100)
    assert counts["blue-1"] + counts["green-1"] == 100, counts


async def test_weights_set_at_runtime_are_still_right_after_a_reload(running: Running) -> None:
    shifted = await running.change(shop(running.ports, ["blue-1", "green-1"], {"blue": 10}))
    assert shifted.plan is Plan.RUNTIME
    worker = running.proxy.worker_pids()
    services = shop(running.ports, ["blue-1", "green-1"], {"blue": 10}, hosts=(HOST, "x.example"))
    reloaded = await running.change(services)
    assert (reloaded.outcome, reloaded.plan) == ("applied", "full"), reloaded
    assert running.proxy.worker_pids() != worker
    assert running.proxy.weights("shop") == running.file_weights() == {"blue-1": 28, "green-1": 256}
    counts = await tally(running.site.port, HOST, 2000)
    assert abs(counts["blue-1"] / 20 - 10) <= 3, counts


async def test_a_weight_changed_behind_lbsyncs_back_is_corrected_after_a_reload(
    running: Running,
) -> None:
    """HAProxy restores a runtime weight from the server-state file when the file's weight is
    the one it started with: lbsync reads the servers back after each reload and corrects."""
    master_cli(running.proxy.master_socket, "@1 set server shop/blue-1 weight 1")
    services = shop(running.ports, ["blue-1", "green-1"], {"blue": 50}, hosts=(HOST, "x.example"))
    report = await running.change(services)
    assert (report.outcome, report.plan) == ("applied", "full"), report
    assert report.detail is not None and "1 runtime corrections after the reload" in report.detail
    assert (
        running.proxy.weights("shop") == running.file_weights() == {"blue-1": 256, "green-1": 256}
    )


async def test_a_runtime_change_haproxy_does_not_show_falls_back_to_a_reload(
    running: Running,
) -> None:
    socket = running.proxy.master_socket
    master_cli(socket, "@1 set server shop/green-1 state maint; @1 del server shop/green-1")
    worker = running.proxy.worker_pids()
    report = await running.change(shop(running.ports, ["blue-1", "green-1"], {"blue": 20}))
    assert report.outcome is Outcome.APPLIED and report.plan is Plan.RUNTIME, report
    assert report.detail is not None and "shop/green-1 is missing" in report.detail
    assert "serving" in report.detail  # the reload's confirmation
    assert running.proxy.worker_pids() != worker
    assert running.proxy.weights("shop") == running.file_weights() == {"blue-1": 64, "green-1": 256}


async def test_a_leaving_server_finishes_its_requests_and_is_removed_by_a_later_cycle(
    running: Running,
) -> None:
    worker = running.proxy.worker_pids()
    await running.change(shop(running.ports, ["blue-1", "green-1"], {"blue": 100}))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.site.port)
    slow = f"GET /slow?ms=1500 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    in_flight = asyncio.create_task(exchange(reader, writer, slow))
    await async_wait_until(
        _has_current_session(running.proxy, "blue-1"), 5, "the slow request reaching blue-1"
    )
    left = await running.change(shop(running.ports, ["green-1"]))
    assert (left.outcome, left.plan) == ("applied", "runtime"), left
    assert left.detail is not None and "shop/blue-1" in left.detail  # lingering, in maintenance
    # forced maintenance, or drain while a later cycle retries the removal (drain, maint,
    # del): either way nothing new reaches it
    assert running.proxy.servers("shop")["blue-1"][1] & 0b1001
    assert await in_flight == (200, False, "blue-1")
    writer.close()
    later = await running.change(shop(running.ports, ["green-1", "blue-2"]))
    assert (later.outcome, later.plan) == ("applied", "runtime"), later
    assert set(running.proxy.weights("shop")) == {"green-1", "blue-2"}
    assert running.proxy.worker_pids() == worker


def _has_current_session(proxy: HAProxy, server: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        text = master_cli(proxy.master_socket, "@1 show stat shop 4 -1")
        for line in text.splitlines():
            fields = line.split(",")
            if len(fields) > 4 and fields[1] == server:
                return int(fields[4] or 0) > 0  # scur
        return False

    return check


async def test_a_burst_of_weight_writes_never_reloads(running: Running) -> None:
    reloads, worker = running.proxy.reloads(), running.proxy.worker_pids()
    for share in [*range(1, 50), 30]:
        running.site.write_services(shop(running.ports, ["blue-1", "green-1"], {"blue": share}))
    final = {"blue-1": 110, "green-1": 256}  # blue 30 / green 70

    async def live() -> bool:
        return running.proxy.weights("shop") == final and running.file_weights() == final

    await async_wait_until(live, 10, "the last weights live")
    assert running.proxy.reloads() == reloads and running.proxy.worker_pids() == worker
    assert not any(report.plan is Plan.FULL for report in running.daemon.status.events)


async def test_runtime_changes_still_apply_after_haproxy_refused_a_reload(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    """After a refused reload the master prompts `master[ReloadFailed]> `; the runtime API's
    kept connection reads that prompt too."""
    site, proxy = haproxy_site
    template = site.root / "haproxy.cfg.j2"
    builtin = (TEMPLATES_DIR / "haproxy.cfg.j2").read_text()
    extra_bind = (
        "{% if settings.extra_bind is defined %}    bind {{ settings.extra_bind }}\n{% endif %}"
    )
    template.write_text(
        builtin.replace("    http-request set-var", extra_bind + "    http-request set-var", 1)
    )
    site.write_config(template=template)
    ports = backends(NAMES).ports
    async with started(site, proxy, ports, {"blue": 50}) as rig:
        daemon = rig.daemon
        with socket.socket() as occupied:  # passes `haproxy -c`; the new worker cannot bind
            occupied.bind(("127.0.0.1", 0))
            occupied.listen()
            settings = {"extra_bind": f"127.0.0.1:{occupied.getsockname()[1]}"}
            text = services_toml(shop(ports, ["blue-1", "green-1"], {"blue": 50}), settings)
            refused = await next_cycle(daemon, lambda: write_atomically(site.services, text))
        assert refused.targets[0].outcome is Outcome.RELOAD_FAILED, refused.targets
        assert proxy.failed_reloads() == 1
        report = await first_report(
            daemon, lambda: site.write_services(shop(ports, ["blue-1", "green-1"], {"blue": 20}))
        )
    assert (report.outcome, report.plan) == ("applied", "runtime"), report
    assert report.detail == "fast lane: 1 runtime operation, verified"  # no fallback reload
    assert proxy.weights("shop") == {"blue-1": 64, "green-1": 256}


async def test_a_weight_change_takes_the_fast_lane_and_the_file_is_the_whole_render(
    running: Running,
) -> None:
    """The weights go live at once, before the debounced whole cycle, which then finds the
    file on disk byte for byte what it renders and does nothing more."""
    worker, reloads = running.proxy.worker_pids(), running.proxy.reloads()
    fast = await running.change(shop(running.ports, ["blue-1", "green-1"], {"blue": 20}))
    assert (fast.outcome, fast.plan) == ("applied", "runtime"), fast
    assert fast.detail is not None and fast.detail.startswith("fast lane"), fast
    assert running.proxy.weights("shop") == running.file_weights() == {"blue-1": 64, "green-1": 256}
    runner, fast_state = running.daemon.runners[0], running.daemon.status.state
    assert fast_state is not None

    async def confirmed() -> bool:  # the whole cycle rendered this change and did nothing
        return runner.basis is not None and runner.basis is not fast_state

    await async_wait_until(confirmed, 10, "the whole render of the change")
    assert runner.basis is not None and runner.basis == fast_state
    assert running.site.dest.read_bytes() == runner.render(runner.basis).encode()
    assert running.daemon.status.targets[0].detail == fast.detail  # a confirmation is no news
    assert running.proxy.worker_pids() == worker and running.proxy.reloads() == reloads


async def test_a_fast_lane_apply_haproxy_does_not_show_is_finished_by_a_reload(
    running: Running,
) -> None:
    master_cli(running.proxy.master_socket, "@1 set server shop/green-1 state maint")
    master_cli(running.proxy.master_socket, "@1 del server shop/green-1")
    reloads = running.proxy.reloads()
    report = await running.change(shop(running.ports, ["blue-1", "green-1"], {"blue": 30}))
    assert report.outcome is Outcome.APPLIED and report.detail is not None, report
    assert "runtime apply not verified" in report.detail, report
    assert running.proxy.reloads() == reloads + 1
    assert running.proxy.weights("shop") == running.file_weights()


async def test_a_join_the_validator_refuses_is_taken_back_and_never_written(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    """A join goes live before the file is validated (HAProxy parses the added line itself);
    when the validator then refuses the file, nothing is written and the server is removed."""
    site, proxy = haproxy_site
    refuse_blue_2 = '\'! grep -q "server blue-2 " "$0" && haproxy -c -q -f "$0"\''
    site.write_config(extra=f'validate = ["sh", "-c", {refuse_blue_2}, "{{staged}}"]')
    ports = backends(NAMES).ports
    async with started(site, proxy, ports, {"blue": 50}) as rig:
        runner = rig.daemon.runners[0]
        await rig.daemon.wait_for(lambda _: runner.basis is not None, 10)
        before, reloads = site.dest.read_bytes(), proxy.reloads()
        report = await rig.change(shop(ports, NAMES, {"blue": 50}))
        assert report.outcome is Outcome.INVALID, report
        assert report.error is not None and "taken back" in report.error, report
        assert set(proxy.weights("shop")) == {"blue-1", "green-1"}
        assert site.dest.read_bytes() == before and proxy.reloads() == reloads
