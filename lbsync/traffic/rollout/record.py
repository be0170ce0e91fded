"""The rollout's record in `services/<svc>/rollout`: its phase and progress, written with
compare-and-swap, so another terminal can pause, resume or abort it and the status shows it.

The record must never outlive its runner as a lock: a running rollout rewrites it at each step
and at least every `heartbeat(interval)` while it waits (`updated`), with the split's revision
it last wrote (`split_revision`). A record not rewritten for `stale_after(interval)` was left
by a runner that died; `abort` then reverts the split itself, if it is still the rollout's, and
records `aborted`, as it does when no running rollout answers its request in time.

Anyone can write the key, so what is read back is decoded defensively: a record that is not a
JSON object has no phase.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from lbsync.kv.store import Store, Versioned
from lbsync.model.keys import rollout_key
from lbsync.traffic.rollout.revert import revert_split
from lbsync.traffic.rollout.spec import (
    ACTIVE,
    ENDED,
    Phase,
    RolloutSpec,
    from_record,
    phase_of,
    step_split,
)
from lbsync.traffic.splits import SplitError, actor

CONTROL_POLL = 0.2
FOREGROUND = "foreground"
DAEMON = "daemon"
MAX_EVENTS = 100
HEARTBEAT_MAX = 30.0
STORE_PATIENCE = 30.0  # how long a stopping rollout retries an unreachable store
REQUEST_ATTEMPTS = 5


class Aborted(Exception):
    """An operator asked the rollout to stop, or another process ended it."""


def heartbeat(interval: float) -> float:
    """How often a waiting rollout rewrites its record: every interval, within 1 to 30 s."""
    return min(max(interval, 1.0), HEARTBEAT_MAX)


def stale_after(interval: float) -> float:
    """How old a live rollout's record can get: two heartbeats, plus the time it may spend
    retrying an unreachable store before it gives up."""
    return 2 * heartbeat(interval) + STORE_PATIENCE


def _fields(found: Versioned | None) -> dict[str, Any]:
    """A stored record's fields ({} when absent or not a JSON object)."""
    return {} if found is None else _fields_of(found.value)


