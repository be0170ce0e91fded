"""Following the configured sources: the last good snapshot of each, merged into one catalog.

One helper for the daemon, the one-shot commands (`once`, `render`, `check`, `split`) and
rollouts, so they all see the sources the same way:
- a refused key keeps its last good entry, an unusable snapshot keeps the source's last good
  one (`model.catalog.carry_forward`);
- a source whose first snapshot is unusable has not synced: a catalog built without it would
  read as if all its services were gone, so nothing is merged until every source synced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from lbsync.model.catalog import MergeCache, carry_forward, merge
from lbsync.model.values import Catalog, Snapshot
from lbsync.sources.protocol import Source

FIRST_SNAPSHOT_TIMEOUT = 30.0


class SourceStopped(RuntimeError):
    """A source's iterator ended, which a source never does unless it is broken."""


class SourceUnusable(Exception):
    """A source could not give a usable snapshot for a one-shot command; the message says why."""


@dataclass(frozen=True)
class Views:
    """The last good snapshot of each source, in configuration order (None: not synced yet)."""

    names: tuple[str, ...]
    snapshots: tuple[Snapshot | None, ...]

    @classmethod
    def waiting(cls, names: Sequence[str]) -> Views:
        """Nothing heard from any source yet."""
        return cls(tuple(names), (None,) * len(names))

    def accepting(self, snapshot: Snapshot) -> Views:
        """The views after a source's new snapshot (unchanged for a first unusable one)."""
        index = self.names.index(snapshot.source)
        previous = self.snapshots[index]
        if previous is None and not snapshot.usable:
            return self
        kept = carry_forward(previous, snapshot)
        return Views(self.names, (*self.snapshots[:index], kept, *self.snapshots[index + 1 :]))

    def has_synced(self, name: str) -> bool:
        """Whether this source has given a usable snapshot once."""
        return self.snapshots[self.names.index(name)] is not None

    @property
    def synced(self) -> bool:
        """Whether every source has given a usable snapshot once."""
        return all(snapshot is not None for snapshot in self.snapshots)

    def catalog(self, cache: MergeCache | None = None) -> Catalog:
        """The merged catalog; only once every source synced (`cache`: see `merge`)."""
        if not self.synced:
            raise SourceUnusable("not every source has given a usable snapshot yet")
        return merge([snapshot for snapshot in self.snapshots if snapshot is not None], cache)


async def follow(source: Source, accept: Callable[[Snapshot], Awaitable[None]]) -> NoReturn:
    """Hand every snapshot of a source to `accept`, for as long as the source runs."""
    async for snapshot in source.snapshots():
        await accept(snapshot)
    raise SourceStopped(f"source {source.name} stopped")


async def first_snapshots(sources: Sequence[Source], timeout: float) -> list[Snapshot]:
    """The first snapshot of each source, usable or not."""
    snapshots = []
    for source in sources:
        iterator = source.snapshots()
        try:
            async with asyncio.timeout(timeout):
                snapshots.append(await anext(iterator))
        except TimeoutError as error:
            raise SourceUnusable(
                f"source {source.name}: no snapshot within {timeout:g}s"
            ) from error
        finally:
            with contextlib.suppress(Exception):
                await iterator.aclose()  # type: ignore[attr-defined]
    return snapshots


async def read_catalog(
    sources: Sequence[Source], timeout: float = FIRST_SNAPSHOT_TIMEOUT
) -> Catalog:
    """One snapshot of every source, merged; an unusable source is a `SourceUnusable` here."""
    snapshots = await first_snapshots(sources, timeout)
    unusable = [str(snapshot.error) for snapshot in snapshots if not snapshot.usable]
    if unusable:
        raise SourceUnusable("; ".join(unusable))
    return merge(snapshots)


class Following:
    """The sources followed in background tasks, for a process that reads the catalog while
    it does something else (a rollout's gates). Entering waits until every source synced; a
    source that fails is raised by the next `catalog()`, never lost."""

    def __init__(
        self, sources: Sequence[Source], *, timeout: float = FIRST_SNAPSHOT_TIMEOUT
    ) -> None:
        self.sources = list(sources)
        self.timeout = timeout
        self.views = Views.waiting([source.name for source in self.sources])
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Following:
        self._tasks = [asyncio.create_task(self._follow(source)) for source in self.sources]
        try:
            async with asyncio.timeout(self.timeout):
                await self._wait_synced()
        except TimeoutError as error:
            await self._stop()
            raise SourceUnusable(
                f"not every source gave a usable snapshot within {self.timeout:g}s"
            ) from error
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _follow(self, source: Source) -> None:
        async def accept(snapshot: Snapshot) -> None:
            self.views = self.views.accepting(snapshot)
            if self.views.synced:
                self._synced.set()

        try:
            await follow(source, accept)
        finally:
            self._synced.set()  # wake a waiter: the failure is raised by `catalog`

    async def _wait_synced(self) -> None:
        await self._synced.wait()
        self.catalog()  # raises a source's failure

    def catalog(self) -> Catalog:
        """The merged catalog now, for a decision that must not rest on stale state (a
        rollout's gates): raises what ended a source's task, and `SourceUnusable` while a
        source is unusable (its last good state, which the daemon keeps serving, may no longer
        be true)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise SourceUnusable(f"a source failed: {task.exception()}") from task.exception()
        unusable = [s for s in self.views.snapshots if s is not None and not s.usable]
        if unusable:
            raise SourceUnusable(
                f"source {unusable[0].source} is unusable ({unusable[0].error}): "
                "what it last said may no longer be true"
            )
        return self.views.catalog()

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
