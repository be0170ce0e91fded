"""Consul's catalog and KV answers as KV-contract entries: pure functions, table-tested.

Instance mapping (DESIGN.md §2, "Consul catalog mapping"), one entry per health-endpoint item
(`/v1/health/service/<svc>`, all instances, not only passing ones, so failing ones are reported):

- id: `Service.ID`; when the same ID is registered on several nodes, every copy becomes
  `<node>:<id>` (ids must fit the instance-id charset, else the instance is refused);
- address: `Service.Address`, else `Node.Address`; port: `Service.Port`;
- tags and meta: `Service.Tags` and `Service.Meta` (a tag or meta pair outside the contract's
  charset is left out and reported: one odd Fabio tag must not take the instance away);
- health: the worst of the node's and the service's checks; `serfHealth` failing is simply a
  critical check; `_node_maintenance` and `_service_maintenance:<id>` are MAINTENANCE;
- weight: `Weights.Passing`, or `Weights.Warning` when the worst check is warning (0 drains).

Everything goes through `parse_instance`, so a catalog value is checked exactly like a KV one:
an address with a newline is refused and named, never rendered.

Routes come from KV (`services/<svc>/route`) or from instance tags `lbsync.route=<host><path>`
(`lbsync.route=/api` means any host) or Fabio's `urlprefix-<host><path> [option ...]` (its
`strip=`, `redirect=`, `proto=https` and `tlsskipverify=` options are route fields; any other
option is refused by name); a KV route key, even a refused one, wins over tags.

The KV prefix is held by part (`values.part_of`, `model.held`): Consul answers the whole prefix
on every change, and only the part of the key that changed is made again. `parts.py` composes
these views into the snapshot, part by part.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import Any, Final

from lbsync.model import checks
from lbsync.model.checks import ContractError
from lbsync.model.contract import parse_instance, parse_route
from lbsync.model.held import HeldKeys
from lbsync.model.keys import instance_key, route_key
from lbsync.model.values import SERVICE_PREFIX, Entry, Health, Instance, Part, Rejection, Route

ROUTE_TAG: Final = "lbsync.route="
WEIGHT_TAG: Final = "lbsync.weight="
URLPREFIX_TAG: Final = "urlprefix-"  # Fabio's: `urlprefix-<host><path> [option=value ...]`
FABIO_DEFAULT_OPTIONS: Final = frozenset({"proto=http"})  # what lbsync does anyway
NODE_MAINTENANCE: Final = "_node_maintenance"
SERVICE_MAINTENANCE: Final = "_service_maintenance:"

_STATUS: Final = {
    "passing": Health.PASSING,
    "warning": Health.WARNING,
    "critical": Health.CRITICAL,
    "maintenance": Health.MAINTENANCE,
}

Pairs = tuple[tuple[str, Entry], ...]
Refusals = tuple[tuple[str, Rejection], ...]


def _by_key(pair: tuple[str, object]) -> str:
    return pair[0]


def holds(texts: tuple[tuple[str, str], ...], key: str) -> bool:
    """Whether sorted (key, text) pairs, a part's raw texts, hold `key`."""
    at = bisect_left(texts, key, key=_by_key)
    return at < len(texts) and texts[at][0] == key


@dataclass(frozen=True)
class KVView:
    """The KV prefix as read once, by part (`values.part_of`): raw texts by relative key, and
    what the contract made of them. Read with the same `HeldKeys` as the view before, a part
    none of whose keys changed is the same object as there."""

    parts: Mapping[str, Part] = field(default_factory=dict)

    @cached_property
    def raw(self) -> tuple[tuple[str, str], ...]:
        """Every raw text, sorted by key."""
        return tuple(sorted(chain.from_iterable(p.raw for p in self.parts.values()), key=_by_key))

    @cached_property
    def entries(self) -> Pairs:
        """Every entry, sorted by key."""
        return tuple(
            sorted(chain.from_iterable(p.entries for p in self.parts.values()), key=_by_key)
        )

    @cached_property
    def rejected(self) -> Refusals:
        """Every refusal, sorted by key."""
        return tuple(
            sorted(chain.from_iterable(p.rejected for p in self.parts.values()), key=_by_key)
        )

    @cached_property
    def routed(self) -> frozenset[str]:
        """Services that have a route key (valid or refused: either way KV owns the route).

        `services/<svc>/route` is in the part `services/<svc>`, and `services//route` (the
        service "") in the part ""; a name with a `/` has no route key."""
        routed: set[str] = set()
        for name, part in self.parts.items():
            service = name.removeprefix(SERVICE_PREFIX)
            if holds(part.raw, route_key(service)):
                routed.add(service)
        return frozenset(routed)


