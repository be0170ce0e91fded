"""The fast lane: a change to a few services' servers, applied without rendering the whole file.

At 10,000 servers a whole render takes hundreds of milliseconds, and a weight write must be
live in a few. A change whose services keep their backends' skeleton (every line but the
`server` lines) is applied from what the template renders for the changed services alone:
their new server lines are spliced into the running file in place of the old ones, the
operations between the old and the new lines go to the runtime API, and the whole render
follows off the critical path (the daemon's debounced cycle), which confirms the file byte for
byte or corrects it as any change would. What cannot be decided this way (`NotFast`) waits for
that whole render. Pure: rendering is the caller's `render_alone`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lbsync.core.state import DesiredState, ServiceState
from lbsync.haproxy import layout
from lbsync.haproxy.blocks import Blocks, block_servers, server_blocks, splice
from lbsync.haproxy.layout import Backend, Layout
from lbsync.haproxy.operations import (
    NotRuntime,
    Operation,
    SetWeight,
    backend_changes,
    in_order,
)

# Beyond this many changed services a whole render costs about as much as the lane.
MAX_CHANGED_SERVICES = 64

RenderAlone = Callable[[DesiredState, ServiceState], bytes]


@dataclass(frozen=True)
class NotFast:
    """Why the change waits for the whole render."""

    reason: str


@dataclass(frozen=True)
class Patch:
    """The running file with the changed server lines, its layout and blocks, and the runtime
    operations that make HAProxy run it."""

    content: bytes
    layout: Layout
    blocks: Blocks
    operations: tuple[Operation, ...]

    @property
    def weights_only(self) -> bool:
        """Only weights change: the file differs from a valid one in integers HAProxy accepts."""
        return all(isinstance(operation, SetWeight) for operation in self.operations)


def changed_services(
    basis: DesiredState, state: DesiredState
) -> list[tuple[ServiceState, ServiceState]] | NotFast:
    """The (old, new) services that differ, told by identity (the desired state keeps an
    unchanged service's object); NotFast when services came or went, or what every service
    reads (settings, the health mode) changed."""
    if basis.health_mode is not state.health_mode:
        return NotFast("the health mode changed")
    if basis.settings != state.settings:
        return NotFast("settings changed")
    if len(basis.services) != len(state.services):
        return NotFast("services came or went")
    changed = []
    for old, new in zip(basis.services, state.services, strict=True):
        if old is new:
            continue
        if old.name != new.name:
            return NotFast("services came or went")
        changed.append((old, new))
        if len(changed) > MAX_CHANGED_SERVICES:
            return NotFast(f"more than {MAX_CHANGED_SERVICES} services changed")
    return changed


def _alone_layouts(
    old: ServiceState,
    new: ServiceState,
    *,
    basis: DesiredState,
    state: DesiredState,
    render_alone: RenderAlone,
) -> tuple[bytes, Layout, Layout] | NotFast:
    before = render_alone(basis, old)
    after = render_alone(state, new)
    old_layout = layout.parse(before.decode(errors="replace"))
    new_layout = layout.parse(after.decode(errors="replace"))
    if old_layout.skeleton != new_layout.skeleton:
        return NotFast(f"service {new.name} changed beyond its server lines")
    if [b.name for b in old_layout.backends] != [b.name for b in new_layout.backends]:
        return NotFast(f"service {new.name}'s backends changed")
    return after, old_layout, new_layout


def plan(
    *,
    basis: DesiredState,
    state: DesiredState,
    running: Layout,
    content: bytes,
    blocks: Blocks,
    render_alone: RenderAlone,
) -> Patch | NotFast:
    """The patch that brings the running file (`content`, `running`, rendered from `basis`)
    to `state`, or why there is none."""
    changed = changed_services(basis, state)
    if isinstance(changed, NotFast):
        return changed
    if not changed:
        return NotFast("no service changed")
    index = {backend.name: position for position, backend in enumerate(running.backends)}
    backends = list(running.backends)
    replacements: dict[str, bytes] = {}
    operations: list[Operation] = []
    for old, new in changed:
        if old.exposed != new.exposed:
            return NotFast(f"service {new.name} was exposed or hidden")
        if not new.exposed:
            continue
        found = _alone_layouts(old, new, basis=basis, state=state, render_alone=render_alone)
        if isinstance(found, NotFast):
            return found
        rendered, before, after = found
        alone_blocks = server_blocks(rendered)
        for was, now in zip(before.backends, after.backends, strict=True):
            if was == now:
                continue
            step = _backend_step(
                was,
                now,
                running=running,
                backends=backends,
                index=index,
                blocks=blocks,
                content=content,
            )
            if isinstance(step, NotFast):
                return step
            spot = alone_blocks.by_name.get(now.name)
            if spot is None:
                return NotFast(f"backend {now.name}: its server lines are not one block")
            operations += step
            replacements[now.name] = rendered[spot.start : spot.end]
            backends[index[now.name]] = now
    if not replacements:
        return NotFast("no server line changed")
    patched, moved = splice(content, blocks, replacements)
    return Patch(
        content=patched,
        layout=Layout(running.skeleton, tuple(backends), running.inherited_defaults),
        blocks=moved,
        operations=in_order(operations),
    )


def _backend_step(
    was: Backend,
    now: Backend,
    *,
    running: Layout,
    backends: list[Backend],
    index: dict[str, int],
    blocks: Blocks,
    content: bytes,
) -> list[Operation] | NotFast:
    """The operations for one backend, after checking that the running file holds what the
    service alone rendered before, in one block."""
    position = index.get(now.name)
    block = blocks.by_name.get(now.name)
    if position is None or block is None:
        return NotFast(f"backend {now.name}: not found as one block in the running file")
    current = backends[position]
    if current != was or current.balance != now.balance or current.dynamic != now.dynamic:
        return NotFast(f"backend {now.name}: the running file differs from its last render")
    if block_servers(content[block.start : block.end]) != current.servers:
        return NotFast(f"backend {now.name}: its block does not hold its server lines")
    try:
        return backend_changes(current, now, running)
    except NotRuntime as error:
        return NotFast(str(error))
