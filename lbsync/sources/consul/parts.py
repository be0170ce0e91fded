"""The Consul source's snapshot, composed part by part (`values.part_of`), so that a change
costs the parts it touched: every other part stays the same object, and the merge and the
desired state reuse what they made of it by identity (`MergeCache`, `BuildCache`). Composed
whole, every change cost a composition of every service and a comparison of every part with
the last snapshot's (`Snapshot.sharing`), to find the ones to keep.

What the snapshot holds (the same as composed whole):

- every KV entry, refusal and raw text;
- for each catalog service that KV does not route (no `services/<svc>/route` key, valid or
  refused), the route its `lbsync.route=` tags ask for, or the refusal of those tags; a catalog
  name outside the contract's charset that asks for a route is refused at `services/<name>`;
- every exposed service's instances and refusals, except that an instance whose key KV holds
  (even refused) gives way to the KV key, and the clash is reported.
- the splits (or refusals) that Fabio's lines give services without a KV split key, then those
  Consul's splitter config entries give services that neither gives one (`_fabio_parts`,
  `_entry_parts`), in the part of the split key.

Refusals with the same key keep that order: KV's, the tags', the names', the instances'.

What each part is made of: `services/<svc>` of that service's KV part, its catalog tags and its
`ServiceView` (the watchers keep it as the same object while the service's answer is the same);
the part "" of KV's part "" and the refusals of catalog names, whose key `services/<name>` lands
in "" (a name with a `/` lands in the part its first segment names, and counts there). Whether
a name is refused also depends on whether KV routes it, so the refusals are made again on every
composition (the invalid names are few) and compared.

`ComposeCache` keeps, per part, those inputs and the `Part` made of them, and gives the same
`Part` back while the KV part and the service view are the same objects and the tags and
refusals are equal; a part made again that equals the previous one is the previous object too.
What is left per change is a look at each service: at 1,000 services of one instance each
(measured here), one service's new answer takes 0.6 ms to compose and 1.5 ms with the merge and
the desired state, against 4.9 ms and 5.8 ms composed whole and shared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lbsync.model import checks
from lbsync.model.checks import ContractError
from lbsync.model.contract import parse_split
from lbsync.model.keys import route_key, split_key
from lbsync.model.text import shown
from lbsync.model.values import SERVICE_PREFIX, Entry, Part, Rejection, Snapshot, Split, part_of
from lbsync.sources.consul.entries import SPLITTER, EntrySplits, Refusal
from lbsync.sources.consul.fabio import FabioRoutes
from lbsync.sources.consul.mapping import (
    KVView,
    Refusals,
    ServiceView,
    asks_for_route,
    holds,
    tag_route,
)

FABIO_REFUSED = "fabio-config/line-"  # the key of a refused line of Fabio's configuration
DATACENTER_FAULT = "consul-datacenter/"  # the key of a fault in a datacenter to fail over to
ENTRY_REFUSED = "consul-config/"  # the key of a refused config entry whose name is no service's
Fabio = tuple[tuple[str, Split | Rejection], ...]
NAME_REFUSAL = "the name must be letters, digits, '.', '_' or '-' (max 128); not exposed"
KV_WINS = "the KV key with the same instance id is used instead"


@dataclass(frozen=True, eq=False)
class _Inputs:
    """What one part is made of: KV's part and the service view as objects, the rest as values."""

    kv: Part | None
    tags: tuple[str, ...] | None  # the catalog's tags, for a service whose name is valid
    view: ServiceView | None
    names: Refusals  # refusals of catalog names whose key lands in this part
    fabio: Fabio = ()  # a split Fabio's configuration gives, or its refused lines
    remote: tuple[ServiceView, ...] = ()  # the service in the datacenters to fail over to
    entries: Fabio = ()  # a split Consul's config entries give, or their refusals

    def same(self, fields: _Fields) -> bool:
        """Whether these are the inputs again, `fields` in the order of this class's fields
        (objects by identity, the rest by value)."""
        kv, tags, view, names, fabio, remote, entries = fields
        return (
            self.kv is kv
            and self.view is view
            and self.tags == tags
            and self.names == names
            and self.fabio == fabio
            and len(self.remote) == len(remote)
            and all(mine is theirs for mine, theirs in zip(self.remote, remote, strict=True))
            and self.entries == entries
        )


