"""lbsync's image beside an HAProxy container, as examples/sidecar/compose.yaml runs them:
host network, the configuration directory and the master socket's directory on shared
volumes, both containers as uid 10001, HAProxy under a hard nofile limit of 4096.

Under wrk's keep-alive load and lbsync's own load clients, one test shifts a weight (live
through the runtime API, no reload), then makes structural changes reloaded through the shared
master socket, through the engine's API with the container's processes and logs as witness, and
through the engine's API confirmed by the master socket. Not one request may fail.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import load, wrk
from support.podman import (
    HAPROXY_IMAGE,
    LBSYNC_IMAGE,
    PROCESSES,
    ROOT,
    USER,
    Builds,
    EngineService,
    Podman,
    shared_directory,
)
from support.ports import free_port, is_listening
from support.processes import Backends, master_cli
from support.servicesfile import instance, services_toml, write_atomically
from support.waiting import wait_until

HOST = "shop.example"
COMPOSE = ROOT / "examples" / "sidecar" / "compose.yaml"
STRUCTURAL_CHANGES = 10  # per reload path
WRK_CONNECTIONS = 32
CHANGE_SECONDS = 20.0  # the longest any one change may take to be live


def compose_haproxy_command() -> list[str]:
    """The HAProxy command of the compose example: what the test runs, too."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    command: list[str] = document["services"]["haproxy"]["command"]
    return command


@dataclass
class Sidecar:
    """The two containers, their shared directories on the host, and what they run."""

    podman: Podman
    root: Path
    backends: Backends
    proxy_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    split: dict[str, int] = field(default_factory=lambda: {"blue": 50, "green": 50})

    def __post_init__(self) -> None:
        self.conf = shared_directory(self.root / "conf")  # /etc/haproxy in both
        self.run = shared_directory(self.root / "run")  # /run/haproxy in both
        self.etc = shared_directory(self.root / "etc")  # /etc/lbsync
        self.data = shared_directory(self.root / "data")  # /var/lib/lbsync
        self.lbsync_name = self.podman.name("lbsync")
        self.haproxy_name = self.podman.name("haproxy")

    @property
    def master_socket(self) -> Path:
        return self.run / "master.sock"

    def write_services(self) -> None:
        ports = self.backends.ports
        services: dict[str, dict[str, Any]] = {
            "shop": {
                "route": {"hosts": [HOST]},
                "split": {"groups": self.split},
                "instances": {
                    name: instance(port, name.split("-")[0]) for name, port in ports.items()
                },
            }
        }
        for name in self.extra:
            services[name] = {
                "route": {"hosts": [f"{name}.example"]},
                "instances": {"one": instance(ports["blue-1"], "blue")},
            }
        write_atomically(self.data / "services.toml", services_toml(services))

    def write_config(self, reload: str) -> None:
        (self.etc / "lbsync.toml").write_text(
            '[source.file]\npath = "/var/lib/lbsync/services.toml"\n'
            '[apply]\nmin_wait = "50ms"\nmax_wait = "500ms"\n'
            f'[api]\nlisten = "127.0.0.1:{self.api_port}"\n'
            '[[target]]\nkind = "haproxy"\ndest = "/etc/haproxy/haproxy.cfg"\n'
            f"reload = {reload}\n"
            '[target.vars]\nrun_dir = "/run/haproxy"\n'
            f'bind = ["127.0.0.1:{self.proxy_port}"]\n'
        )

    def start_lbsync(self, *options: str) -> None:
        self.podman.run(
            "lbsync",
            LBSYNC_IMAGE,
            "-v",
            f"{self.conf}:/etc/haproxy",
            "-v",
            f"{self.run}:/run/haproxy",
            "-v",
            f"{self.etc}:/etc/lbsync",
            "-v",
            f"{self.data}:/var/lib/lbsync",
            *options,
        )

    def start_haproxy(self) -> None:
        wait_until((self.conf / "haproxy.cfg").exists, 60, "lbsync's first haproxy.cfg")
        self.podman.run(
            "haproxy",
            HAPROXY_IMAGE,
            "--user",
            USER,
            "--ulimit",
            "nofile=4096:4096",  # the compose file's; HAProxy derives its maxconn from it
            "--ulimit",
            f"nproc={PROCESSES}",  # one --ulimit replaces all of containers.conf's
            "-v",
            f"{self.conf}:/etc/haproxy:ro",
            "-v",
            f"{self.run}:/run/haproxy",
            command=tuple(compose_haproxy_command()),
        )
        wait_until(
            lambda: is_listening(self.proxy_port),
            30,
            f"HAProxy's container listening; its logs: {self.podman.logs(self.haproxy_name)}",
        )

    def cli(self, command: str) -> str:
        """A master CLI command, retried while the master re-executes (it refuses then)."""
        answers: list[str] = []

        def answered() -> bool:
            try:
                answers.append(master_cli(self.master_socket, command))
            except OSError:
                return False
            return True

        wait_until(answered, 10, f"the master CLI answering {command!r}")
        return answers[-1]

    def reloads(self) -> int:
        found = re.search(r"^\d+\s+master\s+(\d+)", self.cli("show proc"), re.MULTILINE)
        assert found is not None
        return int(found.group(1))

    def backend_names(self) -> set[str]:
        text = self.cli("@1 show backend")
        return {line.strip() for line in text.splitlines() if line and not line.startswith("#")}

    def last_reload(self) -> str:
        """What lbsync's status API says of the target's last cycle: how it was applied."""
        url = f"http://127.0.0.1:{self.api_port}/v1/status"
        with urllib.request.urlopen(url, timeout=5) as answer:
            document: dict[str, Any] = json.load(answer)
        detail: str = document["targets"][0]["detail"]
        return detail

    def weights(self) -> dict[str, int]:
        """The shop backend's servers' current weights, from HAProxy's runtime state."""
        text = self.cli("@1 show servers state shop")
        found = {}
        for line in text.splitlines()[2:]:
            fields = line.split()
            if len(fields) > 7:
                found[fields[3]] = int(fields[7])  # srv_name, srv_uweight
        return found


def timed_until(condition: Any, what: str) -> float:
    started = time.monotonic()
    wait_until(condition, CHANGE_SECONDS, what)
    return time.monotonic() - started


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
