"""The runtime operations that turn what HAProxy runs into what a new file says (pure).

Computed from two layouts (`layout.py`): when the skeletons are equal and, backend by backend,
server lines differ only in their weight, or whole lines appear or disappear in a dynamic
backend, the difference is a list of `SetWeight`, `AddServer` and `DelServer`; anything else is
`NotRuntime`, with the reason, and needs a reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbsync.core.weights import HAPROXY_MAX_WEIGHT
from lbsync.haproxy.layout import Backend, Layout, ServerLine


@dataclass(frozen=True)
class SetWeight:
    """`set server <backend>/<server> weight <weight>`."""

    backend: str
    server: str
    weight: int


@dataclass(frozen=True)
class AddServer:
    """`add server <backend>/<server> <arguments>`, its health check enabled, then made ready
    (HAProxy 2.6 creates it in maintenance with checks off)."""

    backend: str
    server: str
    arguments: tuple[str, ...]
    weight: int | None
    checked: bool


@dataclass(frozen=True)
class DelServer:
    """Put a server in maintenance (no new request reaches it), then `del server`; HAProxy
    refuses the delete while requests are still in flight, and the server then lingers in
    maintenance until a later cycle deletes it or a reload drops it."""

    backend: str
    server: str


Operation = AddServer | SetWeight | DelServer


class NotRuntime(Exception):
    """The change needs a reload; the message says why."""


def _weight_change(backend: Backend, old: ServerLine, new: ServerLine) -> SetWeight | None:
    if new.weight == old.weight:
        return None
    where = f"{backend.name}/{new.name}"
    if not backend.dynamic:
        raise NotRuntime(f"{backend.name}: balance {backend.balance} ignores runtime weights")
    if old.weight is None or new.weight is None:
        raise NotRuntime(f"{where}: a weight given as a plain integer on only one side")
    if not 0 <= new.weight <= HAPROXY_MAX_WEIGHT:
        raise NotRuntime(f"{where}: weight {new.weight} outside 0-{HAPROXY_MAX_WEIGHT}")
    return SetWeight(backend.name, new.name, new.weight)


def backend_changes(old: Backend, new: Backend, layout: Layout) -> list[Operation]:
    """The operations that turn one backend into another within `layout`, or `NotRuntime`."""
    before = {server.name: server for server in old.servers}
    after = {server.name: server for server in new.servers}
    if len(before) != len(old.servers) or len(after) != len(new.servers):
        raise NotRuntime(f"{new.name}: two servers with the same name")
    changes: list[Operation] = []
    for name, server in after.items():
        where = f"{new.name}/{name}"
        previous = before.get(name)
        if previous is None:
            if not new.dynamic:
                raise NotRuntime(f"{new.name}: balance {new.balance} refuses `add server`")
            if layout.inherited_defaults:
                raise NotRuntime(
                    f"{where}: `default-server` settings are not given to servers added at runtime"
                )
            if not server.plain or "agent-check" in server.tokens:
                raise NotRuntime(f"{where}: this server line cannot be sent to the runtime API")
            if "cookie" in server.tokens:  # HAProxy 2.6's `add server` refuses the keyword
                raise NotRuntime(f"{where}: a server with a `cookie` cannot be added at runtime")
            changes.append(AddServer(new.name, name, server.tokens, server.weight, server.checked))
            continue
        if previous.settings != server.settings or not (previous.plain and server.plain):
            raise NotRuntime(f"{where}: changed beyond its weight")
        weight = _weight_change(new, previous, server)
        if weight is not None:
            changes.append(weight)
    for name in before.keys() - after.keys():
        if not new.dynamic:
            raise NotRuntime(f"{new.name}: balance {new.balance} refuses `del server`")
        changes.append(DelServer(new.name, name))
    return changes


def runtime_changes(old: Layout, new: Layout) -> tuple[Operation, ...]:
    """The runtime operations that turn what `old` runs into what `new` would run after a
    reload, or `NotRuntime` when there are none. Servers are added first and removed last, so
    a backend never has fewer servers than needed in between."""
    if old.skeleton != new.skeleton:
        raise NotRuntime("the configuration changed outside backend server lines")
    names = [backend.name for backend in new.backends]
    if len(set(names)) != len(names):
        raise NotRuntime("two backends with the same name")
    before = {backend.name: backend for backend in old.backends}
    changes: list[Operation] = []
    for backend in new.backends:
        old_backend = before[backend.name]
        if old_backend != backend:  # most backends of a large file are untouched
            changes += backend_changes(old_backend, backend, new)
    return in_order(changes)


def in_order(changes: list[Operation]) -> tuple[Operation, ...]:
    """Servers added first and removed last, so a backend never has fewer servers than needed
    in between."""
    order = {AddServer: 0, SetWeight: 1, DelServer: 2}
    return tuple(sorted(changes, key=lambda change: order[type(change)]))
