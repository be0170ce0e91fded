"""Long-lived worlds for the bad-input matrix (tests/faults/test_bad_input_matrix.py).

A world is one source (a services file, etcd or Consul), one daemon that follows it for the
whole module, a real HAProxy (master-worker, runtime API) and an nginx target whose file lbsync
validates with `nginx -t` and writes. The shop has blue-1 (tagged blue) and green-1 (tagged
green) under a 50/50 split; a case writes its bad input beside a good change (green's share),
and the good change is what the world waits for: live in both files and in HAProxy. Writers
talk to the stores over their own HTTP APIs, never through the client under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from lbsync.cli.reading import desired_state
from lbsync.config import Config, load
from lbsync.daemon.daemon import Daemon
from lbsync.daemon.status import Status
from lbsync.pipeline.reconcile import TargetRunner
from lbsync.pipeline.report import Outcome
from support.consul import ConsulAgent
from support.etcd import EtcdServer
from support.ports import free_port
from support.processes import HAProxy
from support.servicesfile import services_toml, write_atomically

HOST = "shop.example.com"
BASE_SHARE = 50
SHARES = (5, 10, 15, 20, 25, 30, 35, 40, 45)
WAIT = 20.0
RUNNING = (Outcome.APPLIED, Outcome.UNCHANGED)


def green_weight(share: int) -> int:
    """green-1's weight when green has `share` percent and blue the rest: the larger share
    becomes 256, rounded half up (docs/kv-contract.md, split semantics)."""
    if share >= BASE_SHARE:
        return 256
    return math.floor(256 * share / (100 - share) + 0.5)


def split(share: int) -> dict[str, Any]:
    """The shop's split with `share` percent for green."""
    return {"by": "tag", "groups": {"blue": 100 - share, "green": share}}


def instance(port: int, tag: str) -> dict[str, Any]:
    return {"address": "127.0.0.1", "port": port, "tags": [tag]}


class Input(Protocol):
    """How a world's source takes a case's bad input and the good change beside it."""

    named: str
    """How refusals from this source start (`etcd key lbsync/`, the services file's path)."""

    async def write(self, bad: Any, share: int) -> None:
        """Write the bad input, then green's share."""

    async def clean(self, bad: Any) -> None:
        """Remove the bad input and put green's share back to the base."""


@dataclass
class World:
    """One daemon, its HAProxy and its two targets' files."""

    root: Path
    input: Input
    proxy: HAProxy
    daemon: Daemon
    task: asyncio.Task[None]
    stop: asyncio.Event
    ports: dict[str, int]
    shares: int = 0

    @property
    def haproxy_dest(self) -> Path:
        return self.root / "run" / "haproxy.cfg"

    @property
    def nginx_dest(self) -> Path:
        return self.root / "run" / "nginx" / "nginx.conf"

    @property
    def source_name(self) -> str:
        """The source's name, as refusals made after the merge name it."""
        return self.daemon.sources[0].name

    def next_share(self) -> int:
        self.shares += 1
        return SHARES[self.shares % len(SHARES)]

    def live(self, status: Status, weight: int) -> bool:
        """Both files hold green-1 at `weight`, each as its target's last cycle left it, and
        HAProxy's cycle ended with the file running."""
        reports = {report.target: report for report in status.targets}
        if len(reports) != 2 or reports["haproxy"].outcome not in RUNNING:
            return False
        if reports["nginx"].outcome not in (Outcome.WRITTEN, Outcome.UNCHANGED):
            return False
        port = self.ports["green-1"]
        expected = {
            "haproxy": (self.haproxy_dest, f"server green-1 127.0.0.1:{port} weight {weight}\n"),
            "nginx": (self.nginx_dest, f"server 127.0.0.1:{port} weight={weight};\n"),
        }
        for name, (dest, line) in expected.items():
            if not dest.exists():
                return False
            data = dest.read_bytes()
            if hashlib.sha256(data).hexdigest()[:16] != reports[name].digest:
                return False
            if line not in data.decode():
                return False
        return True

    def describe(self) -> str:
        """What the daemon reports now, for a failed wait."""
        status = self.daemon.status
        rejected = [str(r)[:200] for r in status.state.rejected] if status.state else []
        crashed = self.task.exception() if self.task.done() else None
        return (
            f"daemon {'ended: ' + repr(crashed) if self.task.done() else 'running'}; "
            f"targets {[(t.target, t.outcome.value, t.error) for t in status.targets]}; "
            f"sources {[(s.name, s.usable, s.error) for s in status.sources]}; "
            f"rejected {rejected[:12]}"
        )

    async def until(self, predicate: Callable[[Status], bool], what: str) -> Status:
        """Wait for the daemon's status to satisfy `predicate`, or fail saying what it shows."""
        try:
            return await self.daemon.wait_for(predicate, WAIT)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {WAIT}s waiting for {what}: {self.describe()}"
            ) from None

    async def close(self) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, 15)
        finally:
            self.proxy.stop()


