"""Frozen values for what sources report: instances, routes, splits and their entries.

Everything is a frozen dataclass holding tuples, so that two snapshots with the same content
compare equal and the same input always renders the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from itertools import chain
from typing import Final

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
    datacenter: str = ""  # where it runs, shown; "" when the source does not say
    failover: int = 0  # 0: serves; N: serves only while no instance of a lower tier can

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
class Sticky:
    """A route's sticky clients: the cookie that keeps a client in the group it was sent to
    while that group has a share (docs/traffic.md)."""

    cookie: str


class Upstream(StrEnum):
    """The protocol the proxy speaks to a route's instances."""

    HTTP = "http"
    HTTPS = "https"


REDIRECT_PATH: Final = "$path"


@dataclass(frozen=True)
class Redirect:
    """A route that answers every request with a redirect instead of forwarding it (Fabio's
    `redirect=<code>,<url>`). `to` ends in `$path` when the request's path and query are kept:
    `https://example.com$path` sends `/a?b=1` to `https://example.com/a?b=1`."""

    code: int
    to: str

    @property
    def keeps_path(self) -> bool:
        """Whether the request's path and query are appended to `base`."""
        return self.to.endswith(REDIRECT_PATH)

    @property
    def base(self) -> str:
        """The URL without its trailing `$path`: what every redirect starts with."""
        return self.to.removesuffix(REDIRECT_PATH)


@dataclass(frozen=True)
class Route:
    """How a service is exposed: which hosts and path prefix reach it, how it balances, and
    what reaches its instances (the path with `strip` removed, over `upstream`), unless it
    answers with a `redirect`."""

    service: str
    hosts: tuple[str, ...] = ()
    path: str = "/"
    balance: Balance = Balance.ROUNDROBIN
    check: HealthCheck | None = None
    sticky: Sticky | None = None
    strip: str | None = None
    redirect: Redirect | None = None
    upstream: Upstream = Upstream.HTTP
    tls_verify: bool = True


@dataclass(frozen=True)
class Pin:
    """A split's pinning: the request header and/or cookie whose value names a group, which
    such a request then reaches whatever the shares (testers reach green at 0 %)."""

    header: str | None = None
    cookie: str | None = None


@dataclass(frozen=True)
class Split:
    """Traffic shares (percent) between named instance groups; the rest goes to the default."""

    service: str
    by: str = "tag"
    groups: tuple[tuple[str, float], ...] = ()
    on_empty: OnEmpty = OnEmpty.REDISTRIBUTE
    pin: Pin | None = None

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


def part_of(key: str) -> str:
    """The part a relative key belongs to: `services/<svc>` for a service's keys, "" for the
    rest (settings and raw-only keys). A change to one key touches one part."""
    if key.startswith(SERVICE_PREFIX):
        name, slash, _ = key[len(SERVICE_PREFIX) :].partition("/")
        if slash and name:
            return SERVICE_PREFIX + name
    return ""


SERVICE_PREFIX = "services/"


@dataclass(frozen=True)
class Part:
    """One part of a snapshot (`part_of`): its entries, refusals and raw texts, each sorted by
    key. Sources keep an unchanged part as the same object, so later steps can reuse what they
    made of it by identity."""

    entries: tuple[tuple[str, Entry], ...] = ()
    rejected: tuple[tuple[str, Rejection], ...] = ()
    raw: tuple[tuple[str, str], ...] = ()


def _by_key(pair: tuple[str, object]) -> str:
    return pair[0]


def parts_of(
    entries: Iterable[tuple[str, Entry]] = (),
    rejected: Iterable[tuple[str, Rejection]] = (),
    raw: Iterable[tuple[str, str]] = (),
) -> dict[str, Part]:
    """Flat (key, value) pairs grouped into parts."""
    grouped: dict[
        str, tuple[list[tuple[str, Entry]], list[tuple[str, Rejection]], list[tuple[str, str]]]
    ] = {}

    last: list[str] = ["", "\0"]  # the last part a key was found in, and its keys' prefix

    def lists(
        key: str,
    ) -> tuple[list[tuple[str, Entry]], list[tuple[str, Rejection]], list[tuple[str, str]]]:
        # keys mostly come sorted, so the part of the key before is the likely one
        if not key.startswith(last[1]):
            name = part_of(key)
            last[:] = [name, name + "/" if name else "\0"]
        return grouped.setdefault(last[0], ([], [], []))

    for pair in entries:
        lists(pair[0])[0].append(pair)
    for refusal in rejected:
        lists(refusal[0])[1].append(refusal)
    for text in raw:
        lists(text[0])[2].append(text)
    return {
        name: Part(
            entries=tuple(sorted(kept, key=_by_key)),
            rejected=tuple(sorted(refused, key=_by_key)),
            raw=tuple(sorted(texts, key=_by_key)),
        )
        for name, (kept, refused, texts) in grouped.items()
    }


