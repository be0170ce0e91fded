"""A service's servers by group, for the routing that picks a group before a server (pure).

Sticky clients and pinned requests reach one group's servers alone, so a template renders a
backend (an nginx upstream) per group besides the split's. Each group has its servers twice:

- `servers`, at their weights in the split: a sticky client stays in its group while some of
  them have a weight above 0, that is while the group has a share (HAProxy's `nbsrv` counts
  them at runtime, so the split's weight changes keep deciding it without a reload);
- `pinned`, at their weights inside the group alone (the instances' relative weights, scaled
  as the split's are, 0 for an instance that is not eligible): a pinned request reaches the
  group whatever its share, 0 % included, while one of them is eligible.

Both divide the group's traffic in the same proportions, the instances' weights. `draw_of`
gives the split as a random draw over groups, in steps of 0.01 %, for a proxy that picks the
group of a new sticky client itself (nginx's `split_clients`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lbsync.core.groups import DEFAULT_GROUP, DEFAULT_GROUP_KEY
from lbsync.core.servers import ServerState
from lbsync.core.weights import GroupShare, integer_weights


@dataclass(frozen=True)
class GroupServers:
    """One group that has instances: its name (empty for the default group), its `key` (the
    name, `_default` for the default group), its 1-based `position` among the service's
    groups, its effective share (percent) and its servers at split and in-group weights."""

    name: str
    key: str
    position: int
    effective: float
    servers: tuple[ServerState, ...]
    pinned: tuple[ServerState, ...]

    @property
    def label(self) -> str:
        """The name shown to operators."""
        return self.name or "(default)"

    @property
    def pinnable(self) -> bool:
        """Whether a request can name it: only named groups can be pinned."""
        return self.name != DEFAULT_GROUP

    @property
    def has_share(self) -> bool:
        """Some server has a weight in the split: sticky clients stay."""
        return any(server.weight > 0 for server in self.servers)

    @property
    def reachable(self) -> bool:
        """Some server is eligible: a pinned request is served."""
        return any(server.weight > 0 for server in self.pinned)


@dataclass(frozen=True)
class DrawStep:
    """One part of the draw: a group (None: the unserved share, answered 503) and its share in
    1/100 %. The last step takes whatever the others leave (nginx's `*`)."""

    group: GroupServers | None
    basis_points: int


def groups_of(
    servers: Sequence[ServerState], groups: Sequence[GroupShare]
) -> tuple[GroupServers, ...]:
    """The groups that have instances, in the split's order (the default group last)."""
    made: list[GroupServers] = []
    for share in groups:
        if share.instances == 0:
            continue
        members = tuple(server for server in servers if server.group == share.name)
        weights = integer_weights(
            [float(server.instance_weight) if server.eligible else 0.0 for server in members]
        )
        made.append(
            GroupServers(
                name=share.name,
                key=share.name if share.name != DEFAULT_GROUP else DEFAULT_GROUP_KEY,
                position=len(made) + 1,
                effective=share.effective,
                servers=members,
                pinned=tuple(
                    server if server.weight == weight else replace(server, weight=weight)
                    for server, weight in zip(members, weights, strict=True)
                ),
            )
        )
    return tuple(made)


def draw_of(groups: Sequence[GroupServers], unserved_basis_points: int) -> tuple[DrawStep, ...]:
    """The split as a draw: the unserved share first, then each group that has a share, each
    rounded down to 0.01 % (a step that rounds to 0 is left out, unless it is the last, which
    takes the rest)."""
    steps: list[DrawStep] = []
    if unserved_basis_points > 0:
        steps.append(DrawStep(None, unserved_basis_points))
    steps += [
        DrawStep(group, math.floor(group.effective * 100))
        for group in groups
        if group.has_share and group.effective > 0
    ]
    return tuple(
        step for n, step in enumerate(steps) if step.basis_points > 0 or n == len(steps) - 1
    )