def _fields_of(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def silence(fields: dict[str, Any], now: float) -> float | None:
    """Seconds since the record's runner last wrote it, when that is longer than a live
    runner ever stays silent (a record without `updated` or `interval` was never a live
    runner's: infinite); None while it may still be running."""
    updated, interval = _number(fields.get("updated")), _number(fields.get("interval"))
    if updated is None or interval is None:
        return float("inf")
    return now - updated if now - updated > stale_after(interval) else None


def _silent(quiet: float) -> str:
    return f"for {quiet:.0f}s" if quiet != float("inf") else "(the record has no time)"


def busy(service: str, fields: dict[str, Any], now: float) -> str:
    """Why a new rollout of `service` cannot start, and how to clear the record."""
    who = fields.get("who") or "someone"
    quiet = silence(fields, now)
    if quiet is None:
        return f"a rollout of {service} by {who} is in progress (lbsync rollout abort {service})"
    return (
        f"a rollout of {service} by {who} was left {fields.get('phase')} and its runner has not "
        f"written its record {_silent(quiet)}, so it is gone: `lbsync rollout abort {service}` "
        "reverts its split (if still the rollout's) and clears the record"
    )


class RolloutRecord:
    """The record one running rollout owns: what it last wrote, at which revision."""

    def __init__(
        self,
        store: Store,
        spec: RolloutSpec,
        start_split: dict[str, Any] | None,
        *,
        split_revision: int,
        mode: str = FOREGROUND,
    ) -> None:
        """`split_revision`: the split's, as the rollout found it; `mode`: `foreground` (the
        process that started it drives it) or `daemon` (the daemons elect a driver)."""
        self.store = store
        self.spec = spec
        self.start_split = start_split
        self.mode = mode
        self.key = rollout_key(spec.service)
        self.revision = 0
        self.progress: dict[str, Any] = {
            "step": 0,
            "share": None,
            "split_revision": split_revision,
            "start_revision": split_revision,
        }
        self.events: list[dict[str, Any]] = []
        self.driver: str | None = None
        self.last = ""
        self.written = -float("inf")

    @classmethod
    def resumed(cls, store: Store, service: str, found: Versioned) -> RolloutRecord:
        """A daemon's handle on a stored record it is to drive on, at the record's revision;
        SplitError when the record cannot be driven (not JSON, not a daemon's, a spec field
        missing or wrong)."""
        fields = _fields(found)
        if fields.get("mode") != DAEMON:
            raise SplitError(f"the rollout record of {service} is not driven by the daemons")
        start = fields.get("start_split")
        revisions = [fields.get(name) for name in ("split_revision", "start_revision")]
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in revisions):
            raise SplitError(f"the rollout record of {service} has no split revision")
        record = cls(
            store,
            from_record(service, fields),
            start if isinstance(start, dict) else None,
            split_revision=0,
            mode=DAEMON,
        )
        step, share = fields.get("step"), _number(fields.get("share"))
        record.progress = {
            "step": step if isinstance(step, int) and not isinstance(step, bool) else 0,
            "share": share,
            "split_revision": revisions[0],
            "start_revision": revisions[1],
        }
        events = fields.get("events")
        record.events = (
            [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
        )
        record.revision, record.last = found.revision, found.value
        return record

    @property
    def phase(self) -> Phase | None:
        """The phase of the record as this process last wrote or read it."""
        return phase_of(_fields_of(self.last).get("phase"))

    @property
    def message(self) -> str:
        """The message of the record as last written or read."""
        return str(_fields_of(self.last).get("message") or "")

    def event(self, what: str) -> None:
        """Keep `what` in the record's timeline (written with the next publish)."""
        entry = {"at": round(time.time(), 3), "what": what, "by": self.driver or actor()}
        self.events = [*self.events, entry][-MAX_EVENTS:]

    async def claim(self) -> None:
        """Take the record for this rollout; SplitError when another one holds it."""
        found = await self.store.get(self.key)
        fields = _fields(found)
        if phase_of(fields.get("phase")) in ACTIVE:
            raise SplitError(busy(self.spec.service, fields, time.time()))
        self.revision = found.revision if found else 0
        self.event(
            f"started: {self.spec.to} in steps {', '.join(f'{s:g}%' for s in self.spec.steps)}"
        )
        await self.publish(Phase.RUNNING)

    def _text(self, phase: Phase, message: str | None) -> str:
        return json.dumps(
            {
                "phase": phase.value,
                **self.spec.fields(),
                "start_split": self.start_split,
                "mode": self.mode,
                "who": actor(),
                "updated": time.time(),
                **self.progress,
                **({"driver": self.driver} if self.driver else {}),
                **({"message": message} if message else {}),
                "events": self.events,
            }
        )

    async def _put(self, text: str, expect: int) -> bool:
        """Compare-and-swap; on success the revision of this write (0 when another write came
        right after it, so that `control` reports that one)."""
        if not await self.store.put_if(self.key, text, expect):
            return False
        found = await self.store.get(self.key)
        self.revision = found.revision if found is not None and found.value == text else 0
        self.last = text
        self.written = asyncio.get_running_loop().time()
        return True

    async def publish(self, phase: Phase, *, message: str | None = None, **progress: Any) -> None:
        """Write the phase and progress (`step`, `share`, `split_revision` carry over from the
        last write); `Aborted` when an operator asked to abort or another process ended the
        rollout meanwhile."""
        self.progress = {**self.progress, **progress}
        text = self._text(phase, message)
        if await self._put(text, self.revision):
            return
        current = await self.store.get(self.key)
        found = phase_of(_fields(current).get("phase"))
        if found is Phase.ABORTING:
            raise Aborted("aborted by an operator")
        if found in ENDED:
            raise Aborted(f"ended by another process: {_fields(current).get('message')}")
        if current is None or not await self._put(text, current.revision):
            raise SplitError(f"the rollout record of {self.spec.service} keeps changing")

    async def finish(self, phase: Phase, message: str) -> None:
        """Record how the rollout ended, unless another process already did."""
        text = self._text(phase, message)
        if await self._put(text, self.revision):
            return
        current = await self.store.get(self.key)
        if phase_of(_fields(current).get("phase")) in ENDED:
            return
        if current is None or not await self._put(text, current.revision):
            raise SplitError(f"the rollout record of {self.spec.service} keeps changing")

    async def beat(self) -> None:
        """Rewrite the last record when a heartbeat is due; a write by another process wins
        (the next `control` reads it)."""
        due = asyncio.get_running_loop().time() - self.written >= heartbeat(self.spec.interval)
        if due and self.last:
            fields = {**json.loads(self.last), "updated": time.time()}
            await self._put(json.dumps(fields), self.revision)

    async def control(self) -> Phase | None:
        """The phase another process wrote since this rollout's last write, if any."""
        found = await self.store.get(self.key)
        if found is None or found.revision == self.revision:
            return None
        self.revision, self.last = found.revision, found.value
        return phase_of(_fields(found).get("phase"))


REQUESTED = {
    Phase.RUNNING: (frozenset({Phase.PAUSED}), "is not paused", "resumed"),
    Phase.PAUSED: (frozenset({Phase.RUNNING}), "is not running", "pausing"),
    Phase.PROMOTING: (
        frozenset({Phase.RUNNING, Phase.PAUSED}),
        "cannot be promoted now",
        "promoting",
    ),
    Phase.ABORTING: (ACTIVE, "", "aborting"),
}
"""What each request asks of a phase: the phases it applies to, why not, what it says."""


async def request(store: Store, service: str, phase: Phase, *, wait: float = 10.0) -> str:
    """`resume` (a paused rollout runs on), `pause`, `promote` (straight to 100 %) or `abort`
    (the rollout reverts and stops), from another process. An abort waits up to `wait` seconds
    for the rollout's driver to answer; when none does, or the record of a foreground rollout
    shows its runner is gone, it reverts the split here. A daemons' rollout without a live
    driver is driven on by the next daemon that starts, so the other requests wait for it."""
    key = rollout_key(service)
    allowed, refusal, said = REQUESTED[phase]
    for _ in range(REQUEST_ATTEMPTS):  # a running rollout's heartbeat may write in between
        found = await store.get(key)
        record = _fields(found)
        current = phase_of(record.get("phase"))
        if found is None or current not in ACTIVE:
            raise SplitError(f"no rollout of {service} is in progress")
        if current not in allowed:
            raise SplitError(f"the rollout of {service} {refusal}")
        quiet = silence(record, time.time()) if record.get("mode") != DAEMON else None
        if phase is not Phase.ABORTING and quiet is not None:
            raise SplitError(busy(service, record, time.time()))
        if quiet is not None:
            return await take_over(store, service, found, why=f"its runner silent {_silent(quiet)}")
        if await store.put_if(key, json.dumps({**record, "phase": phase.value}), found.revision):
            break
    else:
        raise SplitError(f"the rollout record of {service} keeps changing; try again")
    if phase is not Phase.ABORTING:
        return said
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        await asyncio.sleep(CONTROL_POLL)
        found = await store.get(key)
        answer = _fields(found)
        if phase_of(answer.get("phase")) in ENDED:
            return str(answer.get("message", "aborted"))
    return await take_over(store, service, found, why=f"no running rollout answered in {wait:g}s")


def _writing(record: dict[str, Any]) -> dict[str, Any] | None:
    """The split of the step after the recorded one: what a runner killed between writing a
    step and recording it left."""
    start, to, steps = record.get("start_split"), record.get("to"), record.get("steps")
    if not isinstance(start, dict) or not isinstance(to, str) or not isinstance(steps, list):
        return None
    share = _number(record.get("share"))
    later = [s for s in steps if _number(s) is not None and (share is None or s > share)]
    return step_split(start, to, float(later[0])) if later else None


async def take_over(store: Store, service: str, found: Versioned | None, *, why: str) -> str:
    """End a rollout whose runner is gone: its split reverted if still the rollout's, its
    record `aborted`; what was done, as a sentence."""
    record = _fields(found)
    if found is None or phase_of(record.get("phase")) not in ACTIVE:
        raise SplitError(f"the rollout record of {service} changed meanwhile; try again")
    start, revision = record.get("start_split"), record.get("split_revision")
    outcome = await revert_split(
        store,
        service,
        start=start if isinstance(start, dict) else None,
        revision=revision if isinstance(revision, int) else None,
        writing=_writing(record),
        reason=f"rollout aborted: {why}",
    )
    message = f"aborted ({why}); {outcome}"
    ended = {**record, "phase": Phase.ABORTED.value, "message": message, "ended_by": actor()}
    if not await store.put_if(rollout_key(service), json.dumps(ended), found.revision):
        answer = _fields(await store.get(rollout_key(service)))
        if phase_of(answer.get("phase")) in ENDED:  # its runner answered after all
            return str(answer.get("message", "aborted"))
        raise SplitError(f"the rollout record of {service} changed meanwhile; {outcome}")
    return message
