"""Server lines as the proxies address them: stable names from instance ids, and what one
server of a backend carries (pure).

A name must survive renders, so HAProxy's runtime API and its server-state file find the same
server again: it is the instance id itself when that is proxy-safe, else the id made safe with
a short hash of it, so that two ids never share a name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from lbsync.core.groups import DEFAULT_GROUP, DEFAULT_GROUP_KEY
from lbsync.model.values import Health

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def server_name(instance_id: str) -> str:
    """A proxy-safe, stable server name for an instance id (a hash suffix keeps it unique)."""
    safe = _UNSAFE_NAME_CHARS.sub("_", instance_id)
    if safe == instance_id:
        return safe
    digest = hashlib.sha256(instance_id.encode()).hexdigest()[:8]
    return f"{safe}-{digest}"


@dataclass(frozen=True)
class ServerState:
    """One server line of a backend. `weight` is its integer weight in the split (0-256);
    `instance_weight` the instance's own relative weight, from which its weight inside its
    group alone is made (`bygroup`)."""

    name: str
    instance_id: str
    address: str
    port: int
    endpoint: str
    group: str
    health: Health
    eligible: bool
    weight: int
    share: float
    achieved: float
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]
    instance_weight: int = 1
    datacenter: str = ""
    backup: bool = False  # a failover tier above 0 (`core.failover`): serves when the rest cannot

    @property
    def down(self) -> bool:
        """No share: nginx marks it `down` (its weights start at 1), HAProxy gives weight 0."""
        return self.weight == 0

    @property
    def serving(self) -> bool:
        """Whether it receives traffic now: a share of the serving tier (a backup server can
        have a weight and wait)."""
        return self.achieved > 0

    @property
    def group_key(self) -> str:
        """Its group as a cookie value and a part of a name: the group's name, or
        `_default` for the default group (which has none)."""
        return self.group if self.group != DEFAULT_GROUP else DEFAULT_GROUP_KEY
