"""The Consul source's watchers: one task per blocking query, their results composed into one
snapshot on every change (see `source.py` for what is watched and why)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from lbsync.common.backoff import Backoff
from lbsync.kv.consul import CATALOG_NEEDS, AclRefusal, AclState, Agents, Fault, FaultKind
from lbsync.model.keys import route_key
from lbsync.model.values import Rejection, Snapshot
from lbsync.sources.consul.mapping import (
    KVView,
    ServiceView,
    compose,
    exposed,
    kv_view,
    service_view,
)
from lbsync.sources.consul.watch import Read, Retry, blocking_reads

_T = TypeVar("_T")


class ConsulSourceError(RuntimeError):
    """A watcher failed in a way no retry can fix (a bug): raised into the pipeline."""


class Watchers:
    """One run of `ConsulSource.snapshots()`: its watcher tasks and what they last reported."""

    def __init__(
        self, agents: Agents, *, name: str, prefix: str, max_services: int, retry: Backoff
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.max_services = max_services
        self.agents = agents
        self.retry = Retry(retry, random.Random())
        self.kv: KVView | None = None
        self.catalog: dict[str, tuple[str, ...]] | None = None
        self.services: dict[str, ServiceView | None] = {}
        self.faults: dict[str, Fault] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.service_tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping: set[asyncio.Task[None]] = set()
        self.unwatched: tuple[str, ...] = ()
        self.changed = asyncio.Event()
        self.crashed: BaseException | None = None

    @property
    def watched(self) -> frozenset[str]:
        """Services with an open health watch right now."""
        return frozenset(self.service_tasks)

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Snapshots as the watchers report; raises `ConsulSourceError` if one crashed."""
        self.tasks["token"] = self._start("token", self._check_token())
        self.tasks["kv"] = self._start("kv", self._follow("kv", self._read_kv, self._set_kv))
        self.tasks["catalog"] = self._start(
            "catalog", self._follow("catalog", self._read_catalog, self._set_catalog)
        )
        last: Snapshot | None = None
        last_kind: FaultKind | None = None
        while True:
            await self.changed.wait()
            await asyncio.sleep(0)  # watchers woken by the same Raft write report together
            self.changed.clear()
            if self.crashed is not None:
                raise ConsulSourceError(f"{self.name}: watcher failed") from self.crashed
            self._sync_services()
            composed = self._compose()
            if composed is None:
                continue
            snapshot, kind = composed
            snapshot = snapshot.sharing(last)
            if snapshot == last or (kind is not None and kind == last_kind):
                continue  # a repeat, or a fault of the kind already reported
            last, last_kind = snapshot, kind
            yield snapshot

    async def close(self) -> None:
        """Stop every watcher."""
        tasks = [*self.tasks.values(), *self.service_tasks.values(), *self.stopping]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"lbsync {self.name} {name}")
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.stopping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.crashed = task.exception()
            self.changed.set()

    def _report(self, name: str, fault: Fault | None) -> None:
        """Keep the first fault of a streak (stable text), a new one only when its kind changes."""
        if fault is None:
            self.faults.pop(name, None)
        elif name not in self.faults or self.faults[name].kind != fault.kind:
            self.faults[name] = fault
        self.changed.set()

    async def _follow(self, name: str, read: Read[_T], apply: Callable[[_T], None]) -> None:
        async for item in blocking_reads(read, self.retry):
            if isinstance(item, Fault):
                self._report(name, item)
            else:
                apply(item)
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
        self.kv = kv_view(items, prefix=self.prefix)

    async def _read_catalog(self, index: int) -> tuple[int, dict[str, tuple[str, ...]]]:
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
        return found, services

    def _set_catalog(self, services: dict[str, tuple[str, ...]]) -> None:
        self.catalog = services

    def _sync_services(self) -> None:
        """Start and stop health watches to match the exposed services in the catalog."""
        if self.kv is None or self.catalog is None:
            return
        wanted = sorted(exposed(self.kv, self.catalog))
        keep = set(wanted[: self.max_services])
        self.unwatched = tuple(wanted[self.max_services :])
        for service in set(self.service_tasks) - keep:
            task = self.service_tasks.pop(service)
            task.cancel()
            self.stopping.add(task)
            self.services.pop(service, None)
            self.faults.pop(f"service:{service}", None)
        for service in sorted(keep - set(self.service_tasks)):
            self.services[service] = None
            self.service_tasks[service] = self._start(f"service {service}", self._watch(service))

    def _watch(self, service: str) -> Coroutine[Any, Any, None]:
        async def read(index: int) -> tuple[int, list[dict[str, Any]]]:
            return await self.agents.health(service, index)

        def apply(nodes: list[dict[str, Any]]) -> None:
            self.services[service] = service_view(service, nodes)

        return self._follow(f"service:{service}", read, apply)

    def _compose(self) -> tuple[Snapshot, FaultKind | None] | None:
        """The snapshot to offer and its fault kind; None while a first read is missing."""
        if self.faults:
            order = ["token", "kv", "catalog", *sorted(n for n in self.faults if ":" in n)]
            named = [self.faults[name] for name in order if name in self.faults]
            fault = min(named, key=lambda f: 0 if f.kind is FaultKind.ACL else 1)
            return Snapshot(source=self.name, usable=False, error=str(fault)), fault.kind
        views = {service: view for service, view in self.services.items() if view is not None}
        if self.kv is None or self.catalog is None or len(views) < len(self.service_tasks):
            return None
        snapshot = compose(source=self.name, kv=self.kv, catalog=self.catalog, services=views)
        if self.unwatched:
            limit = self.max_services
            extra = tuple(
                (
                    route_key(service),
                    Rejection(
                        where=f"consul service {service}",
                        message=f"not watched: more than {limit} exposed services",
                    ),
                )
                for service in self.unwatched
            )
            snapshot = Snapshot(
                source=snapshot.source,
                entries=snapshot.entries,
                rejected=tuple(sorted(snapshot.rejected + extra, key=lambda pair: pair[0])),
                raw=snapshot.raw,
            )
        return snapshot, None
