"""A bounded loopback load generator: `python load.py PORT HOST KEEPALIVE FRESH MAX_SECONDS`.

KEEPALIVE clients reuse one connection each (reconnecting only when the server says
`Connection: close`), FRESH clients open a new connection per request. Runs until standard
input closes or MAX_SECONDS pass, then prints one JSON line: requests, failed, and why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.failed = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self.bodies: collections.Counter[str] = collections.Counter()

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.reasons[reason] += 1


async def exchange_headers(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, list[tuple[str, str]], str]:
    """Send one request; the status, the headers (names in lower case, in order, repeats
    kept) and the body."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [
        (key.strip().lower(), value.strip())
        for key, _, value in (line.partition(":") for line in lines[1:] if line)
    ]
    length = int(dict(headers).get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return status, headers, body.decode().strip()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool, str]:
    """Send one request; the status, whether the server closes, and the body."""
    status, headers, body = await exchange_headers(reader, writer, request)
    return status, dict(headers).get("connection", "").lower() == "close", body


async def keepalive_client(port: int, host: str, tally: Tally, stop: asyncio.Event) -> None:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while not stop.is_set():
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            tally.requests += 1
            status, closing, body = await exchange(*connection, request)
            if status != 200:
                tally.fail(f"status {status}")
            else:
                tally.bodies[body] += 1
            if closing:
                connection[1].close()
                connection = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as e:
            tally.fail(f"keep-alive {type(e).__name__}")
            if connection is not None:
                connection[1].close()
            connection = None
            await asyncio.sleep(0.01)


async def fresh_client(port: int, host: str, tally: Tally, stop: asyncio.Event) -> None:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        writer = None
        try:
            tally.requests += 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            status, _, body = await exchange(reader, writer, request)
            if status != 200:
                tally.fail(f"status {status}")
            else:
                tally.bodies[body] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as e:
            tally.fail(f"new-connection {type(e).__name__}")
            await asyncio.sleep(0.01)
        finally:
            if writer is not None:
                writer.close()


def start(
    port: int, host: str, keepalive: int, fresh: int, limit: float = 120
) -> subprocess.Popen[str]:
    """Start this script as a load process; returns once its clients run."""
    arguments = [str(port), host, str(keepalive), str(fresh), str(limit)]
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__)), *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    return process


def stop(process: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop a load process (closing its input) and return its tally."""
    output, _ = process.communicate(input="", timeout=60)
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


async def main(port: int, host: str, keepalive: int, fresh: int, seconds: float) -> None:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    clients = [keepalive_client(port, host, tally, stop) for _ in range(keepalive)]
    clients += [fresh_client(port, host, tally, stop) for _ in range(fresh)]
    tasks = [asyncio.create_task(client) for client in clients]
    print("started", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin.read(), seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=15)
    result = {
        "requests": tally.requests,
        "failed": tally.failed,
        "reasons": dict(tally.reasons),
        "bodies": dict(tally.bodies),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    port_text, host_text, keepalive_text, fresh_text, seconds_text = sys.argv[1:6]
    asyncio.run(
        main(int(port_text), host_text, int(keepalive_text), int(fresh_text), float(seconds_text))
    )
