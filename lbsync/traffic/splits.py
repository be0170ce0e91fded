"""`lbsync split`: read and change a service's split in the KV store, safely.

Every change is checked against the KV contract before anything is written, names only groups
the service knows (in its split or on its instances), and is a compare-and-swap on the split's
revision: a concurrent change is reported, never overwritten. Each change is recorded in
`services/<svc>/split-history` (the last `HISTORY_LIMIT` changes, with who, when and why), which
`rollback` uses.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from lbsync.core.groups import BY_TAG, labels
from lbsync.core.state import DesiredState, ServiceState
from lbsync.kv.store import Store, Versioned
from lbsync.model.contract import ContractError, decode_json, parse_split
from lbsync.model.keys import history_key, split_key

HISTORY_LIMIT = 20
HISTORY_WRITE_ATTEMPTS = 5


class SplitError(Exception):
    """A split change that cannot be made (invalid input, unknown service or group)."""


class ConcurrentChange(SplitError):
    """The split changed since it was read (or since the revision the operator expected)."""


@dataclass(frozen=True)
class Current:
    """A service's split as stored: its JSON value (None when unset) and revision (0: absent)."""

    value: dict[str, Any] | None
    revision: int


def parse_assignments(pairs: list[str]) -> dict[str, float]:
    """`["blue=90", "green=10"]` as group shares; SplitError naming a malformed pair or a
    group given twice (`blue=90 blue=10` is a typo, not a change of mind)."""
    groups: dict[str, float] = {}
    for pair in pairs:
        name, sep, share = pair.partition("=")
        if name in groups:
            raise SplitError(f"{pair!r}: group {name!r} given twice")
        try:
            groups[name] = float(share) if sep else float("nan")
        except ValueError:
            groups[name] = float("nan")
        if not sep or groups[name] != groups[name]:
            raise SplitError(f"{pair!r}: expected GROUP=SHARE, e.g. blue=90")
    return groups


def known_groups(service: ServiceState | None, current: dict[str, Any] | None) -> set[str]:
    """Groups a change may name: those of the current split, and those of the instances
    (their tags, or their meta values when the split groups by meta)."""
    names = set((current or {}).get("groups", {}))
    if service is None:
        return names
    by = str((current or {}).get("by", BY_TAG))
    for server in service.servers:
        names.update(labels(by, server.tags, server.meta))
    return names


def require_service(state: DesiredState, service: str) -> ServiceState:
    """The service, or a SplitError when no source knows it."""
    found = state.service(service)
    if found is None:
        raise SplitError(f"service {service!r} does not exist (no route, split or instance)")
    return found


def checked(service: str, value: dict[str, Any], known: set[str]) -> str:
    """The split's JSON text after the contract's checks and the known-group check."""
    unknown = sorted(set(value.get("groups", {})) - known)
    if unknown:
        raise SplitError(
            f"unknown group(s) {', '.join(unknown)} for service {service}; known: "
            + (", ".join(sorted(known)) or "none")
        )
    try:
        parse_split(service, value)
    except ContractError as error:
        raise SplitError(f"split for {service}: {error}") from error
    return json.dumps(value, sort_keys=False)


def with_groups(current: dict[str, Any] | None, groups: dict[str, float]) -> dict[str, Any]:
    """The current split with its groups replaced (by and on_empty kept)."""
    value = dict(current or {"by": "tag"})
    value["groups"] = {name: _number(share) for name, share in groups.items()}
    return value


def promoted(current: dict[str, Any] | None, group: str) -> dict[str, float]:
    """All of the traffic to one group: 100 to it, 0 to every other named group."""
    shares = {name: 0.0 for name in (current or {}).get("groups", {})}
    shares[group] = 100.0
    return shares


def _number(share: float) -> float | int:
    return int(share) if float(share).is_integer() else round(share, 2)


def actor() -> str:
    """Who makes a change, for the history: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def read(store: Store, service: str) -> Current:
    """The stored split (an unparseable one counts as unset, to be replaced)."""
    found = await store.get(split_key(service))
    if found is None:
        return Current(None, 0)
    try:
        value = decode_json(found.value)
    except ContractError:
        return Current(None, found.revision)
    return Current(value if isinstance(value, dict) else None, found.revision)


async def history(store: Store, service: str) -> list[dict[str, Any]]:
    """The recorded changes, oldest first."""
    found = await store.get(history_key(service))
    return _entries(found)


def _entries(found: Versioned | None) -> list[dict[str, Any]]:
    if found is None:
        return []
    try:
        entries = json.loads(found.value)
    except ValueError:
        return []
    return (
        [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
    )


async def write(
    store: Store,
    service: str,
    value: dict[str, Any],
    *,
    known: set[str],
    expect_revision: int | None,
    reason: str,
    current: Current | None = None,
) -> int:
    """Compare-and-swap the split, then record the change; the revision written over."""
    current = current or await read(store, service)
    if expect_revision is not None and expect_revision != current.revision:
        raise ConcurrentChange(
            f"split of {service} is at revision {current.revision}, not {expect_revision}: "
            "someone changed it; read it again (lbsync split get) and retry"
        )
    text = checked(service, value, known)
    if not await store.put_if(split_key(service), text, current.revision):
        raise ConcurrentChange(
            f"split of {service} changed while it was being written (it was at revision "
            f"{current.revision}); nothing was overwritten: read it again and retry"
        )
    await _record(store, service, previous=current.value, value=value, reason=reason)
    return current.revision


async def _record(
    store: Store,
    service: str,
    *,
    previous: dict[str, Any] | None,
    value: dict[str, Any],
    reason: str,
) -> None:
    entry = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "who": actor(),
        "why": reason,
        "previous": previous,
        "split": value,
    }
    for _ in range(HISTORY_WRITE_ATTEMPTS):
        found = await store.get(history_key(service))
        entries = ([*_entries(found), entry])[-HISTORY_LIMIT:]
        revision = found.revision if found else 0
        if await store.put_if(history_key(service), json.dumps(entries), revision):
            return
    raise SplitError(f"split of {service} written, but its history could not be recorded")


async def rollback(store: Store, service: str, *, known: set[str], reason: str) -> dict[str, Any]:
    """Write back the split in force before the last recorded change; returns it."""
    entries = await history(store, service)
    if not entries:
        raise SplitError(f"no recorded change of {service}'s split to roll back")
    previous = entries[-1].get("previous")
    if not isinstance(previous, dict):
        raise SplitError(f"the split of {service} was unset before its last change")
    current = await read(store, service)
    await write(
        store,
        service,
        previous,
        known=known,
        expect_revision=None,
        reason=reason or "rollback",
        current=current,
    )
    return previous
