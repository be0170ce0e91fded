"""The daemon's status: one immutable value, swapped whole after every event.

Readers (the status API, `lbsync status`, tests) take the current value by reference and never
see a half-updated one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lbsync.core.state import DesiredState
from lbsync.pipeline.report import ApplyReport, Outcome

MAX_EVENTS = 100


@dataclass(frozen=True)
class SourceStatus:
    """One source as the daemon last heard from it."""

    name: str
    synced: bool = False
    usable: bool = False
    error: str | None = None
    changed_at: float | None = None
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True)
class Status:
    """Everything lbsync believes and did, at one moment."""

    started_at: float
    sources: tuple[SourceStatus, ...]
    state: DesiredState | None = None
    targets: tuple[ApplyReport, ...] = ()
    events: tuple[ApplyReport, ...] = ()
    cycles: int = 0

    @property
    def ready(self) -> bool:
        """Every source synced once and the first apply is done."""
        return self.cycles > 0 and all(source.synced for source in self.sources)

    def with_source(self, source: SourceStatus) -> Status:
        """A new status with one source's entry replaced."""
        return replace(
            self,
            sources=tuple(source if s.name == source.name else s for s in self.sources),
        )

    def with_cycle(self, state: DesiredState, reports: tuple[ApplyReport, ...]) -> Status:
        """A new status after one apply cycle; the events keep the last reports that did
        something (unchanged targets are not events)."""
        happened = tuple(report for report in reports if report.outcome is not Outcome.UNCHANGED)
        return replace(
            self,
            state=state,
            targets=reports,
            events=(self.events + happened)[-MAX_EVENTS:],
            cycles=self.cycles + 1,
        )
