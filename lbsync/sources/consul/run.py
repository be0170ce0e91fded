"""The Consul source's watchers: three blocking queries and one reader, their results composed
into one snapshot per batch of changes, part by part (see `source.py` for what is watched and
why, `changes.py` for which service reads each change asks for, and `parts.py` for which parts
a change makes again)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from lbsync.common.backoff import Backoff
from lbsync.kv.consul import CATALOG_NEEDS, AclRefusal, AclState, Agents, Fault, FaultKind
from lbsync.model.values import Snapshot
from lbsync.sources.consul.changes import (
    HealthState,
    check_changes,
    explained,
    health_state,
    services_to_read,
    tags_moved,
)
from lbsync.sources.consul.fabio import FabioRoutes, parse_fabio_config
from lbsync.sources.consul.mapping import (
    KVView,
    ServiceView,
    exposed,
    kv_keys,
    kv_view,
    service_view,
)
from lbsync.sources.consul.parts import ComposeCache, compose
from lbsync.sources.consul.watch import Read, Retry, blocking_reads

EXPLAIN_WAIT: Final = 2.0
"""Seconds a catalog move waits for the health state to reach its index before it counts as
unexplained (a registration through the catalog API without checks never moves the health
state's index)."""

_T = TypeVar("_T")


def answer_digest(nodes: list[dict[str, Any]]) -> bytes:
    """A digest of a decoded health answer: mapping one is ten times dearer than this (0.2 ms
    against 6.7 ms for ten instances), and a sweep finds most services unchanged."""
    text = json.dumps(nodes, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class ConsulSourceError(RuntimeError):
    """A watcher failed in a way no retry can fix (a bug): raised into the pipeline."""


@dataclass(frozen=True)
class CatalogView:
    """`/v1/catalog/services` at one index: every service with the union of its tags."""

    index: int
    services: dict[str, tuple[str, ...]]


class Watchers:
    """One run of `ConsulSource.snapshots()`: its tasks and what they last reported."""

    def __init__(
        self,
        agents: Agents,
        *,
        name: str,
        prefix: str,
        retry: Backoff,
        resync: float,
        fabio_key: str | None = None,
    ) -> None:
        self.name = name
        self.fabio_key = fabio_key
        self.fabio: FabioRoutes | None = None
        self.prefix = prefix
        self.agents = agents
        self.retry = Retry(retry, random.Random())
        self.resync = resync
        self.held = kv_keys(prefix)  # the KV keys by part, from one read to the next
        self.composed = ComposeCache()  # the snapshot's parts and what each was made of
        self.kv: KVView | None = None
        self.catalog: CatalogView | None = None
        self.health: HealthState | None = None
        self.exposed: frozenset[str] = frozenset()
        self.services: dict[str, ServiceView] = {}  # the exposed services read so far
        self.answers: dict[str, bytes] = {}  # a digest of each one's last answer
        self.pending: set[str] = set()  # exposed services to read (again)
        self.read_wanted = asyncio.Event()
        self.unexplained: list[int] = []  # catalog indexes waiting for the health state
        self.changes: list[int] = []  # indexes of writes that changed checks, not yet matched
        self.explain_timer: asyncio.TimerHandle | None = None
        self.recovering: set[str] = set()
        self.faults: dict[str, Fault] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.changed = asyncio.Event()
        self.crashed: BaseException | None = None

    @property
    def watched(self) -> frozenset[str]:
        """The exposed services followed right now."""
        return self.exposed

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Snapshots as the watchers report; raises `ConsulSourceError` if one crashed."""
        self.tasks["token"] = self._start("token", self._check_token())
        self.tasks["kv"] = self._start("kv", self._follow("kv", self._read_kv, self._set_kv))
        self.tasks["catalog"] = self._start(
            "catalog", self._follow("catalog", self._read_catalog, self._set_catalog)
        )
        self.tasks["health"] = self._start(
            "health", self._follow("health", self._read_health, self._set_health)
        )
        self.tasks["reader"] = self._start("reader", self._read_services())
        if self.fabio_key is not None:
            self.tasks["fabio"] = self._start(
                "fabio", self._follow("fabio", self._read_fabio, self._set_fabio)
            )
        self.tasks["resync"] = self._start("resync", self._resync())
        last: Snapshot | None = None
        last_kind: FaultKind | None = None
        while True:
            await self.changed.wait()
            await asyncio.sleep(0)  # watchers woken by the same Raft write report together
            self.changed.clear()
            if self.crashed is not None:
                raise ConsulSourceError(f"{self.name}: watcher failed") from self.crashed
            composed = self._compose()
            if composed is None:
                continue
            snapshot, kind = composed  # its unchanged parts are the last one's objects
            if snapshot == last or (kind is not None and kind == last_kind):
                continue  # a repeat, or a fault of the kind already reported
            last, last_kind = snapshot, kind
            yield snapshot

    async def close(self) -> None:
        """Stop every task."""
        if self.explain_timer is not None:
            self.explain_timer.cancel()
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"lbsync {self.name} {name}")
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.crashed = task.exception()
            self.changed.set()

    def _report(self, name: str, fault: Fault | None) -> None:
        """Keep the first fault of a streak (stable text), a new one only when its kind changes;
        a new snapshot is composed when the faults changed."""
        if fault is None:
            if self.faults.pop(name, None) is not None:
                self.changed.set()
        elif name not in self.faults or self.faults[name].kind != fault.kind:
            self.faults[name] = fault
            self.changed.set()

    async def _follow(self, name: str, read: Read[_T], apply: Callable[[_T], None]) -> None:
        """Apply each new answer of a blocking query; after a fault, read every service again
        (the agent may have restarted empty, or another agent answers now)."""
        async for item in blocking_reads(read, self.retry):
            if isinstance(item, Fault):
                self.recovering.add(name)
                self._report(name, item)
                continue
            apply(item)
            if name in self.recovering:
                self.recovering.discard(name)
                self._sweep()
            self._report(name, None)

    async def _check_token(self) -> None:
        """Report an unknown token at once; retried until Consul knows it, then done."""
        what = f"{self.prefix} or the service catalog"
        failures = 0
        while True:
            try:
                await self.agents.acl_state(what)
            except Fault as fault:
                failures += 1
                self._report("token", fault)
                await asyncio.sleep(self.retry.delay(failures, fault))
                continue
            self._report("token", None)
            return

    async def _read_kv(self, index: int) -> tuple[int, list[tuple[str, bytes | None]]]:
        found, items = await self.agents.kv(self.prefix, index)
        if not items:
            await self.agents.check_kv_readable(self.prefix)
        return found, items

    def _set_kv(self, items: list[tuple[str, bytes | None]]) -> None:
        self.kv = kv_view(items, prefix=self.prefix, held=self.held)
        self._sync()
        self.changed.set()

    async def _read_fabio(self, index: int) -> tuple[int, str]:
        """Fabio's key (a prefix read, of that one key), its text ("" when absent)."""
        assert self.fabio_key is not None
        found, items = await self.agents.kv(self.fabio_key, index)
        text = next((value or b"" for key, value in items if key == self.fabio_key), b"")
        return found, text.decode("utf-8", "replace")

    def _set_fabio(self, text: str) -> None:
        self.fabio = parse_fabio_config(text)
        self.changed.set()

    async def _read_catalog(self, index: int) -> tuple[int, CatalogView]:
        """The catalog with its index as part of the value: an index that moved with the same
        services and tags is news too (a re-registration the health state cannot show)."""
        found, services = await self.agents.catalog(index)
        if not services and await self.agents.acl_state("the catalog") is not AclState.DISABLED:
            raise AclRefusal(
                self.agents.refusal(
                    "the service catalog",
                    CATALOG_NEEDS,
                    "Consul answered an empty catalog, which a live cluster never has: "
                    "it always lists the consul service",
                )
            )
        return found, CatalogView(index=found, services=services)

    def _set_catalog(self, catalog: CatalogView) -> None:
        old, self.catalog = self.catalog, catalog
        if old is None or catalog.index < old.index:
            if old is not None:
                self._sweep()  # a restarted agent, or another one: read everything again
            self._forget_moves()
        else:
            moved = tags_moved(old.services, catalog.services)
            self._want(moved)
            if catalog.index > old.index:
                if moved:  # explained: the services whose tags moved are read
                    self.changes.append(catalog.index)
                self.unexplained.append(catalog.index)
                self._settle()
            if not moved:
                self._sync()
                return  # only the index moved: the reads it asks for compose when done
        self._sync()
        self.changed.set()

    async def _read_health(self, index: int) -> tuple[int, tuple[int, list[dict[str, Any]]]]:
        """The health state with its index as part of the value (see `_set_health`)."""
        found, checks = await self.agents.health_state(index)
        return found, (found, checks)

    def _set_health(self, state: tuple[int, list[dict[str, Any]]]) -> None:
        index, checks = state
        new = health_state(index, checks)
        old, self.health = self.health, new
        if old is not None and index < old.index:
            self._sweep()
            self._forget_moves()
        elif old is not None:
            nodes_of = {service: view.nodes for service, view in self.services.items()}
            self._want(services_to_read(old, new, nodes_of=nodes_of))
            floor = self.catalog.index if self.catalog is not None else 0
            waiting = set(self.unexplained)  # a later catalog move has a higher index
            self.changes = [
                at
                for at in (*self.changes, *check_changes(old, new))
                if at > floor or at in waiting
            ]
        self._settle()
        if self.pending:
            self.read_wanted.set()

    def _settle(self) -> None:
        """Decide the catalog moves the health state has caught up with: each is explained by a
        check changed in its write, or else swept; the rest wait, at most `EXPLAIN_WAIT`."""
        if not self.unexplained or self.health is None:
            return
        reached = [at for at in self.unexplained if at <= self.health.index]
        if any(not explained(self.changes, at=at) for at in reached):
            self._sweep()
        if reached:
            self._settle_at(max(reached))
        if self.unexplained and self.explain_timer is None:
            loop = asyncio.get_running_loop()
            self.explain_timer = loop.call_later(EXPLAIN_WAIT, self._explain_timeout)

    def _explain_timeout(self) -> None:
        self.explain_timer = None
        if self.unexplained:
            self._sweep()
            self._settle_at(max(self.unexplained))

    def _settle_at(self, index: int) -> None:
        """Catalog moves up to `index` are decided: forget them and the check changes before."""
        self.unexplained = [at for at in self.unexplained if at > index]
        self.changes = [at for at in self.changes if at > index]
        if not self.unexplained and self.explain_timer is not None:
            self.explain_timer.cancel()
            self.explain_timer = None

    def _forget_moves(self) -> None:
        """A first answer, or indexes that went backwards: nothing is waiting to be explained."""
        self.unexplained = []
        self.changes = []
        if self.explain_timer is not None:
            self.explain_timer.cancel()
            self.explain_timer = None

    def _sync(self) -> None:
        """Follow the set of exposed services: forget those that left, read those that came."""
        if self.kv is None or self.catalog is None:
            return
        now = exposed(self.kv, self.catalog.services)
        for service in self.exposed - now:
            self.services.pop(service, None)
            self.answers.pop(service, None)
            self.pending.discard(service)
        came = now - self.exposed
        self.exposed = now
        self._want(came)

    def _want(self, services: Iterable[str]) -> None:
        """Read these services (the exposed ones among them) at the reader's next turn."""
        wanted = self.exposed.intersection(services)
        if wanted:
            self.pending |= wanted
            self.read_wanted.set()

    def _sweep(self) -> None:
        self._want(self.exposed)

    async def _read_services(self) -> None:
        """Read the pending services one at a time (one connection), after the catalog and the
        health state gave the index every later change is measured from; a batch composes one
        snapshot."""
        failures = 0
        while True:
            await self.read_wanted.wait()
            self.read_wanted.clear()
            if self.health is None or self.catalog is None:
                continue  # the baselines' first answers wake the reader again
            for service in sorted(self.pending):
                if service not in self.pending:
                    continue
                self.pending.discard(service)
                try:
                    nodes = await self.agents.health(service)
                except Fault as fault:
                    self.pending.add(service)
                    failures += 1
                    self._report("reader", fault)
                    await asyncio.sleep(self.retry.delay(failures, fault))
                    break
                failures = 0
                self._report("reader", None)
                digest = answer_digest(nodes)
                if service in self.exposed and digest != self.answers.get(service):
                    self.answers[service] = digest  # equal answers (most of a sweep) map once
                    self.services[service] = service_view(service, nodes)
            if self.pending:
                self.read_wanted.set()
            else:
                self.changed.set()

    async def _resync(self) -> None:
        """Read every exposed service again every `resync` seconds: the one way to see what
        neither blocking query shows (a node's new address alone)."""
        while True:
            await asyncio.sleep(self.resync)
            self._sweep()

    def _compose(self) -> tuple[Snapshot, FaultKind | None] | None:
        """The snapshot to offer and its fault kind; None while a first read is missing."""
        if self.faults:
            order = ["token", "kv", "catalog", "health", "reader", "fabio"]
            named = [self.faults[name] for name in order if name in self.faults]
            fault = min(named, key=lambda f: 0 if f.kind is FaultKind.ACL else 1)
            return Snapshot(source=self.name, usable=False, error=str(fault)), fault.kind
        if self.kv is None or self.catalog is None or not self.exposed <= self.services.keys():
            return None
        if self.fabio_key is not None and self.fabio is None:
            return None  # Fabio's key not read yet: its splits would come a snapshot later
        services = {service: self.services[service] for service in self.exposed}
        return compose(
            source=self.name,
            kv=self.kv,
            catalog=self.catalog.services,
            services=services,
            cache=self.composed,
            fabio=self.fabio,
            fabio_key=self.fabio_key or "",
        ), None
