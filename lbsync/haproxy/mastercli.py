"""HAProxy's master CLI over its Unix socket: one command line per connection (`master_cli`,
for reloads: `show proc`, `reload`), or a kept connection in prompt mode (`MasterSession`, for
the runtime API, where `@1 <command>` reaches the current worker).

While HAProxy reloads, the master re-executes itself and refuses connections for a few tens of
milliseconds; a session retries for a while before giving up.

Timeouts are `asyncio.timeout`, never `asyncio.wait_for`: Python 3.11's `wait_for` drops a
cancellation that arrives just as the call it wraps finishes (measured: a Ctrl-C of `lbsync
rollout` reading counters from a stopped HAProxy went unheard).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from pathlib import Path

CLI_TIMEOUT = 2.0
RETRY_SECONDS = 0.005
# errors that mean "nobody accepts on this socket right now"
REFUSED = (ConnectionRefusedError, FileNotFoundError, ConnectionResetError)
_ANSWER_LIMIT = 2**26  # `show servers state` of 10,000 servers is about 1.5 MB


async def master_cli(socket: Path, command: str, *, timeout: float = CLI_TIMEOUT) -> str:
    """Send one command line to HAProxy's master CLI and read the whole answer."""

    async def exchange() -> str:
        reader, writer = await asyncio.open_unix_connection(str(socket), limit=_ANSWER_LIMIT)
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()

    async with asyncio.timeout(timeout):
        return await exchange()


_PROMPT = re.compile(rb"(?:\A|\n)master(?:\[[^\]\n]*\])?> \Z")


class MasterSession:
    """A master CLI connection kept open in prompt mode, for the runtime API's many small
    exchanges: a new connection costs the master about 0.4 ms more per exchange (measured:
    0.45 ms fresh, 0.07 ms kept, for a weight and a read-back). The master drops it when it
    re-executes (reload) or after its idle timeout; the next exchange then reconnects, retrying
    while the socket refuses, and resends its line once (every runtime line is checked by a
    read-back afterwards, so a line run twice does no harm)."""

    def __init__(self, socket: Path, *, retry_for: float, timeout: float = CLI_TIMEOUT) -> None:
        self.socket = socket
        self.retry_for = retry_for
        self.timeout = timeout
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect and enter prompt mode, retrying while the master refuses or drops us (it
        re-executes during a reload)."""
        deadline = time.monotonic() + self.retry_for
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(self.socket), limit=_ANSWER_LIMIT
                )
                writer.write(b"prompt\n")
                await writer.drain()
                async with asyncio.timeout(self.timeout):
                    await _answer(reader, 1)
            except (*REFUSED, asyncio.IncompleteReadError) as error:
                if writer is not None:
                    writer.close()
                if time.monotonic() >= deadline:
                    raise ConnectionRefusedError(f"{self.socket}: {error!r}") from error
            except BaseException:
                if writer is not None:
                    writer.close()
                raise
            else:
                return reader, writer
            await asyncio.sleep(RETRY_SECONDS)

    async def send(self, commands: Sequence[str]) -> str:
        """Run commands (joined into one line with `; `, none containing `;`); their answers
        without the prompts. Raises OSError (ConnectionRefusedError when nobody accepts) or
        TimeoutError."""
        line = "; ".join(commands).encode() + b"\n"
        for attempt in (1, 2):
            if self._stream is None:
                self._stream = await self._open()
            reader, writer = self._stream
            try:
                writer.write(line)
                await writer.drain()
                async with asyncio.timeout(self.timeout):
                    return await _answer(reader, len(commands))
            except (asyncio.IncompleteReadError, ConnectionError) as error:
                self.close()
                if attempt == 2:
                    raise ConnectionResetError(
                        f"master CLI dropped the connection: {error}"
                    ) from error
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop the connection (after a reload the master has closed it anyway)."""
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None


async def _answer(reader: asyncio.StreamReader, prompts: int) -> str:
    """Read up to the n-th next prompt (`master> `, or `master[ReloadFailed]> ` after a refused
    reload: prompt mode prints one after each command of a line); the text in between."""
    answers: list[str] = []
    data = b""
    while len(answers) < prompts:
        data += await reader.readuntil(b"> ")
        match = _PROMPT.search(data, max(0, len(data) - 80))
        if match is not None:
            answers.append(data[: match.start()].decode(errors="replace"))
            data = b""
    return "\n".join(answers)
