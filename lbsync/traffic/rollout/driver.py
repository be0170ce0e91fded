"""Running one rollout: every step through the gates, or a revert.

Before each step and throughout each interval the gates must hold (`gates.py`). A gate that
fails writes the split back to where the rollout started and the command exits non-zero, like
Nomad's auto_revert; so does an abort from another terminal. Each step gives the target group
its share; the other groups (the default group included) keep their proportions of the rest,
as at the start (`spec.step_split`).

Every wait is on the event loop's clock (`loop.time()`, `asyncio.sleep`), so tests run a
rollout of many intervals on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from lbsync.core.groups import BY_TAG
from lbsync.core.state import DesiredState, ServiceState, build
from lbsync.haproxy.stats import ErrorCounts
from lbsync.kv.store import Store
from lbsync.model.keys import split_key
from lbsync.model.values import HealthMode
from lbsync.sources.follow import Following
from lbsync.traffic.rollout.gates import (
    GateFailed,
    check_errors,
    check_health,
    eligible_in,
    members,
)
from lbsync.traffic.rollout.record import CONTROL_POLL, Aborted, RolloutRecord
from lbsync.traffic.rollout.spec import Phase, RolloutSpec, step_split
from lbsync.traffic.splits import Current, SplitError, read, write

CLOCK_SLACK = 1e-3
"""An interval ends within this: a float remainder of its deadline smaller than the loop's
clock resolution would be slept as nothing, over and over (a fake clock never moves on)."""


class Progress(Protocol):
    """Where a rollout says what it does (a terminal, a log)."""

    def line(self, text: str) -> None:
        """An event worth keeping: a step, a pause, a revert."""

    def status(self, text: str) -> None:
        """The gates' current reading."""


class Counters(Protocol):
    """HAProxy's counters of some servers (`haproxy.stats.StatsReader`)."""

    async def counts(self, backend: str, servers: set[str]) -> ErrorCounts | None:
        """The servers' counters, or None when no runtime API can be reached."""
        ...


class DesiredStates(Protocol):
    """The desired state as the daemon would see it now."""

    def state(self) -> DesiredState:
        """The current desired state; raises when a source failed."""
        ...


class FollowedStates:
    """Desired states built from followed sources, as the daemon builds them."""

    def __init__(self, following: Following, mode: HealthMode) -> None:
        self.following = following
        self.mode = mode

    def state(self) -> DesiredState:
        """The desired state of the sources' current catalog."""
        return build(self.following.catalog(), self.mode)


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
    ) -> None:
        self.spec = spec
        self.store = store
        self.states = states
        self.stats = stats
        self.progress = progress

    async def run(self) -> None:
        """Every step through the gates, or revert and raise `GateFailed` or `Aborted`."""
        start = await read(self.store, self.spec.service)
        record = RolloutRecord(self.store, self.spec, start.value)
        await record.claim()
        by = str((start.value or {}).get("by", BY_TAG))
        revision = start.revision
        try:
            self._check_health(by)
            for number, share in enumerate(self.spec.steps, 1):
                if share in self.spec.pause_at:
                    await self._pause(record, share, by)
                self._check_health(by)
                revision = await self._write_step(start, revision, share)
                await record.publish(Phase.RUNNING, step=number, share=share)
                self.progress.line(
                    f"step {number}/{len(self.spec.steps)}: {self.spec.to} at {share:g}%"
                )
                await self._hold(record, share, by, last=number == len(self.spec.steps))
        except (GateFailed, Aborted) as error:
            await self._revert(record, start, revision=revision, error=error)
            raise
        await record.publish(Phase.DONE, message="reached the last step")

    def _service(self) -> ServiceState | None:
        return self.states.state().service(self.spec.service)

    def _check_health(self, by: str) -> int:
        eligible = eligible_in(self._service(), by, self.spec.to)
        check_health(eligible, group=self.spec.to, min_healthy=self.spec.min_healthy)
        return eligible

    async def _write_step(self, start: Current, revision: int, share: float) -> int:
        """Write one step's split; the split's new revision."""
        value = step_split(start.value, self.spec.to, share)
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
        found = await self.store.get(split_key(self.spec.service))
        return found.revision if found else 0

    async def _hold(self, record: RolloutRecord, share: float, by: str, *, last: bool) -> None:
        """Keep checking the gates for one interval (the last step: one interval too)."""
        loop = asyncio.get_running_loop()
        servers = {server.name for server in members(self._service(), by, self.spec.to)}
        before = await self.stats.counts(self.spec.service, servers)
        deadline = loop.time() + self.spec.interval
        while (remaining := deadline - loop.time()) > CLOCK_SLACK:
            await asyncio.sleep(min(CONTROL_POLL, remaining))
            if await record.control() is Phase.ABORTING:
                raise Aborted("aborted by an operator")
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
        await record.publish(Phase.PAUSED, share=share, message=f"paused before {share:g}%")
        self.progress.line(f"paused before {share:g}%: lbsync rollout resume {self.spec.service}")
        while True:
            await asyncio.sleep(CONTROL_POLL)
            phase = await record.control()
            if phase is Phase.RUNNING:
                self.progress.line("resumed")
                return
            if phase is Phase.ABORTING:
                raise Aborted("aborted by an operator")
            self._check_health(by)

    async def _revert(
        self, record: RolloutRecord, start: Current, *, revision: int, error: Exception
    ) -> None:
        current = await read(self.store, self.spec.service)
        phase = Phase.ABORTED if isinstance(error, Aborted) else Phase.REVERTED
        if current.revision == revision and start.value is not None:
            await write(
                self.store,
                self.spec.service,
                start.value,
                known=set(start.value.get("groups", {})),
                expect_revision=None,
                reason=f"rollout reverted: {error}",
                current=current,
            )
            message = f"{error}; split reverted to where the rollout started"
        else:
            message = f"{error}; split left as it is (someone else changed it)"
        self.progress.line(message)
        with contextlib.suppress(Aborted, SplitError):
            await record.publish(phase, message=message)
