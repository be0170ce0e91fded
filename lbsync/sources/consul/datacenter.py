"""One datacenter's catalog and health, as the Consul source follows them: two blocking queries
and one reader (see `source.py` for what each reads and why, `changes.py` for which services a
change asks to read again).

The local datacenter and each one to fail over to (`[source.consul] datacenters`) are followed
alike, each with its own indexes: Consul's indexes are per datacenter, and a query with `?dc=`
is answered by that datacenter's servers over the WAN. Which services are followed is decided
outside (`follow`): the services the local KV and the catalogs expose.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from lbsync.kv.consul import CATALOG_NEEDS, AclRefusal, AclState, Agents, Fault
from lbsync.sources.consul.changes import (
    HealthState,
    check_changes,
    explained,
    health_state,
    services_to_read,
    tags_moved,
)
from lbsync.sources.consul.mapping import ServiceView, service_view
from lbsync.sources.consul.watch import Read, Retry, follow_answers

EXPLAIN_WAIT: Final = 2.0
"""Seconds a catalog move waits for the health state to reach its index before it counts as
unexplained (a registration through the catalog API without checks never moves the health
state's index)."""

_T = TypeVar("_T")
Report = Callable[[str, Fault | None], None]


def answer_digest(nodes: list[dict[str, Any]]) -> bytes:
    """A digest of a decoded health answer: mapping one is ten times dearer than this (0.2 ms
    against 6.7 ms for ten instances), and a sweep finds most services unchanged."""
    text = json.dumps(nodes, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


@dataclass(frozen=True)
class CatalogView:
    """`/v1/catalog/services` at one index: every service with the union of its tags."""

    index: int
    services: dict[str, tuple[str, ...]]


class Datacenter:
    """The catalog, the health state and the followed services' instances of one datacenter.

    `dc` is None for the local datacenter as configured (the agent's own, or `datacenter`),
    else the name sent as `?dc=`; `failover` is the instances' tier (0 local). Faults are
    reported under the watcher's name plus `suffix` (" dc2"); `catalog_moved` is called when
    the catalog's services or tags changed (the exposed services may have), `changed` is set
    when a new snapshot should be composed."""

    def __init__(
        self,
        agents: Agents,
        *,
        dc: str | None,
        label: str,
        failover: int,
        retry: Retry,
        resync: float,
        report: Report,
        catalog_moved: Callable[[], None],
        changed: asyncio.Event,
    ) -> None:
        self.agents = agents
        self.dc = dc
        self.label = label  # the datacenter's name for the instances ("" when not configured)
        self.failover = failover
        self.suffix = f" {dc}" if failover else ""
        self.retry = retry
        self.resync = resync
        self._report_to = report
        self._catalog_moved = catalog_moved
        self.changed = changed
        self.catalog: CatalogView | None = None
        self.health: HealthState | None = None
        self.followed: frozenset[str] = frozenset()
        self.services: dict[str, ServiceView] = {}  # the followed services read so far
        self.answers: dict[str, bytes] = {}  # a digest of each one's last answer
        self.pending: set[str] = set()  # followed services to read (again)
        self.read_wanted = asyncio.Event()
        self.unexplained: list[int] = []  # catalog indexes waiting for the health state
        self.changes: list[int] = []  # indexes of writes that changed checks, not yet matched
        self.explain_timer: asyncio.TimerHandle | None = None

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The watchers to start, by the name their faults are reported under."""
        return {
            f"catalog{self.suffix}": self._follow("catalog", self._read_catalog, self._set_catalog),
            f"health{self.suffix}": self._follow("health", self._read_health, self._set_health),
            f"reader{self.suffix}": self._read_services(),
            f"resync{self.suffix}": self._resync(),
        }

    @property
    def ready(self) -> bool:
        """The catalog read, and every followed service (which waits for the health state)."""
        return self.catalog is not None and self.followed <= self.services.keys()

    def views(self) -> dict[str, ServiceView]:
        """The followed services' views read so far (another datacenter's snapshot does not
        wait for a service it began to follow, nor for one its reader failed to read)."""
        return {
            service: view
            for service in self.followed
            if (view := self.services.get(service)) is not None
        }

    def close(self) -> None:
        """Stop the explanation timer (the tasks are cancelled by their owner)."""
        if self.explain_timer is not None:
            self.explain_timer.cancel()

    def _report(self, name: str, fault: Fault | None) -> None:
        self._report_to(name + self.suffix, fault)

    def _follow(
        self, name: str, read: Read[_T], apply: Callable[[_T], None]
    ) -> Coroutine[Any, Any, None]:
        """A blocking query's watcher; after a fault, every followed service is read again."""
        return follow_answers(
            read,
            apply,
            retry=self.retry,
            report=functools.partial(self._report, name),
            recovered=self.sweep,
        )

    async def _read_catalog(self, index: int) -> tuple[int, CatalogView]:
        """The catalog with its index as part of the value: an index that moved with the same
        services and tags is news too (a re-registration the health state cannot show)."""
        found, services = await self.agents.catalog(index, dc=self.dc)
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
                self.sweep()  # a restarted agent, or another one: read everything again
            self._forget_moves()
        else:
            moved = tags_moved(old.services, catalog.services)
            self.want(moved)
            if catalog.index > old.index:
                if moved:  # explained: the services whose tags moved are read
                    self.changes.append(catalog.index)
                self.unexplained.append(catalog.index)
                self._settle()
            if not moved:
                self._catalog_moved()
                return  # only the index moved: the reads it asks for compose when done
        self._catalog_moved()
        self.changed.set()

    async def _read_health(self, index: int) -> tuple[int, tuple[int, list[dict[str, Any]]]]:
        """The health state with its index as part of the value (see `_set_health`)."""
        found, checks = await self.agents.health_state(index, dc=self.dc)
        return found, (found, checks)

    def _set_health(self, state: tuple[int, list[dict[str, Any]]]) -> None:
        index, checks = state
        new = health_state(index, checks)
        old, self.health = self.health, new
        if old is not None and index < old.index:
            self.sweep()
            self._forget_moves()
        elif old is not None:
            nodes_of = {service: view.nodes for service, view in self.services.items()}
            self.want(services_to_read(old, new, nodes_of=nodes_of))
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
            self.sweep()
        if reached:
            self._settle_at(max(reached))
        if self.unexplained and self.explain_timer is None:
            loop = asyncio.get_running_loop()
            self.explain_timer = loop.call_later(EXPLAIN_WAIT, self._explain_timeout)

    def _explain_timeout(self) -> None:
        self.explain_timer = None
        if self.unexplained:
            self.sweep()
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

    def follow(self, services: frozenset[str]) -> None:
        """Follow these services: forget those that left, read those that came."""
        for service in self.followed - services:
            self.services.pop(service, None)
            self.answers.pop(service, None)
            self.pending.discard(service)
        came = services - self.followed
        self.followed = services
        self.want(came)

    def want(self, services: Iterable[str]) -> None:
        """Read these services (the followed ones among them) at the reader's next turn."""
        wanted = self.followed.intersection(services)
        if wanted:
            self.pending |= wanted
            self.read_wanted.set()

    def sweep(self) -> None:
        """Read every followed service again."""
        self.want(self.followed)

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
                    nodes = await self.agents.health(service, dc=self.dc)
                except Fault as fault:
                    self.pending.add(service)
                    failures += 1
                    self._report("reader", fault)
                    await asyncio.sleep(self.retry.delay(failures, fault))
                    break
                failures = 0
                self._report("reader", None)
                digest = answer_digest(nodes)
                if service in self.followed and digest != self.answers.get(service):
                    self.answers[service] = digest  # equal answers (most of a sweep) map once
                    self.services[service] = service_view(
                        service, nodes, datacenter=self.label, failover=self.failover
                    )
            if self.pending:
                self.read_wanted.set()
            else:
                self.changed.set()

    async def _resync(self) -> None:
        """Read every followed service again every `resync` seconds: the one way to see what
        neither blocking query shows (a node's new address alone)."""
        while True:
            await asyncio.sleep(self.resync)
            self.sweep()
