"""Pure steps between sources and the desired state: keep last good values, merge sources.

A refused key keeps its last good value (an invalid split leaves the previous split in force),
and an unusable source keeps its last good snapshot: nothing is lost to bad input or faults.

Both work part by part (`values.part_of`: a service's keys, or the rest), and `merge` reuses
what it made of a part whose objects did not change (`MergeCache`), so one changed key costs
one part's merge, not the catalog's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lbsync.model.values import (
    SERVICE_PREFIX,
    Catalog,
    Entry,
    Instance,
    Part,
    RawKeys,
    Rejection,
    Route,
    ServiceSpec,
    Setting,
    Snapshot,
    Split,
)


def carry_forward(previous: Snapshot | None, current: Snapshot) -> Snapshot:
    """The snapshot to use: `current`, with each refused key holding its previous good entry.

    A snapshot from an unusable source carries no data of its own: the previous good one is
    kept whole, marked unusable, with the error.
    """
    if previous is None:
        return current
    if not current.usable:
        return Snapshot(
            source=current.source, parts=previous.parts, usable=False, error=current.error
        )
    carried: dict[str, Part] | None = None
    for name, part in current.parts.items():
        old = previous.parts.get(name)
        if not part.rejected or old is None:
            continue
        kept = _carried(old, part)
        if kept is not part:
            carried = dict(current.parts) if carried is None else carried
            carried[name] = kept
    if carried is None:
        return current
    return Snapshot(source=current.source, parts=carried, usable=True, error=current.error)


def _carried(old: Part, current: Part) -> Part:
    """A part whose refused keys hold their previous good entries."""
    kept = dict(current.entries)
    before = dict(old.entries)
    restored = False
    for key, _ in current.rejected:
        if key in before and key not in kept:
            kept[key] = before[key]
            restored = True
    if not restored:
        return current
    return Part(
        entries=tuple(sorted(kept.items(), key=lambda pair: pair[0])),
        rejected=current.rejected,
        raw=current.raw,
    )


@dataclass(frozen=True)
class _Merged:
    """What one part name gives after the merge."""

    spec: ServiceSpec | None
    settings: tuple[Setting, ...]
    raw: tuple[tuple[str, str], ...]
    rejected: tuple[Rejection, ...]
    origins: tuple[str, ...]


class MergeCache:
    """What `merge` made of each part name, kept with the source names and part objects it came
    from: a part whose objects are the same again is not merged again. Owned by one merging
    caller."""

    def __init__(self) -> None:
        self.made: dict[str, tuple[tuple[str, ...], tuple[Part | None, ...], _Merged]] = {}


def merge(snapshots: Sequence[Snapshot], cache: MergeCache | None = None) -> Catalog:
    """One catalog from several sources; on a key held by two sources the first one wins."""
    sources = tuple(snapshot.source for snapshot in snapshots)
    if len(snapshots) == 1:
        names = sorted(snapshots[0].parts)
    else:
        names = sorted(set().union(*(snapshot.parts.keys() for snapshot in snapshots)))
    made: dict[str, tuple[tuple[str, ...], tuple[Part | None, ...], _Merged]] = {}
    earlier = cache.made if cache is not None else {}
    if len(snapshots) == 1:  # the common case, one comparison a part
        held = snapshots[0].parts
        for name in names:
            known = earlier.get(name)
            if known is None or known[1][0] is not held[name] or known[0] != sources:
                known = (sources, (held[name],), _merge_part(name, (held[name],), sources))
            made[name] = known
    else:
        for name in names:
            parts = tuple(snapshot.parts.get(name) for snapshot in snapshots)
            known = earlier.get(name)
            if (
                known is None
                or known[0] != sources
                or any(old is not new for old, new in zip(known[1], parts, strict=True))
            ):
                known = (sources, parts, _merge_part(name, parts, sources))
            made[name] = known
    if cache is not None:
        cache.made = made
    results = [known[2] for known in made.values()]
    return Catalog(
        services=tuple(result.spec for result in results if result.spec is not None),
        settings=tuple(setting for result in results for setting in result.settings),
        raw=RawKeys(
            {name: result.raw for name, result in zip(names, results, strict=True) if result.raw}
        ),
        rejected=tuple(rejection for result in results for rejection in result.rejected),
        origins=tuple(
            (result.spec.name, result.origins)
            for result in results
            if result.spec is not None and result.origins
        ),
    )


def _merge_part(name: str, parts: tuple[Part | None, ...], sources: tuple[str, ...]) -> _Merged:
    """One part name across the sources, first source first."""
    chosen: dict[str, Entry] = {}
    owner: dict[str, str] = {}
    raw: dict[str, str] = {}
    rejected: list[Rejection] = []
    for part, source in zip(parts, sources, strict=True):
        if part is None:
            continue
        rejected.extend(rejection for _, rejection in part.rejected)
        for key, entry in part.entries:
            if key in chosen:
                rejected.append(
                    Rejection(
                        where=f"{source} key {key}",
                        message=f"also set by {owner[key]}, whose value is used",
                    )
                )
                continue
            chosen[key] = entry
            owner[key] = source
        for key, text in part.raw:
            raw.setdefault(key, text)
    held = [part for part in parts if part is not None]
    texts = held[0].raw if len(held) == 1 else tuple(sorted(raw.items()))
    settings = tuple(entry for _, entry in sorted(chosen.items()) if isinstance(entry, Setting))
    spec = _service(name.removeprefix(SERVICE_PREFIX), chosen.values()) if name else None
    owners = set(owner.values())
    origins = tuple(source for source in sources if source in owners) if spec else ()
    return _Merged(
        spec=spec, settings=settings, raw=texts, rejected=tuple(rejected), origins=origins
    )


def _service(name: str, entries: Iterable[Entry]) -> ServiceSpec | None:
    """A part's service; None when the part holds no route, split or instance."""
    route: Route | None = None
    split: Split | None = None
    instances: list[Instance] = []
    for entry in entries:
        if isinstance(entry, Route):
            route = entry
        elif isinstance(entry, Split):
            split = entry
        elif isinstance(entry, Instance):
            instances.append(entry)
    if route is None and split is None and not instances:
        return None
    return ServiceSpec(
        name=name,
        route=route,
        split=split,
        instances=tuple(sorted(instances, key=lambda instance: instance.id)),
    )
