"""Pure steps between sources and the desired state: keep last good values, merge sources.

A refused key keeps its last good value (an invalid split leaves the previous split in force),
and an unusable source keeps its last good snapshot: nothing is lost to bad input or faults.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lbsync.model.values import (
    Catalog,
    Entry,
    Instance,
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
            source=current.source,
            entries=previous.entries,
            rejected=previous.rejected,
            raw=previous.raw,
            usable=False,
            error=current.error,
        )
    if not current.rejected:
        return current
    kept = dict(current.entries)
    old = dict(previous.entries)
    for key, _ in current.rejected:
        if key in old and key not in kept:
            kept[key] = old[key]
    return Snapshot(
        source=current.source,
        entries=tuple(sorted(kept.items(), key=lambda pair: pair[0])),
        rejected=current.rejected,
        raw=current.raw,
        usable=current.usable,
        error=current.error,
    )


def merge(snapshots: Sequence[Snapshot]) -> Catalog:
    """One catalog from several sources; on a key held by two sources the first one wins."""
    chosen: dict[str, Entry] = {}
    owner: dict[str, str] = {}
    raw: dict[str, str] = {}
    rejected: list[Rejection] = []
    for snapshot in snapshots:
        rejected.extend(rejection for _, rejection in snapshot.rejected)
        for key, entry in snapshot.entries:
            if key in chosen:
                rejected.append(
                    Rejection(
                        where=f"{snapshot.source} key {key}",
                        message=f"also set by {owner[key]}, whose value is used",
                    )
                )
                continue
            chosen[key] = entry
            owner[key] = snapshot.source
        for key, text in snapshot.raw:
            raw.setdefault(key, text)
    origins: dict[str, dict[str, None]] = {}
    for key, entry in chosen.items():
        if not isinstance(entry, Setting):
            origins.setdefault(entry.service, {})[owner[key]] = None
    return Catalog(
        services=_services(chosen.values()),
        settings=tuple(sorted((e for e in chosen.values() if isinstance(e, Setting)), key=_key)),
        raw=tuple(sorted(raw.items())),
        rejected=tuple(rejected),
        origins=tuple(sorted((name, tuple(sources)) for name, sources in origins.items())),
    )


def _key(setting: Setting) -> str:
    return setting.key


def _services(entries: Iterable[Entry]) -> tuple[ServiceSpec, ...]:
    routes: dict[str, Route] = {}
    splits: dict[str, Split] = {}
    instances: dict[str, list[Instance]] = {}
    for entry in entries:
        if isinstance(entry, Route):
            routes[entry.service] = entry
        elif isinstance(entry, Split):
            splits[entry.service] = entry
        elif isinstance(entry, Instance):
            instances.setdefault(entry.service, []).append(entry)
    names = sorted(set(routes) | set(splits) | set(instances))
    return tuple(
        ServiceSpec(
            name=name,
            route=routes.get(name),
            split=splits.get(name),
            instances=tuple(sorted(instances.get(name, ()), key=lambda i: i.id)),
        )
        for name in names
    )
