"""Running one rollout: every step through the gates, or a revert.

Before each step and throughout each interval the gates must hold (`gates.py`). A gate that
fails writes the split back to where the rollout started and the command exits non-zero, like
Nomad's auto_revert; so does every other way a rollout stops before its end: an abort from
another terminal, a source that failed (its watcher ended: the gates would read a state that no
longer follows it), the store failing, a split changed by someone else, Ctrl-C (the task
cancelled). The split is never left mid-way with the record `running` while this process can
reach the store: an unreachable store is retried for `STORE_PATIENCE` seconds first; after
that the record is left to `lbsync rollout abort`, which reverts it (record.py). Each step gives
the target group its share; the other groups (the default group included) keep their
proportions of the rest, as at the start (`spec.step_split`).

Every wait is on the event loop's clock (`loop.time()`, `asyncio.sleep`), so tests run a
rollout of many intervals on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lbsync.common.backoff import Backoff
from lbsync.core.groups import BY_TAG
from lbsync.core.state import ServiceState
from lbsync.kv.store import Store, StoreError
from lbsync.sources.follow import SourceUnusable
from lbsync.traffic.analysis.readings import ReadingError
from lbsync.traffic.analysis.tally import Tally
from lbsync.traffic.rollout.gates import (
    GateFailed,
    check_errors,
    check_health,
    eligible_in,
    members,
)
from lbsync.traffic.rollout.hooks import HookKind
from lbsync.traffic.rollout.inputs import Counters, DesiredStates, Progress
from lbsync.traffic.rollout.judges import Judges, analysed, confirmed, hooked
from lbsync.traffic.rollout.record import (
    CONTROL_POLL,
    DAEMON,
    STORE_PATIENCE,
    Aborted,
    RolloutRecord,
)
from lbsync.traffic.rollout.revert import revert_split
from lbsync.traffic.rollout.spec import ENDED, Phase, RolloutSpec, step_split
from lbsync.traffic.splits import Current, SplitError, read, write

STORE_RETRY = Backoff(first=0.5, cap=5.0)
CLOCK_SLACK = 1e-3
"""An interval ends within this: a float remainder of its deadline smaller than the loop's
clock resolution would be slept as nothing, over and over (a fake clock never moves on)."""
STOPPED = (GateFailed, Aborted, SourceUnusable, SplitError, StoreError)
"""What ends a rollout before its last step and is raised again once the split is back."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class Place:
    """Where the rollout left the split: the revision of its last write, and the step it was
    writing (None between writes), so a revert touches only the rollout's own split."""

    revision: int
    writing: dict[str, Any] | None = None


class Promoted(Exception):
    """An operator asked the rollout to go straight to 100 %."""


