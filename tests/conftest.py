"""Fixtures: real HAProxy, nginx and backends on free loopback ports, in temporary directories.

Also the run's plumbing, here because this is the one conftest pytest-xdist's controller
loads: the directory in which the run's processes claim their ports (support/ports.py), the
figures printed after the run (support/summary.py), and the scheduler that keeps each test
file, and all of tests/containers, in one worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.terminal import TerminalReporter
from support import summary
from support.consul import ConsulAgent, consul_binary, running_agent
from support.etcd import PROGRESS_EVERY_SECOND, EtcdServer
from support.ports import PORTS_DIRECTORY, free_port
from support.processes import Backends, HAProxy, Nginx
from support.site import Site

from lbsync.kv.etcd import EtcdClient

_PORTS = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """The run's port directory, made by the process that starts the run (its other processes,
    started after this, inherit its name) and removed at its end."""
    if not summary.is_worker(config) and PORTS_DIRECTORY not in os.environ:
        config.stash[_PORTS] = os.environ[PORTS_DIRECTORY] = tempfile.mkdtemp(
            prefix="lbsync-test-ports-"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_PORTS, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop(PORTS_DIRECTORY, None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    summary.finish(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist's controller: a worker finished; add its figures to the run's."""
    summary.receive(node.config, getattr(node, "workeroutput", {}))


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    for line in summary.lines(config):
        terminalreporter.write_line(line)


CONTAINERS = "tests/containers/"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` (pyproject.toml's addopts), with tests/containers as one unit: its
    session fixtures build the images, once. A file's tests share one worker, and so its
    module-scoped servers (the bad-input matrix's worlds) are started once."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByFile(LoadFileScheduling):  # type: ignore[misc]  # xdist has no type hints
        def _split_scope(self, nodeid: str) -> str:
            return CONTAINERS if nodeid.startswith(CONTAINERS) else super()._split_scope(nodeid)

    return ByFile(config, log)


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: run scripts/install-system.sh --with-test-servers")


@pytest.fixture
def backends() -> Iterator[Callable[..., Backends]]:
    """Start named backends (`statuses` makes some answer with an error status, `tls` some
    serve TLS with a PEM); all are stopped at the end of the test."""
    started: list[Backends] = []

    def start(
        names: list[str],
        statuses: dict[str, int] | None = None,
        *,
        tls: dict[str, Path] | None = None,
    ) -> Backends:
        group = Backends.start(names, statuses, tls=tls)
        started.append(group)
        return group

    yield start
    for group in started:
        group.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A real etcd of this test's own, with progress notifications every second."""
    server = EtcdServer(root=tmp_path / "etcd", extra_args=PROGRESS_EVERY_SECOND)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    """lbsync's own etcd client on the `etcd` fixture, for writing test data."""
    async with EtcdClient([etcd.url], request_timeout=3) as etcd_client:
        yield etcd_client


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A real Consul dev agent of this test's own."""
    if consul_binary() is None:
        pytest.fail("consul is not installed: run scripts/install-system.sh --with-test-servers")
    with running_agent(tmp_path / "consul") as running:
        yield running


@pytest.fixture
def haproxy_site(tmp_path: Path) -> Iterator[tuple[Site, HAProxy]]:
    """A site whose target is a real HAProxy (started by the test once a config exists)."""
    _require("haproxy")
    site = Site(root=tmp_path, kind="haproxy", port=free_port())
    site.write_config()
    proxy = HAProxy(config=site.dest, master_socket=site.master_socket, port=site.port)
    yield site, proxy
    proxy.stop()


@pytest.fixture
def nginx_site(tmp_path: Path) -> Iterator[tuple[Site, Nginx]]:
    """A site whose target is a real nginx (started by the test once a config exists)."""
    _require("nginx")
    site = Site(root=tmp_path, kind="nginx", port=free_port())
    site.write_config()
    proxy = Nginx(config=site.dest, port=site.port, pidfile=site.pidfile)
    yield site, proxy
    proxy.stop()