class Snapshot:
    """A source's whole view at one moment, by part (`part_of`): parsed entries by relative
    key, refusals, raw keys.

    `entries`, `rejected` and `raw` are the flat views, tuples of (relative key, value) sorted
    by key, made on first use; the pipeline reads `parts`, in which a source keeps every part
    it did not change as the same object, so a change costs what changed. `usable` is False
    when the source could not produce a whole view (store unreachable, file unreadable or not
    valid TOML); the last good entries are then kept. A snapshot is a value: nothing changes
    it once made.
    """

    def __init__(
        self,
        source: str,
        *,
        entries: tuple[tuple[str, Entry], ...] = (),
        rejected: tuple[tuple[str, Rejection], ...] = (),
        raw: tuple[tuple[str, str], ...] = (),
        usable: bool = True,
        error: str | None = None,
        parts: Mapping[str, Part] | None = None,
    ) -> None:
        if parts is not None and (entries or rejected or raw):
            raise ValueError("a snapshot is given by parts or by flat pairs, not both")
        self.source: Final = source
        self.parts: Final[Mapping[str, Part]] = (
            parts if parts is not None else parts_of(entries, rejected, raw)
        )
        self.usable: Final = usable
        # a store's answer may be in it: safe to log and show
        self.error: Final = shown(error) if error is not None else None

    @cached_property
    def entries(self) -> tuple[tuple[str, Entry], ...]:
        """Every entry, sorted by key."""
        return tuple(
            sorted(chain.from_iterable(p.entries for p in self.parts.values()), key=_by_key)
        )

    @cached_property
    def rejected(self) -> tuple[tuple[str, Rejection], ...]:
        """Every refusal, sorted by key."""
        return tuple(
            sorted(chain.from_iterable(p.rejected for p in self.parts.values()), key=_by_key)
        )

    @cached_property
    def raw(self) -> tuple[tuple[str, str], ...]:
        """Every raw text, sorted by key."""
        return tuple(sorted(chain.from_iterable(p.raw for p in self.parts.values()), key=_by_key))

    def sharing(self, previous: Snapshot | None) -> Snapshot:
        """This snapshot with every part equal to one of `previous` replaced by that object,
        for a source that reads everything again on each change (a file): later steps then
        see by identity what did not change."""
        if previous is None or not self.usable:
            return self
        old = previous.parts
        parts = {
            name: old[name] if old.get(name) == part else part for name, part in self.parts.items()
        }
        return Snapshot(self.source, parts=parts, usable=self.usable, error=self.error)

    def _identity(self) -> tuple[object, ...]:
        return (self.source, self.usable, self.error, self.parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self is other or self._identity() == other._identity()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        state = "usable" if self.usable else f"unusable: {self.error}"
        return f"Snapshot({self.source!r}, {len(self.parts)} parts, {state})"


@dataclass(frozen=True, eq=True)
class RawKeys(Mapping[str, str]):
    """The raw texts of the merged sources (key -> text), kept as the parts they came in, so a
    change builds a new one cheaply and a lookup reads one part; the sorted pairs and the whole
    table are made on first use (a template's `kv.ls`, the status)."""

    parts: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> RawKeys:
        """Raw keys from flat pairs."""
        grouped: dict[str, list[tuple[str, str]]] = {}
        for pair in pairs:
            grouped.setdefault(part_of(pair[0]), []).append(pair)
        return cls({name: tuple(sorted(texts, key=_by_key)) for name, texts in grouped.items()})

    @cached_property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every (key, text), sorted by key."""
        return tuple(sorted(chain.from_iterable(self.parts.values()), key=_by_key))

    @cached_property
    def _table(self) -> dict[str, str]:
        return dict(chain.from_iterable(self.parts.values()))

    def __getitem__(self, key: str) -> str:
        for name, text in self.parts.get(part_of(key), ()):
            if name == key:
                return text
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


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
    raw: RawKeys = field(default_factory=RawKeys)
    rejected: tuple[Rejection, ...] = field(default=())
    origins: tuple[tuple[str, tuple[str, ...]], ...] = ()


class HealthMode(StrEnum):
    """Which health states make an instance eligible: `passing` only, or `warning` and better."""

    PASSING = "passing"
    WARNING = "warning"
