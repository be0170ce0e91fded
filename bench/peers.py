"""lbsync beside confd, consul-template and Fabio: the same changes, timed from the proxy's side.

Each peer is given as a binary (`--confd PATH --consul-template PATH --fabio PATH`); a peer not
given, or not executable, is skipped and the table says so. Every run has its own store (a real
etcd or Consul agent), its own proxy and 100 servers on real backends: 10 services of 10
instances, `shop` split between a `blue` and a `green` group of 5. Everything is on loopback,
on ports the kernel picks, bounded in count and time.

- confd watches etcd and renders haproxy.cfg; its `check_cmd` is `haproxy -c`, its
  `reload_cmd` a `reload` on HAProxy's master socket (socat).
- consul-template renders from Consul's catalog and KV (`wait` = 20 ms); its command runs the
  same check and reload (it has no check before the write).
- Fabio is the proxy itself: routes from the services' `urlprefix-` tags, weights from its
  `fabio/config` KV key (`route weight` lines).
- lbsync runs as its own process (`lbsync run`), on etcd and on Consul, with
  `apply.min_wait` = 20 ms and = 0, beside a real HAProxy (master-worker, runtime API).

Read from the proxy, never from the program under test: HAProxy's `show servers state shop`
on its stats socket; for Fabio its `/api/routes` answer (the table its proxy picks from). An
instance joining `svc-1` counts as serving once a request through the proxy is answered by it.

Run: `python bench/peers.py --confd BIN --consul-template BIN --fabio BIN` (about 5 minutes);
`--only lbsync`, or `--only confd --only fabio`, for some columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: real HAProxy, etcd, Consul

from support.consul import ConsulAgent  # noqa: E402
from support.etcd import EtcdServer  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.processes import Backends, HAProxy  # noqa: E402

import lbsync as lbsync_package  # noqa: E402
from lbsync.core.state import build  # noqa: E402
from lbsync.haproxy.mastercli import master_cli  # noqa: E402
from lbsync.kv.etcd import EtcdClient  # noqa: E402
from lbsync.model.values import Catalog, Instance, ServiceSpec, Split  # noqa: E402

POLL = 0.001
TIMEOUT = 30.0
SERVICES = 10
PER_SERVICE = 10
JOIN_SERVICE = "svc-1"
PACE = 0.5  # seconds between the writes whose CPU is counted (each change applied alone)
PACED = 20
KEEP = "--keep" in sys.argv
Check = Callable[[int], Awaitable[bool]]


@dataclass(frozen=True)
class Member:
    """One instance: its service, id (the backend answers with it), port and group tag."""

    service: str
    id: str
    port: int
    group: str

    @property
    def host(self) -> str:
        return f"{self.service}.example.com"

    def value(self) -> str:
        """The instance as lbsync's KV contract writes it (confd reads the same JSON)."""
        return json.dumps({"address": "127.0.0.1", "port": self.port, "tags": [self.group]})


