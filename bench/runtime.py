"""Runtime API figures: how fast a write reaches HAProxy, with and without a reload.

Real backends, a real HAProxy (master-worker), lbsync as its own process (`lbsync run`,
`apply.min_wait = 0`, JSON logs), and a real etcd or Consul agent; loopback only, bounded.
Every figure is read from HAProxy itself through the master CLI, never from lbsync:

- `weights`: N sequential writes of a service's split (file, etcd, Consul KV), each waited
  for until `@1 show servers state` shows the new weights: write -> weight live, median and p99,
  and the number of reloads (expected 0);
- `structural`: N host-name toggles in the route: write -> new worker listed by `show proc`
  (the reload lbsync confirmed), median and p99;
- `burst`: W split writes paced over one second, then the time from the last write to the
  last weights live, the reloads during the burst and lbsync's applies; at `--servers 10000`
  (1,000 services, etcd source) also lbsync's apply time and peak RSS;
- `joins`: N times an instance of the service joins, then leaves: write -> listed by
  `show servers state` (live), write -> server line in the file (validated and written after
  it went live), write -> no longer listed; each waits until the file settled, so every join
  is measured alone.

Run: `python bench/runtime.py all` (about 2 minutes), or one part:
`python bench/runtime.py weights --source etcd --writes 500`,
`python bench/runtime.py burst --servers 10000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: real HAProxy, etcd, Consul

from support.consul import ConsulAgent  # noqa: E402
from support.etcd import EtcdServer  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.processes import Backends, HAProxy  # noqa: E402
from support.servicesfile import services_toml, write_atomically  # noqa: E402

from lbsync.core.state import build  # noqa: E402
from lbsync.haproxy.mastercli import master_cli  # noqa: E402
from lbsync.kv.etcd import EtcdClient  # noqa: E402
from lbsync.model.values import Catalog, Instance, ServiceSpec, Split  # noqa: E402

HOST = "shop.example.com"
POLL = 0.001
KEEP = "--keep" in sys.argv  # leave the working directory (logs, files) for a look
PutSplit = Callable[[float, tuple[str, ...]], Coroutine[Any, Any, None]]
# an instance of shop (tagged blue) joining at a port, or leaving (port None)
PutMember = Callable[[str, int | None], Coroutine[Any, Any, None]]


def expected_weights(share: float) -> tuple[int, int]:
    """HAProxy weights of (blue, green) for a blue share, by lbsync's own split math."""
    instances = tuple(
        Instance(service="shop", id=name, address="127.0.0.1", port=1, tags=(name,))
        for name in ("blue", "green")
    )
    split = Split(service="shop", groups=(("blue", share),))
    state = build(Catalog(services=(ServiceSpec("shop", split=split, instances=instances),)))
    weights = {server.name: server.weight for server in state.services[0].servers}
    return weights["blue"], weights["green"]


def shares(count: int) -> list[float]:
    """Blue shares for successive writes, each different from the one before."""
    return [float(1 + (n * 37) % 98) for n in range(count)]


@dataclass
class Shape:
    """The services: `shop` (blue-1, green-1, split by tag) and `extra` services of ten
    instances each, all pointing at the same few real backends."""

    ports: dict[str, int]
    extra: int = 0
    joined: dict[str, int] = field(default_factory=dict)  # instances of shop that joined

    def instances(self) -> dict[str, dict[str, dict[str, Any]]]:
        backends = sorted(self.ports.values())
        result = {"shop": {name: self.instance(self.ports[name], name) for name in self.ports}}
        result["shop"] |= {name: self.instance(port, "blue") for name, port in self.joined.items()}
        for service in range(self.extra):
            result[f"svc-{service:04d}"] = {
                f"svc-{service:04d}-{n}": self.instance(backends[n % len(backends)], "stable")
                for n in range(10)
            }
        return result

    @staticmethod
    def instance(port: int, name: str) -> dict[str, Any]:
        return {"address": "127.0.0.1", "port": port, "tags": [name.split("-")[0]]}

    def services(self, share: float, hosts: tuple[str, ...] = (HOST,)) -> dict[str, Any]:
        """The services file's services, with shop's split and hosts."""
        documents: dict[str, Any] = {}
        for service, instances in self.instances().items():
            route = {"hosts": list(hosts) if service == "shop" else [f"{service}.example.com"]}
            documents[service] = {"route": route, "instances": instances}
        documents["shop"]["split"] = {"by": "tag", "groups": {"blue": share}}
        return documents


Store = Callable[[Path, Shape], Any]


