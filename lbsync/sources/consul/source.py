"""The Consul source: KV contract under a prefix, plus catalog instances and their health.

Watchers, each a blocking-query loop (see `watch`), report into one place; every change is
composed into a whole snapshot (see `mapping.compose`) and yielded when it differs:

- `token`: once at start, `/v1/acl/token/self`; a configured token that Consul does not know
  is reported at once, before any read could look like "everything was deleted";
- `kv`: recursive read of the prefix;
- `catalog`: `/v1/catalog/services`, for the `lbsync.route=` tags and which services exist;
- one `/v1/health/service/<svc>` per exposed service present in the catalog, started and
  stopped as that set changes, so open blocking queries grow with exposed services only.

The ACL trap: with a default-deny ACL and a missing or unknown token, Consul answers 403, or
404 for a recursive KV read and `{}` for the catalog, which looks like everything was deleted.
So an empty KV read is confirmed by a plain read of the prefix key (403 when not allowed), and
an empty catalog (a live cluster always lists the `consul` service) counts as an ACL refusal
unless ACLs are disabled. Either way the snapshot is unusable with an error naming the problem,
never an empty usable one. Limitation: a token that may read a service but not its nodes makes
that service's health answer empty, which cannot be told from "no instance"; grant
`node_prefix "" { policy = "read" }` with `service_prefix` read.

Faults: the first fault of an outage yields one unusable snapshot (the pipeline keeps the last
good one); more faults of the same kind are not repeated; once every watcher reads again, a
usable snapshot follows. The first usable snapshot waits until every watcher has read once, so
it never shows a route without its instances.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from lbsync.config import ConfigError, ConsulSourceConfig
from lbsync.model.values import Rejection, Snapshot
from lbsync.sources.consul.agents import (
    CATALOG_NEEDS,
    AclRefusal,
    AclState,
    Agents,
    Fault,
    FaultKind,
    Settings,
    addresses_of,
)
from lbsync.sources.consul.mapping import (
    KVView,
    ServiceView,
    compose,
    exposed,
    kv_view,
    route_key,
    service_view,
)
from lbsync.sources.consul.watch import Backoff, Read, blocking_reads

DEFAULT_MAX_SERVICES: Final = 512
POOL_SPARE: Final = 4  # KV, catalog, and the short ACL reads beside them

_T = TypeVar("_T")


class ConsulSourceError(RuntimeError):
    """A watcher failed in a way no retry can fix (a bug): raised into the pipeline."""


def _tls(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> tuple[str | None, tuple[str, str] | str | None]:
    """Check the TLS files now (a configuration error, not a transient fault) for py-consul."""
    if key_file is not None and cert_file is None:
        raise ConfigError("source.consul: key_file needs cert_file")
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as error:
        files = ", ".join(str(path) for path in (ca_file, cert_file, key_file) if path)
        raise ConfigError(f"source.consul: TLS files {files} cannot be used: {error}") from error
    cert: tuple[str, str] | str | None = None
    if cert_file is not None:
        cert = (str(cert_file), str(key_file)) if key_file else str(cert_file)
    return (str(ca_file) if ca_file else None), cert


class ConsulSource:
    """Yields whole snapshots of the KV prefix and the exposed services' instances."""

    @classmethod
    def from_config(cls, config: ConsulSourceConfig) -> ConsulSource:
        """The source a `[source.consul]` table describes."""
        return cls(
            addresses=config.addresses,
            prefix=config.prefix,
            token=config.token,
            datacenter=config.datacenter,
            ca_file=config.ca_file,
            cert_file=config.cert_file,
            key_file=config.key_file,
            wait=config.wait,
        )

    def __init__(
        self,
        *,
        addresses: Sequence[str],
        prefix: str = "lbsync/",
        token: str | None = None,
        datacenter: str | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        wait: float = 30.0,
        retry_max: float = 30.0,
        max_services: int = DEFAULT_MAX_SERVICES,
    ) -> None:
        """`max_services` bounds the health watches, hence the connection pool's size."""
        if not 0 < wait <= 600 or retry_max <= 0 or max_services < 1:
            raise ConfigError(
                "source.consul: wait must be in (0, 600] seconds, retry_max above 0, "
                "max_services at least 1"
            )
        try:
            parsed = addresses_of(addresses)
        except ValueError as error:
            raise ConfigError(f"source.consul: {error}") from error
        if not prefix.strip("/"):
            raise ConfigError("source.consul: prefix must not be empty (e.g. lbsync/)")
        ca, cert = _tls(ca_file, cert_file, key_file)
        self.prefix = prefix.strip("/") + "/"
        self.max_services = max_services
        self.retry_max = retry_max
        self._settings = Settings(
            addresses=parsed,
            token=token or None,
            datacenter=datacenter or None,
            ca_file=ca,
            cert=cert,
            wait=wait,
            pool=max_services + POOL_SPARE,
        )
        self._run: _Run | None = None

    @property
    def name(self) -> str:
        """The source's name in status and errors."""
        return f"consul:{self._settings.addresses[0]}"

    @property
    def watched(self) -> frozenset[str]:
        """Services with an open health watch right now (for status, and to test the bound)."""
        return frozenset(self._run.service_tasks) if self._run else frozenset()

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Whole snapshots, the first once everything was read (or a fault), then per change."""
        async with Agents(self._settings) as agents:
            run = _Run(self, agents)
            self._run = run
            try:
                async for snapshot in run.snapshots():
                    yield snapshot
            finally:
                self._run = None
                await run.close()


class _Run:
    """One run of `snapshots()`: its watcher tasks and what they last reported."""

    def __init__(self, source: ConsulSource, agents: Agents) -> None:
        self.source = source
        self.agents = agents
        self.backoff = Backoff(retry_max=source.retry_max, rng=random.Random())
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

    async def snapshots(self) -> AsyncIterator[Snapshot]:
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
                raise ConsulSourceError(f"{self.source.name}: watcher failed") from self.crashed
            self._sync_services()
            composed = self._compose()
            if composed is None:
                continue
            snapshot, kind = composed
            if snapshot == last or (kind is not None and kind == last_kind):
                continue  # a repeat, or a fault of the kind already reported
            last, last_kind = snapshot, kind
            yield snapshot

    async def close(self) -> None:
        tasks = [*self.tasks.values(), *self.service_tasks.values(), *self.stopping]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"lbsync {self.source.name} {name}")
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
        async for item in blocking_reads(read, self.backoff):
            if isinstance(item, Fault):
                self._report(name, item)
            else:
                apply(item)
                self._report(name, None)

    async def _check_token(self) -> None:
        """Report an unknown token at once; retried until Consul knows it, then done."""
        what = f"{self.source.prefix} or the service catalog"
        failures = 0
        while True:
            try:
                await self.agents.acl_state(what)
            except Fault as fault:
                failures += 1
                self._report("token", fault)
                await asyncio.sleep(self.backoff.delay(failures, fault))
                continue
            self._report("token", None)
            return

    async def _read_kv(self, index: int) -> tuple[int, list[tuple[str, bytes | None]]]:
        found, items = await self.agents.kv(self.source.prefix, index)
        if not items:
            await self.agents.check_kv_readable(self.source.prefix)
        return found, items

    def _set_kv(self, items: list[tuple[str, bytes | None]]) -> None:
        self.kv = kv_view(items, prefix=self.source.prefix)

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
        keep = set(wanted[: self.source.max_services])
        self.unwatched = tuple(wanted[self.source.max_services :])
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
            return Snapshot(source=self.source.name, usable=False, error=str(fault)), fault.kind
        views = {service: view for service, view in self.services.items() if view is not None}
        if self.kv is None or self.catalog is None or len(views) < len(self.service_tasks):
            return None
        snapshot = compose(
            source=self.source.name, kv=self.kv, catalog=self.catalog, services=views
        )
        if self.unwatched:
            limit = self.source.max_services
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
