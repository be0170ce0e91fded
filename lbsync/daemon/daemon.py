"""The daemon: sources -> merge -> debounce -> desired state -> every target, as one task group.

Any task's exit ends the group (a source that stops is a bug, not a state to limp along in);
shutdown is injected as an event. The status is one immutable value swapped after each step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from lbsync.common.backoff import Backoff
from lbsync.config import Config
from lbsync.core.state import BuildCache, DesiredState, build
from lbsync.daemon.api import StatusApi
from lbsync.daemon.applylog import log_report
from lbsync.daemon.collector import Collector
from lbsync.daemon.observed import Observed
from lbsync.daemon.status import SourceStatus, Status
from lbsync.haproxy.stats import StatsReader
from lbsync.model.catalog import MergeCache
from lbsync.model.values import Catalog, RawKeys, Snapshot
from lbsync.pipeline import fsio
from lbsync.pipeline.debounce import quiesce
from lbsync.pipeline.reconcile import TargetRunner
from lbsync.pipeline.report import ApplyReport, Outcome
from lbsync.sources import Source
from lbsync.sources.build import sources_for
from lbsync.sources.filewatch import changes
from lbsync.sources.follow import Views, follow
from lbsync.sources.protocol import Counted

log = logging.getLogger("lbsync")

# After a failure the same input is tried again after 1 s, then 2, 4 ... up to 30 s.
RETRY = Backoff(first=1.0, cap=30.0, jitter=0.0)
# The whole render that only confirms what the fast lane applied waits until the fast lane has
# been quiet this long (at most `max_wait`): its render, in a worker thread, would otherwise
# compete with the next changes for the interpreter.
CONFIRM_QUIET = 0.1


class _Stopped(Exception):
    """Raised by the stop task so the task group cancels its siblings."""


class Daemon:
    """Runs the pipeline until stopped; `status` is always the latest immutable status."""

    def __init__(self, config: Config, *, sources: Sequence[Source] | None = None) -> None:
        self.config = config
        self.sources = list(sources_for(config) if sources is None else sources)
        self.runners = [TargetRunner(target) for target in config.targets]
        self.status = Status(
            started_at=time.time(),
            sources=tuple(SourceStatus(name=source.name) for source in self.sources),
        )
        self._views = Views.waiting([source.name for source in self.sources])
        self._merges = MergeCache()
        self._builds = BuildCache()
        # the latest catalog and its generation (a counter that orders changes, `apply`)
        self._latest: tuple[int, Catalog] | None = None
        self._queue: asyncio.Queue[tuple[int, Catalog]] = asyncio.Queue()
        self._fast_wanted = asyncio.Event()
        self._fast_generation = 0  # of the last change the fast lane applied
        self._fast_at = 0.0  # when (event loop time)
        self._fast_applied = asyncio.Event()
        self._fast_seen = asyncio.Condition()  # notified when the fast lane looked at a change
        self._fast_looked = 0  # the generation it last looked at, whether it took it or not
        # the fast lane runs where a target has a runtime API (`_fast_lane`)
        self._fast_running = config.fast_lane and any(r.runtime is not None for r in self.runners)
        self._collector = Collector()
        self._changed = asyncio.Condition()
        self._retry: asyncio.TimerHandle | None = None
        self._failures = 0
        self._logged_rejections: frozenset[str] = frozenset()
        # Read-only HTTP over `status`; `api.address` is published once it listens.
        self.api = StatusApi(lambda: self.status, listen=config.api.listen, token=config.api.token)
        stats = StatsReader(config)
        self.observed = Observed(stats.command if stats.available else None)
        self.api.traffic = self.observed.ask
        self.api.metrics.count_requests(
            lambda: [(s.name, s.requests) for s in self.sources if isinstance(s, Counted)]
        )

    def desired_state(self) -> DesiredState | None:
        """The desired state of the latest catalog (None before every source gave one), for
        what runs beside the daemon (the rollout drivers' gates). Built with the daemon's own
        cache, so an unchanged service costs nothing."""
        if self._latest is None:
            return None
        return build(self._latest[1], self.config.health_mode, self._builds)

    def raw_keys(self) -> RawKeys | None:
        """The raw keys of the latest catalog (None before every source gave one)."""
        return None if self._latest is None else self._latest[1].raw

    async def run(
        self, stop: asyncio.Event, beside: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    ) -> None:
        """Run until `stop` is set, with the tasks `beside` it (they end with it); raises
        whatever ends a task unexpectedly."""
        for runner in self.runners:
            for stale in fsio.remove_stale_stages(runner.config.dest):
                log.warning("removed %s left by an interrupted write", stale)

        log.info(
            "lbsync started: sources %s; targets %s",
            ", ".join(source.name for source in self.sources),
            ", ".join(f"{r.config.name} -> {r.config.dest}" for r in self.runners),
        )

        async def until_stopped() -> None:
            await stop.wait()
            raise _Stopped

        await self.api.start()  # bound before anything runs: a busy port fails the start
        try:
            async with asyncio.TaskGroup() as group:
                for source in self.sources:
                    group.create_task(follow(source, self._accept))
                group.create_task(self._watch_templates())
                group.create_task(self._pipeline())
                if self._fast_running:
                    group.create_task(self._fast_lane())
                if self.api.listen is not None:
                    group.create_task(self.api.serve())
                    group.create_task(self.observed.run(self.desired_state))
                for task in beside:
                    group.create_task(task())
                group.create_task(until_stopped())
        except* _Stopped:
            log.info("lbsync stopped")
        finally:
            if self._retry is not None:
                self._retry.cancel()
            await self.api.stop()
            for runner in self.runners:
                await runner.flush()  # the fast lane's last file
                runner.close()  # its kept runtime API connection

    async def wait_for(self, predicate: Callable[[Status], bool], timeout: float) -> Status:
        """Wait until the status satisfies a predicate (for tests and tools)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.status))
        return self.status

    async def _publish(self, status: Status) -> None:
        self.status = status
        self.api.publish(status)
        async with self._changed:
            self._changed.notify_all()

    async def _accept(self, snapshot: Snapshot) -> None:
        """Keep a source's snapshot; once every source has given a usable one, push the merge."""
        self._views = self._views.accepting(snapshot)
        await self._publish(
            self.status.with_source(
                SourceStatus(
                    name=snapshot.source,
                    synced=self._views.has_synced(snapshot.source),
                    usable=snapshot.usable,
                    error=snapshot.error,
                    changed_at=time.time(),
                    rejected=tuple(str(rejection) for _, rejection in snapshot.rejected),
                )
            )
        )
        if not snapshot.usable:
            log.error("source %s: %s; keeping its last good state", snapshot.source, snapshot.error)
        if self._views.synced:
            self._push(self._views.catalog(self._merges))

    def _push(self, catalog: Catalog) -> None:
        generation = self._latest[0] + 1 if self._latest is not None else 1
        self._latest = (generation, catalog)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._queue.put_nowait(self._latest)
        self._fast_wanted.set()

    async def _watch_templates(self) -> None:
        paths = sorted({runner.config.template for runner in self.runners})
        first = True
        async for _ in changes(paths):
            if not first and self._latest is not None:
                self._push(self._latest[1])
            first = False

    async def _catalogs(self) -> AsyncIterator[tuple[int, Catalog]]:
        while True:
            yield await self._queue.get()

    async def _pipeline(self) -> None:
        """The whole cycle, debounced: every change ends here, the fast lane's too (which it
        confirms byte for byte, or corrects)."""
        catalogs = quiesce(
            self._catalogs(), min_wait=self.config.min_wait, max_wait=self.config.max_wait
        )
        async for queued, latest in catalogs:
            generation, catalog = queued, latest
            if self._fast_running:  # the fast lane goes first: no whole render of its changes
                await self._fast_lane_looked_at(generation)
            if generation <= self._fast_generation:
                generation, catalog = await self._fast_lane_quiet()
            state, reports = await self.cycle(catalog, generation)
            self._collector.after_whole_cycle()  # `collector.py`
            unchanged = all(report.outcome is Outcome.UNCHANGED for report in reports)
            superseded = all(report.plan is None for report in reports)
            if not (unchanged and (superseded or generation <= self._fast_generation)):
                # (a whole render that confirms what the fast lane applied is no news)
                await self._publish(self.status.with_cycle(state, reports))
                self.api.observe(self.status)
            self._after_cycle(catalog, reports)

    async def _fast_lane(self) -> None:
        """Changes to servers alone, applied at once, not debounced: they reload nothing
        (`pipeline/fastlane.py`). A burst is taken as it comes, the latest state each time."""
        while True:
            await self._fast_wanted.wait()
            self._fast_wanted.clear()
            assert self._latest is not None
            generation, catalog = self._latest
            try:
                await self._fast_apply(generation, catalog)
            finally:
                async with self._fast_seen:
                    self._fast_looked = generation
                    self._fast_seen.notify_all()

    async def _fast_apply(self, generation: int, catalog: Catalog) -> None:
        """One change through the fast lane of every target that takes it."""
        state = build(catalog, self.config.health_mode, self._builds)
        reports = {}
        for runner in self.runners:
            report = await runner.apply_fast(state, generation)
            if report is not None:
                log_report(report)
                reports[report.target] = report
        if reports:
            self._fast_generation = generation
            self._fast_at = asyncio.get_running_loop().time()
            self._fast_applied.set()
            kept = tuple(reports.pop(r.target, r) for r in self.status.targets)
            await self._publish(self.status.with_cycle(state, kept + tuple(reports.values())))
            self.api.observe(self.status)

    async def _fast_lane_looked_at(self, generation: int) -> None:
        """Wait until the fast lane looked at this change (or a newer one)."""
        async with self._fast_seen:
            await self._fast_seen.wait_for(lambda: self._fast_looked >= generation)

    async def _fast_lane_quiet(self) -> tuple[int, Catalog]:
        """Wait until the fast lane has been quiet for `CONFIRM_QUIET` (at most `max_wait`);
        the latest catalog then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.config.max_wait, CONFIRM_QUIET)
        quiet_from = self._fast_at + CONFIRM_QUIET
        while (wait := min(quiet_from, deadline) - loop.time()) > 0:
            self._fast_applied.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._fast_applied.wait()
            except TimeoutError:
                break
            quiet_from = self._fast_at + CONFIRM_QUIET
        assert self._latest is not None
        return self._latest

    async def cycle(
        self, catalog: Catalog, generation: int = 0
    ) -> tuple[DesiredState, tuple[ApplyReport, ...]]:
        """Build the desired state and apply it to every target, one after the other."""
        state = build(catalog, self.config.health_mode, self._builds)
        self._log_rejections(state)
        reports = []
        for runner in self.runners:
            report = await runner.apply(state, generation)
            log_report(report)
            reports.append(report)
        return state, tuple(reports)

    def _log_rejections(self, state: DesiredState) -> None:
        current = frozenset(str(rejection) for rejection in state.rejected)
        for message in sorted(current - self._logged_rejections):
            log.error("refused %s; its last good value (if any) stays in force", message)
        self._logged_rejections = current

    def _after_cycle(self, catalog: Catalog, reports: tuple[ApplyReport, ...]) -> None:
        """After a failure, try the same catalog again later, backing off."""
        if not any(report.failed for report in reports):
            self._failures = 0
            return
        self._failures += 1
        delay = RETRY.delay(self._failures)
        log.warning("retrying in %.0fs", delay)
        loop = asyncio.get_running_loop()
        self._retry = loop.call_later(delay, self._retry_now, catalog)

    def _retry_now(self, catalog: Catalog) -> None:
        self._retry = None
        if self._latest is not None and self._latest[1] is catalog:
            self._queue.put_nowait(self._latest)