@dataclass(frozen=True)
class ServiceView:
    """One exposed service's instances as the health endpoint reported them, mapped."""

    entries: tuple[tuple[str, Instance], ...] = ()
    rejected: Refusals = ()
    nodes: frozenset[str] = frozenset()  # where its instances run: a node check moving reads it


def kv_keys(prefix: str) -> HeldKeys:
    """The keys of a KV prefix as `kv_view` holds them from one read to the next; refusals name
    a key in full (`consul key <prefix><key>`)."""
    return HeldKeys(lambda relative: f"consul key {prefix}{relative}")


def kv_view(
    items: Iterable[tuple[str, bytes | None]], *, prefix: str, held: HeldKeys | None = None
) -> KVView:
    """Map a recursive KV read (absolute key, value) to raw texts and contract entries, by part.

    Folder markers (keys ending in `/` with no value) are skipped; a key or value that is not
    text is refused by name (`decode_raw`). With `held` (`kv_keys(prefix)`, kept across reads),
    only keys whose value changed since the last read are parsed again, and only the parts
    holding them are new objects (the result is the same).
    """
    keys = held if held is not None else kv_keys(prefix)
    keys.replace(
        (key[len(prefix) :], value or b"")
        for key, value in items
        if key.startswith(prefix) and key[len(prefix) :] and not (key.endswith("/") and not value)
    )
    return KVView(parts=keys.parts())


def check_health(check: Mapping[str, Any]) -> Health:
    """One check's state: maintenance checks by their ids, others by status (unknown: critical)."""
    check_id = str(check.get("CheckID") or "")
    if check_id == NODE_MAINTENANCE or check_id.startswith(SERVICE_MAINTENANCE):
        return Health.MAINTENANCE
    return _STATUS.get(str(check.get("Status") or ""), Health.CRITICAL)


def instance_health(node_checks: Iterable[Mapping[str, Any]], service_id: str) -> Health:
    """The worst of the node's checks and this service instance's checks (passing if none)."""
    states = [
        check_health(check)
        for check in node_checks
        if (check.get("ServiceID") or "") in ("", service_id)
    ]
    return max(states, key=lambda state: state.rank, default=Health.PASSING)


def instance_weight(weights: Mapping[str, Any] | None, health: Health) -> object:
    """`Weights.Warning` when the instance is in warning, else `Weights.Passing` (Consul: 1, 1)."""
    weights = weights or {}
    if health is Health.WARNING:
        return weights.get("Warning", 1)
    return weights.get("Passing", 1)


def _printable_id(value: object) -> str:
    text = str(value)
    return text if checks.INSTANCE_ID_RE.fullmatch(text) else repr(text)


def _kept_tags(
    tags: object, *, where: str, notes: list[tuple[str, Rejection]], key: str
) -> list[str]:
    kept: list[str] = []
    for tag in tags if isinstance(tags, list) else []:
        try:
            kept.append(checks.tag(tag))
        except ContractError as error:
            notes.append((key, Rejection(where=where, message=f"tag left out: {error}")))
    return kept


def _kept_meta(
    meta: object, *, where: str, notes: list[tuple[str, Rejection]], key: str
) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in (meta if isinstance(meta, dict) else {}).items():
        try:
            kept[checks.meta_key(name)] = checks.meta_value(value, f"meta.{name}")
        except ContractError as error:
            notes.append((key, Rejection(where=where, message=f"meta left out: {error}")))
    return kept


def tag_weight(tags: object) -> int | None:
    """The weight a `lbsync.weight=N` tag gives (for registrations that cannot set Consul's
    `Weights`); None without one; ContractError for one that is not a whole number from 0 to
    65535, or two that disagree."""
    found = {
        tag[len(WEIGHT_TAG) :]
        for tag in (tags if isinstance(tags, list) else [])
        if isinstance(tag, str) and tag.startswith(WEIGHT_TAG)
    }
    if not found:
        return None
    if len(found) > 1:
        raise ContractError(f"{WEIGHT_TAG} tags disagree ({', '.join(sorted(found))})")
    (text,) = found
    if not (text.isascii() and text.isdigit()) or int(text) > checks.MAX_INSTANCE_WEIGHT:
        raise ContractError(
            f"{WEIGHT_TAG}{text[:20]}: the weight must be a whole number from 0 to "
            f"{checks.MAX_INSTANCE_WEIGHT}"
        )
    return int(text)


