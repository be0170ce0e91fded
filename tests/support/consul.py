"""A real Consul dev agent on free loopback ports, its HTTP API for tests, and a snapshot follower.

The binary is `consul` on PATH, else the repository's `.cache/consul/consul` (installed by
scripts from Debian bullseye's package, 1.8.7). A dev agent keeps everything in memory: a
restart on the same ports starts again empty, with its Raft index near 1 — the case the
source's index reset exists for. Agents are stopped by PID with SIGKILL: nothing is lost that
a test needs, and a graceful stop costs 1.7 s each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from lbsync.model.values import Snapshot
from lbsync.sources import Source
from support.ports import free_port
from support.waiting import async_wait_until, wait_until

REPO = Path(__file__).resolve().parents[2]
CACHED_BINARY = REPO / ".cache" / "consul" / "consul"
MASTER_TOKEN = "lbsync-test-master-token"
START_TIMEOUT = 20.0


def consul_binary() -> str | None:
    """Path of the consul binary, or None when neither PATH nor the cache has one."""
    found = shutil.which("consul")
    if found:
        return found
    return str(CACHED_BINARY) if CACHED_BINARY.is_file() else None


@dataclass
class ConsulAgent:
    """One `consul agent -dev` in a temporary directory; optionally with default-deny ACLs, or
    `persistent`: a one-server cluster keeping its data in `root/data` across restarts (a dev
    agent restarted has forgotten everything, a real one has not)."""

    root: Path
    acl: bool = False
    tls: bool = False
    persistent: bool = False
    node: str = "node-a"
    datacenter: str = "dc1"
    hcl: tuple[str, ...] = ()  # more configuration, e.g. `limits { ... }`
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.ports:
            names = ("http", "https", "dns", "server", "serf_lan", "serf_wan")
            self.ports = {name: free_port() for name in names}

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def https_address(self) -> str:
        """The HTTPS listener (TLS variant); its certificate names `localhost`."""
        return f"https://localhost:{self.ports['https']}"

    @property
    def tls_files(self) -> dict[str, Path]:
        """CA, and the client certificate and key (TLS variant), made by `consul tls`."""
        return {
            "ca_file": self.root / "consul-agent-ca.pem",
            "cert_file": self.root / "dc1-client-consul-0.pem",
            "key_file": self.root / "dc1-client-consul-0-key.pem",
        }

    def _make_certificates(self, binary: str) -> None:
        if self.tls_files["ca_file"].exists():
            return
        for args in (
            ["ca", "create"],
            ["cert", "create", "-server"],
            ["cert", "create", "-client"],
        ):
            subprocess.run(
                [binary, "tls", *args], cwd=self.root, check=True, capture_output=True, timeout=30
            )

    @property
    def token(self) -> str | None:
        """The master token (ACL variant), used by every helper below."""
        return MASTER_TOKEN if self.acl else None

    def argv(self) -> list[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        binary = consul_binary()
        if binary is None:
            raise AssertionError("consul is not installed: run scripts/install-system.sh")
        hcl = ["disable_update_check = true", *self.hcl]
        if self.persistent:  # Raft's production timings: a restarted server elects itself fast
            hcl.append("performance { raft_multiplier = 1 }")
        if self.tls:
            self._make_certificates(binary)
            hcl += [
                f"ports {{ https = {self.ports['https']} }}",
                f'ca_file = "{self.tls_files["ca_file"]}"',
                f'cert_file = "{self.root / "dc1-server-consul-0.pem"}"',
                f'key_file = "{self.root / "dc1-server-consul-0-key.pem"}"',
                "verify_incoming_https = true",
            ]
        if self.acl:
            hcl.append(
                'acl { enabled = true, default_policy = "deny", '
                f'tokens {{ master = "{MASTER_TOKEN}", agent = "{MASTER_TOKEN}" }} }}'
            )
        mode = (
            ["-server", "-bootstrap-expect", "1", "-data-dir", str(self.root / "data")]
            if self.persistent
            else ["-dev"]
        )
        argv = [binary, "agent", *mode, "-bind", "127.0.0.1", "-client", "127.0.0.1"]
        argv += ["-node", self.node, "-log-level", "warn", "-grpc-port", "-1"]
        argv += ["-datacenter", self.datacenter]
        argv += ["-http-port", str(self.ports["http"]), "-dns-port", str(self.ports["dns"])]
        argv += ["-server-port", str(self.ports["server"])]
        argv += ["-serf-lan-port", str(self.ports["serf_lan"])]
        argv += ["-serf-wan-port", str(self.ports["serf_wan"])]
        for line in hcl:
            argv += ["-hcl", line]
        return argv

    def _spawn(self) -> None:
        argv = self.argv()
        with (self.root / "consul.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )

    def leader_known(self) -> bool:
        """Whether `/v1/status/leader` names a leader (the agent serves reads and writes)."""
        if self.process is None or self.process.poll() is not None:
            log = (self.root / "consul.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"consul agent exited:\n{log}")
        try:
            with urllib.request.urlopen(f"{self.address}/v1/status/leader", timeout=1) as reply:
                return bool(json.loads(reply.read() or b'""'))
        except (OSError, ValueError):
            return False

    def start(self) -> None:
        """Start and wait (with a deadline) until a leader is known; blocking, for fixtures."""
        self._spawn()
        wait_until(self.leader_known, START_TIMEOUT, "a Consul leader")

    async def start_async(self) -> None:
        """`start` without blocking the event loop (a source under test keeps running)."""
        self._spawn()

        async def leader() -> bool:
            return await asyncio.to_thread(self.leader_known)

        await async_wait_until(leader, START_TIMEOUT, "a Consul leader")

    def stop(self) -> None:
        """Kill by PID and reap; the ports are free again for a restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    # HTTP API (aiohttp; every call with the master token in the ACL variant)

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> Any:
        """One API call; the decoded JSON answer (None when empty); fails on HTTP errors."""
        headers = {}
        if token or self.token:
            headers["X-Consul-Token"] = token or self.token or ""
        data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.request(method, self.address + path, data=data, headers=headers) as reply,
        ):
            text = await reply.text()
            if reply.status >= 400:
                raise AssertionError(f"{method} {path}: {reply.status} {text}")
            return json.loads(text) if text.strip() else None

    async def kv_put(self, key: str, value: str | dict[str, Any] | list[Any]) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        assert await self.call("PUT", f"/v1/kv/{key}", text.encode()) is True

    async def kv_delete(self, key: str, *, recurse: bool = False) -> None:
        await self.call("DELETE", f"/v1/kv/{key}" + ("?recurse" if recurse else ""))

    async def register(
        self,
        service: str,
        service_id: str,
        port: int,
        *tags: str,
        address: str = "127.0.0.1",
        weights: dict[str, int] | None = None,
        meta: dict[str, str] | None = None,
        status: str = "passing",
        ttl_check: bool = True,
    ) -> None:
        """Register on this agent with a TTL check (`service:<id>`) in the given state, or with
        no check of its own (its health is then the node's)."""
        body: dict[str, Any] = {
            "Name": service,
            "ID": service_id,
            "Port": port,
            "Tags": list(tags),
            "Address": address,
        }
        if ttl_check:
            body["Check"] = {"TTL": "10m", "Status": status}
        if weights is not None:
            body["Weights"] = weights
        if meta is not None:
            body["Meta"] = meta
        await self.call("PUT", "/v1/agent/service/register", body)

    async def set_check(self, service_id: str, status: str) -> None:
        """Move a TTL check: passing, warning or critical."""
        verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        await self.call("PUT", f"/v1/agent/check/{verb}/service:{service_id}")

    async def deregister(self, service_id: str) -> None:
        await self.call("PUT", f"/v1/agent/service/deregister/{service_id}")

    async def service_maintenance(self, service_id: str, enable: bool) -> None:
        flag = "true" if enable else "false"
        await self.call(
            "PUT", f"/v1/agent/service/maintenance/{service_id}?enable={flag}&reason=test"
        )

    async def node_maintenance(self, enable: bool) -> None:
        flag = "true" if enable else "false"
        await self.call("PUT", f"/v1/agent/maintenance?enable={flag}&reason=test")

    async def catalog_register(
        self, node: str, address: str, service: dict[str, Any], checks: list[dict[str, Any]]
    ) -> None:
        """Register an external node with one service and its checks (catalog API)."""
        body = {"Node": node, "Address": address, "Service": service, "Checks": checks}
        await self.call("PUT", "/v1/catalog/register", body)

    async def catalog_register_many(self, bodies: list[dict[str, Any]]) -> None:
        """`/v1/catalog/register` for each body in turn over one kept connection (hundreds of
        instances in a second or two, one connection of the agent's per-client limit)."""
        headers = {"X-Consul-Token": self.token} if self.token else {}
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            for body in bodies:
                url = f"{self.address}/v1/catalog/register"
                async with session.put(url, json=body, headers=headers) as reply:
                    if reply.status >= 400:
                        raise AssertionError(f"register {body}: {reply.status}")

    async def catalog_deregister(self, node: str) -> None:
        await self.call("PUT", "/v1/catalog/deregister", {"Node": node})

    async def create_token(self, rules: str) -> str:
        """A token (ACL variant) whose only policy has these rules; its secret."""
        name = f"policy-{time.monotonic_ns()}"
        await self.call("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules})
        token = await self.call("PUT", "/v1/acl/token", {"Policies": [{"Name": name}]})
        secret: str = token["SecretID"]
        return secret

    async def delete_token(self, secret: str) -> None:
        """Delete a token (ACL variant) by its secret."""
        token = await self.call("GET", "/v1/acl/token/self", token=secret)
        await self.call("DELETE", f"/v1/acl/token/{token['AccessorID']}")


def datacenters_known(agent: ConsulAgent, names: set[str]) -> bool:
    """Whether the agent's `/v1/catalog/datacenters` lists every one of `names` (the WAN pool
    has them, so a `?dc=` query is forwarded)."""
    try:
        with urllib.request.urlopen(f"{agent.address}/v1/catalog/datacenters", timeout=1) as reply:
            return names <= set(json.loads(reply.read() or b"[]"))
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def federated_agents(
    root: Path, names: tuple[str, ...] = ("dc1", "dc2")
) -> Iterator[list[ConsulAgent]]:
    """One dev agent per datacenter, each its own server, joined over the WAN on loopback
    (`consul join -wan`); the first is the local one. Stopped at the end."""
    agents = [ConsulAgent(root=root / name, datacenter=name, node=f"node-{name}") for name in names]
    try:
        for agent in agents:
            agent.start()
        binary = consul_binary()
        assert binary is not None
        for other in agents[1:]:
            subprocess.run(
                [
                    *(binary, "join", "-wan", f"-http-addr={agents[0].address}"),
                    f"127.0.0.1:{other.ports['serf_wan']}",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
        for agent in agents:
            wait_until(
                functools.partial(datacenters_known, agent, set(names)), START_TIMEOUT, "a WAN pool"
            )
        yield agents
    finally:
        for agent in agents:
            agent.stop()


@contextlib.contextmanager
def running_agent(root: Path, *, acl: bool = False, tls: bool = False) -> Iterator[ConsulAgent]:
    """A started agent, stopped at the end."""
    agent = ConsulAgent(root=root, acl=acl, tls=tls)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


class Follower:
    """Consumes a source's snapshots in a task; tests wait for the one they expect."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.seen: list[Snapshot] = []
        self._cursor = 0
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _consume(self) -> None:
        async for snapshot in self.source.snapshots():
            self.seen.append(snapshot)
            self._arrived.set()

    async def next(
        self, predicate: Callable[[Snapshot], bool], timeout: float, what: str
    ) -> Snapshot:
        """The first snapshot after the last one returned that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.seen):
                snapshot = self.seen[self._cursor]
                self._cursor += 1
                if predicate(snapshot):
                    return snapshot
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError(f"the source stopped before {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {self.seen}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def during(self, seconds: float) -> list[Snapshot]:
        """Every snapshot yielded in the next `seconds` (an observation window, for "never")."""
        start = len(self.seen)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        self._cursor = len(self.seen)
        return self.seen[start:]


@contextlib.asynccontextmanager
async def following(source: Source) -> AsyncIterator[Follower]:
    """Run a source for the duration of the block; its snapshots collected in order."""
    follower = Follower(source)
    follower.start()
    try:
        yield follower
    finally:
        await follower.stop()
