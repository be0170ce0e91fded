"""What must hold before and during each step of a rollout.

- Health: the target group has at least `min_healthy` eligible instances, read through the
  configured sources as the daemon sees them.
- Errors: where HAProxy's runtime API is reachable, the target group's servers answer with an
  error ratio (5xx, failed connections, broken responses) under `max_error_rate`.

Both find the group's members with the split's own membership rule (`core.groups`), so a
split by `meta:<key>` is gated on exactly the servers it sends traffic to.
"""

from __future__ import annotations

from lbsync.core.groups import belongs
from lbsync.core.servers import ServerState
from lbsync.core.state import ServiceState
from lbsync.haproxy.stats import ErrorCounts


class GateFailed(Exception):
    """A gate did not hold; the message says which and with what reading."""


def members(service: ServiceState | None, by: str, group: str) -> tuple[ServerState, ...]:
    """The servers of a service that belong to a group (by tag or meta), whatever the split."""
    if service is None:
        return ()
    return tuple(
        server
        for server in service.servers
        if belongs(by, group, tags=server.tags, meta=server.meta)
    )


def eligible_in(service: ServiceState | None, by: str, group: str) -> int:
    """How many eligible instances belong to a group."""
    return sum(1 for server in members(service, by, group) if server.eligible)


def check_health(eligible: int, *, group: str, min_healthy: int) -> None:
    """GateFailed when a group has fewer eligible instances than required."""
    if eligible < min_healthy:
        raise GateFailed(
            f"group {group} has {eligible} eligible instance(s), "
            f"fewer than --min-healthy {min_healthy}"
        )


def check_errors(
    before: ErrorCounts | None, now: ErrorCounts | None, *, group: str, max_error_rate: float
) -> tuple[float, int]:
    """The error ratio since `before` and over how many responses; GateFailed above the limit.
    Without readings (no runtime API) the gate holds with no responses counted."""
    if before is None or now is None:
        return 0.0, 0
    ratio, total = now.ratio_since(before)
    if total and ratio > max_error_rate:
        raise GateFailed(
            f"group {group} error ratio {ratio:.1%} over {total} responses "
            f"is above --max-error-rate {max_error_rate:.1%}"
        )
    return ratio, total
