"""lbsync's image beside an HAProxy container, as examples/sidecar/compose.yaml runs them:
host network, the configuration directory and the master socket's directory on shared
volumes, both containers as uid 10001, HAProxy under a hard nofile limit of 4096.

Under wrk's keep-alive load and lbsync's own load clients, one test shifts a weight (live
through the runtime API, no reload), then makes structural changes reloaded through the shared
master socket, through the engine's API with the container's processes and logs as witness, and
through the engine's API confirmed by the master socket. Not one request may fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import load, wrk
from support.podman import Builds, EngineService, Podman
from support.processes import Backends
from support.sidecar import HOST, Sidecar, timed_until
from support.waiting import wait_until

STRUCTURAL_CHANGES = 10  # per reload path
WRK_CONNECTIONS = 32


def structural_changes(sidecar: Sidecar, count: int) -> list[float]:
    """Add or remove a routed service, `count` times; each is a reload. Seconds to live."""
    seconds = []
    for index in range(count):
        name = f"extra{index // 2}"
        if name in sidecar.extra:
            sidecar.extra.remove(name)
        else:
            sidecar.extra.append(name)
        wanted = set(sidecar.extra)
        before = sidecar.reloads()
        sidecar.write_services()
        seconds.append(
            timed_until(
                lambda w=wanted: {n for n in sidecar.backend_names() if n.startswith("extra")} == w,
                f"HAProxy serving the backends {sorted(wanted)}",
            )
        )
        assert sidecar.reloads() > before
    return seconds


def figure(values: list[float]) -> str:
    values = sorted(values)
    return (
        f"median {values[len(values) // 2] * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms "
        f"over {len(values)}"
    )


@pytest.fixture
def sidecar(podman: Podman, images: Builds, tmp_path: Path, backends: Any) -> Iterator[Sidecar]:
    group: Backends = backends(["blue-1", "blue-2", "green-1"])
    made = Sidecar(podman=podman, root=tmp_path, backends=group)
    yield made
    podman.remove(made.lbsync_name)
    podman.remove(made.haproxy_name)


def test_the_sidecar_applies_weights_live_and_reloads_three_ways_without_a_failed_request(
    sidecar: Sidecar, engine_api: EngineService, figures: dict[str, str], podman: Podman
) -> None:
    # 1. lbsync first (its entrypoint's first cycle renders the file), then HAProxy, as the
    # compose file orders them; the shared master socket is the reload path.
    master_cli_reload = '{ method = "master-cli", socket = "/run/haproxy/master.sock" }'
    sidecar.write_services()
    sidecar.write_config(master_cli_reload)
    sidecar.start_lbsync()
    sidecar.start_haproxy()
    figures["HEALTHCHECK healthy after"] = (
        f"{podman.wait_healthy(sidecar.lbsync_name, 60):.1f} s (podman healthcheck run)"
    )
    assert podman.health(sidecar.lbsync_name) == "healthy"
    wait_until(lambda: sidecar.weights().get("green-1", 0) > 0, 30, "HAProxy running lbsync's file")
    wait_until(sidecar.in_step, 30, "lbsync knowing what HAProxy runs")

    load_clients = load.start(sidecar.proxy_port, HOST, keepalive=8, fresh=0, limit=600)
    traffic = wrk.start(
        f"http://127.0.0.1:{sidecar.proxy_port}/",
        connections=WRK_CONNECTIONS,
        host=HOST,
        seconds=600,
    )
    try:
        # 2. A weight shift: live through the runtime API, with no reload.
        before = sidecar.reloads()
        weights_before = sidecar.weights()
        sidecar.split = {"blue": 90, "green": 10}
        sidecar.write_services()
        weight_seconds = timed_until(
            lambda: sidecar.weights().get("green-1") not in (None, weights_before["green-1"]),
            "the new weights in HAProxy",
        )
        assert sidecar.reloads() == before, "a weight change reloaded HAProxy"
        figures["weight change -> live (runtime API, 0 reloads)"] = (
            f"{weight_seconds * 1000:.0f} ms"
        )

        # 3. Structural changes through the shared master socket.
        figures["structural change -> live, master socket"] = figure(
            structural_changes(sidecar, STRUCTURAL_CHANGES)
        )
        assert re.fullmatch(r"worker [\d,]+ serving", sidecar.last_reload())

        # 4. Through the engine's API: lbsync in the socket's group, USR2 to HAProxy's PID 1,
        # confirmed by the container's processes and logs (no master socket given).
        os.chown(engine_api.socket, 0, 10001)
        engine_api.socket.chmod(0o660)
        engine = ("-v", f"{engine_api.socket}:/run/engine/engine.sock")
        docker_reload = (
            f'{{ method = "docker", container = "{sidecar.haproxy_name}", '
            'docker_host = "unix:///run/engine/engine.sock" }'
        )
        sidecar.write_config(docker_reload)
        sidecar.start_lbsync(*engine)  # anew, with the engine's socket mounted
        podman.wait_healthy(sidecar.lbsync_name, 60)
        figures["structural change -> live, engine API (processes and logs)"] = figure(
            structural_changes(sidecar, STRUCTURAL_CHANGES)
        )
        said = sidecar.last_reload()
        assert said.startswith(f"SIGUSR2 to container {sidecar.haproxy_name}; "), said
        assert "worker" not in said, said  # no master socket was asked

        # 5. Through the engine's API, confirmed by the shared master socket.
        sidecar.write_config(docker_reload.replace(" }", ', socket = "/run/haproxy/master.sock" }'))
        sidecar.start_lbsync(*engine)
        podman.wait_healthy(sidecar.lbsync_name, 60)
        figures["structural change -> live, engine API + master socket"] = figure(
            structural_changes(sidecar, STRUCTURAL_CHANGES)
        )
        said = sidecar.last_reload()
        assert re.fullmatch(
            rf"SIGUSR2 to container {sidecar.haproxy_name}; worker [\d,]+ serving", said
        )
    finally:
        counted = wrk.stop(traffic)
        tally = load.stop(load_clients)
    logs = podman.logs(sidecar.lbsync_name)
    figures["requests / failed under load"] = (
        f"wrk ({WRK_CONNECTIONS} keep-alive connections) {counted.requests:,} / {counted.failed}, "
        f"lbsync's load clients (8 keep-alive) {tally['requests']:,} / {tally['failed']}"
    )
    assert counted.failed == 0, counted.output
    assert counted.requests > 0
    assert tally["failed"] == 0, tally
    assert "Traceback" not in logs, logs
