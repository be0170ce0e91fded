"""Split math: from a split and a service's instances to per-server integer weights.

Algorithm (all shares are percentages of the service's traffic):

1. Grouping. With `by = "tag"` an instance belongs to group G when G is among its tags; with
   `by = "meta:<key>"` when `meta[key] == G`. An instance matching several groups takes the
   first in the split's key order. Instances in no named group form the default group, whose
   target share is `100 - sum(named shares)`.
2. Plain balancing. With no split, or when no named group has any instance at all, the split is
   not in force: every eligible instance is in the default group with 100 %.
3. Eligibility. Only instances that pass the health filter and have a weight above 0 count.
4. Empty groups. A group with a share but no eligible instance is empty. With
   `on_empty = "redistribute"` its share goes to the non-empty groups in proportion to their
   shares; when those shares are all 0, in proportion to their instances' weights (so a 100/0
   blue/green with blue down still serves from green). With `on_empty = "fail"`, or when no
   group has an eligible instance, the share is unserved (the proxy answers 503 for it).
5. Inside a group, the group's share is divided among eligible instances by relative weight.
6. Integer weights. HAProxy takes 0-256: every share is scaled so that the largest becomes 256
   and rounded half up; a non-zero share never rounds to 0 (it becomes 1). nginx uses the same
   integers, except that a zero share is `down` (nginx weights start at 1). An unserved share is
   not a server: the proxy answers 503 to that fraction of requests, drawn at random, in steps
   of 0.01 %.
7. Achieved shares are the integer weights' proportions of the served traffic. Each server's
   achieved share is within `100 * (1 + n) / sum(weights)` points of its exact share, n being
   the number of servers; the status reports both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from lbsync.core.groups import DEFAULT_GROUP, first_group
from lbsync.core.health import is_eligible
from lbsync.model.values import HealthMode, Instance, OnEmpty, Split

HAPROXY_MAX_WEIGHT = 256


@dataclass(frozen=True)
class ServerShare:
    """One instance's place in the split."""

    instance: Instance
    group: str
    eligible: bool
    share: float
    weight: int
    achieved: float

    @property
    def nginx_down(self) -> bool:
        """nginx has no weight 0: a server without share is marked `down`."""
        return self.weight == 0


@dataclass(frozen=True)
class GroupShare:
    """A group's target share next to what it receives."""

    name: str
    target: float
    effective: float
    achieved: float
    instances: int
    eligible: int
    status: str

    @property
    def label(self) -> str:
        """The name shown to operators (the default group has no name of its own)."""
        return self.name or "(default)"


@dataclass(frozen=True)
class Allocation:
    """The whole result for one service."""

    servers: tuple[ServerShare, ...]
    groups: tuple[GroupShare, ...]
    split_in_force: bool
    unserved: float

    @property
    def unserved_basis_points(self) -> int:
        """The unserved share in 1/100 %, as the proxies' random draw uses it."""
        return basis_points(self.unserved)

    @property
    def notes(self) -> tuple[str, ...]:
        """Human-readable remarks on empty groups, for the status and logs."""
        return notes_on(self.groups)


def basis_points(share: float) -> int:
    """A share in 1/100 %, as the proxies' random draw uses it."""
    return math.floor(share * 100 + 0.5)


def notes_on(groups: tuple[GroupShare, ...]) -> tuple[str, ...]:
    """Human-readable remarks on empty groups, for the status and logs."""
    return tuple(
        f"group {group.label} has no eligible instance: its {group.target:g}% is "
        + ("redistributed" if group.status == "redistributed" else "unserved (503)")
        for group in groups
        if group.status != "ok"
    )


def group_of(instance: Instance, split: Split) -> str:
    """The first group of the split (in key order) that the instance belongs to."""
    return first_group(split, instance.tags, instance.meta)


@dataclass(frozen=True)
class Shares:
    """`allocate`'s result as columns, one item per instance in the instances' order: what a
    caller that builds its own server values reads, without a `ServerShare` per server."""

    instances: tuple[Instance, ...]
    groups_of: list[str]
    eligible: list[bool]
    exact: list[float]
    weights: list[int]
    achieved: list[float]
    groups: tuple[GroupShare, ...]
    split_in_force: bool
    unserved: float

    def rows(self) -> Iterator[tuple[Instance, str, bool, float, int, float]]:
        """(instance, group, eligible, exact share, weight, achieved share) per instance."""
        return zip(
            self.instances,
            self.groups_of,
            self.eligible,
            self.exact,
            self.weights,
            self.achieved,
            strict=True,
        )


