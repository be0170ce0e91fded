"""The typed record every target's cycle ends in; it feeds the status, metrics and logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lbsync.pipeline.decision import Plan


class Outcome(StrEnum):
    """How one cycle ended for one target."""

    UNCHANGED = "unchanged"
    APPLIED = "applied"
    WRITTEN = "written"
    PENDING = "pending"
    RENDER_FAILED = "render-failed"
    INVALID = "invalid"
    WRITE_FAILED = "write-failed"
    RELOAD_FAILED = "reload-failed"
    RUNTIME_FAILED = "runtime-failed"


FAILURES = frozenset(
    {Outcome.PENDING, Outcome.RENDER_FAILED, Outcome.INVALID}
    | {Outcome.WRITE_FAILED, Outcome.RELOAD_FAILED, Outcome.RUNTIME_FAILED}
)


@dataclass(frozen=True)
class ApplyReport:
    """The typed record of one target's cycle. `plan` is what was decided; a RUNTIME plan whose
    runtime apply failed and was completed by a reload says so in `detail`. `runtime_ops` counts
    the runtime operations sent (weights set, servers added or removed)."""

    target: str
    outcome: Outcome
    plan: Plan | None
    at: float
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    digest: str | None = None
    detail: str | None = None
    runtime_ops: int = 0

    @property
    def failed(self) -> bool:
        """Whether the target is not running what was rendered."""
        return self.outcome in FAILURES
