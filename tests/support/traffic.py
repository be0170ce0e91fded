"""Counting which backend answers, through a real proxy, over keep-alive connections; clients
with cookie jars of their own."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

from support.load import exchange, exchange_headers


async def tally(port: int, host: str, requests: int, clients: int = 4) -> collections.Counter[str]:
    """Send `requests` GETs with this Host header; count bodies (`HTTP <status>` when not 200)."""
    counts: collections.Counter[str] = collections.Counter()
    remaining = [requests]
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def client() -> None:
        connection = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                status, closing, body = await exchange(*connection, request)
                counts[body if status == 200 else f"HTTP {status}"] += 1
                if closing:
                    connection[1].close()
                    connection = await asyncio.open_connection("127.0.0.1", port)
        finally:
            connection[1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return counts


def shares(counts: collections.Counter[str], groups: dict[str, list[str]]) -> dict[str, float]:
    """Percent of responses per group of backend names."""
    total = sum(counts.values())
    return {group: 100 * sum(counts[n] for n in names) / total for group, names in groups.items()}


@dataclass
class Client:
    """One browser: its own cookie jar, and the backend that answered each of its requests
    (`HTTP <status>` when not 200)."""

    jar: dict[str, str] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)

    def request(self, host: str, extra: Sequence[str]) -> bytes:
        """A GET with this client's cookies and the `extra` header lines, as written."""
        lines = ["GET / HTTP/1.1", f"Host: {host}"]
        if self.jar:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.jar.items()))
        return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()

    def keep(self, headers: list[tuple[str, str]]) -> None:
        """Store the cookies an answer sets."""
        for name, value in headers:
            if name == "set-cookie":
                cookie, _, _ = value.partition(";")
                key, _, text = cookie.partition("=")
                self.jar[key.strip()] = text.strip()


async def visit(
    port: int,
    host: str,
    clients: Sequence[Client],
    *,
    extra: Sequence[str] = (),
    connections: int = 8,
) -> None:
    """One request from each client in turn, over a few keep-alive connections (cookies are
    the client's, not the connection's)."""
    queue = list(reversed(clients))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                client = queue.pop()
                status, headers, body = await exchange_headers(
                    reader, writer, client.request(host, extra)
                )
                client.keep(headers)
                client.answers.append(body if status == 200 else f"HTTP {status}")
                if dict(headers).get("connection", "").lower() == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))


async def fetch(port: int, host: str, target: str = "/") -> tuple[int, dict[str, str], str]:
    """One GET of `target` with this Host header on a connection of its own: the status, the
    headers (names in lower case, the last of a repeat) and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        status, headers, body = await exchange_headers(reader, writer, request.encode())
    finally:
        writer.close()
    return status, dict(headers), body
