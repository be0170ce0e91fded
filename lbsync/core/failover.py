"""Failover tiers: which instances serve a service, and which wait as backups (pure).

An instance's `failover` tier is 0 where it serves (the local datacenter) and N for the N-th
datacenter to fail over to. The split applies inside a tier, never across: each tier is
allocated on its own (`weights.allocate_shares`), and the service is served by the first
tier that has traffic (an eligible instance with a share).

The proxy must fail over by itself, at once and without a reload, so every instance of a tier
above 0 is a `backup` server: HAProxy sends a backend's requests to its backup servers only
while none of its other servers is usable (weight 0, maintenance or failing its check), and to
all of them with `option allbackups`. So the weights are kept where the proxy can use them the
moment the tier below empties:

- tier 0 at its own split weights;
- the standby tier, the first tier above 0 that has traffic, at its own split weights: while
  tier 0 serves, HAProxy does not use them; when the last server of tier 0 drops to weight 0,
  it uses them;
- every other tier at weight 0 (a later datacenter waits behind the standby one).

The shares reported (exact and achieved, the groups, the unserved part) are the serving tier's:
that is where the traffic goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbsync.core.weights import Shares, allocate_shares
from lbsync.model.values import HealthMode, Instance, Split


@dataclass(frozen=True)
class Tiered:
    """`allocate_shares` over tiers: the columns in the instances' order, whether each is a
    backup server, and the datacenter(s) that serve."""

    shares: Shares
    backup: list[bool] | None  # None: no instance has a tier above 0
    serving_datacenter: str


def allocate_tiers(
    instances: tuple[Instance, ...], split: Split | None, mode: HealthMode = HealthMode.PASSING
) -> Tiered:
    """The servers' weights and shares, tier by tier (see the module doc)."""
    placed = False
    for instance in instances:
        if instance.failover:
            break
        placed = placed or bool(instance.datacenter)
    else:  # one tier: the plain allocation (most services: the check costs one look each)
        shares = allocate_shares(instances, split, mode)
        return Tiered(shares, None, _serving(shares) if placed else "")
    tiers: dict[int, list[int]] = {}
    for at, instance in enumerate(instances):
        tiers.setdefault(instance.failover, []).append(at)
    order = sorted(tiers)
    allocated = {
        tier: allocate_shares(tuple(instances[at] for at in tiers[tier]), split, mode)
        for tier in order
    }
    with_traffic = [tier for tier in order if any(allocated[tier].weights)]
    serving = with_traffic[0] if with_traffic else order[0]
    standby = next((tier for tier in with_traffic if tier > 0), None)
    weighted = {0, standby}
    count = len(instances)
    groups_of = [""] * count
    eligible = [False] * count
    exact = [0.0] * count
    weights = [0] * count
    achieved = [0.0] * count
    for tier in order:
        part = allocated[tier]
        for column, at in enumerate(tiers[tier]):
            groups_of[at] = part.groups_of[column]
            eligible[at] = part.eligible[column]
            if tier in weighted:
                weights[at] = part.weights[column]
            if tier == serving:
                exact[at] = part.exact[column]
                achieved[at] = part.achieved[column]
    served = allocated[serving]
    shares = Shares(
        instances=instances,
        groups_of=groups_of,
        eligible=eligible,
        exact=exact,
        weights=weights,
        achieved=achieved,
        groups=served.groups,
        split_in_force=served.split_in_force,
        unserved=served.unserved,
    )
    return Tiered(shares, [instance.failover > 0 for instance in instances], _serving(shares))


def _serving(shares: Shares) -> str:
    """The datacenters of the instances that receive traffic, comma-separated ("" when the
    instances do not say, or none receives any)."""
    found = {
        instance.datacenter
        for instance, share in zip(shares.instances, shares.achieved, strict=True)
        if share > 0 and instance.datacenter
    }
    return ",".join(sorted(found))