def world_config(root: Path, source: str, port: int) -> str:
    """lbsync.toml: `source`, an HAProxy target reloaded by its master CLI and an nginx target
    whose file is validated and written (reload method none)."""
    run = root / "run"
    return (
        f"{source}\n"
        '[apply]\nmin_wait = "20ms"\nmax_wait = "200ms"\n\n'
        '[api]\nlisten = ""\n\n'
        f'[[target]]\nname = "haproxy"\nkind = "haproxy"\ndest = "{run}/haproxy.cfg"\n'
        f'reload = {{ method = "master-cli", socket = "{run}/master.sock" }}\n'
        f'[target.vars]\nbind = ["127.0.0.1:{port}"]\nhard_stop_after = "5s"\n\n'
        f'[[target]]\nname = "nginx"\nkind = "nginx"\ndest = "{run}/nginx/nginx.conf"\n'
        'reload = { method = "none" }\n'
        f'[target.vars]\nbind = ["127.0.0.1:{free_port()}"]\nworker_processes = 1\n'
    )


async def start_world(root: Path, source: str, source_input: Input, ports: dict[str, int]) -> World:
    """Render the first HAProxy file, start HAProxy on it, then the daemon; ready when the
    daemon's first cycle found both files in step."""
    (root / "run" / "nginx").mkdir(parents=True, exist_ok=True)
    config_path = root / "lbsync.toml"
    port = free_port()
    config_path.write_text(world_config(root, source, port))
    config: Config = load(config_path, environ={})
    haproxy = config.targets[0]
    haproxy.dest.write_text(TargetRunner(haproxy).render(await desired_state(config)))
    assert haproxy.reload.socket is not None
    proxy = HAProxy(config=haproxy.dest, master_socket=haproxy.reload.socket, port=port)
    proxy.start()
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    world = World(root, source_input, proxy, daemon, task, stop, ports)
    try:
        await world.until(lambda s: world.live(s, green_weight(BASE_SHARE)), "the first cycle")
    except BaseException:
        await world.close()
        raise
    return world


class FileInput:
    """The services file: the base shop, the case's TOML (or bytes) appended."""

    def __init__(self, path: Path, ports: dict[str, int]) -> None:
        self.path = path
        self.ports = ports
        self.named = str(path)

    def base(self, share: int) -> str:
        return services_toml(
            {
                "shop": {
                    "route": {"hosts": [HOST]},
                    "split": split(share),
                    "instances": {
                        name: instance(port, name.split("-")[0])
                        for name, port in self.ports.items()
                    },
                }
            }
        )

    async def write(self, bad: Any, share: int) -> None:
        text = bad if isinstance(bad, bytes) else str(bad).encode()
        staging = self.path.with_name(".services.toml.test-tmp")
        staging.write_bytes(self.base(share).encode() + b"\n" + text)
        staging.replace(self.path)

    async def clean(self, bad: Any) -> None:
        write_atomically(self.path, self.base(BASE_SHARE))


@dataclass(frozen=True)
class Bulk:
    """`count` keys under `prefix`, each holding `value` (etcd: in transactions of 128)."""

    prefix: bytes
    count: int
    value: bytes


