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
from lbsync.model.values import Health, Instance

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
    """One server line of a backend: its instance, and its place in the split. `weight` is its
    integer weight in the split (0-256); `instance_weight` the instance's own relative weight,
    from which its weight inside its group alone is made (`bygroup`).

    The instance's own fields are read through it, not copied: a state at 10,000 servers makes
    10,000 of these on every whole build, and each field copied costs."""

    name: str
    instance: Instance
    endpoint: str  # `address:port` (IPv6 in brackets), made once: every render reads it
    group: str
    eligible: bool
    weight: int
    share: float
    achieved: float
    backup: bool = False  # a failover tier above 0 (`core.failover`): serves when the rest cannot

    @property
    def instance_id(self) -> str:
        return self.instance.id

    @property
    def address(self) -> str:
        return self.instance.address

    @property
    def port(self) -> int:
        return self.instance.port

    @property
    def health(self) -> Health:
        return self.instance.health

    @property
    def tags(self) -> tuple[str, ...]:
        return self.instance.tags

    @property
    def meta(self) -> tuple[tuple[str, str], ...]:
        return self.instance.meta

    @property
    def instance_weight(self) -> int:
        return self.instance.weight

    @property
    def datacenter(self) -> str:
        """Where the instance runs ("" unless its source says)."""
        return self.instance.datacenter

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
