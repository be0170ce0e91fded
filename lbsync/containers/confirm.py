"""A reload by signal to a container, confirmed by what the engine shows.

Without HAProxy's master socket, the engine is the only witness. A master that took the new
file forks new workers (HAProxy `-W` on USR2, nginx on HUP), so a process the container did not
have before the signal confirms the reload, as does HAProxy's `Loading success.`. A master that
refused the file keeps its old workers and says why in its output: HAProxy's `Loading failure!`
after its `[ALERT]` lines, nginx's `[emerg]` line. A container that stopped took the proxy with
it. Engines stamp log lines to the second, so the lines read before the signal are set aside:
only what follows them is the answer to this signal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

from lbsync.containers.engine import ContainerNotRunning, Engine, EngineError

POLL_SECONDS: Final = 0.05
REFUSAL_MARKERS: Final = ("Loading failure", "[emerg]")
SUCCESS_MARKERS: Final = ("Loading success",)
SHOWN_LINES: Final = 3


class ReloadNotConfirmed(EngineError):
    """The container's proxy refused the new file, stopped, or forked nothing in time."""


def refusal(lines: Sequence[str]) -> str | None:
    """What the proxy's output says against the reload: the lines up to its first refusal."""
    for index, line in enumerate(lines):
        if any(marker in line for marker in REFUSAL_MARKERS):
            return " | ".join(
                text.strip() for text in lines[max(0, index - SHOWN_LINES) : index + 1]
            )
    return None


async def signal_and_confirm(engine: Engine, name: str, *, signal_name: str, timeout: float) -> str:
    """Signal the container's main process and wait for a new process or a refusal; what was
    seen, for the apply log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    second = int(time.time())
    before = await engine.view(name, logs_from=second)
    if before.status != "running":
        raise ContainerNotRunning(f"container {name!r} is {before.status}: nothing to reload")
    await engine.signal(name, signal_name)
    while True:
        await asyncio.sleep(POLL_SECONDS)
        now = await engine.view(name, logs_from=second)
        said = now.lines[len(before.lines) :]
        if now.status != "running":
            raise ReloadNotConfirmed(
                f"container {name!r} is {now.status} after SIG{signal_name}: "
                + " | ".join(said[-SHOWN_LINES:])
            )
        refused = refusal(said)
        if refused is not None:
            raise ReloadNotConfirmed(f"container {name!r} refused the new file: {refused}")
        fresh = now.pids - before.pids
        if fresh:
            return f"SIG{signal_name} to container {name}; new process {min(fresh)}"
        if any(marker in line for line in said for marker in SUCCESS_MARKERS):
            return f"SIG{signal_name} to container {name}; it logged its new configuration"
        if loop.time() >= deadline:
            raise ReloadNotConfirmed(
                f"SIG{signal_name} to container {name!r}: no new process within {timeout:g}s"
            )
