"""Consul's `service-splitter` and `service-resolver` config entries as lbsync splits (pure).

A splitter sends shares of a service's traffic to subsets, and the service's resolver says which
instances a subset holds by a filter (`Service.Meta.version == v2`). lbsync's split groups
instances by one tag or one metadata key, so the mapping is exact only for filters of three
shapes, with `<v>` a bare word (`v2`), a number (`1.4`), or a string in double quotes or
backticks without `\\` escapes (Consul's filter grammar, go-bexpr):

    Service.Meta.<key> == <v>   (or Service.Meta["<key>"] == <v>)  -> by meta:<key>, group <v>
    <v> in Service.Tags                                             -> by tag, group <v>
    Service.Tags contains <v>                                       -> by tag, group <v>

    Splits [{"Weight": 80, "ServiceSubset": "v1"}, {"Weight": 20, "ServiceSubset": "v2"}]
      with v1, v2 = Service.Meta.version == v1 / == v2   -> {"by": "meta:version",
                                                               "groups": {"v1": 80, "v2": 20}}

The shares sum to 100, so the instances in no subset (lbsync's default group) get nothing, as in
Consul. A split without `ServiceSubset` goes to the resolver's `DefaultSubset`; without one it
goes to every instance of the service, those of the other splits' subsets too, which lbsync's
groups (one group per instance) cannot say: it is taken only when it is the one split (weight
100: plain load balancing), refused otherwise. Two splits to subsets that select the same
instances (the default subset named again) add up.

Refused, with the entry named (`consul config service-splitter/<name>`) and the reason, while
every other service still applies: any other filter (`!=`, `matches`, `and`, `Node.Meta`, a
subset with no filter), subsets of one split that group by different things (a tag and a
metadata key, or two keys), a split to another `Service`, a namespace or partition other than
`default`, `RequestHeaders` / `ResponseHeaders`, a weight outside 0 to 100 or with more than two
decimals, shares that do not sum to 100, a subset no resolver defines, and a resolver's
`Redirect`, `Failover`, `LoadBalancer` or `PrioritizeByLocality` (traffic sent elsewhere, or
balanced in a way lbsync's route decides); an unknown field is refused too, rather than read
wrong. Taken and not carried out: `ConnectTimeout` and `RequestTimeout` (the proxy's timeouts
are the target's), `OnlyPassing` (lbsync's one health filter decides for every group), `Meta`.
A resolver alone (no splitter) gives no split.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from lbsync.model import checks
from lbsync.model.checks import ContractError
from lbsync.model.text import shown

SPLITTER: Final = "service-splitter"
RESOLVER: Final = "service-resolver"
KINDS: Final = (SPLITTER, RESOLVER)
TAG_GROUPS: Final = "tag"

_COMMON = frozenset(
    {"Kind", "Name", "Namespace", "Partition", "Meta", "CreateIndex", "ModifyIndex"}
)
SPLITTER_FIELDS: Final = _COMMON | {"Splits"}
SPLIT_FIELDS: Final = frozenset({"Weight", "Service", "ServiceSubset", "Namespace", "Partition"})
RESOLVER_FIELDS: Final = _COMMON | {"Subsets", "DefaultSubset", "ConnectTimeout", "RequestTimeout"}
SUBSET_FIELDS: Final = frozenset({"Filter", "OnlyPassing"})
NOT_CARRIED_OUT: Final = {
    "RequestHeaders": "header changes are not carried out",
    "ResponseHeaders": "header changes are not carried out",
    "Redirect": "it sends the service's traffic elsewhere, which lbsync does not carry out",
    "Failover": "a resolver's failover is not carried out (lbsync fails over between "
    "datacenters by [source.consul] datacenters, and hands an empty group's share to the "
    "other groups: on_empty)",
    "LoadBalancer": "the balancing policy is the route's (`balance`) in lbsync",
    "PrioritizeByLocality": "locality is not carried out",
}

_WS = r"[ \t\r\n]"  # go-bexpr's whitespace
_IDENT = r"[A-Za-z][A-Za-z0-9_]*"
_STRING = r'"[^"\\]*"|`[^`]*`'
_VALUE = rf"(?:{_STRING}|{_IDENT}|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?)"
_META_RE = re.compile(
    rf"{_WS}*Service\.Meta(?:\.(?P<key>{_IDENT})|\[{_WS}*(?P<index>{_STRING}){_WS}*\])"
    rf"{_WS}*=={_WS}*(?P<value>{_VALUE}){_WS}*"
)
_IN_RE = re.compile(rf"{_WS}*(?P<value>{_VALUE}){_WS}+in{_WS}+Service\.Tags{_WS}*")
_CONTAINS_RE = re.compile(rf"{_WS}*Service\.Tags{_WS}+contains{_WS}+(?P<value>{_VALUE}){_WS}*")
_KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "is", "empty", "matches"})
SHAPES: Final = (
    'Service.Meta.<key> == <value>, "<tag>" in Service.Tags or Service.Tags contains "<tag>"'
)


@dataclass(frozen=True)
class Refusal:
    """A config entry lbsync does not carry out, and why."""

    kind: str
    name: str
    why: str

    @property
    def where(self) -> str:
        """How the entry is named in refusals: `consul config <kind>/<name>`."""
        return f"consul config {self.kind}/{shown(self.name, 128)}"


@dataclass(frozen=True)
class EntrySplits:
    """What the splitters (with their resolvers) say: each service's split as (service, by,
    groups in the splitter's order), and the refused entries by the service they are for."""

    splits: tuple[tuple[str, str, tuple[tuple[str, float], ...]], ...] = ()
    refused: tuple[tuple[str, Refusal], ...] = ()

    def split_value(self, service: str) -> dict[str, object] | None:
        """The KV split value a service's splitter makes, None without one."""
        for name, by, groups in self.splits:
            if name == service:
                return {"by": by, "groups": dict(groups)}
        return None