_Fields = tuple[
    Part | None,
    tuple[str, ...] | None,
    ServiceView | None,
    Refusals,
    Fabio,
    tuple[ServiceView, ...],
    Fabio,
]


class ComposeCache:
    """The parts `compose` made, each with its inputs: a part whose inputs are the same again
    is not composed again. Owned by one composing caller (the watchers of one run)."""

    def __init__(self) -> None:
        self.made: dict[str, tuple[_Inputs, Part | None]] = {}


def compose(
    *,
    source: str,
    kv: KVView,
    catalog: Mapping[str, Sequence[str]],
    services: Mapping[str, ServiceView],
    cache: ComposeCache | None = None,
    fabio: FabioRoutes | None = None,
    fabio_key: str = "",
    remote: Mapping[str, tuple[ServiceView, ...]] | None = None,
    faults: Refusals = (),
    entries: EntrySplits | None = None,
) -> Snapshot:
    """One whole snapshot, composed by part; with a `cache`, only the parts whose inputs changed
    since its last composition are made again (the result is the same).

    `services` are exposed services (`mapping.exposed`): their names are valid, ValueError
    otherwise; `remote` their views in the datacenters to fail over to, in order (their
    instance keys name the datacenter); `faults` those datacenters' faults, in the part ""."""
    valid: list[tuple[str, tuple[str, ...]]] = []
    invalid: list[str] = []
    for service, tags in catalog.items():
        if checks.NAME_RE.fullmatch(service) is None:
            invalid.append(service)
        else:
            valid.append((service, tuple(tags)))
    names = _name_refusals(kv, catalog, invalid)
    if faults:
        names[""] = (*names.get("", ()), *faults)
    remote = remote or {}
    from_fabio = _fabio_parts(kv, fabio, fabio_key) if fabio is not None else {}
    from_entries = _entry_parts(kv, entries, fabio) if entries is not None else {}
    earlier = cache.made if cache is not None else {}
    made: dict[str, tuple[_Inputs, Part | None]] = {}

    def part(name: str, service: str | None, tags: tuple[str, ...] | None) -> None:
        fields: _Fields = (
            kv.parts.get(name),
            tags,
            services.get(service) if service is not None else None,
            names.get(name, ()),
            from_fabio.get(name, ()),
            remote.get(service, ()) if service is not None else (),
            from_entries.get(name, ()),
        )
        known = earlier.get(name)
        if known is not None and known[0].same(fields):
            made[name] = known
            return
        inputs = _Inputs(*fields)
        composed = _composed(service, inputs)
        if known is not None and known[1] is not None and known[1] == composed:
            composed = known[1]  # made again, and the same: the same object
        made[name] = (inputs, composed)

    for service, tags in valid:
        part(SERVICE_PREFIX + service, service, tags)
    for service in (*services, *remote):
        if SERVICE_PREFIX + service not in made:
            if checks.NAME_RE.fullmatch(service) is None:
                raise ValueError(f"not an exposed service: {shown(service)!r}")
            part(SERVICE_PREFIX + service, service, None)
    for name in (*kv.parts, *names, *from_fabio, *from_entries):  # the rest: KV's, names', ...
        if name not in made:
            held = name.removeprefix(SERVICE_PREFIX)
            named = bool(name) and checks.NAME_RE.fullmatch(held) is not None
            part(name, held if named else None, None)
    if cache is not None:
        cache.made = made
    return Snapshot(
        source=source,
        parts={name: found for name, (_, found) in made.items() if found is not None},
    )


def _name_refusals(
    kv: KVView, catalog: Mapping[str, Sequence[str]], invalid: list[str]
) -> dict[str, Refusals]:
    """The refusals of the `invalid` catalog names (outside the contract's charset) that ask for
    a route KV does not give them, by the part their key lands in, in the order of the names."""
    refused: dict[str, list[tuple[str, Rejection]]] = {}
    for service in sorted(invalid):
        if not asks_for_route(catalog[service]) or service in kv.routed:
            continue
        key = f"{SERVICE_PREFIX}{shown(service, 128)}"
        rejection = Rejection(where=f"consul service {service}", message=NAME_REFUSAL)
        refused.setdefault(part_of(key), []).append((key, rejection))
    return {name: tuple(refusals) for name, refusals in refused.items()}