@asynccontextmanager
async def file_store(root: Path, shape: Shape) -> AsyncIterator[tuple[str, PutSplit, PutMember]]:
    """The services file: every write replaces the whole file atomically, as editors do."""
    path = root / "services.toml"
    write_atomically(path, services_toml(shape.services(50)))
    current = [50.0]

    async def put(share: float, hosts: tuple[str, ...]) -> None:
        current[0] = share
        write_atomically(path, services_toml(shape.services(share, hosts)))

    async def member(name: str, port: int | None) -> None:
        if port is None:
            shape.joined.pop(name, None)
        else:
            shape.joined[name] = port
        write_atomically(path, services_toml(shape.services(current[0])))

    yield f'[source.file]\npath = "{path}"\n', put, member


@asynccontextmanager
async def etcd_store(root: Path, shape: Shape) -> AsyncIterator[tuple[str, PutSplit, PutMember]]:
    """A real etcd: routes and instances put once (32 at a time), then the split key per write."""
    etcd = EtcdServer(root=root / "etcd")
    etcd.start()
    try:
        async with EtcdClient([etcd.url]) as client:
            limit = asyncio.Semaphore(32)

            async def put_json(key: str, value: Any) -> None:
                async with limit:
                    await client.put(f"lbsync/services/{key}", json.dumps(value))

            puts = []
            for service, document in shape.services(50).items():
                puts.append(put_json(f"{service}/route", document["route"]))
                puts += [
                    put_json(f"{service}/instances/{name}", value)
                    for name, value in document["instances"].items()
                ]
            await asyncio.gather(*puts)
            await put_json("shop/split", shape.services(50)["shop"]["split"])

            async def put(share: float, hosts: tuple[str, ...]) -> None:
                split = shape.services(share)["shop"]["split"]  # (host toggles: file only)
                await client.put("lbsync/services/shop/split", json.dumps(split))

            async def member(name: str, port: int | None) -> None:
                key = f"lbsync/services/shop/instances/{name}"
                if port is None:
                    await client.delete(key)
                else:
                    await client.put(key, json.dumps(shape.instance(port, "blue")))

            yield f'[source.etcd]\nendpoints = ["{etcd.url}"]\n', put, member
    finally:
        etcd.stop()


@asynccontextmanager
async def consul_store(root: Path, shape: Shape) -> AsyncIterator[tuple[str, PutSplit, PutMember]]:
    """A real Consul agent: instances registered in its catalog, route and split in its KV."""
    agent = ConsulAgent(root=root / "consul")
    agent.start()
    try:
        for service, document in shape.services(50).items():
            await agent.kv_put(f"lbsync/services/{service}/route", document["route"])
            for name, value in document["instances"].items():
                await agent.register(service, name, value["port"], *value["tags"])
        await agent.kv_put("lbsync/services/shop/split", shape.services(50)["shop"]["split"])

        async def put(share: float, hosts: tuple[str, ...]) -> None:
            await agent.kv_put("lbsync/services/shop/split", shape.services(share)["shop"]["split"])

        async def member(name: str, port: int | None) -> None:
            if port is None:
                await agent.deregister(name)
            else:
                await agent.register("shop", name, port, "blue")

        yield f'[source.consul]\naddresses = ["{agent.address}"]\n', put, member
    finally:
        agent.stop()


STORES: dict[str, Store] = {"file": file_store, "etcd": etcd_store, "consul": consul_store}