def _value(text: str) -> str:
    """The string a go-bexpr value stands for: quotes taken off, a bare word or number as it is."""
    if text[:1] in ('"', "`"):
        return text[1:-1].replace("\r", "") if text[0] == "`" else text[1:-1]
    return text


def subset_group(subset: str, body: object) -> tuple[str, str]:
    """(by, group) of one resolver subset, from its filter; ContractError for any other shape."""
    data = _fields(body, SUBSET_FIELDS, f"subset {subset}: ")
    only = data.get("OnlyPassing", False)
    if not isinstance(only, bool):
        raise ContractError(f"subset {subset}: OnlyPassing must be true or false")
    text = data.get("Filter", "")
    if not isinstance(text, str) or not text.strip():
        raise ContractError(f"subset {subset} has no Filter: it is every instance, not a group")
    if (found := _META_RE.fullmatch(text)) is not None:
        key = found["key"] or _value(found["index"])
        by = "meta:" + checks.meta_key(key, f"subset {subset}'s meta key")
    elif (found := _IN_RE.fullmatch(text) or _CONTAINS_RE.fullmatch(text)) is not None:
        by = TAG_GROUPS
    else:
        raise ContractError(
            f"subset {subset}: the Filter {shown(text)!r} is not one lbsync reads ({SHAPES})"
        )
    if found["value"] in _KEYWORDS:  # a bare operator word: what Consul makes of it is unclear
        raise ContractError(f"subset {subset}: quote the value {found['value']!r}")
    return by, checks.group(_value(found["value"]), f"subset {subset}'s value")


def _fields(value: object, known: frozenset[str], what: str) -> Mapping[str, object]:
    """A JSON object of `known` fields; a field lbsync does not carry out is refused by name.
    `what` ("split 2: ", or "" for the entry itself) starts every message."""
    if not isinstance(value, dict):
        raise ContractError(f"{what}not a JSON object")
    for field, setting in value.items():
        if field in known or setting in (None, "", {}, []):
            continue  # an empty setting is the default, whatever the field
        if field in NOT_CARRIED_OUT:
            raise ContractError(f"{what}{field}: {NOT_CARRIED_OUT[field]}")
        raise ContractError(f"{what}unknown field {shown(str(field))!r}")
    for scope in ("Namespace", "Partition"):
        if value.get(scope) not in (None, "", "default"):
            raise ContractError(f"{what}{scope} {shown(str(value[scope]))!r} is not default")
    return value


def _weight(value: object, at: int) -> float:
    """A split's weight: a percent from 0 to 100 with at most two decimals (Consul's rule)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ContractError(f"split {at}: Weight must be a number")
    if not 0 <= value <= 100:
        raise ContractError(f"split {at}: Weight {value:g} is not from 0 to 100")
    if abs(value * 100 - round(value * 100)) > 1e-6:
        raise ContractError(f"split {at}: Weight {value:g} has more than two decimals")
    return float(value)


@dataclass(frozen=True)
class _Resolver:
    """The part of a service's resolver a split reads: its default subset and its subsets."""

    default: str
    subsets: Mapping[str, object]


def _resolver(entry: object) -> _Resolver:
    data = _fields(entry, RESOLVER_FIELDS, "")
    subsets = data.get("Subsets") or {}
    default = data.get("DefaultSubset") or ""
    if not isinstance(subsets, dict) or not isinstance(default, str):
        raise ContractError("Subsets must be an object and DefaultSubset a subset's name")
    if default and default not in subsets:
        raise ContractError(f"DefaultSubset {shown(default)!r} is not among its Subsets")
    return _Resolver(default=default, subsets=subsets)


