"""Putting a split back where a rollout started: by the rollout itself when it stops, or by
`lbsync rollout abort` when no running rollout is left to do it.

Only a split the rollout put there is reverted: one still at the revision the rollout last
wrote (or recorded), or one holding exactly the step it was writing when it stopped (killed
between writing a step and recording it). A change anyone else made meanwhile is left alone,
and the returned sentence says which it was.
"""

from __future__ import annotations

from typing import Any

from lbsync.kv.store import Store
from lbsync.traffic.splits import ConcurrentChange, SplitError, read, write

REVERTED = "split reverted to where the rollout started"


async def revert_split(
    store: Store,
    service: str,
    *,
    start: dict[str, Any] | None,
    revision: int | None,
    writing: dict[str, Any] | None,
    reason: str,
) -> str:
    """Write `start` back if the split is still the rollout's (at `revision`, or equal to the
    step it was `writing`); what was done, as a sentence. `StoreError` when the store fails."""
    if start is None:
        return "split left as it is (there was none when the rollout started)"
    current = await read(store, service)
    if current.value == start:
        return "split already where the rollout started"
    if current.revision != revision and (writing is None or current.value != writing):
        return "split left as it is (someone else changed it)"
    try:
        await write(
            store,
            service,
            start,
            known=set(start.get("groups", {})),
            expect_revision=None,
            reason=reason,
            current=current,
        )
    except ConcurrentChange:
        return "split left as it is (someone else changed it meanwhile)"
    except SplitError as error:
        return f"split not reverted cleanly: {error}"
    return REVERTED