def _fabio_parts(kv: KVView, fabio: FabioRoutes, key: str) -> dict[str, Fabio]:
    """What Fabio's configuration adds, by part: each weighted service's split where KV has no
    split key of its own (KV wins), or its refusal; every refused line, in the part ""."""
    found: dict[str, list[tuple[str, Split | Rejection]]] = {}
    for service, _ in fabio.splits:
        split = split_key(service)
        if holds(kv.raw, split):
            continue
        value = fabio.split_value(service)
        try:
            item: Split | Rejection = parse_split(service, value)
        except ContractError as error:
            item = Rejection(where=f"consul key {key}, the lines of {service}", message=str(error))
        found.setdefault(part_of(split), []).append((split, item))
    for number, why in fabio.refused:
        line = Rejection(where=f"consul key {key} line {number}", message=why)
        found.setdefault("", []).append((f"{FABIO_REFUSED}{number:06d}", line))
    return {name: tuple(items) for name, items in found.items()}


def _entry_parts(kv: KVView, entries: EntrySplits, fabio: FabioRoutes | None) -> dict[str, Fabio]:
    """What the splitters add, by part: each service's split or refusal, where neither KV nor
    Fabio's lines give it a split (KV wins, then Fabio's lines); the refusal of an entry whose
    name is no service's, in the part ""."""
    taken = {service for service, _ in fabio.splits} if fabio is not None else set()
    found: dict[str, list[tuple[str, Split | Rejection]]] = {}

    def add(key: str, item: Split | Refusal) -> None:
        value = Rejection(where=item.where, message=item.why) if isinstance(item, Refusal) else item
        found.setdefault(part_of(key), []).append((key, value))

    def add_for(service: str, item: Split | Refusal) -> None:
        key = split_key(service)
        part = kv.parts.get(part_of(key))
        if service not in taken and (part is None or not holds(part.raw, key)):
            add(key, item)

    for service, _, _ in entries.splits:
        if checks.NAME_RE.fullmatch(service) is None:
            add(
                f"{ENTRY_REFUSED}{SPLITTER}/{shown(service, 128)}",
                Refusal(SPLITTER, service, NAME_REFUSAL),
            )
            continue
        try:
            add_for(service, parse_split(service, entries.split_value(service)))
        except ContractError as error:
            add_for(service, Refusal(SPLITTER, service, str(error)))
    for service, refusal in entries.refused:
        if checks.NAME_RE.fullmatch(service) is None:
            add(f"{ENTRY_REFUSED}{refusal.kind}/{shown(service, 128)}", refusal)
        else:
            add_for(service, refusal)
    return {name: tuple(items) for name, items in found.items()}


def _by_key(pair: tuple[str, object]) -> str:
    return pair[0]


def _composed(service: str | None, inputs: _Inputs) -> Part | None:
    """One part from its inputs; KV's part itself when nothing else adds to it, None when the
    part holds nothing."""
    kv = inputs.kv if inputs.kv is not None else Part()
    entries: list[tuple[str, Entry]] = list(kv.entries)
    rejected: list[tuple[str, Rejection]] = list(kv.rejected)
    if service is not None and inputs.tags is not None and not holds(kv.raw, route_key(service)):
        key = route_key(service)
        try:
            route = tag_route(service, inputs.tags)
        except ContractError as error:
            where = f"consul service {service} tags"
            rejected.append((key, Rejection(where=where, message=str(error))))
        else:
            if route is not None:
                entries.append((key, route))
    rejected.extend(inputs.names)
    for key, item in (*inputs.fabio, *inputs.entries):
        if isinstance(item, Rejection):
            rejected.append((key, item))
        else:
            entries.append((key, item))
    views = ((inputs.view,) if inputs.view is not None else ()) + inputs.remote
    if service is not None and views:
        owned = {key for key, _ in kv.raw}
        for view in views:
            rejected.extend(view.rejected)
            for key, instance in view.entries:
                if key in owned:
                    where = f"consul service {service} instance {instance.id}"
                    rejected.append((key, Rejection(where=where, message=KV_WINS)))
                else:
                    entries.append((key, instance))
    if len(entries) == len(kv.entries) and len(rejected) == len(kv.rejected):
        return inputs.kv  # nothing but KV's part
    return Part(
        entries=tuple(sorted(entries, key=_by_key)),
        rejected=tuple(sorted(rejected, key=_by_key)),
        raw=kv.raw,
    )
