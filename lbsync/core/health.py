"""The health filter: which instances may receive traffic. Pure, table-tested."""

from __future__ import annotations

from collections.abc import Iterable

from lbsync.model.values import Health, HealthMode, Instance

_ADMITTED = {
    HealthMode.PASSING: frozenset({Health.PASSING}),
    HealthMode.WARNING: frozenset({Health.PASSING, Health.WARNING}),
}


def worst(states: Iterable[Health]) -> Health:
    """The worst of several check states (passing when there is none)."""
    return max(states, key=lambda state: state.rank, default=Health.PASSING)


def admits(mode: HealthMode, health: Health) -> bool:
    """Whether an instance in this health state may receive traffic under this mode."""
    return health in _ADMITTED[mode]


def is_eligible(instance: Instance, mode: HealthMode) -> bool:
    """Eligible: healthy enough for the mode, and not drained by a zero weight."""
    return instance.weight > 0 and admits(mode, instance.health)
