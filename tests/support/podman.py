"""podman for the container tests: the images built from this tree, containers on the host
network, and podman's Docker-compatible API for the `docker` SDK.

No image registry is reachable where the tests run, so every image is made here: the base by
`scripts/container-base.sh` (debootstrap, kept in podman's storage once made), lbsync's from the
repository's Dockerfile on that base, with its Python packages from a wheelhouse built on the
host (pip inside the build needs no index), and an HAProxy image standing in for the official
one (`tests/containers/haproxy.Dockerfile`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "containers"
BASE_IMAGE = "localhost/lbsync-base:bookworm"
LBSYNC_IMAGE = "localhost/lbsync:test"
HAPROXY_IMAGE = "localhost/lbsync-test-haproxy:2.6"
USER = "10001:10001"  # the image's user; the proxy's container runs as the same
UID = GID = 10001
PROCESSES = "4096:4096"


def containers_conf(path: Path) -> Path:
    """A containers.conf for podman as root on a machine without systemd: runc, cgroupfs,
    events to a file, and a default nofile limit no higher than this machine's own hard limit
    (runc refuses to set a higher one), and a modest process limit (runc is refused even this
    machine's own, 96363, where 4096 is set)."""
    files = _hard_limit(resource.RLIMIT_NOFILE, 1 << 20)
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={min(1024, files)}:{files}", "nproc={PROCESSES}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    return path


def _hard_limit(kind: int, unlimited: int) -> int:
    hard = resource.getrlimit(kind)[1]
    return unlimited if hard == resource.RLIM_INFINITY else hard


@dataclass
class Podman:
    """podman with this session's containers.conf; every container it runs is named with
    `prefix`, so that `remove_all` leaves other containers alone."""

    conf: Path
    prefix: str

    @property
    def environment(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def __call__(
        self, *arguments: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        finished = subprocess.run(
            ["podman", *arguments],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and finished.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(arguments)} exited with {finished.returncode}: "
                f"{finished.stderr[-3000:]}"
            )
        return finished

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def run(self, role: str, image: str, *options: str, command: tuple[str, ...] = ()) -> str:
        """Start a detached container on the host network; its name."""
        name = self.name(role)
        self("rm", "-f", "-t", "0", name, check=False)
        self("run", "-d", "--name", name, "--network", "host", *options, image, *command)
        return name

    def remove(self, name: str) -> None:
        self("rm", "-f", "-t", "0", name, check=False)

    def remove_all(self) -> None:
        listed = self("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        for name in listed:
            if name.startswith(self.prefix + "-"):
                self.remove(name)

    def logs(self, name: str) -> str:
        finished = self("logs", name, check=False)
        return finished.stdout + finished.stderr

    def inspect(self, what: str) -> dict[str, Any]:
        document: list[dict[str, Any]] = json.loads(self("inspect", what).stdout)
        return document[0]

    def health(self, name: str) -> str:
        """The container's health status, as `podman inspect` reports it."""
        state = self.inspect(name)["State"]
        health = state.get("Health") or state.get("Healthcheck") or {}
        return str(health.get("Status", ""))

    def wait_healthy(self, name: str, timeout: float) -> float:
        """Run the image's HEALTHCHECK (podman runs it on a systemd timer, absent here) until
        it passes; the seconds it took."""
        started = time.monotonic()
        with self.telling(name):
            wait_until(
                lambda: self("healthcheck", "run", name, check=False).returncode == 0,
                timeout,
                f"{name}'s HEALTHCHECK to pass",
            )
        return time.monotonic() - started

    @contextlib.contextmanager
    def telling(self, name: str) -> Iterator[None]:
        """A failed wait inside says what the container's state and output were by then."""
        try:
            yield
        except AssertionError as error:
            state = self("inspect", "--format", "{{json .State}}", name, check=False).stdout
            said = self.logs(name)[-3000:]
            raise AssertionError(f"{error}; {name}: {state.strip()}; its output:\n{said}") from None


def check_engine(podman: Podman) -> None:
    """Fail, with the reason, when no container can run here."""
    if shutil.which("podman") is None:
        raise AssertionError(
            "podman is not installed: run scripts/install-system.sh --with-test-servers"
        )
    finished = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if finished.returncode != 0:
        raise AssertionError(f"podman cannot run containers here: {finished.stderr[-2000:]}")


@dataclass(frozen=True)
class Builds:
    """What building the images cost, and the image's size (the figures of docs/container.md)."""

    base_seconds: float
    wheels_seconds: float
    lbsync_seconds: float
    haproxy_seconds: float
    lbsync_bytes: int


def _timed(work: Any) -> float:
    started = time.monotonic()
    work()
    return time.monotonic() - started


def build_images(podman: Podman, wheels: Path) -> Builds:
    """The base (when podman has none), a wheelhouse, lbsync's image and the HAProxy image."""
    base = _timed(
        lambda: subprocess.run(
            ["bash", str(ROOT / "scripts" / "container-base.sh"), "--image", BASE_IMAGE],
            env=podman.environment,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=900,
        )
    )
    wheel_seconds = _timed(lambda: _wheelhouse(wheels))
    lbsync = _timed(
        lambda: _build(
            podman,
            LBSYNC_IMAGE,
            ROOT,
            "--build-arg",
            "PIP_ARGS=--no-index --find-links /wheels",
            "--volume",
            f"{wheels}:/wheels:ro",
        )
    )
    proxy = _timed(
        lambda: _build(podman, HAPROXY_IMAGE, HERE, "-f", str(HERE / "haproxy.Dockerfile"))
    )
    size = int(podman("image", "inspect", "--format", "{{.Size}}", LBSYNC_IMAGE).stdout)
    return Builds(base, wheel_seconds, lbsync, proxy, size)


def _build(podman: Podman, tag: str, context: Path, *options: str) -> None:
    """`podman build` on the local base; the Docker format keeps HEALTHCHECK (OCI has none)."""
    podman(
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--build-arg",
        f"BASE={BASE_IMAGE}",
        *options,
        "-t",
        tag,
        str(context),
        timeout=900,
    )


def _wheelhouse(wheels: Path) -> None:
    """Wheels of lbsync's dependencies (with the docker extra) and of its build backend, made
    with this machine's pip and index; lbsync itself is built in the image, from the tree.
    Kept while pyproject.toml is unchanged (`wheels` is named for its digest)."""
    if wheels.is_dir() and any(wheels.glob("*.whl")):
        return
    partial = wheels.with_name(wheels.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "-w", str(partial), f"{ROOT}[docker]"], check=True, timeout=600)
    subprocess.run(
        [*pip, "download", "-d", str(partial), "setuptools>=77"], check=True, timeout=600
    )
    for built in partial.glob("lbsync-*.whl"):
        built.unlink()
    partial.rename(wheels)


def wheelhouse_path() -> Path:
    """Where the wheelhouse for the current pyproject.toml is kept."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return ROOT / ".cache" / "container-wheels" / digest


@dataclass
class EngineService:
    """`podman system service`: the Docker API on a socket of its own, for the SDK."""

    socket: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, podman: Podman, socket: Path) -> EngineService:
        process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"],
            env=podman.environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(socket.exists, 30, f"podman's API socket {socket}")
        return cls(socket=socket, process=process)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def shared_directory(path: Path) -> Path:
    """A host directory for a volume both containers use, owned by their user."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, UID, GID)
    return path