@dataclass(frozen=True)
class StoreRefuses:
    """A write the store itself refuses: the answer's status and a word of its message."""

    key: bytes
    value: bytes
    says: str


@dataclass(frozen=True)
class EtcdBad:
    """Keys (bytes, relative to `lbsync/`) and values (bytes) to write, in order."""

    keys: tuple[tuple[bytes, bytes], ...] = ()
    bulk: Bulk | None = None
    refused_by_store: StoreRefuses | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdInput:
    """etcd's JSON gateway, with aiohttp: any bytes as keys and values."""

    named = "etcd key lbsync/"

    def __init__(self, etcd: EtcdServer) -> None:
        self.url = etcd.url

    async def call(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
            session.post(self.url + path, json=body) as reply,
        ):
            return reply.status, await reply.json(content_type=None)

    async def put(self, key: bytes, value: bytes) -> None:
        status, answer = await self.call(
            "/v3/kv/put", {"key": _b64(b"lbsync/" + key), "value": _b64(value)}
        )
        assert status == 200, (key[:80], status, str(answer)[:300])

    async def write(self, bad: Any, share: int) -> None:
        assert isinstance(bad, EtcdBad)
        if bad.refused_by_store is not None:
            refused = bad.refused_by_store
            status, answer = await self.call(
                "/v3/kv/put",
                {"key": _b64(b"lbsync/" + refused.key), "value": _b64(refused.value)},
            )
            assert status != 200 and refused.says in str(answer), (status, str(answer)[:300])
        if bad.bulk is not None:
            await self.bulk(bad.bulk)
        for key, value in bad.keys:
            await self.put(key, value)
        await self.put(b"services/shop/split", repr_json(split(share)))

    async def bulk(self, bulk: Bulk) -> None:
        """In transactions of 128 (etcd's limit), eight at a time."""
        keys = [b"lbsync/" + bulk.prefix + b"%05d" % n for n in range(bulk.count)]
        slots = asyncio.Semaphore(8)

        async def put(batch: list[bytes]) -> None:
            puts = [{"requestPut": {"key": _b64(key), "value": _b64(bulk.value)}} for key in batch]
            async with slots:
                status, answer = await self.call("/v3/kv/txn", {"success": puts})
            assert status == 200, str(answer)[:300]

        await asyncio.gather(*(put(keys[at : at + 128]) for at in range(0, len(keys), 128)))

    async def keys(self, prefix: bytes) -> list[tuple[str, int]]:
        """Every key under a prefix (relative to `lbsync/` or not: as given) and its
        mod_revision."""
        status, answer = await self.call(
            "/v3/kv/range",
            {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)), "keys_only": True},
        )
        assert status == 200, str(answer)[:300]
        return sorted(
            (base64.b64decode(kv["key"]).decode(errors="replace"), int(kv["mod_revision"]))
            for kv in answer.get("kvs", [])
        )

    async def seed(self, prefix: str, values: dict[str, Any]) -> None:
        """Write JSON values under `prefix` in one transaction."""
        puts = [
            {"requestPut": {"key": _b64((prefix + key).encode()), "value": _b64(repr_json(v))}}
            for key, v in values.items()
        ]
        status, answer = await self.call("/v3/kv/txn", {"success": puts})
        assert status == 200, str(answer)[:300]

    async def clean(self, bad: Any) -> None:
        assert isinstance(bad, EtcdBad)
        if bad.bulk is not None:
            prefix = b"lbsync/" + bad.bulk.prefix
            await self.call(
                "/v3/kv/deleterange",
                {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))},
            )
        for key, _ in bad.keys:
            await self.call("/v3/kv/deleterange", {"key": _b64(b"lbsync/" + key)})
        await self.put(b"services/shop/split", repr_json(split(BASE_SHARE)))


def repr_json(value: Any) -> bytes:
    """JSON text as bytes (the stores' values)."""
    return json.dumps(value).encode()