@dataclass
class Rig:
    """HAProxy and lbsync running on one store; reads HAProxy's side through its master CLI."""

    root: Path
    proxy: HAProxy
    lbsync: asyncio.subprocess.Process
    put: PutSplit
    member: PutMember
    log: Path
    ports: dict[str, int]  # the real backends'

    async def weights(self) -> tuple[int, int]:
        """blue-1's and green-1's weights, from the worker's stats socket (the template's
        `<run_dir>/haproxy.sock`: one hop less than the master, so polling disturbs less)."""
        stats = self.proxy.config.with_name("haproxy.sock")
        text = await master_cli(stats, "show servers state shop")
        found = {"blue": -1, "green": -1}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 8 and fields[0].isdigit():
                found["blue" if "blue" in fields[3] else "green"] = int(fields[7])
        return found["blue"], found["green"]

    async def reloads(self) -> int:
        """The master's reload count (-1 while it re-executes and refuses connections)."""
        try:
            text = await master_cli(self.proxy.master_socket, "show proc")
        except OSError:
            return -1
        masters = [int(line.split()[2]) for line in text.splitlines() if " master " in line]
        return masters[0] if masters else -1

    async def until(self, condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> float:
        """Poll until the condition holds; the time it held (monotonic)."""
        deadline = time.monotonic() + timeout
        while not await condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out; lbsync log: {self.log}")
            await asyncio.sleep(POLL)
        return time.perf_counter()

    def in_file(self, name: str, *, present: bool = True) -> Callable[[], Awaitable[bool]]:
        """Whether the file on disk has (or no longer has) a server line for `name`."""

        async def check() -> bool:
            return (f" server {name} " in self.proxy.config.read_text()) is present

        return check

    async def servers(self) -> set[str]:
        """shop's server names in the worker."""
        stats = self.proxy.config.with_name("haproxy.sock")
        text = await master_cli(stats, "show servers state shop")
        return {f[3] for line in text.splitlines() if len(f := line.split()) > 8 and f[0].isdigit()}

    async def weights_live(self, share: float, timeout: float = 30) -> float:
        wanted = expected_weights(share)

        async def live() -> bool:
            return await self.weights() == wanted

        return await self.until(live, timeout)

    def peak(self) -> str:
        """lbsync's peak resident memory so far."""
        status = Path(f"/proc/{self.lbsync.pid}/status").read_text()
        peak = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
        return f"lbsync peak RSS {int(peak) / 1024:.0f} MiB"

    def applies(self) -> list[dict[str, Any]]:
        """lbsync's apply records so far (from its JSON log)."""
        lines = self.log.read_text().splitlines()
        return [record for line in lines if (record := json.loads(line)).get("event") == "apply"]


@asynccontextmanager
async def rig(source: str, shape_extra: int = 0) -> AsyncIterator[Rig]:
    root = Path(tempfile.mkdtemp(prefix="lbsync-bench-"))
    backends = Backends.start(["blue-1", "green-1"])
    shape = Shape(backends.ports, extra=shape_extra)
    run = root / "run"  # not the services file's directory, which lbsync watches
    run.mkdir()
    proxy = HAProxy(run / "haproxy.cfg", run / "master.sock", free_port())
    process = None
    try:
        async with STORES[source](root, shape) as (source_table, put, member):
            config = root / "lbsync.toml"
            config.write_text(
                f'{source_table}\n[apply]\nmin_wait = "0ms"\nmax_wait = "1s"\n\n'
                f'[api]\nlisten = "127.0.0.1:0"\n\n[[target]]\nkind = "haproxy"\n'
                f'dest = "{proxy.config}"\n'
                f'reload = {{ method = "master-cli", socket = "{proxy.master_socket}" }}\n'
                f'[target.vars]\nbind = ["127.0.0.1:{proxy.port}"]\n'
            )
            command = [sys.executable, "-m", "lbsync", "-c", str(config)]
            once = await asyncio.create_subprocess_exec(
                *command, "once", stderr=asyncio.subprocess.DEVNULL
            )
            await asyncio.wait_for(once.wait(), 120)
            proxy.start()
            log = root / "lbsync.log"
            with log.open("wb") as output:
                process = await asyncio.create_subprocess_exec(
                    *command, "--log-format", "json", "run", stderr=output
                )
            bench = Rig(root, proxy, process, put, member, log, shape.ports)
            await put(10, (HOST,))  # warm-up: the daemon runs once this is live
            await bench.weights_live(10)
            yield bench
    finally:
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        proxy.stop()
        backends.stop()
        if KEEP:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"median {statistics.median(ordered) * 1000:6.2f}  p99 {p99 * 1000:6.2f}  "
        f"max {ordered[-1] * 1000:6.2f} ms"
    )


