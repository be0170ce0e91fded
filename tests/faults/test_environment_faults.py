"""What the machine does to lbsync: a validator that hangs, a full disk, a read-only destination,
a template deleted or corrupted while it runs, Consul switching to default-deny ACLs, etcd
compacting in the middle of a burst. Each is reported, the last good file stays, HAProxy keeps
serving, and lbsync catches up once the fault is gone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults.figures import Figures
from support.consul import ConsulAgent
from support.etcd import EtcdServer
from support.processes import Backends, HAProxy
from support.servicesfile import instance, services_toml, write_atomically
from support.site import Site, running_daemon, until_live
from support.traffic import tally

from lbsync.common import procinfo
from lbsync.config import TEMPLATES_DIR
from lbsync.daemon.daemon import Daemon
from lbsync.daemon.status import Status
from lbsync.kv.etcd import EtcdClient
from lbsync.pipeline.report import Outcome

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

HOST = "shop.example.com"
WAIT = 20.0


def shop(ports: dict[str, int], count: int = 1) -> str:
    """The shop with `count` instances per backend port (more instances: a longer file)."""
    instances = {
        f"{name}-{n}": instance(port, "blue") for name, port in ports.items() for n in range(count)
    }
    return services_toml({"shop": {"route": {"hosts": [HOST]}, "instances": instances}})


def outcome_is(outcome: Outcome, text: str = "") -> Callable[[Status], bool]:
    def done(status: Status) -> bool:
        report = status.targets[0] if status.targets else None
        return report is not None and report.outcome is outcome and text in (report.error or "")

    return done


def haproxy_accepts(path: Path) -> bool:
    return subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True).returncode == 0


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `where`: a disk that fills up, a disk turned read-only."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    assert mounted.returncode == 0, f"mounting a tmpfs needs root: {mounted.stderr!r}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def read_only(where: Path) -> None:
    """Make a directory read-only for whoever opens files in it from now on: a read-only bind
    mount over it (files already open for writing, such as HAProxy's log, keep theirs)."""
    subprocess.run(["mount", "--bind", str(where), str(where)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(where)], check=True)


def writable(where: Path) -> None:
    """Undo `read_only`."""
    subprocess.run(["umount", str(where)], check=True)


@dataclass
class World:
    site: Site
    proxy: HAProxy
    ports: dict[str, int]
    daemon: Daemon

    async def still_serving(self) -> None:
        counts = await tally(self.site.port, HOST, 100)
        assert sum(counts.values()) == 100 and not any(k.startswith("HTTP") for k in counts)

    def record(self, figures: Figures, fault: str) -> None:
        whole = haproxy_accepts(self.site.dest)
        figures.add(fault, faults_injected=1, invalid_files_written=int(not whole))
        assert whole


@contextlib.asynccontextmanager
async def world(
    site: Site,
    proxy: HAProxy,
    backends: Callable[[list[str]], Backends],
    *,
    template: Path | None = None,
    extra: str = "",
) -> AsyncIterator[World]:
    """The shop on a file source, HAProxy started on lbsync's first file, the daemon running
    with `template` and the `extra` target settings."""
    site.write_config()
    ports = backends(["blue"]).ports
    write_atomically(site.services, shop(ports))
    site.lbsync("once")
    proxy.start()
    site.write_config(template=template, extra=extra)
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, WAIT)
        yield World(site, proxy, ports, daemon)


async def test_a_validator_that_hangs_is_killed_at_its_timeout_and_nothing_is_written(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], figures: Figures
) -> None:
    site, proxy = haproxy_site
    hang = 'validate = ["sleep", "3600"]\nvalidate_timeout = "1s"'
    async with world(site, proxy, backends, extra=hang) as running:
        before = site.dest.read_bytes()
        write_atomically(site.services, shop(running.ports, count=2))
        await running.daemon.wait_for(outcome_is(Outcome.INVALID, "timed out after 1s"), WAIT)
        assert site.dest.read_bytes() == before
        sleepers = [
            child
            for child in procinfo.children(os.getpid())
            if "sleep" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        ]
        assert sleepers == []  # the validator did not outlive its timeout
        await running.still_serving()
        running.record(figures, "validator hangs")


async def test_a_full_disk_fails_the_write_keeps_the_file_and_catches_up_when_space_is_back(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], figures: Figures
) -> None:
    site, proxy = haproxy_site
    with tmpfs(site.run_dir, "1m"):
        async with world(site, proxy, backends) as running:
            before = site.dest.read_bytes()
            stats = os.statvfs(site.run_dir)
            filler = site.run_dir / "filler"
            with contextlib.suppress(OSError):  # fill it up, to the last block
                filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize))
            write_atomically(site.services, shop(running.ports, count=60))
            await running.daemon.wait_for(outcome_is(Outcome.WRITE_FAILED, "No space"), WAIT)
            assert site.dest.read_bytes() == before
            assert not list(site.run_dir.glob(".haproxy.cfg.lbsync-*"))  # no half-written stage
            await running.still_serving()
            filler.unlink()
            await until_live(running.daemon, site.dest, lambda text: "blue-59" in text, WAIT)
            running.record(figures, "disk full")


async def test_a_read_only_destination_fails_the_write_and_catches_up_when_writable(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], figures: Figures
) -> None:
    site, proxy = haproxy_site
    async with world(site, proxy, backends) as running:
        before = site.dest.read_bytes()
        read_only(site.run_dir)
        try:
            write_atomically(site.services, shop(running.ports, count=2))
            await running.daemon.wait_for(outcome_is(Outcome.WRITE_FAILED, "Read-only"), WAIT)
            assert site.dest.read_bytes() == before
            await running.still_serving()
        finally:
            writable(site.run_dir)
        await until_live(running.daemon, site.dest, lambda text: "blue-1" in text, WAIT)
        running.record(figures, "destination read-only")


