"""The plan: what a target needs, from the rendered file, the file on disk and what runs (pure).

Four outcomes:
- NOTHING: the proxy runs these bytes and they are on disk;
- RUNTIME: the rendered file differs from the running one only where HAProxy's runtime API can
  act: server weights, servers joining or leaving a dynamic backend (see `runtime_changes`);
  the file is still written (validated unless only weights changed from a file this process
  validated) and then the operations are sent, so a later reload keeps everything;
- RELOAD: the file on disk is right but the proxy may not run it (e.g. a reload that could not
  be confirmed);
- FULL: validate, write, reload.

`running` is what the proxy is known to run (None when unknown). Its `layout` is present only
for targets with a runtime API; without one every change is FULL, as for nginx.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lbsync.layout import MAX_WEIGHT, Backend, Layout, ServerLine


class Plan(StrEnum):
    """What one cycle does to one target."""

    NOTHING = "nothing"
    RUNTIME = "runtime"
    RELOAD = "reload"
    FULL = "full"


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


@dataclass(frozen=True)
class Running:
    """What the proxy is known to run: the bytes, their layout (targets with a runtime API)
    and whether this process validated them (or derived them from validated bytes by weight
    changes only)."""

    content: bytes
    layout: Layout | None = None
    validated: bool = False


@dataclass(frozen=True)
class Decision:
    """A plan and what it takes: the runtime operations, whether the file must be written, whether
    the validator must see it first, and why a change cannot go through the runtime API.

    A RUNTIME plan skips the validator only when the running file was validated and only weights
    change: the new file then differs from a valid one in nothing but integers 0-256 after
    `weight` on server lines, and HAProxy accepts any of them there."""

    plan: Plan
    operations: tuple[Operation, ...] = ()
    write: bool = False
    validate: bool = False
    reason: str = ""


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
    if not 0 <= new.weight <= MAX_WEIGHT:
        raise NotRuntime(f"{where}: weight {new.weight} outside 0-{MAX_WEIGHT}")
    return SetWeight(backend.name, new.name, new.weight)


def _backend_changes(old: Backend, new: Backend, layout: Layout) -> list[Operation]:
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
            changes += _backend_changes(old_backend, backend, new)
    order = {AddServer: 0, SetWeight: 1, DelServer: 2}
    return tuple(sorted(changes, key=lambda change: order[type(change)]))


def plan(
    rendered: bytes,
    on_disk: bytes | None,
    running: Running | None,
    layout: Layout | None = None,
) -> Decision:
    """Decide one target's cycle. `layout` is the rendered file's layout, given only for targets
    with a runtime API."""
    write = rendered != on_disk
    if running is not None and rendered == running.content and not write:
        return Decision(Plan.NOTHING)
    if running is None:
        reason = "what the proxy runs is not known"
    elif layout is None or running.layout is None:
        reason = "no runtime API"
    else:
        try:
            operations = runtime_changes(running.layout, layout)
        except NotRuntime as error:
            reason = str(error)
        else:
            weights_only = all(isinstance(each, SetWeight) for each in operations)
            return Decision(
                Plan.RUNTIME,
                operations,
                write=write,
                validate=not (running.validated and weights_only),
            )
    if write:
        return Decision(Plan.FULL, write=True, validate=True, reason=reason)
    return Decision(Plan.RELOAD, reason=reason)