class Rollout:
    """One running rollout: its spec, store, gates and progress output."""

    def __init__(
        self,
        *,
        spec: RolloutSpec,
        store: Store,
        states: DesiredStates,
        stats: Counters,
        progress: Progress,
        judges: Judges | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.states = states
        self.stats = stats
        self.progress = progress
        self.judges = judges or Judges()
        self.place = Place(0)  # where the rollout left the split (`_steps` keeps it)

    async def run(self) -> None:
        """In the foreground: every step through the gates, then `done`; stopped before that
        (`STOPPED`, or cancelled: Ctrl-C), the split back where it started and the error
        raised again."""
        start = await read(self.store, self.spec.service)
        record = RolloutRecord(self.store, self.spec, start.value, split_revision=start.revision)
        await record.claim()
        await self._steps(record, start, done=0, place=Place(start.revision), revert_on_cancel=True)

    async def resume(self, record: RolloutRecord) -> None:
        """As a daemon's driver: on from where `record` says the rollout is, through every
        step left, a pause, a promotion or a revert another driver began. Cancelled (the
        lock lost, the daemon stopping), it stops where it is, for the next driver."""
        start = Current(record.start_split, record.progress["start_revision"])
        recorded = Place(record.progress["split_revision"])
        with contextlib.suppress(ReadingError):  # a tally that cannot be read starts again
            self.judges.tally = Tally.from_json(record.progress.get("tally", []))
        phase = record.phase
        record.event(f"driven by {record.driver}")
        if phase is Phase.ABORTING:
            await self._stop(record, start, place=recorded, error=Aborted("aborted by an operator"))
        elif phase is Phase.REVERTING:
            await self._stop(
                record, start, place=recorded, error=GateFailed(record.message or "reverting")
            )
        else:
            done, place = await self._adopted(record, start, recorded)
            await self._steps(record, start, done=done, place=place, revert_on_cancel=False)

    async def _adopted(
        self, record: RolloutRecord, start: Current, recorded: Place
    ) -> tuple[int, Place]:
        """The steps done and where the split is: a step written but not recorded (its
        driver gone in between) is recorded now, never written twice."""
        done: int = record.progress["step"]
        if done >= len(self.spec.steps):
            return done, recorded
        current = await read(self.store, self.spec.service)
        following = step_split(start.value, self.spec.to, self.spec.steps[done])
        if current.revision != recorded.revision and current.value == following:
            done += 1
            record.event(f"step {done} found written, not written again")
            phase = (
                record.phase if record.phase in (Phase.PAUSED, Phase.PROMOTING) else Phase.RUNNING
            )
            await record.publish(
                phase, step=done, share=self.spec.steps[done - 1], split_revision=current.revision
            )
            return done, Place(current.revision)
        return done, recorded

    async def _steps(
        self,
        record: RolloutRecord,
        start: Current,
        *,
        done: int,
        place: Place,
        revert_on_cancel: bool,
    ) -> None:
        """The steps after the first `done`, then `done`; a promotion jumps to 100 %."""
        by = str((start.value or {}).get("by", BY_TAG))
        self.place = place
        try:
            try:
                await self._advance(record, start, done=done, by=by)
            except Promoted:
                number = len(self.spec.steps) + (self.spec.steps[-1] != 100)
                await self._step(record, start, number=number, share=100.0, why="promoted")
            record.event("done")
            await record.publish(Phase.DONE, message="reached the last step")
            await self._told(record, HookKind.POST_ROLLOUT)
        except STOPPED as error:
            await self._stop(record, start, place=self.place, error=error)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            if revert_on_cancel:
                with contextlib.suppress(StoreError):  # said on the progress; left to `abort`
                    await self._end(
                        record, start, self.place, phase=Phase.ABORTED, why="interrupted"
                    )
            raise

    async def _advance(self, record: RolloutRecord, start: Current, *, done: int, by: str) -> None:
        """Through the steps after the first `done`; `Promoted` when a promotion is asked."""
        if record.phase is Phase.PROMOTING:
            raise Promoted
        paused = record.phase is Phase.PAUSED  # found paused: that pause is the one waited for
        if paused:
            await self._paused(record, by)
        self._check_health(by)
        if done == 0:
            await hooked(self.judges, record, HookKind.PRE_ROLLOUT, step=0, share=None)
        for number, share in list(enumerate(self.spec.steps, 1))[done:]:
            if share in self.spec.pause_at and not paused:
                await self._pause(record, share, by)
            paused = False
            self._check_health(by)
            if number == len(self.spec.steps):
                await confirmed(
                    self.judges, record, step=number, share=share, wait=self._watching(record, by)
                )
            await self._step(record, start, number=number, share=share)
            await hooked(self.judges, record, HookKind.STEP, step=number, share=share)
            await self._hold(record, share, by, last=number == len(self.spec.steps))
            await analysed(
                self.judges,
                record,
                servers=[server.name for server in members(self._service(), by, self.spec.to)],
                wait=self._watching(record, by),
                paused=lambda: self._paused(record, by),
            )

    def _watching(self, record: RolloutRecord, by: str) -> Callable[[float], Awaitable[None]]:
        """A wait of some seconds that still answers the record's controls and checks health."""

        async def wait(seconds: float) -> None:
            deadline = asyncio.get_running_loop().time() + seconds
            while (remaining := deadline - asyncio.get_running_loop().time()) > CLOCK_SLACK:
                await asyncio.sleep(min(CONTROL_POLL, remaining))
                if await _controlled(record) is Phase.PAUSED:
                    await self._paused(record, by)
                await record.beat()
                self._check_health(by)

        return wait

    async def _step(
        self,
        record: RolloutRecord,
        start: Current,
        *,
        number: int,
        share: float,
        why: str = "",
    ) -> None:
        """Write one step's split and record it (the record names the step done); `place`
        follows, so a revert from anywhere knows what the rollout wrote."""
        value = step_split(start.value, self.spec.to, share)
        self.place = Place(self.place.revision, writing=value)
        self.place = Place(await self._write_step(self.place.revision, value, share))
        record.event(f"step {number}: {self.spec.to} at {share:g}%" + (f" ({why})" if why else ""))
        await record.publish(
            Phase.RUNNING, step=number, share=share, split_revision=self.place.revision
        )
        self.progress.line(f"step {number}/{len(self.spec.steps)}: {self.spec.to} at {share:g}%")

    async def _stop(
        self, record: RolloutRecord, start: Current, *, place: Place, error: Exception
    ) -> None:
        """The split put back and the end recorded, after `error` stopped the rollout. A
        daemon's rollout records `reverting` first, so a driver that dies meanwhile leaves
        the revert to the next one."""
        phase = Phase.ABORTED if isinstance(error, Aborted) else Phase.REVERTED
        failed = isinstance(error, StoreError)
        record.event(f"stopped: {error}")
        if record.mode == DAEMON and not failed:
            with contextlib.suppress(Aborted, SplitError, StoreError):
                await record.publish(Phase.REVERTING, message=str(error))
        await self._end(record, start, place, phase=phase, why=str(error), store=failed)
        await self._told(record, HookKind.ROLLBACK)

    async def _told(self, record: RolloutRecord, kind: HookKind) -> None:
        """Hooks told how the rollout ended; their answer changes nothing (said in the log)."""
        share = record.progress.get("share")
        step = record.progress.get("step", 0)
        with contextlib.suppress(GateFailed, StoreError, SplitError, Aborted):
            found = await hooked(self.judges, record, kind, step=step, share=share)
            if found is not None:
                self.progress.line(f"{kind.value} hooks: {found.message}")

    def _service(self) -> ServiceState | None:
        return self.states.state().service(self.spec.service)

    def _check_health(self, by: str) -> int:
        eligible = eligible_in(self._service(), by, self.spec.to)
        check_health(eligible, group=self.spec.to, min_healthy=self.spec.min_healthy)
        return eligible

    async def _write_step(self, revision: int, value: dict[str, Any], share: float) -> int:
        """Write one step's split over the rollout's own (at `revision`); the split's new
        revision (0 when another write followed at once: the next step or a revert then sees
        someone else's split)."""
        current = await read(self.store, self.spec.service)
        if current.revision != revision:
            raise GateFailed(
                f"the split of {self.spec.service} was changed by someone else during the rollout"
            )
        await write(
            self.store,
            self.spec.service,
            value,
            known=set(value["groups"]),
            expect_revision=None,
            reason=self.spec.reason or f"rollout to {self.spec.to}: {share:g}%",
            current=current,
        )
        written = await read(self.store, self.spec.service)
        return written.revision if written.value == value else 0

    async def _hold(self, record: RolloutRecord, share: float, by: str, *, last: bool) -> None:
        """Keep checking the gates for one interval (the last step: one interval too); a
        pause asked for meanwhile waits for its resume, then the interval starts again."""
        loop = asyncio.get_running_loop()
        servers = {server.name for server in members(self._service(), by, self.spec.to)}
        before = await self.stats.counts(self.spec.service, servers)
        deadline = loop.time() + self.spec.interval
        while (remaining := deadline - loop.time()) > CLOCK_SLACK:
            await asyncio.sleep(min(CONTROL_POLL, remaining))
            phase = await _controlled(record)
            if phase is Phase.PAUSED:
                await self._paused(record, by)
                before = await self.stats.counts(self.spec.service, servers)
                deadline = loop.time() + self.spec.interval
                continue
            await record.beat()
            eligible = self._check_health(by)
            reading = await self.stats.counts(self.spec.service, servers)
            ratio, total = check_errors(
                before, reading, group=self.spec.to, max_error_rate=self.spec.max_error_rate
            )
            self.progress.status(
                f"{self.spec.to} at {share:g}%: {eligible} eligible, errors {ratio:.1%} of "
                f"{total} responses, {'done' if last else 'next step'} in {remaining:.0f}s"
            )

    async def _pause(self, record: RolloutRecord, share: float, by: str) -> None:
        record.event(f"paused before {share:g}%")
        await record.publish(Phase.PAUSED, share=share, message=f"paused before {share:g}%")
        self.progress.line(f"paused before {share:g}%: lbsync rollout resume {self.spec.service}")
        await self._paused(record, by)

    async def _paused(self, record: RolloutRecord, by: str) -> None:
        """Wait for a resume (the gates still checked); a promotion ends the wait too."""
        while True:
            await asyncio.sleep(CONTROL_POLL)
            phase = await _controlled(record)
            if phase is Phase.RUNNING:
                record.event("resumed")
                self.progress.line("resumed")
                return
            await record.beat()
            self._check_health(by)

    async def _end(
        self,
        record: RolloutRecord,
        start: Current,
        place: Place,
        *,
        phase: Phase,
        why: str,
        store: bool = False,
    ) -> None:
        """Put the split back where the rollout started and record `phase`, retrying an
        unreachable store for up to `STORE_PATIENCE` seconds (`store`: the store failure is
        why); `StoreError` when it never answered (the record is then left for `abort`)."""
        if store:
            self.progress.line(
                f"{why}; reverting, retrying the store for up to {STORE_PATIENCE:g}s"
            )
        deadline = asyncio.get_running_loop().time() + STORE_PATIENCE
        outcome: str | None = None
        try:
            outcome = await _patiently(
                lambda: revert_split(
                    self.store,
                    self.spec.service,
                    start=start.value,
                    revision=place.revision,
                    writing=place.writing,
                    reason=f"rollout reverted: {why}",
                ),
                deadline,
            )
            message = f"{why}; {outcome}"
            with contextlib.suppress(SplitError):
                await _patiently(lambda: record.finish(phase, message), deadline)
        except StoreError as error:
            silent = f"the store did not answer for {STORE_PATIENCE:g}s"
            silent += "" if store else f" ({error})"  # a store error as `why` says it already
            clear = f"once it answers, `lbsync rollout abort {self.spec.service}`"
            message = (
                f"{why}; {silent}: the split may be left mid-way and the record running; "
                f"{clear} reverts it"
                if outcome is None
                else f"{why}; {outcome}, but {silent} to record it; {clear} clears the record"
            )
            self.progress.line(message)
            raise StoreError(message) from error
        self.progress.line(message)


async def _controlled(record: RolloutRecord) -> Phase | None:
    """The phase another process wrote, if any; `Aborted` for an abort or an ending,
    `Promoted` for a promotion."""
    phase = await record.control()
    if phase is Phase.ABORTING:
        raise Aborted("aborted by an operator")
    if phase in ENDED:
        raise Aborted("ended by another process")
    if phase is Phase.PROMOTING:
        raise Promoted
    return phase


async def _patiently(action: Callable[[], Awaitable[_T]], deadline: float) -> _T:
    """`action()`, tried again after each `StoreError` until `deadline` (the loop's clock)."""
    loop = asyncio.get_running_loop()
    rng = random.Random()
    failures = 0
    while True:
        try:
            return await action()
        except StoreError:
            failures += 1
            delay = STORE_RETRY.delay(failures, rng=rng)
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
