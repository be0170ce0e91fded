"""Two containers as examples/sidecar/ runs them: lbsync's image and a proxy's, on the host
network, sharing the proxy's configuration directory and its socket directory (host directories
owned by their common user), with a services file on the host that the test rewrites."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lbsync.haproxy.master import parse_show_proc
from support.podman import (
    HAPROXY_IMAGE,
    LBSYNC_IMAGE,
    PROCESSES,
    ROOT,
    USER,
    Podman,
    shared_directory,
)
from support.ports import free_port, is_listening
from support.processes import Backends, master_cli
from support.servicesfile import instance, services_toml, write_atomically
from support.waiting import wait_until

HOST = "shop.example"
COMPOSE = ROOT / "examples" / "sidecar" / "compose.yaml"
CHANGE_SECONDS = 20.0  # the longest any one change may take to be live


def compose_haproxy_command() -> list[str]:
    """The HAProxy command of the compose example: what the test runs, too."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    command: list[str] = document["services"]["haproxy"]["command"]
    return command


# by kind: the proxy's configuration directory, its run directory, its file
PROXY_PATHS = {
    "haproxy": ("/etc/haproxy", "/run/haproxy", "haproxy.cfg"),
    "nginx": ("/etc/nginx-lbsync", "/run/nginx-lbsync", "nginx.conf"),
}


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
    kind: str = "haproxy"  # or "nginx"

    def __post_init__(self) -> None:
        self.conf = shared_directory(self.root / "conf")  # the proxy's config dir, in both
        self.run = shared_directory(self.root / "run")  # its sockets and state, in both
        self.etc = shared_directory(self.root / "etc")  # /etc/lbsync
        self.data = shared_directory(self.root / "data")  # /var/lib/lbsync
        self.lbsync_name = self.podman.name("lbsync")
        self.haproxy_name = self.podman.name("haproxy")
        self.nginx_name = self.podman.name("nginx")
        self.conf_dir, self.run_dir, self.file = PROXY_PATHS[self.kind]

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
            f'[[target]]\nkind = "{self.kind}"\ndest = "{self.conf_dir}/{self.file}"\n'
            f"reload = {reload}\n"
            f'[target.vars]\nrun_dir = "{self.run_dir}"\n'
            f'bind = ["127.0.0.1:{self.proxy_port}"]\n'
        )

    def start_lbsync(self, *options: str) -> None:
        self.podman.run(
            "lbsync",
            LBSYNC_IMAGE,
            # as pod.yaml runs it: nothing but the volumes is written (no /tmp either)
            "--read-only",
            "--read-only-tmpfs=false",
            "-v",
            f"{self.conf}:{self.conf_dir}",
            "-v",
            f"{self.run}:{self.run_dir}",
            "-v",
            f"{self.etc}:/etc/lbsync",
            "-v",
            f"{self.data}:/var/lib/lbsync",
            *options,
            command=("run", "--log-level", "info"),
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
        with self.podman.telling(self.haproxy_name):
            wait_until(lambda: is_listening(self.proxy_port), 30, "HAProxy's container listening")

    def start_nginx(self) -> None:
        """nginx from lbsync's own image (it carries nginx to validate), as its user."""
        wait_until((self.conf / self.file).exists, 60, f"lbsync's first {self.file}")
        self.podman.run(
            "nginx",
            LBSYNC_IMAGE,
            "--entrypoint",
            "nginx",
            "-v",
            f"{self.conf}:{self.conf_dir}:ro",
            "-v",
            f"{self.run}:{self.run_dir}",
            command=("-g", "daemon off;", "-c", f"{self.conf_dir}/{self.file}"),
        )
        with self.podman.telling(self.nginx_name):
            wait_until(lambda: is_listening(self.proxy_port), 30, "nginx's container listening")

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
        """How many times HAProxy's master has reloaded, read as lbsync reads it."""
        return parse_show_proc(self.cli("show proc")).reloads

    def backend_names(self) -> set[str]:
        text = self.cli("@1 show backend")
        return {line.strip() for line in text.splitlines() if line and not line.startswith("#")}

    def last_reload(self) -> str:
        """What lbsync's status API says of the target's last cycle: how it was applied."""
        detail: str = self._target()["detail"]
        return detail

    def in_step(self) -> bool:
        """Whether lbsync's last cycle left the target running its file (not pending, say a
        first reload retried until HAProxy's master socket was there)."""
        try:
            outcome = self._target()["outcome"]
        except (OSError, LookupError, ValueError):
            return False
        return outcome in ("applied", "unchanged")

    def _target(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.api_port}/v1/status"
        with urllib.request.urlopen(url, timeout=5) as answer:
            document: dict[str, Any] = json.load(answer)
        target: dict[str, Any] = document["targets"][0]
        return target

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
