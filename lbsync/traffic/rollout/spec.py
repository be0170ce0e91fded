"""What a rollout was asked for, its phases, and the split at each step (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lbsync.traffic.splits import SplitError


class Phase(StrEnum):
    """A rollout's state, as stored in `services/<svc>/rollout`."""

    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    DONE = "done"
    REVERTED = "reverted"
    ABORTED = "aborted"


ACTIVE = frozenset({Phase.RUNNING, Phase.PAUSED, Phase.ABORTING})
ENDED = frozenset({Phase.REVERTED, Phase.ABORTED})


def phase_of(value: object) -> Phase | None:
    """The phase a record's `phase` field names, or None for anything else."""
    try:
        return Phase(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RolloutSpec:
    """What the operator asked for."""

    service: str
    to: str
    steps: tuple[float, ...]
    interval: float
    min_healthy: int = 1
    max_error_rate: float = 0.05
    pause_at: tuple[float, ...] = ()
    reason: str = ""


def step_split(start: dict[str, Any] | None, to: str, share: float) -> dict[str, Any]:
    """The split at one step: `to` has `share`; the other named groups (and so the default
    group) keep their starting proportions of the remaining traffic. Key order is kept."""
    value = dict(start or {"by": "tag"})
    groups: dict[str, float] = dict(value.get("groups", {}))
    rest = 100.0 - groups.get(to, 0.0)
    scaled = {
        name: (share if name == to else (round(s * (100.0 - share) / rest, 2) if rest else 0.0))
        for name, s in groups.items()
    }
    scaled.setdefault(to, share)
    value["groups"] = {name: int(s) if float(s).is_integer() else s for name, s in scaled.items()}
    return value


def parse_steps(text: str, what: str = "--steps") -> tuple[float, ...]:
    """`5,25,50,100` as rising shares from 0 to 100; errors name `what` (the option)."""
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise SplitError(f"{what}: numbers separated by commas, got {text!r}") from error
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise SplitError(f"{what}: rising shares above 0 and at most 100, got {text!r}")
    return steps
