"""Which services to read again, from what the three blocking queries saw move: pure functions.

The source watches the KV prefix, `/v1/catalog/services` and `/v1/health/state/any` (every
check of the datacenter) and reads `/v1/health/service/<svc>` only for the services these
show moving. What each change looks like there, measured on Consul 1.8.7
(docs/architecture.md, "Consul"):

| change | health state | catalog |
|---|---|---|
| a check's status (flip, maintenance on or off) | the check's row | — |
| an instance registered or deregistered with checks | its checks appear or vanish | index |
| tags changed | `ServiceTags` of its checks | index, and the tags when the union moved |
| re-registered with a new address, port, meta or weights, same checks | nothing | index only |
| an instance without checks registered or deregistered | nothing | index only |
| a node's check (`serfHealth`, node maintenance) | the node's row | — |
| a node's address changed, nothing else | nothing | nothing |

So: a service whose check rows (status, ids, tags; not the output text) changed is read; so is
every service with an instance on a node whose node checks changed, and a service whose catalog
tags changed. A catalog index that moved with no such change to explain it (no check modified
or removed by the write at the catalog's new index) means a registration the health state
cannot show: every exposed service is read (a sweep). What neither query shows (a node's new
address alone; a re-registration coalesced into the same catalog wake-up as a later write that
is explained, during a burst of registrations) is caught by the periodic full read (`resync`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = tuple[str, str, str, str, tuple[str, ...]]  # node, check, service id, status, tags
Fingerprint = frozenset[Row]


@dataclass(frozen=True)
class HealthState:
    """`/v1/health/state/any` at one index, folded for comparison."""

    index: int
    services: Mapping[str, Fingerprint]  # by ServiceName: (node, check, id, status, tags)
    nodes: Mapping[str, Fingerprint]  # node checks by node name
    modified: Mapping[str, frozenset[int]]  # by service: the ModifyIndex of each of its checks


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value or "")


def _modify_index(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def health_state(index: int, checks: Iterable[Mapping[str, Any]]) -> HealthState:
    """Fold the health state's checks by service and by node (node checks have no service),
    in one pass over Consul's answer (10,000 checks: about 100 ms here). Output and notes are
    left out: a check whose output alone changed moves nothing."""
    services: dict[str, set[Row]] = {}
    nodes: dict[str, set[Row]] = {}
    modified: dict[str, set[int]] = {}
    for check in checks:
        tags = check.get("ServiceTags")
        service_id = _text(check.get("ServiceID"))
        row = (
            _text(check.get("Node")),
            _text(check.get("CheckID")),
            service_id,
            _text(check.get("Status")),
            tuple(_text(tag) for tag in tags) if isinstance(tags, list) else (),
        )
        if service_id:
            service = _text(check.get("ServiceName"))
            services.setdefault(service, set()).add(row)
            modified.setdefault(service, set()).add(_modify_index(check.get("ModifyIndex")))
        else:
            nodes.setdefault(row[0], set()).add(row)
    return HealthState(
        index=index,
        services={name: frozenset(rows) for name, rows in services.items()},
        nodes={name: frozenset(rows) for name, rows in nodes.items()},
        modified={name: frozenset(indexes) for name, indexes in modified.items()},
    )


def moved(old: Mapping[str, object], new: Mapping[str, object]) -> set[str]:
    """Keys whose value differs between two mappings, or that only one of them has."""
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


def services_to_read(
    old: HealthState, new: HealthState, *, nodes_of: Mapping[str, Iterable[str]]
) -> set[str]:
    """Services whose own checks moved, and those with an instance on a node whose checks
    moved (`nodes_of`: the nodes each held service runs on, from its last read)."""
    services = moved(old.services, new.services)
    nodes = moved(old.nodes, new.nodes)
    if nodes:
        services |= {name for name, on in nodes_of.items() if not nodes.isdisjoint(on)}
    return services


def check_changes(old: HealthState, new: HealthState) -> tuple[int, ...]:
    """The indexes at which services' checks changed between two health states: a modified or
    new check's ModifyIndex, and for checks that vanished the new state's index (a removal
    leaves no ModifyIndex; the state's index is at or after it)."""
    indexes: set[int] = set()
    for service in moved(old.services, new.services):
        indexes |= new.modified.get(service, frozenset()) - old.modified.get(service, frozenset())
        before = {row[:2] for row in old.services.get(service, frozenset())}
        if not before <= {row[:2] for row in new.services.get(service, frozenset())}:
            indexes.add(new.index)
    return tuple(sorted(indexes))


def explained(changes: Sequence[int], *, at: int) -> bool:
    """Whether a check changed in the write that moved the catalog to index `at` (a check-only
    write, a flip, moves the health state but not the catalog: it explains nothing)."""
    return at in changes


def tags_moved(old: Mapping[str, Sequence[str]], new: Mapping[str, Sequence[str]]) -> set[str]:
    """Services that appeared, vanished or whose catalog tags changed."""
    return moved(
        {name: tuple(tags) for name, tags in old.items()},
        {name: tuple(tags) for name, tags in new.items()},
    )