def _targets(name: str, entry: object, resolver: _Resolver | None) -> list[tuple[str, float]]:
    """(subset, weight) of each split, "" for every instance of the service."""
    data = _fields(entry, SPLITTER_FIELDS, "")
    splits = data.get("Splits")
    if not isinstance(splits, list) or not splits:
        raise ContractError("Splits must be a non-empty list")
    targets: list[tuple[str, float]] = []
    for at, split in enumerate(splits, 1):
        fields = _fields(split, SPLIT_FIELDS, f"split {at}: ")
        weight = _weight(fields.get("Weight", 0), at)
        service = fields.get("Service") or name
        if service != name:
            raise ContractError(
                f"split {at} goes to another service ({shown(str(service))!r}), which lbsync "
                "does not carry out: route that service on its own"
            )
        subset = fields.get("ServiceSubset") or (resolver.default if resolver else "")
        if not isinstance(subset, str):
            raise ContractError(f"split {at}: ServiceSubset must be a subset's name")
        targets.append((subset, weight))
    total = sum(weight for _, weight in targets)
    if round(total * 100) != 10_000:
        raise ContractError(f"the weights sum to {total:g}, not 100")
    if any(not subset for subset, _ in targets) and len(targets) > 1:
        raise ContractError(
            "a split without ServiceSubset goes to every instance (the resolver names no "
            "DefaultSubset), those of the other splits' subsets too: lbsync's groups do not "
            "overlap; name a subset"
        )
    return targets


def _split(
    name: str, splitter: object, resolver_entry: object | None
) -> tuple[str, tuple[tuple[str, float], ...]]:
    """(by, groups) of one service; ContractError (with the entry to blame) otherwise."""
    try:
        resolver = None if resolver_entry is None else _resolver(resolver_entry)
    except ContractError as error:
        raise _Blamed(RESOLVER, str(error)) from error
    try:
        targets = _targets(name, splitter, resolver)
    except ContractError as error:
        raise _Blamed(SPLITTER, str(error)) from error
    if targets == [("", 100.0)]:
        return TAG_GROUPS, ()  # the whole service: plain load balancing
    groups: dict[str, float] = {}
    by_of: dict[str, str] = {}
    for subset, weight in targets:
        if resolver is None or subset not in resolver.subsets:
            raise _Blamed(SPLITTER, f"no service-resolver {name} defines subset {subset!r}")
        try:
            by, group = subset_group(subset, resolver.subsets[subset])
        except ContractError as error:
            raise _Blamed(RESOLVER, str(error)) from error
        by_of[subset] = by
        groups[group] = round(groups.get(group, 0.0) + weight, 2)
    if len(set(by_of.values())) > 1:
        shapes = ", ".join(f"{subset} ({by})" for subset, by in by_of.items())
        raise _Blamed(
            RESOLVER, f"its subsets {shapes} group by different things: a split groups by one"
        )
    return next(iter(by_of.values())), tuple(groups.items())


class _Blamed(ContractError):
    """A refusal, with the kind of the entry that causes it."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind


def _named(kind: str, entries: Sequence[object]) -> tuple[dict[str, object], list[Refusal]]:
    """The entries of one kind by name; an entry without a usable name is refused, and a name
    listed twice is refused once and not used."""
    named: dict[str, object] = {}
    twice: set[str] = set()
    refused: list[Refusal] = []
    for at, entry in enumerate(entries, 1):
        data = entry if isinstance(entry, dict) else {}
        name = data.get("Name")
        if not isinstance(name, str) or not name:
            refused.append(Refusal(kind, f"#{at}", "an entry without a Name"))
        elif data.get("Kind", kind) != kind:
            refused.append(Refusal(kind, name, f"an entry of another kind in the {kind} list"))
        elif name in named and name not in twice:
            twice.add(name)
            refused.append(Refusal(kind, name, "listed twice"))
        elif name not in twice:
            named[name] = entry
    return {name: entry for name, entry in named.items() if name not in twice}, refused


def parse_config_entries(
    *, splitters: Sequence[object], resolvers: Sequence[object]
) -> EntrySplits:
    """Every splitter with its service's resolver, each service applied or refused on its own."""
    split_entries, refused = _named(SPLITTER, splitters)
    resolver_entries, bad_resolvers = _named(RESOLVER, resolvers)
    twice = {refusal.name for refusal in bad_resolvers if refusal.why == "listed twice"}
    splits: list[tuple[str, str, tuple[tuple[str, float], ...]]] = []
    for name, entry in split_entries.items():
        if name in twice:
            refused.append(Refusal(RESOLVER, name, "listed twice"))
            continue
        try:
            by, groups = _split(name, entry, resolver_entries.get(name))
        except _Blamed as error:
            refused.append(Refusal(error.kind, name, str(error)))
        else:
            splits.append((name, by, groups))
    return EntrySplits(
        splits=tuple(splits), refused=tuple((refusal.name, refusal) for refusal in refused)
    )
