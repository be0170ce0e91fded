"""The rollout's record in `services/<svc>/rollout`: its phase and progress, written with
compare-and-swap, so another terminal can pause, resume or abort it and the status shows it.

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
from lbsync.traffic.rollout.spec import ACTIVE, ENDED, Phase, RolloutSpec, phase_of
from lbsync.traffic.splits import SplitError, actor

CONTROL_POLL = 0.2
STORE_PATIENCE = 30.0  # how long a stopping rollout retries an unreachable store


class Aborted(Exception):
    """An operator asked the rollout to stop."""


def _fields(found: Versioned | None) -> dict[str, Any]:
    """A stored record's fields ({} when absent or not a JSON object)."""
    if found is None:
        return {}
    try:
        value = json.loads(found.value)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


class RolloutRecord:
    """The record one running rollout owns: what it last wrote, at which revision."""

    def __init__(self, store: Store, spec: RolloutSpec, start_split: dict[str, Any] | None) -> None:
        self.store = store
        self.spec = spec
        self.start_split = start_split
        self.key = rollout_key(spec.service)
        self.revision = 0

    async def claim(self) -> None:
        """Take the record for this rollout; SplitError when another one is in progress."""
        found = await self.store.get(self.key)
        if phase_of(_fields(found).get("phase")) in ACTIVE:
            raise SplitError(
                f"a rollout of {self.spec.service} is already in progress "
                "(lbsync rollout abort to stop it)"
            )
        self.revision = found.revision if found else 0
        await self.publish(Phase.RUNNING, step=0, share=None)

    async def publish(self, phase: Phase, **fields: Any) -> None:
        """Write the rollout's phase and progress; `Aborted` when an operator asked to abort
        meanwhile (unless this write already ends the rollout)."""
        record = json.dumps(
            {
                "phase": phase.value,
                "to": self.spec.to,
                "steps": list(self.spec.steps),
                "interval": self.spec.interval,
                "start_split": self.start_split,
                "who": actor(),
                "updated": time.time(),
                **fields,
            }
        )
        if not await self.store.put_if(self.key, record, self.revision):
            current = await self.store.get(self.key)
            if phase_of(_fields(current).get("phase")) is Phase.ABORTING and phase not in ENDED:
                raise Aborted("aborted by an operator")
            if current is None or not await self.store.put_if(self.key, record, current.revision):
                raise SplitError(f"the rollout record of {self.spec.service} keeps changing")
        found = await self.store.get(self.key)
        self.revision = found.revision if found else 0

    async def finish(self, phase: Phase, message: str) -> None:
        """Record how the rollout ended, unless another process already did."""
        record = json.dumps(
            {
                "phase": phase.value,
                "to": self.spec.to,
                "steps": list(self.spec.steps),
                "interval": self.spec.interval,
                "start_split": self.start_split,
                "who": actor(),
                "updated": time.time(),
                "message": message,
            }
        )
        if await self.store.put_if(self.key, record, self.revision):
            return
        current = await self.store.get(self.key)
        if phase_of(_fields(current).get("phase")) in ENDED:
            return
        if current is None or not await self.store.put_if(self.key, record, current.revision):
            raise SplitError(f"the rollout record of {self.spec.service} keeps changing")

    async def control(self) -> Phase | None:
        """The phase another process wrote since this rollout's last write, if any."""
        found = await self.store.get(self.key)
        if found is None or found.revision == self.revision:
            return None
        self.revision = found.revision
        return phase_of(_fields(found).get("phase"))


async def request(store: Store, service: str, phase: Phase, *, wait: float = 10.0) -> str:
    """`resume` (a paused rollout runs on) or `abort` (the rollout reverts and stops), from
    another process; for an abort, waits up to `wait` seconds for the rollout to answer."""
    key = rollout_key(service)
    found = await store.get(key)
    record = _fields(found)
    current = phase_of(record.get("phase"))
    if found is None or current not in ACTIVE:
        raise SplitError(f"no rollout of {service} is in progress")
    if phase is Phase.RUNNING and current is not Phase.PAUSED:
        raise SplitError(f"the rollout of {service} is not paused")
    record["phase"] = phase.value
    if not await store.put_if(key, json.dumps(record), found.revision):
        raise SplitError(f"the rollout of {service} changed meanwhile; try again")
    if phase is not Phase.ABORTING:
        return "resumed"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        await asyncio.sleep(CONTROL_POLL)
        answer = _fields(await store.get(key))
        if phase_of(answer.get("phase")) in ENDED:
            return str(answer.get("message", "aborted"))
    return "abort requested; no running rollout answered (its split was left as it is)"
