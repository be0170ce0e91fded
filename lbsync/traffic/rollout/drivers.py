"""Rollouts driven by the daemons: `lbsync rollout start` writes a record and returns, and of
all the daemons watching the same store, the one holding the service's driver lock
(`services/<svc>/rollout-driver`, `kv/locks.py`) drives it on from where the record says it
is (`Rollout.resume`).

Every daemon looks at the rollout records its sources show (each `POLL` seconds) and contends
for the lock of every record a daemon is to drive that is still active. The holder drives; the
others try again every tenth of the lease's TTL. When the holder dies its lease runs out and
another daemon takes the lock, reads the record and goes on: a step the record names is never
written again, a step written but not yet recorded is recorded (`Rollout._adopted`), and a
revert or an abort the record names is finished. A driver that loses its lock (the store out
of reach for most of a TTL) stops where it is, before another can have it, and reverts
nothing: the next driver decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable

from lbsync.config.schema import AnalysisConfig
from lbsync.core.state import DesiredState
from lbsync.kv.locks import HeldLock, LockError, Locks
from lbsync.kv.store import Store, StoreError
from lbsync.model.keys import driver_key, rollout_key
from lbsync.model.values import RawKeys
from lbsync.traffic.rollout.driver import STOPPED, Rollout
from lbsync.traffic.rollout.inputs import Counters
from lbsync.traffic.rollout.judges import judges_for
from lbsync.traffic.rollout.record import DAEMON, RolloutRecord
from lbsync.traffic.rollout.spec import ACTIVE, phase_of
from lbsync.traffic.splits import SplitError

log = logging.getLogger(__name__)

POLL = 1.0
STORE_RETRY = 2.0
RETRIES_PER_TTL = 10  # a free lock is taken within a tenth of the TTL of its holder's death


def holder_name() -> str:
    """Who holds a lock: the host and the process, so that an operator can tell which one."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def driven_services(raw: RawKeys) -> list[str]:
    """The services whose rollout record asks the daemons to drive it and is still active."""
    services = []
    for part in raw.parts:
        service = part.removeprefix("services/")
        if not part or service == part:
            continue
        text = raw.get(rollout_key(service))
        if text is not None and _active(text):
            services.append(service)
    return services


class LogProgress:
    """A driven rollout's progress, in the daemon's log."""

    def __init__(self, service: str) -> None:
        self.service = service

    def line(self, text: str) -> None:
        log.info("rollout of %s: %s", self.service, text)

    def status(self, text: str) -> None:
        log.debug("rollout of %s: %s", self.service, text)


class _States:
    """The daemon's desired state as the gates read it."""

    def __init__(self, state: Callable[[], DesiredState | None]) -> None:
        self._state = state

    def state(self) -> DesiredState:
        found = self._state()
        if found is None:
            raise SplitError("the daemon has no desired state yet")
        return found


class Drivers:
    """The rollouts this daemon contends for, and drives while it holds their locks."""

    def __init__(
        self,
        *,
        store: Store,
        locks: Locks,
        state: Callable[[], DesiredState | None],
        raw: Callable[[], RawKeys | None],
        stats: Counters,
        ttl: float,
        analysis: AnalysisConfig | None = None,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.locks = locks
        self.raw = raw  # the records are looked for in the raw keys: no state built for it
        self.states = _States(state)
        self.stats = stats
        self.ttl = ttl
        self.analysis = analysis or AnalysisConfig()
        self.holder = holder or holder_name()
        self._contending: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Contend for every active daemons' rollout the sources show, until cancelled."""
        try:
            while True:
                try:
                    self._look()
                except Exception:  # the bulkhead: the daemon goes on serving whatever this is
                    log.exception("rollout drivers: cannot read the rollout records")
                await asyncio.sleep(POLL)
        finally:
            for task in self._contending.values():
                task.cancel()
            for task in self._contending.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _look(self) -> None:
        """A contender for every active daemons' rollout without one."""
        found = self.raw()
        for service in driven_services(found) if found is not None else ():
            task = self._contending.get(service)
            if task is not None and task.done() and not task.cancelled():
                _said(service, task)
            if task is None or task.done():
                self._contending[service] = asyncio.create_task(self._contend(service))

    async def _contend(self, service: str) -> None:
        """Take the service's lock when it is free and drive the rollout while holding it;
        return once the record is no longer an active daemons' rollout."""
        while True:
            try:
                found = await self.store.get(rollout_key(service))
                if found is None or not _active(found.value):
                    return
                lock = await self.locks.acquire(driver_key(service), self.holder, self.ttl)
            except (StoreError, LockError) as error:
                log.warning("rollout of %s: %s; trying again", service, error)
                await asyncio.sleep(STORE_RETRY)
                continue
            if lock is None:
                await asyncio.sleep(self.ttl / RETRIES_PER_TTL)
                continue
            try:
                if await self._drive(service, lock):
                    return
            finally:
                await lock.release()

    async def _drive(self, service: str, lock: HeldLock) -> bool:
        """Drive the rollout while the lock is held; whether it came to an end."""
        try:
            found = await self.store.get(rollout_key(service))
            if found is None or not _active(found.value):
                return True
            record = RolloutRecord.resumed(self.store, service, found)
            judges = judges_for(record.spec, self.analysis)
        except StoreError as error:
            log.warning("rollout of %s: %s; trying again", service, error)
            return False
        except SplitError as error:
            log.warning("rollout of %s cannot be driven: %s", service, error)
            return True
        record.driver = self.holder
        log.info("rollout of %s: driven here (%s)", service, self.holder)
        rollout = Rollout(
            spec=record.spec,
            store=self.store,
            states=self.states,
            stats=self.stats,
            progress=LogProgress(service),
            judges=judges,
        )
        driving = asyncio.create_task(rollout.resume(record))
        lost = asyncio.create_task(lock.lost.wait())
        try:
            await asyncio.wait({driving, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not driving.done():
            log.warning("rollout of %s: the driver lock was lost; stopping here", service)
            driving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driving
            return False
        try:
            driving.result()
        except STOPPED as error:
            log.warning("rollout of %s stopped: %s", service, error)
        except SplitError as error:
            log.warning("rollout of %s: %s", service, error)
        else:
            log.info("rollout of %s complete", service)
        return True


def _said(service: str, task: asyncio.Task[None]) -> None:
    """Log what ended a contender unexpectedly (it is started again)."""
    error = task.exception()
    if error is not None:
        log.error("rollout of %s: %r; contending again", service, error)


def _active(text: str) -> bool:
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(fields, dict)
        and fields.get("mode") == DAEMON
        and phase_of(fields.get("phase")) in ACTIVE
    )
