"""The decision: what a target needs, from the rendered file, the file on disk and what runs (pure).

Four outcomes:
- NOTHING: the proxy runs these bytes and they are on disk;
- RUNTIME: the rendered file differs from the running one only where HAProxy's runtime API can
  act: server weights, servers joining or leaving a dynamic backend (see `haproxy.operations`);
  the file is still written (validated unless only weights changed from a file this process
  validated) and then the operations are sent, so a later reload keeps everything;
- RELOAD: the file on disk is right but the proxy may not run it (e.g. a reload that could not
  be confirmed);
- FULL: validate, write, reload.

`running` is what the proxy is known to run (None when unknown). Its `layout` is present only
for targets with a runtime API; without one every change is FULL, as for nginx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lbsync.haproxy.blocks import Blocks
from lbsync.haproxy.layout import Layout
from lbsync.haproxy.operations import NotRuntime, Operation, SetWeight, runtime_changes


class Plan(StrEnum):
    """What one cycle does to one target."""

    NOTHING = "nothing"
    RUNTIME = "runtime"
    RELOAD = "reload"
    FULL = "full"


@dataclass(frozen=True)
class Running:
    """What the proxy is known to run: the bytes, their layout (targets with a runtime API)
    and whether this process validated them (or derived them from validated bytes by weight
    changes only)."""

    content: bytes
    layout: Layout | None = None
    validated: bool = False
    # where its backends' server lines are (targets with a runtime API), for the fast lane
    blocks: Blocks | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Decision:
    """A plan and what it takes: the runtime operations, whether the file must be written, whether
    the validator must see it first, and why a change cannot go through the runtime API.

    A RUNTIME plan skips the validator only when the running file was validated and only weights
    change: the new file then differs from a valid one in nothing but integers 0-256 after
    `weight` on server lines, and HAProxy accepts any of them there."""

    plan: Plan
    operations: tuple[Operation, ...] = ()
    write: bool = False
    validate: bool = False
    reason: str = ""


def decide(
    rendered: bytes,
    *,
    on_disk: bytes | None,
    running: Running | None,
    layout: Layout | None = None,
) -> Decision:
    """Decide one target's cycle. `layout` is the rendered file's layout, given only for targets
    with a runtime API."""
    write = rendered != on_disk
    if running is not None and rendered == running.content and not write:
        return Decision(Plan.NOTHING)
    if running is None:
        reason = "what the proxy runs is not known"
    elif layout is None or running.layout is None:
        reason = "no runtime API"
    else:
        try:
            operations = runtime_changes(running.layout, layout)
        except NotRuntime as error:
            reason = str(error)
        else:
            weights_only = all(isinstance(each, SetWeight) for each in operations)
            return Decision(
                Plan.RUNTIME,
                operations,
                write=write,
                validate=not (running.validated and weights_only),
            )
    if write:
        return Decision(Plan.FULL, write=True, validate=True, reason=reason)
    return Decision(Plan.RELOAD, reason=reason)
