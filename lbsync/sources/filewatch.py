"""File change notifications from watchdog's observer thread, as an async iterator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Notify(FileSystemEventHandler):
    """Calls back on any change in the watched directories (the caller compares content)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self._callback()


async def changes(paths: Iterable[Path]) -> AsyncIterator[None]:
    """Yield once at once, then after every change in the files' directories.

    Whole directories are watched, so editors' atomic saves and Kubernetes ConfigMap symlink
    swaps are seen; callers drop repeats by comparing what they read.
    """
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def notify() -> None:
        loop.call_soon_threadsafe(changed.set)

    handler = _Notify(notify)
    observer = Observer()
    for directory in sorted({path.parent.resolve() for path in paths}):
        observer.schedule(handler, str(directory), recursive=False)
    observer.start()
    try:
        yield
        while True:
            await changed.wait()
            changed.clear()
            yield
    finally:
        observer.stop()
        await asyncio.to_thread(observer.join)
