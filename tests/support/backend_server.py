"""Tiny HTTP backends in one process: `python backend_server.py NAME=PORT[:STATUS[:MS[:PEM]]] ...`.

Each answers every request with its own name (HTTP/1.1, keep-alive), with status 200 or the
one given (`green-1=9000:500` answers 500: a broken release), after MS milliseconds when given
(`amber-1=9001:200:300`: a slow release), over TLS with the certificate and key in PEM when
given (`tls-1=9002:200:0:/tmp/cert.pem`). Prints `ready` once all listen.
A request to `/slow?ms=N` answers after N milliseconds (for in-flight tests). Every answer
says which request target it got (`X-Request-Target`) and with which `X-Forwarded-Prefix`
(`X-Got-Prefix`, `-` without one), so a test sees what the proxy forwarded.
"""

from __future__ import annotations

import asyncio
import ssl
import sys


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return b"-"


async def serve(
    name: str, port: int, status: int = 200, delay_ms: int = 0, pem: str = ""
) -> asyncio.Server:
    body = f"{name}\n".encode()
    status_line = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                target = request_line.split(" ")[1] if " " in request_line else "/"
                if target.startswith("/slow?ms="):
                    await asyncio.sleep(int(target.split("=", 1)[1]) / 1000)
                elif delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
                close = b"connection: close" in head.lower()
                writer.write(
                    status_line
                    + b"Content-Type: text/plain\r\n"
                    + b"X-Request-Target: "
                    + target.encode(errors="replace")
                    + b"\r\n"
                    + b"X-Got-Prefix: "
                    + _header(head, b"x-forwarded-prefix")
                    + b"\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n"
                    + body
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    context = None
    if pem:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pem)
    return await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024, ssl=context)


async def main(pairs: list[str]) -> None:
    servers = []
    for pair in pairs:
        name, address = pair.split("=", 1)
        port, _, rest = address.partition(":")
        status, _, rest = rest.partition(":")
        delay, _, pem = rest.partition(":")
        servers.append(await serve(name, int(port), int(status or 200), int(delay or 0), pem))
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