@dataclass(frozen=True)
class ConsulRefuses:
    """A request Consul itself refuses: method, path, body and a word of its answer."""

    path: str
    body: Any
    says: str


@dataclass(frozen=True)
class ConsulBad:
    """KV keys (relative to `lbsync/`) and values, agent registrations (bodies for
    `/v1/agent/service/register`), services of an external node (`EXTERNAL_NODE`, through the
    catalog: the agent takes an id with a control character but cannot deregister it, since
    Consul refuses such a character in a URL), and requests Consul itself refuses."""

    kv: tuple[tuple[str, bytes], ...] = ()
    registrations: tuple[dict[str, Any], ...] = ()
    external: tuple[dict[str, Any], ...] = ()
    bulk: Bulk | None = None
    refused_by_store: tuple[ConsulRefuses, ...] = ()


EXTERNAL_NODE = "external-node"


def quoted(key: str) -> str:
    return urllib.parse.quote(key, safe="/")


class ConsulInput:
    """Consul's HTTP API: KV writes and agent registrations."""

    named = "consul key lbsync/"

    def __init__(self, agent: ConsulAgent) -> None:
        self.agent = agent

    async def write(self, bad: Any, share: int) -> None:
        assert isinstance(bad, ConsulBad)
        for refused in bad.refused_by_store:
            try:
                await self.agent.call("PUT", refused.path, refused.body)
            except AssertionError as error:
                assert refused.says in str(error), str(error)[:300]
            else:
                raise AssertionError(f"Consul took {refused.path[:100]}")
        if bad.bulk is not None:
            await self.bulk(bad.bulk)
        for key, value in bad.kv:
            assert await self.agent.call("PUT", "/v1/kv/lbsync/" + quoted(key), value) is True
        for body in bad.registrations:
            await self.agent.call("PUT", "/v1/agent/service/register", body)
        for service in bad.external:
            await self.agent.catalog_register(EXTERNAL_NODE, "127.0.0.1", service, [])
        await self.agent.kv_put("lbsync/services/shop/split", split(share))

    async def bulk(self, bulk: Bulk) -> None:
        """In transactions of 64 (Consul's limit), eight at a time."""
        keys = [f"lbsync/{bulk.prefix.decode()}{n:05d}" for n in range(bulk.count)]
        value = base64.b64encode(bulk.value).decode()
        slots = asyncio.Semaphore(8)

        async def put(batch: list[str]) -> None:
            operations = [{"KV": {"Verb": "set", "Key": key, "Value": value}} for key in batch]
            async with slots:
                await self.agent.call("PUT", "/v1/txn", operations)

        await asyncio.gather(*(put(keys[at : at + 64]) for at in range(0, len(keys), 64)))

    async def clean(self, bad: Any) -> None:
        assert isinstance(bad, ConsulBad)
        if bad.bulk is not None:
            await self.agent.kv_delete("lbsync/" + bad.bulk.prefix.decode(), recurse=True)
        for key, _ in bad.kv:
            await self.agent.call("DELETE", "/v1/kv/lbsync/" + quoted(key))
        for body in bad.registrations:
            service_id = quoted(str(body.get("ID", body["Name"])))
            await self.agent.call("PUT", f"/v1/agent/service/deregister/{service_id}")
        if bad.external:
            await self.agent.catalog_deregister(EXTERNAL_NODE)
        await self.agent.kv_put("lbsync/services/shop/split", split(BASE_SHARE))


def rejections(status: Status) -> list[str]:
    return [str(rejection) for rejection in status.state.rejected] if status.state else []


def unmatched(status: Status, refused: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The expected refusals no rejection in the status shows (where and reason in one)."""
    shown = rejections(status)
    return [
        (where, reason)
        for where, reason in refused
        if not any(line.startswith(where + ":") and reason in line for line in shown)
    ]


def unexpected(status: Status, refused: tuple[tuple[str, str], ...]) -> list[str]:
    """Rejections in the status that no expected refusal accounts for."""
    return [
        line
        for line in rejections(status)
        if not any(line.startswith(where + ":") for where, _ in refused)
    ]