def members(ports: dict[str, int]) -> list[Member]:
    """The 100 starting instances: shop's 5 blue and 5 green, then 9 services of 10."""
    found = [
        Member("shop", f"shop-{group}-{n}", 0, group)
        for group in ("blue", "green")
        for n in range(1, PER_SERVICE // 2 + 1)
    ]
    found += [
        Member(f"svc-{s}", f"svc-{s}-{n}", 0, "stable")
        for s in range(1, SERVICES)
        for n in range(1, PER_SERVICE + 1)
    ]
    return [Member(m.service, m.id, ports[m.id], m.group) for m in found]


def joiners(ports: dict[str, int], count: int) -> list[Member]:
    return [
        Member(
            JOIN_SERVICE, f"{JOIN_SERVICE}-join-{n}", ports[f"{JOIN_SERVICE}-join-{n}"], "stable"
        )
        for n in range(1, count + 1)
    ]


def shares(count: int) -> list[int]:
    """Blue's percentage for successive writes, each different from the one before."""
    return [1 + (n * 37 + 10) % 98 for n in range(count)]


def lbsync_weights(share: int) -> tuple[int, int]:
    """HAProxy weights of a (blue, green) server for a blue share, by lbsync's split math."""
    instances = tuple(
        Instance(service="shop", id=f"shop-{group}-{n}", address="127.0.0.1", port=1, tags=(group,))
        for group in ("blue", "green")
        for n in range(1, PER_SERVICE // 2 + 1)
    )
    split = Split(service="shop", groups=(("blue", float(share)),))
    state = build(Catalog(services=(ServiceSpec("shop", split=split, instances=instances),)))
    weights = {server.name: server.weight for server in state.services[0].servers}
    return weights["shop-blue-1"], weights["shop-green-1"]


def cpu_seconds(pid: int) -> float:
    """user+sys of a process and of its reaped children (validators, reload commands)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT) -> float:
    """Poll until the check holds; the moment it held (perf_counter)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL)
    return time.perf_counter()


class Requester:
    """Requests through the proxy on one keep-alive connection, reopened when it closes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def answer(self, host: str) -> str:
        """The body of one GET / for a host; "" when the connection failed."""
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = self.streams
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().lower()
            length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
            body = await reader.readexactly(length)
            if "connection: close" in head:
                self.close()
            return body.decode().strip()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, IndexError, ValueError):
            self.close()
            return ""

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


@dataclass
class Subject:
    """One program under test, running: how to change it and how to see the change."""

    label: str
    store: str
    pid: int
    port: int
    put_share: Callable[[int], Awaitable[None]]
    live: Check
    join: Callable[[Member], Awaitable[None]]
    reloads: Callable[[], Awaitable[int]] | None


@dataclass
class Figures:
    """What one program's run measured (seconds)."""

    weight: list[float] = field(default_factory=list)
    reloads: int | None = None
    join: list[float] = field(default_factory=list)
    puts: list[float] = field(default_factory=list)
    cpu: float = 0.0
    paced_reloads: int | None = None


# stores ---------------------------------------------------------------------------------------


class Consul:
    """A Consul agent's KV and agent API over one kept HTTP session."""

    def __init__(self, agent: ConsulAgent, session: aiohttp.ClientSession) -> None:
        self.agent, self.session = agent, session

    async def call(self, path: str, body: Any) -> None:
        data = body if isinstance(body, str) else json.dumps(body)
        async with self.session.put(self.agent.address + path, data=data) as reply:
            if reply.status >= 400:
                raise RuntimeError(f"PUT {path}: {reply.status} {await reply.text()}")
            await reply.read()

    async def kv_put(self, key: str, value: str) -> None:
        await self.call(f"/v1/kv/{key}", value)

    async def register(self, member: Member, tags: list[str]) -> None:
        body = {
            "Name": member.service,
            "ID": member.id,
            "Address": "127.0.0.1",
            "Port": member.port,
            "Tags": tags,
            "Check": {"TTL": "10m", "Status": "passing"},
        }
        await self.call("/v1/agent/service/register", body)


@asynccontextmanager
async def etcd_store(root: Path) -> AsyncIterator[tuple[str, EtcdClient]]:
    server = EtcdServer(root=root / "etcd")
    await asyncio.to_thread(server.start)
    try:
        async with EtcdClient([server.url]) as client:
            yield server.url, client
    finally:
        await asyncio.to_thread(server.stop)


@asynccontextmanager
async def consul_store(root: Path) -> AsyncIterator[Consul]:
    agent = ConsulAgent(root=root / "consul")
    await asyncio.to_thread(agent.start)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            yield Consul(agent, session)
    finally:
        agent.stop()


async def put_all(client: EtcdClient, values: dict[str, str]) -> None:
    limit = asyncio.Semaphore(32)

    async def put(key: str, value: str) -> None:
        async with limit:
            await client.put(key, value)

    await asyncio.gather(*(put(key, value) for key, value in values.items()))


# the proxy ------------------------------------------------------------------------------------


PLACEHOLDER = """global
    stats socket {run}/haproxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend http
    bind 127.0.0.1:{port}
    http-request return status 404
"""

# The peers' template, in each one's language: one frontend choosing a backend by host, one
# backend per service, shop's servers weighted by their group's weight in the store.
HAPROXY_HEAD = """global
    stats socket {run}/haproxy.sock mode 600 level admin
    hard-stop-after 10s
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    option idle-close-on-response
frontend http
    bind 127.0.0.1:{port}
    http-request set-var(txn.host) req.hdr(host),field(1,:),lower
"""

CONFD_TEMPLATE = """{{range $svc := lsdir "/peers/services"}}\
    use_backend {{$svc}} if { var(txn.host) -m str {{$svc}}.example.com }
{{end}}{{$w := json (getv "/peers/weights")}}{{range $svc := lsdir "/peers/services"}}
backend {{$svc}}
    balance roundrobin
{{range gets (printf "/peers/services/%s/instances/*" $svc)}}{{$i := json .Value}}\
    server {{base .Key}} {{$i.address}}:{{$i.port}} weight \
{{if eq $svc "shop"}}{{index $w (index $i.tags 0)}}{{else}}1{{end}}
{{end}}{{end}}"""

CONSUL_TEMPLATE = """{{$w := key "peers/weights" | parseJSON}}\
{{range services}}{{if ne .Name "consul"}}\
    use_backend {{.Name}} if { var(txn.host) -m str {{.Name}}.example.com }
{{end}}{{end}}{{range services}}{{if ne .Name "consul"}}{{$svc := .Name}}
backend {{.Name}}
    balance roundrobin
{{range service .Name}}\
    server {{.ID}} {{.Address}}:{{.Port}} weight \
{{if eq $svc "shop"}}{{index $w (index .Tags 0)}}{{else}}1{{end}}
{{end}}{{end}}{{end}}"""


@dataclass
class Proxy:
    """A master-worker HAProxy in `run`, started on a placeholder the program replaces."""

    run: Path
    haproxy: HAProxy

    @classmethod
    def at(cls, run: Path) -> Proxy:
        run.mkdir(parents=True, exist_ok=True)
        return cls(run, HAProxy(run / "haproxy.cfg", run / "master.sock", free_port()))

    def start(self) -> None:
        """Start on the file there is, or on a placeholder the program under test replaces."""
        if not self.haproxy.config.exists():
            self.haproxy.config.write_text(PLACEHOLDER.format(run=self.run, port=self.haproxy.port))
        self.haproxy.start()

    @property
    def head(self) -> str:
        return HAPROXY_HEAD.format(run=self.run, port=self.haproxy.port)

    @property
    def reload_command(self) -> str:
        """`reload` on the master socket, tried again for up to 2 s while the master
        re-executes and refuses connections (a single try loses reloads in a burst)."""
        script = self.run / "reload.sh"
        send = f"echo reload | socat -t 2 stdio unix-connect:{self.haproxy.master_socket}"
        script.write_text(
            f"for n in $(seq 200); do {send} 2>/dev/null && exit 0; sleep 0.01; done; exit 1\n"
        )
        return f"sh {script}"

    async def weights(self) -> dict[str, int]:
        """shop's servers and their weights, from the current worker's stats socket."""
        try:
            text = await master_cli(self.run / "haproxy.sock", "show servers state shop")
        except OSError:
            return {}
        found = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 8 and fields[0].isdigit():
                found[fields[3]] = int(fields[7])
        return found

    def live(self, weights: Callable[[int], tuple[int, int]]) -> Check:
        """A check: every blue and every green server of shop has its expected weight."""

        async def check(share: int) -> bool:
            blue, green = weights(share)
            found = await self.weights()
            wanted = [blue if "blue" in name else green for name in found]
            return len(found) == PER_SERVICE and list(found.values()) == wanted

        return check

    async def reloads(self) -> int:
        """The master's reload count, asked again while it re-executes and refuses."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                text = await master_cli(self.haproxy.master_socket, "show proc")
                masters = [int(line.split()[2]) for line in text.splitlines() if " master " in line]
                if masters:
                    return masters[0]
            if time.monotonic() > deadline:
                raise TimeoutError("HAProxy's master CLI does not answer")
            await asyncio.sleep(POLL)

    def subject(
        self,
        process: asyncio.subprocess.Process,
        *,
        label: str,
        store: str,
        put_share: Callable[[int], Awaitable[None]],
        join: Callable[[Member], Awaitable[None]],
        weights: Callable[[int], tuple[int, int]],
    ) -> Subject:
        """The program running in `process`, seen through this proxy."""
        return Subject(
            label=label,
            store=store,
            pid=process.pid,
            port=self.haproxy.port,
            put_share=put_share,
            live=self.live(weights),
            join=join,
            reloads=self.reloads,
        )


@asynccontextmanager
async def running_proxy(
    run: Path, prepare: Callable[[Proxy], Awaitable[None]] | None = None
) -> AsyncIterator[Proxy]:
    """HAProxy started (after `prepare`, which may write its first file), stopped at the end."""
    proxy = Proxy.at(run)
    if prepare is not None:
        await prepare(proxy)
    await asyncio.to_thread(proxy.start)
    try:
        yield proxy
    finally:
        await asyncio.to_thread(proxy.haproxy.stop)


def peer_weights(share: int) -> tuple[int, int]:
    """The peers' template weights: a group's percentage on each of its 5 servers."""
    return share, 100 - share


def weights_json(share: int) -> str:
    return json.dumps({"blue": share, "green": 100 - share, "stable": 1})


@asynccontextmanager
async def program(argv: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A program under test, its output in `log`, terminated (then killed) at the end. It
    runs in the log's directory: `python -m lbsync` started in a source tree would import that
    tree's lbsync, whatever PYTHONPATH says."""
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=output, stderr=asyncio.subprocess.STDOUT, cwd=log.parent
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


# the subjects ---------------------------------------------------------------------------------


@asynccontextmanager
async def confd(root: Path, ports: dict[str, int], *, binary: str) -> AsyncIterator[Subject]:
    """confd watching etcd: instances under /peers/services/, the groups' weights in one key."""

    def key(member: Member) -> str:
        return f"/peers/services/{member.service}/instances/{member.id}"

    async with etcd_store(root) as (url, client), running_proxy(root / "run") as proxy:
        values = {key(m): m.value() for m in members(ports)}
        await put_all(client, {**values, "/peers/weights": weights_json(50)})
        confdir = root / "confd"
        (confdir / "conf.d").mkdir(parents=True)
        (confdir / "templates").mkdir()
        (confdir / "templates" / "haproxy.cfg.tmpl").write_text(proxy.head + CONFD_TEMPLATE)
        (confdir / "conf.d" / "haproxy.toml").write_text(
            f'[template]\nsrc = "haproxy.cfg.tmpl"\ndest = "{proxy.haproxy.config}"\n'
            f'keys = ["/peers"]\ncheck_cmd = "haproxy -c -q -f {{{{.src}}}}"\n'
            f'reload_cmd = "{proxy.reload_command}"\n'
        )
        argv = [binary, "-backend", "etcdv3", "-node", url, "-confdir", str(confdir), "-watch"]

        async def join(member: Member) -> None:
            await client.put(key(member), member.value())

        async def put_share(share: int) -> None:
            await client.put("/peers/weights", weights_json(share))

        async with program([*argv, "-log-level", "warning"], root / "confd.log") as process:
            yield proxy.subject(
                process,
                label="confd",
                store="etcd",
                put_share=put_share,
                join=join,
                weights=peer_weights,
            )


@asynccontextmanager
async def consul_template(
    root: Path, ports: dict[str, int], *, binary: str
) -> AsyncIterator[Subject]:
    """consul-template on Consul's catalog (healthy instances) and a KV key for the weights."""
    async with consul_store(root) as consul, running_proxy(root / "run") as proxy:
        for member in members(ports):
            await consul.register(member, [member.group])
        await consul.kv_put("peers/weights", weights_json(50))
        source = root / "haproxy.cfg.ctmpl"
        source.write_text(proxy.head + CONSUL_TEMPLATE)
        dest = proxy.haproxy.config
        script = root / "check-and-reload.sh"  # its command is split into words, no shell
        script.write_text(f"haproxy -c -q -f {dest} && {proxy.reload_command}\n")
        command = f"sh {script}"
        config = root / "consul-template.hcl"
        config.write_text(
            f'consul {{\n  address = "{consul.agent.address.removeprefix("http://")}"\n}}\n'
            'log_level = "warn"\nwait {\n  min = "20ms"\n  max = "1s"\n}\n'
            f'template {{\n  source = "{source}"\n  destination = "{dest}"\n'
            f'  command = {json.dumps(command)}\n  command_timeout = "30s"\n}}\n'
        )

        async def join(member: Member) -> None:
            await consul.register(member, [member.group])

        async def put_share(share: int) -> None:
            await consul.kv_put("peers/weights", weights_json(share))

        log = root / "consul-template.log"
        async with program([binary, "-config", str(config)], log) as process:
            yield proxy.subject(
                process,
                label="consul-template",
                store="consul",
                put_share=put_share,
                join=join,
                weights=peer_weights,
            )


def fabio_route(share: int) -> str:
    return f'route weight shop shop.example.com/ weight {share / 100:.2f} tags "blue"'


@asynccontextmanager
async def fabio(root: Path, ports: dict[str, int], *, binary: str) -> AsyncIterator[Subject]:
    async with consul_store(root) as consul:

        async def join(member: Member) -> None:
            await consul.register(member, [member.group, f"urlprefix-{member.host}/"])

        for member in members(ports):
            await join(member)
        await consul.kv_put("fabio/config", fabio_route(50))
        port, ui = free_port(), free_port()
        argv = [
            binary,
            "-proxy.addr",
            f"127.0.0.1:{port}",
            "-ui.addr",
            f"127.0.0.1:{ui}",
            "-registry.consul.addr",
            consul.agent.address.removeprefix("http://"),
            "-registry.consul.register.enabled=false",
            "-log.level",
            "WARN",
            "-log.access.target",
            "",
        ]

        async def routes() -> list[dict[str, Any]]:
            try:
                url = f"http://127.0.0.1:{ui}/api/routes"
                async with consul.session.get(url) as reply:
                    return list(await reply.json() or [])  # null: no route yet
            except (aiohttp.ClientError, ValueError):
                return []

        async def live(share: int) -> bool:
            shop = [route for route in await routes() if route["service"] == "shop"]
            blue, green = share / 100 / 5, (100 - share) / 100 / 5
            return len(shop) == PER_SERVICE and all(
                abs(route["weight"] - (blue if "blue" in route["tags"] else green)) < 1e-4
                for route in shop
            )

        async def put_share(share: int) -> None:
            await consul.kv_put("fabio/config", fabio_route(share))

        async with program(argv, root / "fabio.log") as process:
            yield Subject(
                label="Fabio",
                store="consul",
                pid=process.pid,
                port=port,
                put_share=put_share,
                live=live,
                join=join,
                reloads=None,
            )


@asynccontextmanager
async def lbsync(
    root: Path, ports: dict[str, int], *, store: str, min_wait: str
) -> AsyncIterator[Subject]:
    """lbsync on etcd or Consul (routes, split, and on etcd the instances, under lbsync/)."""
    routes = {
        f"lbsync/services/{s}/route": json.dumps({"hosts": [f"{s}.example.com"]})
        for s in ["shop", *(f"svc-{n}" for n in range(1, SERVICES))]
    }

    def split(share: int) -> str:
        return json.dumps({"by": "tag", "groups": {"blue": share}})

    async with contextlib.AsyncExitStack() as stack:
        put: Callable[[str, str], Awaitable[None]]
        join: Callable[[Member], Awaitable[None]]
        if store == "etcd":
            url, client = await stack.enter_async_context(etcd_store(root))
            values = {
                f"lbsync/services/{m.service}/instances/{m.id}": m.value() for m in members(ports)
            }
            await put_all(client, {**routes, **values, "lbsync/services/shop/split": split(50)})
            source = f'[source.etcd]\nendpoints = ["{url}"]\n'

            async def put(key: str, value: str) -> None:
                await client.put(key, value)

            async def join(member: Member) -> None:
                await client.put(
                    f"lbsync/services/{member.service}/instances/{member.id}", member.value()
                )
        else:
            consul = await stack.enter_async_context(consul_store(root))
            for member in members(ports):
                await consul.register(member, [member.group])
            for key, value in {**routes, "lbsync/services/shop/split": split(50)}.items():
                await consul.kv_put(key, value)
            source = f'[source.consul]\naddresses = ["{consul.agent.address}"]\n'
            put = consul.kv_put

            async def join(member: Member) -> None:
                await consul.register(member, [member.group])

        config = root / "lbsync.toml"
        command = [sys.executable, "-m", "lbsync", "-c", str(config)]

        async def once(proxy: Proxy) -> None:
            """The configuration, and its first file written by `lbsync once` (as
            bench/runtime.py does): HAProxy starts on lbsync's own file."""
            config.write_text(
                f'{source}\n[apply]\nmin_wait = "{min_wait}"\nmax_wait = "1s"\n\n'
                f'[api]\nlisten = "127.0.0.1:0"\n\n[[target]]\nkind = "haproxy"\n'
                f'dest = "{proxy.haproxy.config}"\n'
                f'reload = {{ method = "master-cli", socket = "{proxy.haproxy.master_socket}" }}\n'
                f'[target.vars]\nbind = ["127.0.0.1:{proxy.haproxy.port}"]\n'
            )
            first = await asyncio.create_subprocess_exec(
                *command, "once", stderr=asyncio.subprocess.DEVNULL, cwd=root
            )
            await asyncio.wait_for(first.wait(), 120)  # (pending: no proxy runs yet)

        proxy = await stack.enter_async_context(running_proxy(root / "run", once))

        async def put_share(share: int) -> None:
            await put("lbsync/services/shop/split", split(share))

        async with program(
            [*command, "--log-format", "json", "run"], root / "lbsync.log"
        ) as process:
            yield proxy.subject(
                process,
                label=f"lbsync {store} {min_wait}",
                store=store,
                put_share=put_share,
                join=join,
                weights=lbsync_weights,
            )


# the measurement ------------------------------------------------------------------------------


async def timed_puts(put: Callable[[int], Awaitable[object]], values: list[int]) -> list[float]:
    """Writes sent back to back, each after the previous one's answer: their round trips."""
    times = []
    for share in values:
        started = time.perf_counter()
        await put(share)
        times.append(time.perf_counter() - started)
    return times


async def unwatched_puts() -> dict[str, list[float]]:
    """The same 20 writes to a store nothing watches: the stores' own round trip."""
    root = Path(tempfile.mkdtemp(prefix="lbsync-peers-"))
    found = {}
    try:
        async with etcd_store(root) as (_, client):

            async def etcd_put(share: int) -> None:
                await client.put("/peers/weights", weights_json(share))

            found["etcd"] = await timed_puts(etcd_put, shares(20))
        async with consul_store(root) as consul:

            async def consul_put(share: int) -> None:
                await consul.kv_put("peers/weights", weights_json(share))

            found["Consul KV"] = await timed_puts(consul_put, shares(20))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return found


async def measure(subject: Subject, *, writes: int, joins: list[Member]) -> Figures:
    figures = Figures()
    values = shares(writes + 20 + PACED)
    await subject.put_share(10)  # warm-up: the program runs once this is live
    await until(partial(subject.live, 10), f"{subject.label}: the first weights", 60)

    before = await subject.reloads() if subject.reloads else 0
    for share in values[:writes]:
        await subject.put_share(share)
        written = time.perf_counter()
        live = await until(partial(subject.live, share), f"{subject.label}: weights")
        figures.weight.append(live - written)
    if subject.reloads:
        figures.reloads = await subject.reloads() - before

    figures.puts = await timed_puts(subject.put_share, values[writes : writes + 20])
    last = values[writes + 19]
    await until(partial(subject.live, last), f"{subject.label}: the burst's last weights")

    # CPU: writes paced PACE apart and nothing polled meanwhile (a poll costs Fabio CPU)
    before = await subject.reloads() if subject.reloads else 0
    cpu, started = cpu_seconds(subject.pid), time.perf_counter()
    for n, share in enumerate(values[writes + 20 : writes + 20 + PACED]):
        await asyncio.sleep(max(0.0, started + n * PACE - time.perf_counter()))
        await subject.put_share(share)
    last = values[writes + 19 + PACED]
    await asyncio.sleep(max(0.0, started + PACED * PACE - time.perf_counter()))
    await until(partial(subject.live, last), f"{subject.label}: the paced writes' last weights")
    figures.cpu = (cpu_seconds(subject.pid) - cpu) / PACED
    if subject.reloads:
        figures.paced_reloads = await subject.reloads() - before

    requester = Requester(subject.port)
    try:
        for member in joins:
            await subject.join(member)
            written = time.perf_counter()

            async def serving(member: Member = member) -> bool:
                return await requester.answer(member.host) == member.id

            figures.join.append(await until(serving, f"{subject.label}: {member.id}") - written)
    finally:
        requester.close()
    return figures


def milliseconds(values: list[float], quantile: float = 0.5) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    if quantile == 0.5:
        return f"{statistics.median(ordered) * 1000:.1f}"
    return f"{ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000:.1f}"


def table(results: dict[str, Figures | str], *, writes: int, joins: int) -> str:
    """The figures, one column a program; a skipped or failed program says why."""
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        (f"weight write -> live, median ms ({writes} writes)", lambda f: milliseconds(f.weight)),
        ("weight write -> live, p99 ms", lambda f: milliseconds(f.weight, 0.99)),
        (
            "reloads during those writes",
            lambda f: "none (is the proxy)" if f.reloads is None else str(f.reloads),
        ),
        (f"instance added -> serving, median ms ({joins})", lambda f: milliseconds(f.join)),
        ("instance added -> serving, max ms", lambda f: milliseconds(f.join, 1.0)),
        (
            "etcd / Consul KV put round trip, 20 back to back, median ms",
            lambda f: milliseconds(f.puts),
        ),
        (
            "etcd / Consul KV put round trip, 20 back to back, max ms",
            lambda f: milliseconds(f.puts, 1.0),
        ),
        (
            f"CPU per weight change, ms ({PACED} writes {PACE} s apart; user+sys, with children)",
            lambda f: f"{f.cpu * 1000:.1f}",
        ),
        (
            "reloads during the paced writes",
            lambda f: "none (is the proxy)" if f.paced_reloads is None else str(f.paced_reloads),
        ),
    ]
    header = ["figure", *results]
    lines = [header, ["---"] * len(header)]
    for title, show in rows:
        lines.append(
            [title, *(show(r) if isinstance(r, Figures) else "-" for r in results.values())]
        )
    text = "\n".join("| " + " | ".join(line) + " |" for line in lines)
    notes = [f"{name}: {r}" for name, r in results.items() if isinstance(r, str)]
    return text + ("\n\n" + "\n".join(notes) if notes else "")


