"""The `docker` reload method against a real engine (podman's Docker API): nginx reloaded by
HUP, a file the proxy refuses, and the three things an operator must be told plainly: no
engine socket, no permission on it, no such container."""

from __future__ import annotations

import asyncio
import http.client
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support.podman import LBSYNC_IMAGE, Builds, EngineService, Podman
from support.processes import Backends
from support.sidecar import Sidecar, timed_until
from support.waiting import wait_until

from lbsync.config import ReloadConfig, ReloadMethod
from lbsync.pipeline.reload import ReloadFailed, ReloadUnavailable, reload


def engine_reload(config: str) -> str:
    return (
        f'{{ method = "docker", container = "{config}", '
        'docker_host = "unix:///run/engine/engine.sock" }'
    )


def answer(port: int, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode().strip()
    finally:
        connection.close()


@pytest.fixture
def sidecar_of(podman: Podman, images: Builds, tmp_path: Path, backends: Any) -> Iterator[Any]:
    made: list[Sidecar] = []

    def make(kind: str) -> Sidecar:
        group: Backends = backends(["blue-1", "green-1"])
        made.append(Sidecar(podman=podman, root=tmp_path / kind, backends=group, kind=kind))
        return made[-1]

    yield make
    for sidecar in made:
        for name in (sidecar.lbsync_name, sidecar.haproxy_name, sidecar.nginx_name):
            podman.remove(name)


def test_nginx_beside_lbsync_is_reloaded_by_hup_through_the_engine(
    sidecar_of: Any, engine_api: EngineService, podman: Podman, figures: dict[str, str]
) -> None:
    sidecar: Sidecar = sidecar_of("nginx")
    os.chown(engine_api.socket, 0, 10001)
    engine_api.socket.chmod(0o660)
    sidecar.write_services()
    sidecar.write_config(engine_reload(sidecar.nginx_name))
    sidecar.start_lbsync("-v", f"{engine_api.socket}:/run/engine/engine.sock")
    sidecar.start_nginx()
    podman.wait_healthy(sidecar.lbsync_name, 60)
    seconds = []
    for index in range(3):
        sidecar.extra.append(f"extra{index}")
        sidecar.write_services()
        seconds.append(
            timed_until(
                lambda i=index: answer(sidecar.proxy_port, f"extra{i}.example") == (200, "blue-1"),
                f"nginx routing extra{index}.example",
            )
        )
    said = sidecar.last_reload()
    assert said.startswith(f"SIGHUP to container {sidecar.nginx_name}; new process "), said
    figures["structural change -> live, nginx by HUP through the engine API"] = (
        f"max {max(seconds) * 1000:.0f} ms over {len(seconds)}"
    )


def test_a_file_the_proxy_refuses_is_a_failed_reload_and_the_old_worker_serves(
    sidecar_of: Any, engine_api: EngineService
) -> None:
    sidecar: Sidecar = sidecar_of("haproxy")
    sidecar.write_services()
    sidecar.write_config('{ method = "none" }')
    sidecar.start_lbsync()
    sidecar.start_haproxy()
    # settled first: a cycle still to come would find the tampered file and put the good back
    wait_until(sidecar.in_step, 30, "lbsync knowing what HAProxy runs")
    good = (sidecar.conf / "haproxy.cfg").read_text()
    assert answer(sidecar.proxy_port, "shop.example")[0] == 200
    # what no lbsync would write (it validates first), written behind its back
    (sidecar.conf / "haproxy.cfg").write_text(good + "    no-such-keyword here\n")
    by_engine = ReloadConfig(
        method=ReloadMethod.DOCKER,
        container=sidecar.haproxy_name,
        signal="USR2",
        timeout=10,
        docker_host=engine_api.url,
    )
    by_socket = replace(by_engine, socket=sidecar.master_socket)
    with pytest.raises(ReloadFailed, match=r"refused the new file: .*Loading failure") as caught:
        asyncio.run(reload(by_engine))
    assert "unknown keyword 'no-such-keyword'" in str(caught.value)
    sidecar.reloads()  # the master answers again (it re-executes after a refused file)
    with pytest.raises(ReloadFailed, match="HAProxy refused the new configuration"):
        asyncio.run(reload(by_socket))
    assert answer(sidecar.proxy_port, "shop.example")[0] == 200


def test_an_unknown_container_or_a_missing_socket_is_named(engine_api: EngineService) -> None:
    unknown = ReloadConfig(
        method=ReloadMethod.DOCKER, container="no-such-proxy", docker_host=engine_api.url
    )
    with pytest.raises(ReloadUnavailable, match="knows no container 'no-such-proxy'"):
        asyncio.run(reload(unknown))
    missing = ReloadConfig(
        method=ReloadMethod.DOCKER,
        container="haproxy",
        docker_host=f"unix://{engine_api.socket.parent}/absent.sock",
    )
    with pytest.raises(ReloadUnavailable, match=r"no engine socket at .*absent\.sock"):
        asyncio.run(reload(missing))


def test_a_socket_lbsyncs_user_may_not_open_is_named_with_its_group(
    sidecar_of: Any, podman: Podman, tmp_path: Path
) -> None:
    sidecar: Sidecar = sidecar_of("haproxy")
    private = EngineService.start(podman, tmp_path / "private.sock")  # root's, mode 0600
    try:
        sidecar.write_services()
        sidecar.write_config(engine_reload(sidecar.haproxy_name))
        finished = podman(
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            f"{sidecar.conf}:/etc/haproxy",
            "-v",
            f"{sidecar.run}:/run/haproxy",
            "-v",
            f"{sidecar.etc}:/etc/lbsync",
            "-v",
            f"{sidecar.data}:/var/lib/lbsync",
            "-v",
            f"{private.socket}:/run/engine/engine.sock",
            LBSYNC_IMAGE,
            "once",
            check=False,
        )
    finally:
        private.stop()
    assert finished.returncode == 1, finished.stderr
    assert "permission denied on /run/engine/engine.sock" in finished.stderr, finished.stderr
    assert "lbsync runs as uid 10001, which is not in the socket's group (gid 0)" in (
        finished.stderr
    )
    assert (sidecar.conf / "haproxy.cfg").is_file()  # valid, written, waiting for its reload
