"""Fan-out: many lbsync sources (one per sidecar) following ONE etcd and ONE Consul agent.

N `EtcdSource` / `ConsulSource` objects, each with its own client (its own connection pool),
follow `snapshots()` in this one event loop, against a real etcd and a real Consul dev agent on
loopback. One loop keeps up: at the defaults it is idle between changes and a change wakes N
small parses. What it prints is read from the store itself, not from lbsync:

- requests at the store, idle and during changes: etcd's `/metrics` (`grpc_server_started_total`
  and `grpc_server_handled_total` by method, `etcd_debugging_mvcc_watcher_total`,
  `etcd_debugging_mvcc_watch_stream_total`, `etcd_network_client_grpc_sent_bytes_total`) and
  Consul's `/v1/agent/metrics?format=prometheus` (`consul_http_<verb>_<path>_count` by endpoint,
  counted when a request completes, so a blocking query counts when it returns); and the
  established TCP connections at the store's port (/proc/net/tcp);
- change -> applied at the slowest sidecar: one write (an etcd split key; a Consul KV split key;
  a Consul health flip), time until the LAST of the N sources yielded a snapshot with it;
- memory per sidecar: this process's RSS growth divided by N, the Python allocations of a few
  sources (tracemalloc), and the RSS of one real `lbsync run` (a generic target writing a file).

Consul's agent refuses more than `limits.http_max_conns_per_client` (200) connections from one IP;
N sidecars on one loopback IP exceed it, where in production each sidecar has its own local agent.
This bench raises it in its own dev agent (and turns on Prometheus-format metrics) and says so.
The Consul catalog is smaller by default: a Consul source that holds one blocking query per
exposed service needs N x (services + 2) connections, which must fit under the machine's
open-file limit in both processes.

Run: `python bench/fanout.py` (about 2.5 minutes), or `--sources 300 --store etcd`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: real etcd and Consul

from support.consul import ConsulAgent  # noqa: E402
from support.etcd import EtcdServer, b64  # noqa: E402
from support.waiting import wait_until  # noqa: E402

from lbsync.config import ConsulSourceConfig, EtcdSourceConfig  # noqa: E402
from lbsync.kv.etcd import EtcdClient  # noqa: E402
from lbsync.model.values import Health, Instance, Snapshot, Split  # noqa: E402
from lbsync.sources import Source  # noqa: E402
from lbsync.sources.consul import ConsulSource  # noqa: E402
from lbsync.sources.etcd import EtcdSource  # noqa: E402

PREFIX = "lbsync/"
CONSUL_CONNS_PER_CLIENT = 19000  # the agent refuses more than its open-file limit - 20
CONSUL_EXTRA = (
    f"limits {{ http_max_conns_per_client = {CONSUL_CONNS_PER_CLIENT} }}",
    'telemetry { prometheus_retention_time = "120s" }',
)
SYNC_TIMEOUT = 120.0
CHANGE_TIMEOUT = 60.0
Predicate = Callable[[Snapshot], bool]
Write = Callable[[int], Awaitable[None]]  # the k-th change, written to the store


def service(n: int) -> str:
    return f"svc-{n:03d}"


def route(n: int) -> str:
    return json.dumps({"hosts": [f"{service(n)}.example.com"], "path": "/"})


def split(share: float) -> str:
    return json.dumps({"groups": {"blue": share}})


def instance(n: int, i: int) -> str:
    tag = "blue" if i % 2 == 0 else "green"
    return json.dumps({"address": "127.0.0.1", "port": 20000 + i, "tags": [tag]})


# what the store says


def prometheus(url: str) -> dict[str, float]:
    """Samples of a Prometheus text page: `name{labels}` -> value."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def etcd_requests(samples: dict[str, float]) -> dict[str, float]:
    """gRPC calls started at etcd, by method (streams count once, when opened)."""
    found: dict[str, float] = {}
    for name, value in samples.items():
        if name.startswith("grpc_server_started_total{") and value:
            method = re.search(r'grpc_method="([^"]+)"', name)
            if method:
                found[method.group(1)] = found.get(method.group(1), 0.0) + value
    return found


