"""What a rollout was asked for, its phases, and the split at each step (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lbsync.model.checks import GROUP_RE
from lbsync.traffic.splits import SplitError


class Phase(StrEnum):
    """A rollout's state, as stored in `services/<svc>/rollout`."""

    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    PROMOTING = "promoting"
    REVERTING = "reverting"
    DONE = "done"
    REVERTED = "reverted"
    ABORTED = "aborted"


ACTIVE = frozenset({Phase.RUNNING, Phase.PAUSED, Phase.ABORTING, Phase.PROMOTING, Phase.REVERTING})
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

    def fields(self) -> dict[str, Any]:
        """What a record keeps of the spec, so that any daemon can drive it (`from_record`)."""
        return {
            "to": self.to,
            "steps": list(self.steps),
            "interval": self.interval,
            "min_healthy": self.min_healthy,
            "max_error_rate": self.max_error_rate,
            "pause_at": list(self.pause_at),
            "reason": self.reason,
        }


def from_record(service: str, fields: dict[str, Any]) -> RolloutSpec:
    """The spec a record holds; SplitError naming the field that is missing or wrong (anyone
    can write the key, so nothing in it is trusted)."""

    def number(name: str, low: float, high: float) -> float:
        value = fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SplitError(f"the rollout record of {service}: {name} is not a number")
        if not low <= value <= high:
            raise SplitError(f"the rollout record of {service}: {name} is out of range")
        return float(value)

    def shares(name: str, *, empty: bool) -> tuple[float, ...]:
        value = fields.get(name, [])
        if not isinstance(value, list) or not all(
            isinstance(s, int | float) and not isinstance(s, bool) for s in value
        ):
            raise SplitError(f"the rollout record of {service}: {name} is not a list of shares")
        if not value and empty:
            return ()
        return parse_steps(",".join(f"{s:g}" for s in value), name)

    to, reason = fields.get("to"), fields.get("reason", "")
    if not isinstance(to, str) or not GROUP_RE.fullmatch(to):
        raise SplitError(f"the rollout record of {service}: to is not a group name")
    return RolloutSpec(
        service=service,
        to=to,
        steps=shares("steps", empty=False),
        interval=number("interval", 0.0, 7 * 86400.0),
        min_healthy=int(number("min_healthy", 0, 1_000_000)),
        max_error_rate=number("max_error_rate", 0.0, 1.0),
        pause_at=shares("pause_at", empty=True),
        reason=reason if isinstance(reason, str) else "",
    )


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
