"""Frozen values for what sources report: instances, routes, splits and their entries.

Everything is a frozen dataclass holding tuples, so that two snapshots with the same content
compare equal and the same input always renders the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lbsync.model.text import shown


class Health(StrEnum):
    """An instance's health as a source reports it, worst last."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"
    MAINTENANCE = "maintenance"

    @property
    def rank(self) -> int:
        """Order used to pick the worst of several checks."""
        return _HEALTH_RANK[self]


_HEALTH_RANK = {
    Health.PASSING: 0,
    Health.WARNING: 1,
    Health.CRITICAL: 2,
    Health.MAINTENANCE: 3,
}


class OnEmpty(StrEnum):
    """What happens to the share of a group that has no eligible instance."""

    REDISTRIBUTE = "redistribute"
    FAIL = "fail"


class Balance(StrEnum):
    """Balancing algorithms that honour per-server weights in both HAProxy and nginx."""

    ROUNDROBIN = "roundrobin"
    LEASTCONN = "leastconn"
    RANDOM = "random"


@dataclass(frozen=True)
class Instance:
    """One running copy of a service that traffic can be sent to."""

    service: str
    id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    weight: int = 1
    health: Health = Health.PASSING

    @property
    def endpoint(self) -> str:
        """`address:port`, with IPv6 addresses in brackets as both HAProxy and nginx expect.

        Addresses are checked at the boundary: only an IPv6 address contains a colon."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def meta_value(self, key: str) -> str | None:
        """The value of one metadata key, or None."""
        for name, value in self.meta:
            if name == key:
                return value
        return None


@dataclass(frozen=True)
class HealthCheck:
    """An active HTTP check the proxy runs against each server of a route."""

    path: str = "/"
    interval_ms: int = 2000


@dataclass(frozen=True)
class Route:
    """How a service is exposed: which hosts and path prefix reach it, and how it balances."""

    service: str
    hosts: tuple[str, ...] = ()
    path: str = "/"
    balance: Balance = Balance.ROUNDROBIN
    check: HealthCheck | None = None


@dataclass(frozen=True)
class Split:
    """Traffic shares (percent) between named instance groups; the rest goes to the default."""

    service: str
    by: str = "tag"
    groups: tuple[tuple[str, float], ...] = ()
    on_empty: OnEmpty = OnEmpty.REDISTRIBUTE

    @property
    def named_total(self) -> float:
        """Sum of the named groups' shares; the default group receives 100 minus this."""
        return sum(share for _, share in self.groups)


@dataclass(frozen=True)
class Setting:
    """A free value under `settings/` that templates may read; kept as canonical JSON text."""

    key: str
    json_text: str


Entry = Route | Split | Instance | Setting


@dataclass(frozen=True)
class Rejection:
    """A value that was refused, with the place it came from (file entry or KV key) named.

    Both texts may carry what an untrusted writer chose (a key name, an unknown field): they
    are made safe to show (`text.shown`) once, here, for every log, terminal and template."""

    where: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", shown(self.where))
        object.__setattr__(self, "message", shown(self.message))

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Snapshot:
    """A source's whole view at one moment: parsed entries by relative key, refusals, raw keys.

    `entries` and `raw` are tuples of (relative key, value) sorted by key. `usable` is False
    when the source could not produce a whole view (store unreachable, file unreadable
    or not valid TOML); the last good entries are then kept.
    """

    source: str
    entries: tuple[tuple[str, Entry], ...] = ()
    rejected: tuple[tuple[str, Rejection], ...] = ()
    raw: tuple[tuple[str, str], ...] = ()
    usable: bool = True
    error: str | None = None

    def __post_init__(self) -> None:
        if self.error is not None:  # a store's answer may be in it: safe to log and show
            object.__setattr__(self, "error", shown(self.error))


@dataclass(frozen=True)
class ServiceSpec:
    """Everything known about one service after merging sources."""

    name: str
    route: Route | None = None
    split: Split | None = None
    instances: tuple[Instance, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """The merged input of the desired state: services, settings, raw keys and refusals, and
    for each service the sources that hold its keys (configuration order), so that a refusal
    made after the merge names them."""

    services: tuple[ServiceSpec, ...] = ()
    settings: tuple[Setting, ...] = ()
    raw: tuple[tuple[str, str], ...] = ()
    rejected: tuple[Rejection, ...] = field(default=())
    origins: tuple[tuple[str, tuple[str, ...]], ...] = ()


class HealthMode(StrEnum):
    """Which health states make an instance eligible: `passing` only, or `warning` and better."""

    PASSING = "passing"
    WARNING = "warning"
