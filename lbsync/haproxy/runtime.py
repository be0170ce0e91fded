"""HAProxy's runtime API: send a RUNTIME plan's operations, then read the servers back.

Everything goes through the master CLI, each command prefixed with `@1` so the master forwards
it to the current worker (`@1 a; b` would run `b` on the master). The stats socket is not
used: for a few tens of milliseconds after a reload it still reaches the old worker, and a
weight set there is lost. Commands are joined with `; ` into lines of at most `BATCH`
commands (measured: about 0.1 ms per forwarded command; a line of several thousand commands
can stall the master), sent over one connection kept open in prompt mode (`MasterSession`).

Answers are not trusted as proof: after sending, `show servers state` of the touched backends
is compared with the rendered file (`check`): weight, state, address, and whether the server
speaks TLS (`srv_use_ssl`; `add server` takes the file's `ssl verify ...` words as they are).
A server that was asked to leave but still has requests in flight stays in maintenance
("lingering": it receives nothing new) and is deleted by a later cycle, or dropped by the next
reload.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lbsync.haproxy.layout import Backend, Layout, ServerLine
from lbsync.haproxy.mastercli import REFUSED, MasterSession
from lbsync.haproxy.operations import AddServer, DelServer, Operation, SetWeight

BATCH = 200
RETRY_FOR = 1.0
# `srv_admin_state` bits set by the runtime API: forced maintenance (0x01), forced drain (0x08).
FORCED_MAINTENANCE = 0x01
FORCED_DRAIN = 0x08
_QUIET = frozenset({"New server registered.", "Server deleted."})
_STILL_BUSY = "Server still has connections attached to it, cannot remove it."

ServerKey = tuple[str, str]


class RuntimeApiError(Exception):
    """A runtime apply that did not happen as planned."""


class RuntimeUnavailable(RuntimeApiError):
    """The master CLI could not be reached: nothing was sent."""


class RuntimeFailed(RuntimeApiError):
    """Commands were sent but HAProxy does not run what the file says (or refused them)."""


class UnsafeCommand(RuntimeFailed):
    """A command would carry `;`, a line break or another control character: the master CLI
    would read more than one command from it. Nothing is sent."""


def command(*words: str) -> str:
    """One runtime API command from its words, refused when a word could end it or start
    another (`;` separates commands on a line, a line break sends the line)."""
    for word in words:
        if ";" in word or not word.isprintable() or not word.strip():
            raise UnsafeCommand(f"refusing to send a runtime command with {word!r}")
    return " ".join(words)


@dataclass(frozen=True)
class ServerReading:
    """One server as `show servers state` reports it."""

    backend: str
    name: str
    address: str
    port: str
    admin: int
    weight: int
    use_ssl: bool | None = None  # None: the answer has no `srv_use_ssl` column


@dataclass(frozen=True)
class Applied:
    """A verified runtime apply: commands sent, servers still leaving, seconds taken."""

    commands: int
    lingering: frozenset[ServerKey]
    seconds: float


def commands(operation: Operation) -> list[str]:
    """The CLI commands for one operation (without the `@1` prefix)."""
    where = f"{operation.backend}/{operation.server}"
    match operation:
        case SetWeight(weight=weight):
            return [command("set server", where, "weight", str(weight))]
        case AddServer(arguments=arguments, checked=checked):
            health = [command("enable health", where)] if checked else []
            return [
                command("add server", where, *arguments),
                *health,
                command("set server", where, "state ready"),
            ]
        case DelServer():
            return [command("set server", where, "state maint"), command("del server", where)]


def _remove_again(backend: str, server: str) -> list[str]:
    """Commands that delete a lingering server. Connections that went idle after it entered
    maintenance stay pooled and block `del server` (measured); leaving maintenance for drain
    (still no new request) and entering it again closes them."""
    where = f"{backend}/{server}"
    return [
        command("set server", where, "state drain"),
        command("set server", where, "state maint"),
        command("del server", where),
    ]


def parse_servers_state(text: str) -> dict[ServerKey, ServerReading]:
    """Parse `show servers state` answers (format 1; several blocks may follow each other)."""
    readings: dict[ServerKey, ServerReading] = {}
    columns: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# be_id"):
            columns = {name: n for n, name in enumerate(line[2:].split())}
            continue
        fields = line.split()
        if not columns or len(fields) < len(columns) or not fields[0].isdigit():
            continue
        try:
            reading = ServerReading(
                backend=fields[columns["be_name"]],
                name=fields[columns["srv_name"]],
                address=fields[columns["srv_addr"]],
                port=fields[columns["srv_port"]],
                admin=int(fields[columns["srv_admin_state"]]),
                weight=int(fields[columns["srv_uweight"]]),
                use_ssl=fields[columns["srv_use_ssl"]] == "1" if "srv_use_ssl" in columns else None,
            )
        except (KeyError, ValueError):
            continue
        readings[(reading.backend, reading.name)] = reading
    return readings


def _literal_endpoint(address: str) -> tuple[str, str] | None:
    """(ip, port) for `ip:port` or `[ipv6]:port`; None for host names and other forms."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return None


def _server_problem(backend: str, line: ServerLine, seen: ServerReading | None) -> str | None:
    where = f"{backend}/{line.name}"
    if seen is None:
        return f"{where} is missing"
    if line.weight is not None and seen.weight != line.weight:
        return f"{where} has weight {seen.weight}, the file {line.weight}"
    if seen.admin & (FORCED_MAINTENANCE | FORCED_DRAIN):
        return f"{where} is in maintenance or drain (admin state {seen.admin})"
    if seen.use_ssl is not None and seen.use_ssl != ("ssl" in line.tokens[1:]):
        said = "speaks" if seen.use_ssl else "does not speak"
        return f"{where} {said} TLS, unlike the file's server line"
    endpoint = _literal_endpoint(line.address)
    if endpoint is not None:
        address = _literal_endpoint(f"{seen.address}:{seen.port}")
        if address != endpoint:
            return f"{where} has address {seen.address}:{seen.port}, the file {line.address}"
    return None


