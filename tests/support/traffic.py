"""Counting which backend answers, through a real proxy, over keep-alive connections."""

from __future__ import annotations

import asyncio
import collections

from support.load import exchange


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
