"""What the one-shot commands share: one snapshot of the sources as a desired state, and a
stop event for the commands that run until a signal. Nothing here imports the daemon, so the
traffic commands do not either."""

from __future__ import annotations

import asyncio
import signal

from lbsync.config import Config
from lbsync.core.state import DesiredState, build
from lbsync.sources.build import sources_for
from lbsync.sources.follow import read_catalog


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a command that runs until stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    return stop


async def desired_state(config: Config) -> DesiredState:
    """The desired state of one snapshot of every source (`SourceUnusable` when one fails)."""
    return build(await read_catalog(sources_for(config)), config.health_mode)
