"""The container tests: podman, the images built once per session, podman's Docker API, and
the figures that docs/container.md quotes, printed after the run (the hooks in
tests/conftest.py, through support/summary.py). Under pytest-xdist these tests all run in one
worker (tests/conftest.py's scheduler), so the images are built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import summary
from support.podman import (
    Builds,
    EngineService,
    Podman,
    build_images,
    check_engine,
    containers_conf,
    wheelhouse_path,
)

# The first test also builds the images: from nothing (a debootstrap, a wheelhouse, three
# builds) that takes minutes, all inside pytest-timeout's limit for that one test.
BUILD_TIMEOUT = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.containers)
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """podman, failing (not skipping) with the reason when no container can run here."""
    if os.geteuid() != 0:
        pytest.fail("the container tests run podman as root (the README's test command does)")
    engine = Podman(
        conf=containers_conf(tmp_path_factory.mktemp("podman") / "containers.conf"),
        prefix=f"lbsync-test-{os.getpid()}",
    )
    try:
        check_engine(engine)
    except AssertionError as error:
        pytest.fail(str(error))
    yield engine
    engine.remove_all()


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> dict[str, str]:
    """The session's container figures, by name; printed after the run."""
    found: dict[str, str] = {}
    request.config.stash[summary.CONTAINERS] = found
    return found


@pytest.fixture(scope="session")
def images(podman: Podman, figures: dict[str, str]) -> Builds:
    """The base, lbsync's image and the HAProxy image, built from this tree."""
    builds = build_images(podman, wheelhouse_path())
    figures["image size"] = f"{builds.lbsync_bytes / 1e6:.0f} MB"
    figures["build seconds"] = (
        f"base {builds.base_seconds:.1f} (0 when podman has it), wheelhouse "
        f"{builds.wheels_seconds:.1f}, lbsync {builds.lbsync_seconds:.1f}, "
        f"HAProxy {builds.haproxy_seconds:.1f}"
    )
    return builds


@pytest.fixture(scope="session")
def engine_api(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineService]:
    """podman's Docker-compatible API on a socket of its own (the `docker` SDK's DOCKER_HOST)."""
    service = EngineService.start(podman, tmp_path_factory.mktemp("engine") / "podman.sock")
    yield service
    service.stop()