def _tagged_weight(
    tags: object, *, where: str, notes: list[tuple[str, Rejection]], key: str
) -> int | None:
    """`tag_weight`, a bad tag left out and reported (Consul's `Weights` then apply)."""
    try:
        return tag_weight(tags)
    except ContractError as error:
        notes.append((key, Rejection(where=where, message=f"tag left out: {error}")))
        return None


def _table(value: object) -> Mapping[str, Any]:
    """A part of Consul's answer that should be an object ({} when it is not)."""
    return value if isinstance(value, dict) else {}


def service_view(
    service: str,
    nodes: Sequence[Mapping[str, Any]],
    *,
    datacenter: str = "",
    failover: int = 0,
) -> ServiceView:
    """Map one service's health-endpoint items to instance entries, refusing bad ones by name.

    `datacenter` names where they run (with `[source.consul] datacenters`), `failover` their
    tier: above 0, a datacenter to fail over to, whose instance ids are `<dc>:<id>` (the same
    registration may exist in both).

    Consul's answers are input like any other: a part of the wrong shape refuses its instance,
    and whatever an item holds, no exception leaves this function."""
    ids = Counter(str(_table(_table(item).get("Service")).get("ID") or "") for item in nodes)
    placed: dict[str, object] = (
        {"datacenter": datacenter, "failover": failover} if datacenter else {}
    )
    entries: dict[str, Instance] = {}
    rejected: list[tuple[str, Rejection]] = []
    for item in nodes:
        node = _table(_table(item).get("Node"))
        registration = _table(_table(item).get("Service"))
        service_id = str(registration.get("ID") or "")
        raw_id = f"{node.get('Node')}:{service_id}" if ids[service_id] > 1 else service_id
        if failover:
            raw_id = f"{datacenter}:{raw_id}"
        key = instance_key(service, raw_id)
        where = f"consul service {service} instance {_printable_id(raw_id)}"
        try:
            instance_id = checks.instance_id(raw_id)
            checks_found = _table(item).get("Checks")
            health = instance_health(
                [_table(one) for one in checks_found] if isinstance(checks_found, list) else [],
                service_id,
            )
            tagged = _tagged_weight(registration.get("Tags"), where=where, notes=rejected, key=key)
            instance = parse_instance(
                service,
                instance_id,
                {
                    "address": registration.get("Address") or node.get("Address"),
                    "port": registration.get("Port"),
                    "tags": _kept_tags(
                        registration.get("Tags"), where=where, notes=rejected, key=key
                    ),
                    "meta": _kept_meta(
                        registration.get("Meta"), where=where, notes=rejected, key=key
                    ),
                    "weight": instance_weight(_table(registration.get("Weights")), health)
                    if tagged is None
                    else tagged,
                    "health": health.value,
                    **placed,
                },
            )
        except ContractError as error:
            rejected.append((key, Rejection(where=where, message=str(error))))
            continue
        except Exception as error:  # the bulkhead: refused and named, never raised
            rejected.append((key, Rejection(where=where, message=f"cannot be read: {error!r}")))
            continue
        entries[key] = instance
    return ServiceView(
        entries=tuple(sorted(entries.items())),
        rejected=tuple(sorted(rejected, key=lambda pair: pair[0])),
        nodes=frozenset(str(_table(_table(item).get("Node")).get("Node") or "") for item in nodes),
    )


def asks_for_route(tags: Iterable[str]) -> bool:
    """Whether a service's tags ask for a route: `lbsync.route=` or Fabio's `urlprefix-`."""
    return any(tag.startswith((ROUTE_TAG, URLPREFIX_TAG)) for tag in tags)


# Fabio's options that lbsync refuses, with the reason (any other unknown option is refused too)
_FABIO_REFUSED: Final = {
    "proto=tcp": "lbsync routes HTTP, not TCP",
    "proto=grpc": "lbsync does not proxy gRPC",
    "proto=grpcs": "lbsync does not proxy gRPC",
    "host": "the instances receive the client's Host header",
    "register": "lbsync registers nothing in Consul",
    "auth": "lbsync has no authentication schemes",
    "allow": "lbsync has no access rules",
    "deny": "lbsync has no access rules",
    "prepend": "a path is only stripped, never prepended",
    "pxyproto": "lbsync routes HTTP, not TCP",
    "weight": "a fixed share is a split (lbsync/services/<svc>/split)",
}


