"""A named container through the engine's API: its state, its processes, a signal, its logs.

The `docker` SDK is synchronous, so every call runs in a worker thread. Its errors say little
on their own ("Error while fetching server API version"); they are turned into the three
things an operator must act on: no engine socket, no permission on it, no such container.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

if TYPE_CHECKING:  # the `docker` extra: imported only when a docker reload runs
    import docker
    from docker.models.containers import Container

DEFAULT_HOST: Final = "unix:///var/run/docker.sock"
# Docker 20.10 and later, and podman's compatible API, serve 1.41; asking an engine for its
# version first ("auto") costs podman most of a second, at every start.
API_VERSION: Final = "1.41"
_UNIX: Final = "unix://"

Result = TypeVar("Result")


class EngineError(Exception):
    """The engine answered, with an error."""


class EngineUnreachable(EngineError):
    """Nothing usable answered at the engine's address: no socket, no permission, refused."""


class ContainerUnknown(EngineError):
    """The engine knows no container of that name (not created yet, or another name)."""


class ContainerNotRunning(EngineError):
    """The container exists but does not run: there is no proxy in it to reload."""


@dataclass(frozen=True)
class ContainerView:
    """What the engine says of a container at one moment."""

    status: str  # "running", "exited", ...
    pids: frozenset[int]  # its processes, as the engine's host numbers them
    lines: tuple[str, ...] = ()  # its output (stdout and stderr), when asked for


def engine_address(configured: str) -> str:
    """Where the engine's API is: the setting, else $DOCKER_HOST, else Docker's socket."""
    return configured or os.environ.get("DOCKER_HOST", "") or DEFAULT_HOST


def unreachable_reason(host: str, error: BaseException) -> str:
    """Why the engine at `host` could not be used, from the OS error deep in the SDK's chain."""
    path = host.removeprefix(_UNIX) if host.startswith(_UNIX) else ""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, FileNotFoundError) and path:
            return (
                f"no engine socket at {path}: mount the engine's socket into this container, "
                "or set reload.docker_host"
            )
        if isinstance(seen, PermissionError) and path:
            return f"permission denied on {path}: {_socket_access_hint(Path(path))}"
        if isinstance(seen, ConnectionRefusedError):
            return f"nothing accepts connections at {host}"
        seen = seen.__cause__ or seen.__context__
    return f"the engine at {host} cannot be used: {error}"


def _socket_access_hint(path: Path) -> str:
    try:
        group = path.stat().st_gid
    except OSError:
        return "lbsync's user cannot open it"
    return (
        f"lbsync runs as uid {os.getuid()}, which is not in the socket's group (gid {group}); "
        f'add that group to lbsync\'s container (compose `group_add: ["{group}"]`)'
    )


def process_ids(top: Mapping[str, object]) -> frozenset[int]:
    """The PID column of the engine's `top` answer (`Titles` and `Processes` rows)."""
    titles = top.get("Titles")
    rows = top.get("Processes")
    if not isinstance(titles, list) or not isinstance(rows, list) or "PID" not in titles:
        raise EngineError(f"unexpected answer to top: {str(top)[:200]}")
    column = titles.index("PID")
    try:
        return frozenset(int(row[column]) for row in rows if str(row[column]).isdigit())
    except (TypeError, IndexError, KeyError) as error:  # a row of another shape
        raise EngineError(f"unexpected answer to top: {str(top)[:200]}") from error


class Engine:
    """One engine's API, reached lazily (the engine may start after lbsync)."""

    def __init__(self, host: str, *, timeout: float) -> None:
        self.host = engine_address(host)
        self._timeout = max(1, round(timeout))
        self._client: docker.DockerClient | None = None
        self._libpod_top = False  # podman's compatible `top` answered nothing once

    def _connect(self) -> docker.DockerClient:
        if self._client is None:
            import docker  # the optional extra

            try:
                self._client = docker.DockerClient(
                    base_url=self.host, version=API_VERSION, timeout=self._timeout
                )
            except docker.errors.DockerException as error:
                raise EngineUnreachable(unreachable_reason(self.host, error)) from error
        return self._client

    def _container(self, name: str) -> Container:
        import docker.errors  # the optional extra

        try:
            return self._connect().containers.get(name)
        except docker.errors.NotFound as error:
            raise ContainerUnknown(
                f"the engine at {self.host} knows no container {name!r}"
            ) from error

    async def _call(self, work: Callable[[], Result]) -> Result:
        try:
            import docker.errors  # the optional extra
            import requests  # the docker package's own dependency
        except ImportError as error:
            raise EngineUnreachable(
                "reload method docker needs the docker package: pip install 'lbsync[docker]'"
            ) from error
        try:
            return await asyncio.to_thread(work)
        except EngineError:
            raise
        except docker.errors.APIError as error:
            raise EngineError(f"the engine at {self.host}: {error.explanation or error}") from error
        except (docker.errors.DockerException, OSError, requests.RequestException) as error:
            self._client = None
            raise EngineUnreachable(unreachable_reason(self.host, error)) from error

    def _top(self, container: Container) -> Mapping[str, object]:
        """The container's processes. podman 4's Docker-compatible `top` answers with an empty
        body, so then its own (libpod) `top`, which it serves beside, is asked."""
        if not self._libpod_top:
            try:
                return container.top()
            except ValueError:  # requests' JSONDecodeError: the empty answer
                self._libpod_top = True
        api = self._connect().api
        url = f"{api.base_url}/v{api.api_version}/libpod/containers/{container.id}/top"
        answer = api.get(url, params={"stream": "false"}, timeout=self._timeout)
        answer.raise_for_status()
        document: Mapping[str, object] = answer.json()
        return document

    async def view(self, name: str, *, logs_from: int | None = None) -> ContainerView:
        """The container's state, its processes while it runs, and with `logs_from` its output
        lines from that whole second on (engines stamp lines to the second or finer)."""

        def look() -> ContainerView:
            container = self._container(name)
            running = container.status == "running"
            pids = process_ids(self._top(container)) if running else frozenset[int]()
            lines: tuple[str, ...] = ()
            if logs_from is not None:
                raw = container.logs(stdout=True, stderr=True, since=logs_from)
                lines = tuple(bytes(raw).decode(errors="replace").splitlines())
            return ContainerView(status=str(container.status), pids=pids, lines=lines)

        return await self._call(look)

    async def signal(self, name: str, signal_name: str) -> None:
        """Send `SIG<signal_name>` to the container's main process."""
        await self._call(lambda: self._container(name).kill(signal=f"SIG{signal_name}"))

    def close(self) -> None:
        """Drop the connection to the engine."""
        if self._client is not None:
            self._client.close()
            self._client = None
