"""Server counters from HAProxy's `show stat`, for the rollout's error gate.

The counters are read through the target's master CLI (`@1`, the current worker) when lbsync
reloads it that way, else through the stats socket the shipped template opens in `run_dir`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from lbsync.config import Config, TargetKind
from lbsync.haproxy.mastercli import master_cli

STATS_SOCKET = "haproxy.sock"
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True)
class ErrorCounts:
    """Counters of a group's servers from `show stat`: answers given, and errors among them."""

    responses: int = 0
    errors: int = 0

    def ratio_since(self, before: ErrorCounts) -> tuple[float, int]:
        """The error ratio of what happened since `before`, and how many responses that was."""
        total = self.responses - before.responses
        failed = self.errors - before.errors
        return (failed / total if total > 0 else 0.0), total


def parse_show_stat(text: str, backend: str, servers: Iterable[str]) -> ErrorCounts:
    """Sum the responses and errors (5xx, failed connections, broken responses) of some
    servers of a backend in `show stat` CSV (`stat_rows`, `counts_of`)."""
    return counts_of(stat_rows(text), backend, servers)


def stat_rows(text: str) -> list[dict[str, str]]:
    """The rows of `show stat` CSV, by column name; ValueError when it is not that."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("# ")), None)
    if header is None:
        raise ValueError(f"not `show stat` output: {text[:120]!r}")
    columns = header[2:].split(",")
    return [
        dict(zip(columns, line.split(","), strict=False))
        for line in lines
        if not line.startswith("#")
    ]


def counts_of(rows: Iterable[dict[str, str]], backend: str, servers: Iterable[str]) -> ErrorCounts:
    """The counters of some servers of a backend, with the same servers in the backend's group
    backends (`<backend>:sticky:<group>`, `<backend>:pin:<group>`): sticky clients and pinned
    requests reach the servers there. No service name holds a `:`, so only those match."""
    wanted = set(servers)
    responses = errors = 0
    for row in rows:
        proxy = row.get("pxname", "")
        if row.get("svname") not in wanted or not (
            proxy == backend or proxy.startswith(f"{backend}:")
        ):
            continue

        def number(name: str, fields: dict[str, str] = row) -> int:
            text = fields.get(name, "")
            return int(text) if text.isdigit() else 0

        failures = number("econ") + number("eresp")
        answered = sum(number(f"hrsp_{kind}") for kind in RESPONSE_CLASSES)
        responses += answered + number("hrsp_other") + failures
        errors += number("hrsp_5xx") + failures
    return ErrorCounts(responses=responses, errors=errors)


class StatsReader:
    """Reads server counters from the configuration's first HAProxy target, if any."""

    def __init__(self, config: Config) -> None:
        self._command: Callable[[str], Awaitable[str]] | None = None
        for target in config.targets:
            if target.kind is not TargetKind.HAPROXY:
                continue
            if target.reload.master_socket is not None:
                socket = target.reload.master_socket
                self._command = lambda text, s=socket: master_cli(s, f"@1 {text}")
            else:
                stats = target.run_dir / STATS_SOCKET
                self._command = lambda text, s=stats: master_cli(s, text)
            break

    @property
    def available(self) -> bool:
        """Whether the configuration has an HAProxy target to ask."""
        return self._command is not None

    async def command(self, text: str) -> str:
        """A runtime API command's answer; OSError when there is no HAProxy to ask."""
        if self._command is None:
            raise OSError("no HAProxy target")
        return await self._command(text)

    async def counts(self, backend: str, servers: Iterable[str]) -> ErrorCounts | None:
        """The servers' counters, or None when no runtime API can be reached."""
        if self._command is None:
            return None
        try:
            return parse_show_stat(await self._command("show stat"), backend, servers)
        except (OSError, TimeoutError, ValueError):
            return None
