"""The Consul source's watchers: the KV prefix, each datacenter's catalog and health state
(`datacenter.py`), Fabio's key, and the splitter and resolver config entries, their results
composed into one snapshot per batch of changes, part by part (see `source.py` for what is
watched and why, and `parts.py` for which parts a change makes again).

With `datacenters`, the local datacenter decides the routes (its KV), and each datacenter to
fail over to adds its instances of the exposed services, at their failover tier. A fault there
does not make the snapshot unusable: it is reported as a refusal, and that datacenter's
instances as last read stay (backups that may be stale beat none).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Final, TypeVar

from lbsync.common.backoff import Backoff
from lbsync.kv.consul import Agents, Fault, FaultKind
from lbsync.model.values import Rejection, Snapshot
from lbsync.sources.consul.datacenter import Datacenter
from lbsync.sources.consul.entries import (
    KINDS,
    RESOLVER,
    SPLITTER,
    EntrySplits,
    parse_config_entries,
)
from lbsync.sources.consul.fabio import FabioRoutes, parse_fabio_config
from lbsync.sources.consul.mapping import KVView, ServiceView, exposed, kv_keys, kv_view
from lbsync.sources.consul.parts import DATACENTER_FAULT, ComposeCache, compose
from lbsync.sources.consul.watch import Read, Retry, follow_answers

LOCAL_WATCHERS: Final = ("token", "kv", "catalog", "health", "reader", "fabio", *KINDS)
"""The watchers whose faults make the snapshot unusable, in the order they are reported."""

_T = TypeVar("_T")


class ConsulSourceError(RuntimeError):
    """A watcher failed in a way no retry can fix (a bug): raised into the pipeline."""


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
        datacenters: tuple[str, ...] = (),
        config_entries: bool = False,
    ) -> None:
        self.name = name
        self.fabio_key = fabio_key
        self.fabio: FabioRoutes | None = None
        self.config_entries = config_entries  # follow the splitter and resolver config entries
        self.entry_lists: dict[str, list[dict[str, Any]]] = {}  # each kind's last answer
        self.entries: EntrySplits | None = None
        self.prefix = prefix
        self.agents = agents
        self.retry = Retry(retry, random.Random())
        self.held = kv_keys(prefix)  # the KV keys by part, from one read to the next
        self.composed = ComposeCache()  # the snapshot's parts and what each was made of
        self.kv: KVView | None = None
        self.exposed: frozenset[str] = frozenset()
        self.faults: dict[str, Fault] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.changed = asyncio.Event()
        self.crashed: BaseException | None = None
        self.started = False  # a snapshot was composed: other datacenters are no longer awaited
        names = datacenters or ("",)
        self.datacenters = tuple(
            Datacenter(
                agents,
                dc=None if tier == 0 else dc,
                label=dc,
                failover=tier,
                retry=self.retry,
                resync=resync,
                report=self._report,
                catalog_moved=self._sync,
                changed=self.changed,
            )
            for tier, dc in enumerate(names)
        )
        self.local = self.datacenters[0]

    @property
    def watched(self) -> frozenset[str]:
        """The exposed services followed right now, in any datacenter."""
        return frozenset().union(*(datacenter.followed for datacenter in self.datacenters))

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Snapshots as the watchers report; raises `ConsulSourceError` if one crashed."""
        self.tasks["token"] = self._start("token", self._check_token())
        self.tasks["kv"] = self._start("kv", self._follow("kv", self._read_kv, self._set_kv))
        for datacenter in self.datacenters:
            for name, work in datacenter.tasks().items():
                self.tasks[name] = self._start(name, work)
        if self.fabio_key is not None:
            self.tasks["fabio"] = self._start(
                "fabio", self._follow("fabio", self._read_fabio, self._set_fabio)
            )
        if self.config_entries:
            for entry_kind in KINDS:
                self.tasks[entry_kind] = self._start(entry_kind, self._follow_entries(entry_kind))
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
        for datacenter in self.datacenters:
            datacenter.close()
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

    def _follow(
        self, name: str, read: Read[_T], apply: Callable[[_T], None]
    ) -> Coroutine[Any, Any, None]:
        """A blocking query's watcher; after a fault, every service is read again."""
        return follow_answers(
            read,
            apply,
            retry=self.retry,
            report=functools.partial(self._report, name),
            recovered=self._sweep,
        )

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

    async def _follow_entries(self, kind: str) -> None:
        """Follow the config entries of one kind (a blocking query of their list)."""

        async def read(index: int) -> tuple[int, list[dict[str, Any]]]:
            return await self.agents.config_entries(kind, index)

        def apply(entries: list[dict[str, Any]]) -> None:
            self.entry_lists[kind] = entries
            if self.entry_lists.keys() >= set(KINDS):
                self.entries = parse_config_entries(
                    splitters=self.entry_lists[SPLITTER], resolvers=self.entry_lists[RESOLVER]
                )
                self.changed.set()

        await self._follow(kind, read, apply)

    def _sync(self) -> None:
        """Follow the exposed services: each datacenter follows those its catalog lists."""
        if self.kv is None or self.local.catalog is None:
            return
        catalog = self._catalog()
        self.exposed = exposed(self.kv, catalog)
        for datacenter in self.datacenters:
            if datacenter.catalog is not None:
                datacenter.follow(self.exposed.intersection(datacenter.catalog.services))

    def _catalog(self) -> dict[str, tuple[str, ...]]:
        """The services of every datacenter with their tags: a service the local catalog lists
        has its local tags; one only another datacenter lists (its local instances all gone)
        has that datacenter's, the first in order."""
        if len(self.datacenters) == 1 and self.local.catalog is not None:
            return self.local.catalog.services  # no copy per composition with one datacenter
        merged: dict[str, tuple[str, ...]] = {}
        for datacenter in reversed(self.datacenters):
            if datacenter.catalog is not None:
                merged.update(datacenter.catalog.services)
        return merged

    def _sweep(self) -> None:
        for datacenter in self.datacenters:
            datacenter.sweep()

    def _compose(self) -> tuple[Snapshot, FaultKind | None] | None:
        """The snapshot to offer and its fault kind; None while a first read is missing."""
        local = [self.faults[name] for name in LOCAL_WATCHERS if name in self.faults]
        if local:
            fault = min(local, key=lambda f: 0 if f.kind is FaultKind.ACL else 1)
            return Snapshot(source=self.name, usable=False, error=str(fault)), fault.kind
        if self.kv is None or not self.local.ready:
            return None
        if self.fabio_key is not None and self.fabio is None:
            return None  # Fabio's key not read yet: its splits would come a snapshot later
        if self.config_entries and self.entries is None:
            return None  # the config entries not read yet, likewise
        others = self.datacenters[1:]
        if not self.started and not all(
            dc.ready or self._fault_of(dc) is not None for dc in others
        ):
            return None  # the first snapshot has every datacenter's backups, or their faults
        self.started = True
        remote: dict[str, list[ServiceView]] = {}
        for datacenter in others:
            for service, view in datacenter.views().items():
                remote.setdefault(service, []).append(view)
        return compose(
            source=self.name,
            kv=self.kv,
            catalog=self._catalog(),
            services=self.local.views(),
            cache=self.composed,
            fabio=self.fabio,
            fabio_key=self.fabio_key or "",
            remote={service: tuple(views) for service, views in remote.items()},
            faults=self._datacenter_faults(),
            entries=self.entries,
        ), None

    def _fault_of(self, datacenter: Datacenter) -> Fault | None:
        """The first fault a watcher of another datacenter reports, None while all read."""
        return next(
            (f for name, f in self.faults.items() if name.endswith(datacenter.suffix)), None
        )

    def _datacenter_faults(self) -> tuple[tuple[str, Rejection], ...]:
        """Each other datacenter's first fault, as a refusal: its instances as last read stay."""
        found: list[tuple[str, Rejection]] = []
        for datacenter in self.datacenters[1:]:
            fault = self._fault_of(datacenter)
            if fault is not None:
                where = f"consul datacenter {datacenter.label}"
                message = f"{fault}; its instances as last read are kept as backups"
                found.append((DATACENTER_FAULT + datacenter.label, Rejection(where, message)))
        return tuple(found)