async def test_a_refused_reload_on_a_disk_turned_read_only_is_reported_and_lbsync_runs_on(
    tmp_path: Path, figures: Figures
) -> None:
    site = Site(root=tmp_path / "site", kind="haproxy", port=9)
    reload = tmp_path / "reload.sh"
    reload.write_text("#!/bin/sh\nexit 0\n")
    reload.chmod(0o755)
    site.write_config(reload=f'{{ method = "command", argv = ["{reload}"] }}')
    write_atomically(site.services, shop({"blue": 9101}))
    assert site.lbsync("once").returncode == 0
    first = site.dest.read_bytes()
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(outcome_is(Outcome.APPLIED), WAIT)  # the reload at start
        # the next reload: the disk turns read-only under lbsync, then the proxy refuses
        turn = f"mount --bind {site.run_dir} {site.run_dir}"
        turn += f" && mount -o remount,ro,bind {site.run_dir}"
        reload.write_text(f"#!/bin/sh\n{turn}\nexit 1\n")
        try:
            write_atomically(site.services, shop({"blue": 9101}, count=2))
            status = await daemon.wait_for(
                outcome_is(Outcome.RELOAD_FAILED, "could not be restored"), WAIT
            )
            assert "Read-only" in (status.targets[0].error or "")
        finally:
            writable(site.run_dir)
        reload.write_text("#!/bin/sh\nexit 0\n")
        await daemon.wait_for(outcome_is(Outcome.APPLIED), WAIT)
    assert site.dest.read_bytes() != first and haproxy_accepts(site.dest)
    figures.add("restore on a read-only disk", faults_injected=1)


async def test_a_template_deleted_or_corrupted_while_running_keeps_the_file_and_haproxy(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends], figures: Figures
) -> None:
    site, proxy = haproxy_site
    template = site.root / "haproxy.cfg.j2"
    shutil.copy(TEMPLATES_DIR / "haproxy.cfg.j2", template)
    good = template.read_bytes()
    async with world(site, proxy, backends, template=template) as running:
        before = site.dest.read_bytes()
        template.unlink()
        await running.daemon.wait_for(outcome_is(Outcome.RENDER_FAILED, str(template)), WAIT)
        assert site.dest.read_bytes() == before
        template.write_bytes(good + b"\n# \xff\n")  # then bytes that are not UTF-8
        await running.daemon.wait_for(outcome_is(Outcome.RENDER_FAILED, "not UTF-8"), WAIT)
        assert site.dest.read_bytes() == before
        await running.still_serving()
        template.write_bytes(good)
        write_atomically(site.services, shop(running.ports, count=2))
        await until_live(running.daemon, site.dest, lambda text: "blue-1" in text, WAIT)
        running.record(figures, "template deleted and corrupted")


async def test_consul_switching_to_default_deny_keeps_the_last_config_and_says_why(
    tmp_path: Path,
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    figures: Figures,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue"]).ports
    agent = ConsulAgent(root=tmp_path / "consul", persistent=True)
    agent.start()
    try:
        await agent.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
        await agent.register("shop", "blue-1", ports["blue"], "blue", ttl_check=False)
        site.write_config(source=f'[source.consul]\naddresses = ["{agent.address}"]\nwait = "2s"\n')
        site.lbsync("once")
        proxy.start()
        async with running_daemon(site.config()) as daemon:
            await daemon.wait_for(lambda status: status.ready, WAIT)
            before = site.dest.read_bytes()
            agent.stop()
            agent.acl = True  # the same cluster, now with ACLs denying by default
            agent.start()
            status = await daemon.wait_for(
                lambda s: "Consul ACL" in (s.sources[0].error or ""), WAIT
            )
            assert not status.sources[0].usable
            assert site.dest.read_bytes() == before
            counts = await tally(site.port, HOST, 100)
            assert counts == {"blue": 100}
        figures.add("Consul default-deny", faults_injected=1)
    finally:
        agent.stop()


async def test_etcd_compacting_in_the_middle_of_a_burst_loses_nothing(
    etcd: EtcdServer,
    client: EtcdClient,
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    figures: Figures,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue"]).ports
    await client.put("lbsync/services/shop/route", json.dumps({"hosts": [HOST]}))
    await client.put("lbsync/services/shop/instances/blue-1", json.dumps(instance(ports["blue"])))
    site.write_config(source=f'[source.etcd]\nendpoints = ["{etcd.url}"]\n')
    site.lbsync("once")
    proxy.start()
    writes = 200
    async with running_daemon(site.config()) as daemon:
        await daemon.wait_for(lambda status: status.ready, WAIT)
        for n in range(1, writes + 1):
            revision = await client.put("lbsync/settings/burst", json.dumps(n))
            if n == writes // 2:
                await client.compact(revision)  # the daemon's watch starts behind: re-read

        def holds_the_last(status: Status) -> bool:
            settings = status.state.settings if status.state is not None else ()
            return any(x.key == "burst" and x.json_text == str(writes) for x in settings)

        with contextlib.suppress(TimeoutError):  # counted below: the last write never arrived
            await daemon.wait_for(holds_the_last, WAIT)
        lost = int(not holds_the_last(daemon.status))
    figures.add("etcd compaction mid-burst", faults_injected=1, updates_lost=lost)
    assert lost == 0