def consul_requests(samples: dict[str, float]) -> dict[str, float]:
    """HTTP requests completed at the Consul agent, by endpoint (metrics reads left out)."""
    found: dict[str, float] = {}
    for name, value in samples.items():
        match = re.fullmatch(r"consul_http_([A-Z]+)_(v1_\w+?)_*_count", name)
        if match and "agent_metrics" not in match.group(2):
            endpoint = f"{match.group(1)} /{match.group(2).replace('_', '/')}"
            found[endpoint] = found.get(endpoint, 0.0) + value
    return found


def connections(port: int) -> int:
    """Established TCP connections whose local port is the store's (server side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


def rss_kib(pid: int | str = "self") -> tuple[int, int]:
    """VmRSS and VmHWM of a process, KiB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status if line[:2] == "Vm"}
    return values["VmRSS"], values["VmHWM"]


def rates(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """Per-method request rates over a window, busiest first, and their total."""
    deltas = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    busy = sorted(((v, k) for k, v in deltas.items() if v > 0), reverse=True)
    parts = [f"{k} {v / seconds:.1f}/s" for v, k in busy]
    total = sum(v for v, _ in busy)
    return f"total {total / seconds:.1f}/s ({int(total)} in {seconds:.1f} s): " + (
        ", ".join(parts) or "none"
    )


# the sidecars


@dataclass
class Fleet:
    """N sources followed in tasks; `expect` arms a predicate, `arrived` waits for all N."""

    sources: list[Source]
    snapshots: list[int] = field(default_factory=list)
    seen_at: list[float | None] = field(default_factory=list)
    wanted: Predicate | None = None
    pending: int = 0
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.snapshots = [0] * len(self.sources)
        self.seen_at = [None] * len(self.sources)
        self.tasks = [
            asyncio.create_task(self._follow(index, source))
            for index, source in enumerate(self.sources)
        ]

    async def start_in_waves(self, wave: int, ready: Predicate) -> None:
        """Start `wave` sources at a time, each wave once the one before has synced."""
        self.snapshots = [0] * len(self.sources)
        self.expect(ready)
        for first in range(0, len(self.sources), wave):
            batch = list(enumerate(self.sources))[first : first + wave]
            done = asyncio.Event()
            self.pending, self.all_seen = len(batch), done
            self.tasks += [asyncio.create_task(self._follow(i, source)) for i, source in batch]
            await self.arrived(SYNC_TIMEOUT, f"the whole catalog (sources {first}+)", keep=True)
        self.wanted = None

    async def _follow(self, index: int, source: Source) -> None:
        async for snapshot in source.snapshots():
            self.snapshots[index] += 1
            wanted = self.wanted
            if wanted is not None and self.seen_at[index] is None and wanted(snapshot):
                self.seen_at[index] = time.monotonic()
                self.pending -= 1
                if self.pending == 0:
                    self.all_seen.set()

    def expect(self, predicate: Predicate) -> None:
        self.seen_at = [None] * len(self.sources)
        self.pending = len(self.sources)
        self.all_seen = asyncio.Event()
        self.wanted = predicate

    async def arrived(
        self, timeout: float, what: str, *, keep: bool = False
    ) -> tuple[float, float]:
        """Monotonic times at which the first and the last source saw the expected snapshot."""
        try:
            await asyncio.wait_for(self.all_seen.wait(), timeout)
        except TimeoutError:
            missing = sum(1 for t in self.seen_at if t is None)
            raise SystemExit(f"{missing} of {len(self.sources)} never saw {what}") from None
        finally:
            if not keep:
                self.wanted = None
        seen = [t for t in self.seen_at if t is not None]
        return min(seen), max(seen)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def synced(services: int, instances: int) -> Predicate:
    """A usable snapshot with every service's route, split and instances."""

    def check(snapshot: Snapshot) -> bool:
        if not snapshot.usable or len(snapshot.parts) < services:
            return False
        return sum(len(part.entries) for part in snapshot.parts.values()) >= services * (
            instances + 2
        )

    return check


def has_split(name: str, share: float) -> Predicate:
    def check(snapshot: Snapshot) -> bool:
        part = snapshot.parts.get(f"services/{name}")
        return part is not None and any(
            isinstance(entry, Split) and entry.groups == (("blue", share),)
            for _, entry in part.entries
        )

    return check


def critical_count(name: str, count: int) -> Predicate:
    def check(snapshot: Snapshot) -> bool:
        part = snapshot.parts.get(f"services/{name}")
        return part is not None and count == sum(
            1
            for _, entry in part.entries
            if isinstance(entry, Instance) and entry.health is Health.CRITICAL
        )

    return check


def latency_line(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"  {label}: change -> snapshot, {len(ordered)} changes: median "
        f"{statistics.median(ordered) * 1000:.1f}  p99 {p99 * 1000:.1f}  "
        f"max {ordered[-1] * 1000:.1f} ms"
    )


@dataclass(frozen=True)
class Store:
    """What the bench needs of a store: make sources, read its counters, count connections."""

    name: str
    port: int
    make: Callable[[], Source]
    counters: Callable[[], dict[str, float]]
    extra: Callable[[], str]
    sent: Callable[[], float] | None = None  # bytes the store sent its clients, if it counts


async def traced_per_source(store: Store, count: int, ready: Predicate) -> float:
    """Python allocations held by `count` sources once synced, per source, KiB."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fleet = Fleet([store.make() for _ in range(count)])
    fleet.expect(ready)
    fleet.start()
    await fleet.arrived(SYNC_TIMEOUT, "the whole catalog (traced)")
    held = tracemalloc.get_traced_memory()[0] - base
    await fleet.stop()
    tracemalloc.stop()
    return held / count / 1024


async def measure(
    store: Store,
    args: argparse.Namespace,
    *,
    ready: Predicate,
    changes: list[tuple[str, Write, Callable[[int], Predicate]]],
) -> None:
    """The figures for one store: memory, idle and change rates, connections, latencies."""
    n = args.sources
    traced = await traced_per_source(store, args.traced, ready)
    rss_before = rss_kib()[0]
    fleet = Fleet([store.make() for _ in range(n)])
    started = time.monotonic()
    await fleet.start_in_waves(args.wave, ready)
    print(
        f"  {n} sources synced (whole catalog in each), started {args.wave} at a time, in "
        f"{time.monotonic() - started:.1f} s"
    )
    growth = rss_kib()[0] - rss_before
    print(
        f"  memory: this process's RSS grew {growth / 1024:.1f} MiB for {n} sources = "
        f"{growth / n:.0f} KiB per source; Python allocations held per source "
        f"(tracemalloc, {args.traced} sources) {traced:.0f} KiB"
    )
    conns = connections(store.port)
    print(
        f"  TCP connections established at the store's port {store.port}: {conns} "
        f"({conns / n:.2f} per source)"
    )
    before, at = store.counters(), time.monotonic()
    extra_before = store.extra()
    await asyncio.sleep(args.idle)  # an observation window: nothing is awaited but time
    after, seconds = store.counters(), time.monotonic() - at
    print(
        f"  idle requests at the store, {args.idle:.0f} s window: {rates(before, after, seconds)}"
    )
    print(f"  idle, store gauges before/after: {extra_before} / {store.extra()}")
    for label, write, predicate in changes:
        latencies: list[float] = []
        firsts: list[float] = []
        before, at = store.counters(), time.monotonic()
        sent_before = store.sent() if store.sent else 0.0
        for k in range(args.changes):
            fleet.expect(predicate(k))
            t0 = time.monotonic()
            await write(k)
            first, last = await fleet.arrived(CHANGE_TIMEOUT, f"{label} #{k}")
            latencies.append(last - t0)
            firsts.append(first - t0)
        after = store.counters()
        print(latency_line(f"{label}, slowest of N", latencies))
        print(latency_line(f"{label}, fastest of N", firsts))
        window = rates(before, after, time.monotonic() - at)
        per_change = sum(after.values()) - sum(before.values())
        print(
            f"  requests during {label} changes (write to last applied, {args.changes} changes): "
            f"{window}; {per_change / args.changes:.0f} requests per change"
        )
        print(f"  store gauges after {label} changes: {store.extra()}")
        if store.sent:
            per_sidecar = (store.sent() - sent_before) / args.changes / n
            print(f"  bytes sent by the store per change per sidecar: {per_sidecar:.0f}")
    await fleet.stop()


# etcd


def etcd_store(server: EtcdServer) -> Store:
    config = EtcdSourceConfig(endpoints=(server.url,), prefix=PREFIX)

    def counters() -> dict[str, float]:
        return etcd_requests(prometheus(server.url + "/metrics"))

    def extra() -> str:
        samples = prometheus(server.url + "/metrics")
        return (
            f"watchers {samples['etcd_debugging_mvcc_watcher_total']:.0f}, "
            f"watch streams {samples['etcd_debugging_mvcc_watch_stream_total']:.0f}, "
            f"gRPC bytes sent {samples['etcd_network_client_grpc_sent_bytes_total']:.0f}"
        )

    def sent() -> float:
        return prometheus(server.url + "/metrics")["etcd_network_client_grpc_sent_bytes_total"]

    return Store("etcd", server.client_port, lambda: EtcdSource(config), counters, extra, sent)


async def seed_etcd(server: EtcdServer, services: int, instances: int) -> None:
    config = EtcdSourceConfig(endpoints=(server.url,), prefix=PREFIX)
    async with EtcdClient.from_config(config) as client:
        for n in range(services):
            puts = [client.put(f"{PREFIX}services/{service(n)}/route", route(n))]
            puts.append(client.put(f"{PREFIX}services/{service(n)}/split", split(50)))
            puts += [
                client.put(f"{PREFIX}services/{service(n)}/instances/i{i}", instance(n, i))
                for i in range(instances)
            ]
            await asyncio.gather(*puts)


async def run_etcd(root: Path, args: argparse.Namespace) -> None:
    server = EtcdServer(root / "etcd")
    server.start()
    try:
        await seed_etcd(server, args.services, args.instances)
        print(
            f"\netcd 3.4 at {server.url}: {args.services} services x {args.instances} "
            f"instances, {args.sources} EtcdSource objects (one client each) in one event loop"
        )
        store = etcd_store(server)

        async def write(k: int) -> None:
            key, value = f"{PREFIX}services/svc-000/split", split(k + 1)
            await asyncio.to_thread(
                server.post, "/v3/kv/put", {"key": b64(key), "value": b64(value)}
            )

        await measure(
            store,
            args,
            ready=synced(args.services, args.instances),
            changes=[("etcd split write", write, lambda k: has_split("svc-000", float(k + 1)))],
        )
        await daemon_rss(
            root / "daemon-etcd", f'[source.etcd]\nendpoints = ["{server.url}"]\n', args.services
        )
    finally:
        server.stop()


# Consul


def answer(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        body: bytes = reply.read()
        return body


def consul_store(agent: ConsulAgent) -> Store:
    config = ConsulSourceConfig(addresses=(agent.address,), prefix=PREFIX)

    def counters() -> dict[str, float]:
        return consul_requests(prometheus(agent.address + "/v1/agent/metrics?format=prometheus"))

    def extra() -> str:
        return f"TCP connections {connections(agent.ports['http'])}"

    return Store("consul", agent.ports["http"], lambda: ConsulSource(config), counters, extra)


async def seed_consul(agent: ConsulAgent, services: int, instances: int) -> None:
    gate = asyncio.Semaphore(16)

    async def one(work: object) -> None:
        async with gate:
            await work  # type: ignore[misc]

    jobs: list[object] = []
    for n in range(services):
        jobs.append(agent.kv_put(f"{PREFIX}services/{service(n)}/route", route(n)))
        jobs.append(agent.kv_put(f"{PREFIX}services/{service(n)}/split", split(50)))
        for i in range(instances):
            tag = "blue" if i % 2 == 0 else "green"
            jobs.append(agent.register(service(n), f"{service(n)}-{i}", 20000 + i, tag))
    await asyncio.gather(*(one(job) for job in jobs))


async def run_consul(root: Path, args: argparse.Namespace) -> None:
    agent = ConsulAgent(root=root / "consul", hcl=CONSUL_EXTRA)
    agent.start()
    try:
        services = args.consul_services
        await seed_consul(agent, services, args.instances)
        print(
            f"\nConsul 1.8 dev agent at {agent.address}: {services} services x "
            f"{args.instances} instances, {args.sources} ConsulSource objects (one client each) "
            "in one event loop"
        )
        print(
            f"  NOTE: this bench raised the agent's limits.http_max_conns_per_client from 200 to "
            f"{CONSUL_CONNS_PER_CLIENT}: all {args.sources} sidecars share one loopback IP here, "
            "where each would have its own local agent; and set telemetry."
            "prometheus_retention_time to read cumulative request counts"
        )

        async def kv_write(k: int) -> None:
            await agent.kv_put(f"{PREFIX}services/svc-000/split", split(k + 1))

        async def flip(k: int) -> None:
            await agent.set_check("svc-000-0", "critical" if k % 2 == 0 else "passing")

        sizes = {
            path: len(await asyncio.to_thread(answer, agent.address + path))
            for path in (
                f"/v1/kv/{PREFIX}?recurse",
                "/v1/health/service/svc-000",
                "/v1/health/state/any",
            )
        }
        print(f"  answer sizes (what each watcher re-reads after a change): {sizes} bytes")
        await measure(
            consul_store(agent),
            args,
            ready=synced(services, args.instances),
            changes=[
                ("Consul KV split write", kv_write, lambda k: has_split("svc-000", float(k + 1))),
                ("Consul health flip", flip, lambda k: critical_count("svc-000", 1 - k % 2)),
            ],
        )
        await daemon_rss(
            root / "daemon-consul", f'[source.consul]\naddresses = ["{agent.address}"]\n', services
        )
    finally:
        agent.stop()


# one real daemon


async def daemon_rss(root: Path, source_table: str, services: int) -> None:
    """RSS of one `lbsync run` with a generic target, once it wrote every service."""
    root.mkdir(parents=True)
    template, dest = root / "servers.j2", root / "servers.txt"
    template.write_text(
        "{% for s in services %}{{ s.name }} {{ s.servers | length }}\n{% endfor %}"
    )
    config = root / "lbsync.toml"
    config.write_text(
        f'{source_table}\n[api]\nlisten = ""\n\n[[target]]\nkind = "generic"\n'
        f'template = "{template}"\ndest = "{dest}"\n'
    )
    with (root / "lbsync.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lbsync", "-c", str(config), "run", stderr=log
        )
    try:

        def written() -> bool:
            if process.returncode is not None:
                raise SystemExit(f"lbsync run exited: {(root / 'lbsync.log').read_text()[-2000:]}")
            return dest.exists() and len(dest.read_text().splitlines()) == services

        await asyncio.to_thread(wait_until, written, SYNC_TIMEOUT, "lbsync run wrote the file")
        rss, peak = rss_kib(process.pid)
        print(
            f"  one `lbsync run` (generic target, {services} services written): RSS "
            f"{rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB"
        )
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)


@contextlib.asynccontextmanager
async def workdir(keep: bool) -> AsyncIterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="lbsync-fanout-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=200, help="sidecars (sources), N")
    parser.add_argument("--services", type=int, default=50, help="etcd catalog services")
    parser.add_argument("--consul-services", type=int, default=10, help="Consul catalog services")
    parser.add_argument("--instances", type=int, default=10, help="instances per service")
    parser.add_argument("--changes", type=int, default=5, help="changes of each kind")
    parser.add_argument("--idle", type=float, default=31.0, help="idle window, s (> Consul wait)")
    parser.add_argument("--traced", type=int, default=5, help="sources traced by tracemalloc")
    parser.add_argument("--wave", type=int, default=25, help="sources started at a time")
    parser.add_argument("--store", choices=("etcd", "consul", "all"), default="all")
    parser.add_argument("--keep", action="store_true", help="leave the working directory")
    args = parser.parse_args()
    if min(args.sources, args.changes, args.wave) < 1:
        parser.error("--sources, --changes and --wave must be at least 1")
    logging.basicConfig(level=os.environ.get("FANOUT_LOG", "ERROR"))  # N sources: N lines
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"lbsync fan-out bench: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"open files {hard}, load {os.getloadavg()[0]:.1f}"
    )
    async with workdir(args.keep) as root:
        if args.store in ("etcd", "all"):
            await run_etcd(root, args)
        if args.store in ("consul", "all"):
            await run_consul(root, args)


if __name__ == "__main__":
    asyncio.run(main())