def fabio_options(tag: str, options: Sequence[str]) -> dict[str, object]:
    """The route fields (KV contract) that a Fabio tag's options ask for; ContractError naming
    the first option lbsync does not carry out.

    `proto=http` is the default; `proto=https` is `upstream` https, and `tlsskipverify=true`
    beside it `tls_verify` false (without `proto=https` Fabio ignores it, and so does lbsync);
    `strip=<prefix>` is `strip`; `redirect=<code>,<url>` is `redirect` (the URL's `$path` is
    the request's path). Each value is then checked as the KV contract checks it."""
    fields: dict[str, object] = {}
    skip_verify = False
    for option in options:
        name, equals, value = option.partition("=")
        if option in FABIO_DEFAULT_OPTIONS:
            continue
        if option == "proto=https":
            fields["upstream"] = "https"
        elif name == "tlsskipverify":
            if value not in ("true", "false"):
                raise ContractError(f"tag {tag!r}: tlsskipverify must be true or false")
            skip_verify = value == "true"
        elif name == "strip" and equals:
            fields["strip"] = value
        elif name == "redirect" and equals:
            code, *url = value.split(",")
            if len(url) != 1 or not (code.isascii() and code.isdigit()):
                raise ContractError(f"tag {tag!r}: redirect must be redirect=<code>,<url>")
            fields["redirect"] = {"code": int(code), "to": url[0]}
        else:
            named = option if option in _FABIO_REFUSED else name
            reason = _FABIO_REFUSED.get(named)
            raise ContractError(
                f"tag {tag!r}: the option {named!r} is not carried out by lbsync"
                + (f" ({reason})" if reason else "")
                + "; the route is not exposed (docs/consul.md, Fabio's tags)"
            )
    if skip_verify and fields.get("upstream") == "https":
        fields["tls_verify"] = False
    return fields


def _route_target(tag: str) -> tuple[str, dict[str, object]] | None:
    """The `<host><path>` a route tag names and the route fields its options ask for (None
    for another tag); ContractError for a Fabio tag with an option lbsync does not carry out."""
    if tag.startswith(ROUTE_TAG):
        return tag[len(ROUTE_TAG) :], {}
    if not tag.startswith(URLPREFIX_TAG):
        return None
    words = tag[len(URLPREFIX_TAG) :].split()
    if not words:
        return "", {}
    target, *options = words
    fields = fabio_options(tag, options)
    if target.startswith(":") or ":" in target.partition("/")[0]:
        raise ContractError(f"tag {tag!r}: a port in the prefix (a TCP route) is not routed")
    return target, fields


def tag_route(service: str, tags: Iterable[str]) -> Route | None:
    """The route that `lbsync.route=<host><path>` tags, or Fabio's `urlprefix-<host><path>`
    with its options, ask for; None without such a tag.

    Several tags add hosts; a tag without a host (`lbsync.route=/api`, `urlprefix-/api`) means
    any host, so it drops the host list; tags that disagree on the path or on the options are
    refused (a route has one path and one way to reach its instances).
    """
    hosts: set[str] = set()
    any_host = False
    paths: set[str] = set()
    asked: dict[str, tuple[str, dict[str, object]]] = {}
    for tag in tags:
        found = _route_target(tag)
        if found is None:
            continue
        target, fields = found
        if not target:  # an unset template variable, not a wish to catch every host and path
            raise ContractError(f"tag {tag!r} names no host and no path")
        host, slash, path = target.partition("/")
        if host:
            hosts.add(checks.hostname(host, f"host in tag {tag!r}"))
        else:
            any_host = True
        paths.add(checks.path(slash + path if slash else "/", f"path in tag {tag!r}").rstrip("/"))
        asked.setdefault(repr(sorted(fields.items())), (tag, fields))
    if not paths:
        return None
    if len(paths) > 1:
        listed = ", ".join(sorted(path or "/" for path in paths))
        raise ContractError(f"route tags disagree on the path ({listed})")
    if len(asked) > 1:
        listed = ", ".join(sorted(repr(tag) for tag, _ in asked.values()))
        raise ContractError(f"route tags disagree on their options ({listed})")
    tag, fields = next(iter(asked.values()))
    route = {"hosts": [] if any_host else sorted(hosts), "path": paths.pop() or "/"}
    try:
        return parse_route(service, route | fields)
    except ContractError as error:
        raise ContractError(f"tag {tag!r}: {error}") from error


def exposed(view: KVView, catalog: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """Services whose health must be watched: routed (KV or tag), valid name, in the catalog."""
    wanted = view.routed | {service for service, tags in catalog.items() if asks_for_route(tags)}
    return frozenset(
        service
        for service in wanted
        if service in catalog and checks.NAME_RE.fullmatch(service) is not None
    )