def allocate(
    instances: tuple[Instance, ...],
    split: Split | None,
    mode: HealthMode = HealthMode.PASSING,
) -> Allocation:
    """Compute the servers' shares and integer weights for one service (see module doc)."""
    shares = allocate_shares(instances, split, mode)
    servers = tuple(ServerShare(*row) for row in shares.rows())
    return Allocation(servers, shares.groups, shares.split_in_force, shares.unserved)


def allocate_shares(
    instances: tuple[Instance, ...],
    split: Split | None,
    mode: HealthMode = HealthMode.PASSING,
) -> Shares:
    """`allocate` as columns."""
    count = len(instances)
    groups_of = (
        [first_group(split, inst.tags, inst.meta) for inst in instances]
        if split is not None
        else [DEFAULT_GROUP] * count
    )
    in_force = split is not None and any(group != DEFAULT_GROUP for group in groups_of)
    if not in_force:
        groups_of = [DEFAULT_GROUP] * count
    targets = _targets(split if in_force else None)
    eligible = [is_eligible(inst, mode) for inst in instances]
    weight_sum = dict.fromkeys(targets, 0)
    counts = {name: [0, 0] for name in targets}
    for inst, group, counted in zip(instances, groups_of, eligible, strict=True):
        counts[group][0] += 1
        if counted:
            counts[group][1] += 1
            weight_sum[group] += inst.weight
    on_empty = split.on_empty if split is not None else OnEmpty.REDISTRIBUTE
    effective, unserved, statuses = _effective(targets, weight_sum, on_empty)

    exact = [
        effective[group] * inst.weight / weight_sum[group] if counted else 0.0
        for inst, group, counted in zip(instances, groups_of, eligible, strict=True)
    ]
    weights = integer_weights(exact)
    total = sum(weights)
    served = 100.0 - unserved
    achieved = [served * weight / total if total else 0.0 for weight in weights]
    achieved_by_group = dict.fromkeys(targets, 0.0)
    for group, share in zip(groups_of, achieved, strict=True):
        achieved_by_group[group] += share
    groups = tuple(
        GroupShare(
            name=name,
            target=targets[name],
            effective=effective[name],
            achieved=achieved_by_group[name],
            instances=counts[name][0],
            eligible=counts[name][1],
            status=statuses[name],
        )
        for name in targets
        if name != DEFAULT_GROUP or counts[name][0] or targets[name] > 0
    )
    return Shares(
        instances=instances,
        groups_of=groups_of,
        eligible=eligible,
        exact=exact,
        weights=weights,
        achieved=achieved,
        groups=groups,
        split_in_force=in_force,
        unserved=unserved,
    )


def _targets(split: Split | None) -> dict[str, float]:
    if split is None:
        return {DEFAULT_GROUP: 100.0}
    targets = dict(split.groups)
    targets[DEFAULT_GROUP] = max(0.0, 100.0 - split.named_total)
    return targets


def _effective(
    targets: dict[str, float],
    weight_sum: dict[str, int],
    on_empty: OnEmpty,
) -> tuple[dict[str, float], float, dict[str, str]]:
    """Each group's share after empty groups are handled, the unserved share, statuses."""
    filled = [name for name in targets if weight_sum[name] > 0]
    orphan = sum(share for name, share in targets.items() if weight_sum[name] == 0)
    effective = {name: (share if weight_sum[name] > 0 else 0.0) for name, share in targets.items()}
    fail = on_empty is OnEmpty.FAIL or not filled
    statuses = {
        name: "ok"
        if weight_sum[name] > 0 or share == 0
        else ("unserved" if fail else "redistributed")
        for name, share in targets.items()
    }
    if orphan == 0 or fail:
        return effective, orphan, statuses
    shares = sum(targets[name] for name in filled)
    if shares > 0:
        basis = {name: targets[name] / shares for name in filled}
    else:
        weights = sum(weight_sum[name] for name in filled)
        basis = {name: weight_sum[name] / weights for name in filled}
    for name in filled:
        effective[name] += orphan * basis[name]
    return effective, 0.0, statuses


def integer_weights(shares: list[float]) -> list[int]:
    """Scale so the largest share is 256, round half up, keep every non-zero share above 0."""
    largest = max(shares, default=0.0)
    if largest <= 0:
        return [0] * len(shares)
    # share / largest is at most 1, so a tiny largest share (a subnormal float) cannot overflow
    return [
        max(1, math.floor(share / largest * HAPROXY_MAX_WEIGHT + 0.5)) if share > 0 else 0
        for share in shares
    ]