Runner = Callable[[Path, dict[str, int]], contextlib.AbstractAsyncContextManager[Subject]]


def runners(arguments: argparse.Namespace) -> dict[str, Runner | str]:
    """Every column: how to start it, or why it is skipped."""
    found: dict[str, Runner | str] = {}
    peers = {
        "confd (etcd)": (arguments.confd, confd),
        "consul-template (wait 20ms)": (arguments.consul_template, consul_template),
        "Fabio (is the proxy)": (arguments.fabio, fabio),
    }
    for name, (binary, start) in peers.items():
        if binary is None:
            found[name] = "skipped: no binary given"
        elif not os.access(binary, os.X_OK):
            found[name] = f"skipped: {binary} is not an executable file"
        else:
            found[name] = partial(start, binary=binary)
    for min_wait in ("20ms", "0ms"):
        for store in ("etcd", "consul"):
            found[f"lbsync {store}, min_wait {min_wait}"] = partial(
                lbsync, store=store, min_wait=min_wait
            )
    if shutil.which("socat") is None:
        for name in ("confd (etcd)", "consul-template (wait 20ms)"):
            if not isinstance(found[name], str):
                found[name] = "skipped: socat (the reload command) is not installed"
    if arguments.only:
        wanted = arguments.only
        found = {
            name: run
            for name, run in found.items()
            if any(name.lower().startswith(w.lower()) for w in wanted)
        }
    return found