async def weights(source: str, writes: int, servers: int = 2) -> None:
    async with rig(source, shape_extra=(servers - 2) // 10) as bench:
        before, applies_before = await bench.reloads(), len(bench.applies())
        latencies = []
        for share in shares(writes):
            await bench.put(share, (HOST,))
            written = time.perf_counter()
            latencies.append(await bench.weights_live(share) - written)
        reloads = await bench.reloads() - before
        scale = ""
        if servers > 2:
            await asyncio.sleep(0.2)  # the last apply's log line
            totals = [record["seconds"]["total"] for record in bench.applies()[applies_before:]]
            scale = (
                f"  lbsync apply median {statistics.median(totals) * 1000:.1f} ms, {bench.peak()}"
            )
    print(
        f"weights   {source:7} {writes:5} writes, {servers:,} servers  {summary(latencies)}  "
        f"reloads {reloads}{scale}"
    )


async def structural(writes: int) -> None:
    async with rig("file") as bench:
        applies_before = len(bench.applies())
        latencies = []
        for n in range(writes):
            before = await bench.reloads()
            hosts = (HOST, f"www.{HOST}") if n % 2 == 0 else (HOST,)
            await bench.put(10, hosts)
            written = time.perf_counter()

            async def reloaded(before: int = before) -> bool:
                return await bench.reloads() > before

            latencies.append(await bench.until(reloaded) - written)
        await asyncio.sleep(0.2)  # the last apply's log line
        plans = [record["plan"] for record in bench.applies()[applies_before:]]
    print(
        f"structural file    {writes:5} writes  {summary(latencies)}  "
        f"plans {dict((plan, plans.count(plan)) for plan in sorted(set(plans)))}"
    )


async def burst(source: str, writes: int, servers: int) -> None:
    async with rig(source, shape_extra=(servers - 2) // 10) as bench:
        before, applies_before = await bench.reloads(), len(bench.applies())
        started = time.perf_counter()
        values = shares(writes)
        pending: set[asyncio.Task[None]] = set()
        for n, share in enumerate(values[:-1]):  # on time, without waiting for the answers
            await asyncio.sleep(max(0.0, started + n / writes - time.perf_counter()))
            pending.add(asyncio.create_task(bench.put(share, (HOST,))))
            pending = {task for task in pending if not task.done()}
        await asyncio.gather(*pending)
        await bench.put(values[-1], (HOST,))  # the last write, once every other one is in
        last = time.perf_counter()
        live = await bench.weights_live(values[-1], timeout=900)
        reloads = await bench.reloads() - before
        applies = bench.applies()[applies_before:]
        totals = sorted(record["seconds"]["total"] * 1000 for record in applies)
        peak = bench.peak()
    print(
        f"burst     {source:7} {writes:5} writes in {last - started:.2f} s, {servers:,} servers: "
        f"last write -> live {(live - last) * 1000:.1f} ms, reloads {reloads}, "
        f"lbsync applies {len(applies)} (median {statistics.median(totals):.1f} ms, "
        f"max {totals[-1]:.1f} ms), {peak}"
    )


async def joins(source: str, writes: int, servers: int) -> None:
    """An instance of shop joins, then leaves, `writes` times: from the write to HAProxy
    listing it (and no longer listing it)."""
    async with rig(source, shape_extra=(servers - 2) // 10) as bench:
        before, applies_before = await bench.reloads(), len(bench.applies())
        port = bench.ports["blue-1"]
        joined, left, written_file = [], [], []
        for n in range(writes):
            name = f"j-{n}"
            await bench.member(name, port)
            written = time.perf_counter()

            async def listed(name: str = name) -> bool:
                return name in await bench.servers()

            joined.append(await bench.until(listed) - written)
            written_file.append(await bench.until(bench.in_file(name)) - written)
            await bench.member(name, None)
            written = time.perf_counter()

            async def gone(name: str = name) -> bool:
                return name not in await bench.servers()

            left.append(await bench.until(gone) - written)
            await bench.until(bench.in_file(name, present=False))  # settled: the next is alone
        reloads = await bench.reloads() - before
        await asyncio.sleep(0.2)  # the last apply's log line
        details = [str(record.get("detail", "")) for record in bench.applies()[applies_before:]]
        fast = sum(detail.startswith("fast lane") for detail in details)
    print(
        f"joins     {source:7} {writes:5} joins, {servers:,} servers  "
        f"join -> live {summary(joined)}"
        f"  join -> file written (validated) {summary(written_file)}  leave -> gone "
        f"{summary(left)}  reloads {reloads}  fast lane {fast} of {len(details)} applies"
    )


async def run_all(writes: int) -> None:
    for source in ("file", "etcd", "consul"):
        await weights(source, writes)
    await structural(100)
    await burst("file", 1000, 2)
    await burst("etcd", 1000, 2)
    await weights("etcd", 200, 10_002)
    await burst("etcd", 1000, 10_002)
    await joins("etcd", 50, 10_002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("part", choices=["weights", "structural", "burst", "joins", "all"])
    parser.add_argument("--source", choices=sorted(STORES), default="file")
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    arguments = parser.parse_args()
    match arguments.part:
        case "weights":
            asyncio.run(weights(arguments.source, arguments.writes, arguments.servers))
        case "structural":
            asyncio.run(structural(arguments.writes))
        case "burst":
            asyncio.run(burst(arguments.source, arguments.writes, arguments.servers))
        case "joins":
            asyncio.run(joins(arguments.source, arguments.writes, arguments.servers))
        case "all":
            asyncio.run(run_all(arguments.writes))


if __name__ == "__main__":
    main()
