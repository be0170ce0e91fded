"""File change notifications from watchdog's observer thread, as an async iterator."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Notify(FileSystemEventHandler):
    """Calls back on any change in the watched directories (the caller compares content), with
    the directory when the event is the removal of a watched directory itself."""

    def __init__(self, callback: Callable[[Path | None], None], directories: set[str]) -> None:
        self._callback = callback
        self._directories = directories

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        path = os.fsdecode(event.src_path)
        removed = event.is_directory and event.event_type == "deleted"
        self._callback(Path(path) if removed and path in self._directories else None)


async def changes(paths: Iterable[Path]) -> AsyncIterator[tuple[Path, ...]]:
    """Yield once at once, then after every change in the files' directories.

    Whole directories are watched, so editors' atomic saves and Kubernetes ConfigMap symlink
    swaps are seen; callers drop repeats by comparing what they read. Each yield names the
    watched directories removed so far: watchdog ends a directory's watch when it is removed,
    and a directory made in its place is not watched, so nothing in it will be seen again.
    """
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    removed: list[Path] = []

    def arrived(directory: Path | None) -> None:
        if directory is not None and directory not in removed:
            removed.append(directory)
        changed.set()

    def notify(directory: Path | None) -> None:
        loop.call_soon_threadsafe(arrived, directory)

    directories = sorted({path.parent.resolve() for path in paths})
    handler = _Notify(notify, {str(directory) for directory in directories})
    observer = Observer()
    for directory in directories:
        observer.schedule(handler, str(directory), recursive=False)
    observer.start()
    try:
        yield ()
        while True:
            await changed.wait()
            changed.clear()
            yield tuple(removed)
    finally:
        observer.stop()
        await asyncio.to_thread(observer.join)