@dataclass(frozen=True)
class Check:
    """How HAProxy's servers compare with the file's: problems, and servers that are not in
    the file but still in maintenance (leaving, requests in flight)."""

    problems: tuple[str, ...]
    lingering: frozenset[ServerKey]


def check(backends: Iterable[Backend], seen: dict[ServerKey, ServerReading]) -> Check:
    """Compare the servers HAProxy reports with the file's, backend by backend."""
    problems: list[str] = []
    lingering: set[ServerKey] = set()
    for backend in backends:
        names = {line.name for line in backend.servers}
        for line in backend.servers:
            problem = _server_problem(backend.name, line, seen.get((backend.name, line.name)))
            if problem is not None:
                problems.append(problem)
        for key, reading in seen.items():
            if key[0] != backend.name or key[1] in names:
                continue
            if reading.admin & FORCED_MAINTENANCE:
                lingering.add(key)
            else:
                problems.append(f"{key[0]}/{key[1]} is not in the file but still serves")
    return Check(tuple(problems), frozenset(lingering))


def _complaints(answers: str) -> list[str]:
    """The lines of the answers that are neither silence, success nor server states."""
    complaints = set()
    for line in answers.splitlines():
        if line in _QUIET or line in ("", "1", _STILL_BUSY) or line.startswith("# be_id"):
            continue
        fields = line.split()
        if not (fields[0].isdigit() and len(fields) > 8):
            complaints.add(line)
    return sorted(complaints)


class RuntimeApi:
    """The runtime API of one HAProxy, through its master CLI socket."""

    def __init__(self, socket: Path, *, retry_for: float = RETRY_FOR) -> None:
        self.socket = socket
        self._session = MasterSession(socket, retry_for=retry_for)

    def close(self) -> None:
        """Drop the kept connection (the master closes it when it reloads)."""
        self._session.close()

    async def _line(self, line: Sequence[str], first: bool) -> str:
        try:
            return await self._session.send(line)
        except (OSError, TimeoutError) as error:
            if first and isinstance(error, REFUSED):
                raise RuntimeUnavailable(f"master CLI {self.socket}: {error}") from error
            raise RuntimeFailed(f"master CLI {self.socket}: {error!r}") from error

    async def run(self, lines: Sequence[str], *, first: bool = True) -> str:
        """Send commands to the current worker, `BATCH` per connection; the answers, joined."""
        answers = []
        for start in range(0, len(lines), BATCH):
            chunk = [f"@1 {command}" for command in lines[start : start + BATCH]]
            answers.append(await self._line(chunk, first and start == 0))
        return "".join(answers)

    async def servers(self, backends: Sequence[str] | None) -> dict[ServerKey, ServerReading]:
        """The servers of some backends (all when None) as the current worker reports them."""
        if backends is None:
            return parse_servers_state(await self.run(["show servers state"], first=False))
        lines = [command("show servers state", name) for name in backends]
        return parse_servers_state(await self.run(lines, first=False))

    async def apply(
        self, operations: Sequence[Operation], layout: Layout, lingering: Iterable[ServerKey]
    ) -> Applied:
        """Send the operations (first retrying the delete of servers still leaving), then
        check the touched backends against the layout; `RuntimeFailed` when they differ."""
        started = time.monotonic()
        lines = [line for key in sorted(lingering) for line in _remove_again(*key)]
        for operation in operations:
            lines += commands(operation)
        sent = len(lines)
        touched = {operation.backend for operation in operations}
        touched |= {backend for backend, _ in lingering}
        wanted = [backend for backend in layout.backends if backend.name in touched]
        # the read-back rides on the same connection, after the commands
        lines += [command("show servers state", backend.name) for backend in wanted]
        answers = await self.run(lines) if lines else ""
        result = check(wanted, parse_servers_state(answers))
        if result.problems:
            detail = "; ".join(result.problems[:5])
            complaints = _complaints(answers)
            if complaints:
                detail += f" (HAProxy said: {' | '.join(complaints[:3])})"
            raise RuntimeFailed(detail)
        return Applied(
            commands=sent,
            lingering=result.lingering,
            seconds=time.monotonic() - started,
        )

    async def converge(self, layout: Layout) -> Applied:
        """After a reload: make every server's weight and state what the file says (the
        server-state file may have restored older runtime values), then check again."""
        started = time.monotonic()
        seen = await self.servers(None)
        first = check(layout.backends, seen)
        lines: list[str] = []
        for backend in layout.backends:
            for line in backend.servers:
                reading = seen.get((backend.name, line.name))
                if reading is None:
                    continue
                where = f"{backend.name}/{line.name}"
                if line.weight is not None and reading.weight != line.weight:
                    lines.append(command("set server", where, "weight", str(line.weight)))
                if reading.admin & (FORCED_MAINTENANCE | FORCED_DRAIN):
                    lines.append(command("set server", where, "state ready"))
        if not first.problems:
            return Applied(0, first.lingering, time.monotonic() - started)
        await self.run(lines, first=False)
        again = check(layout.backends, await self.servers(None))
        if again.problems:
            raise RuntimeFailed("; ".join(again.problems[:5]))
        return Applied(len(lines), again.lingering, time.monotonic() - started)