def versions(arguments: argparse.Namespace) -> dict[str, str]:
    """What ran: each program's own answer to its version flag (first line)."""
    commands = {
        "haproxy": ["haproxy", "-v"],
        "etcd": ["etcd", "--version"],
        "consul": ["consul", "version"],
        "confd": [arguments.confd, "-version"],
        "consul-template": [arguments.consul_template, "-v"],
        "fabio": [arguments.fabio, "-v"],
        "python": [sys.executable, "--version"],
    }
    found = {}
    for name, argv in commands.items():
        if argv[0] is None or shutil.which(argv[0]) is None:
            continue
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        found[name] = (done.stdout + done.stderr).strip().splitlines()[0]
    tree = Path(lbsync_package.__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    found["lbsync"] = f"{tree} at {commit.stdout.strip()[:70] or 'an unknown commit'}"
    return found


async def main_async(arguments: argparse.Namespace) -> None:
    results: dict[str, Figures | str] = {}
    unwatched = await unwatched_puts()
    for name, runner in runners(arguments).items():
        if isinstance(runner, str):
            results[name] = runner
            print(f"{name}: {runner}", file=sys.stderr)
            continue
        root = Path(tempfile.mkdtemp(prefix="lbsync-peers-"))
        names = [m.id for m in members(defaultdict(int))]  # (the ids only: any port)
        names += [f"{JOIN_SERVICE}-join-{n}" for n in range(1, arguments.joins + 1)]
        backends = await asyncio.to_thread(Backends.start, names)
        started = time.perf_counter()
        try:
            async with runner(root, backends.ports) as subject:
                results[name] = await measure(
                    subject, writes=arguments.writes, joins=joiners(backends.ports, arguments.joins)
                )
        except (TimeoutError, RuntimeError, OSError, AssertionError) as error:
            results[name] = f"failed: {error} (logs in {root})"
        finally:
            backends.stop()
        print(f"{name}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        if not KEEP and not isinstance(results[name], str):
            shutil.rmtree(root, ignore_errors=True)
    for name, line in versions(arguments).items():
        print(f"{name}: {line}")
    print(
        f"100 servers (10 services x 10, shop split blue/green 5 + 5), loopback, "
        f"{os.cpu_count()} CPUs"
    )
    print(table(results, writes=arguments.writes, joins=arguments.joins))
    for store, times in unwatched.items():
        print(
            f"{store} put round trip, 20 back to back, nothing watching: "
            f"median {milliseconds(times)} ms, max {milliseconds(times, 1.0)} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--confd", help="confd binary (watches etcd)")
    parser.add_argument("--consul-template", help="consul-template binary")
    parser.add_argument("--fabio", help="Fabio binary")
    parser.add_argument("--writes", type=int, default=100, help="sequential weight writes")
    parser.add_argument("--joins", type=int, default=10, help="instances added, one by one")
    parser.add_argument(
        "--only", action="append", help="the columns whose name starts so (repeatable)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directories")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
