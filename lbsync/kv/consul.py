"""The Consul agents lbsync reads from and writes to, through py-consul's asyncio client.

The source's watchers and the traffic commands' compare-and-swap writes share this one path,
so both get the same failover, ACL messages and TLS (`config.tls`).

py-consul supplies the aiohttp session (TLS: CA file, client certificate; a sized connection
pool), URL quoting, `dc`, and the KV, catalog, health and ACL endpoints with their `index`
and `wait` parameters; it decodes KV values and turns 403 into `ACLPermissionDenied` and 401
into `ACLDisabled`, which is all the ACL checks need. Around it, and why:

- Every call runs under its own `asyncio.timeout`: a blocking query gets `wait * 17/16 + 5 s`
  (Consul adds up to wait/16 of jitter), a non-blocking read fails after 10 s. The session's
  single total timeout is set just above the blocking one, because aiohttp's default (300 s)
  would cut a long wait, and py-consul's health and catalog calls take no per-call timeout.
- The token is set on each client after construction: py-consul's constructor lets
  `CONSUL_HTTP_TOKEN` override an explicit token, and lbsync's configuration decides that.
- `agent.self()` is not used: py-consul sends it without the token, so a default-deny agent
  always answers 403; `/v1/acl/token/self` (with the token) says what is needed instead.
- Connections: the source holds three blocking queries (KV, catalog, health state) and reads
  everything else one request at a time, so its pool is `SOURCE_POOL` (4) whatever the number
  of services; Consul's agent allows 200 per client address (`limits.http_max_conns_per_client`)
  and every other tool on the host shares them. The blocking queries ask for `stale` answers
  (any server may answer them, not only the leader); the reads they trigger do not, so a read
  is never older than the change that asked for it. docs/architecture.md has the figures.
  Following Fabio's key, or the splitter and resolver config entries, adds one blocking query
  each (`ConsulSource` sizes the pool).
- Every request is counted by kind in the `RequestCounts` the agents were given.
- Failover: on a transport error (refused, reset, timeout) the next address becomes current
  for every watcher; Raft indexes are cluster-wide, so watchers carry on from theirs (an index
  that goes backwards is reset by the watch loop anyway). A one-off read or write
  (`read_key`, `write_key_if`) tries each agent in turn; a write moves on only when its
  connection was refused, since a compare-and-swap sent twice reports its own write as a
  conflict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, TypeVar

import aiohttp
import consul.aio
import consul.exceptions
from consul.callback import CB

from lbsync.config import CONSUL_PORTS, ConsulSourceConfig, Endpoint, TlsFiles, parse_endpoint
from lbsync.kv.requests import RequestCounts

QUICK_TIMEOUT: Final = 10.0
JITTER_MARGIN: Final = 5.0
CATALOG_NEEDS: Final = 'service_prefix "" read'
POOL_FOR_ONE_OFF_CALLS: Final = 4  # a command's reads and writes, one at a time
SOURCE_POOL: Final = 4  # three blocking queries and one connection for every other read
STALE: Final = [("stale", "1")]

_T = TypeVar("_T")


class FaultKind(StrEnum):
    """Why a read failed: Consul not reachable or not answering well, or an ACL refusal."""

    UNAVAILABLE = "unavailable"
    ACL = "acl"


class Fault(Exception):
    """A read that failed; its text is what the status shows (stable across retries)."""

    kind: FaultKind = FaultKind.UNAVAILABLE


class Unavailable(Fault):
    """Consul could not be reached, cut the answer, timed out or answered with an error."""

    kind = FaultKind.UNAVAILABLE

    def __init__(self, message: str, *, connect: bool = False) -> None:
        super().__init__(message)
        self.connect = connect  # nothing accepted the connection: an agent (re)starting


class AclRefusal(Fault):
    """Consul's ACL refused the token, or made a read look empty."""

    kind = FaultKind.ACL


class Access(StrEnum):
    """What a request does to what it names; messages say it."""

    READ = "read"
    WRITE = "write"

    @property
    def gerund(self) -> str:
        """`reading` or `writing`."""
        return "reading" if self is Access.READ else "writing"


class AclState(StrEnum):
    """What `/v1/acl/token/self` says about ACLs and the configured token."""

    DISABLED = "disabled"
    ACCEPTED = "accepted"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Settings:
    """Everything the clients need; built once by the source."""

    addresses: tuple[Endpoint, ...]
    token: str | None
    datacenter: str | None
    tls: TlsFiles
    wait: float
    pool: int

    @classmethod
    def from_config(cls, config: ConsulSourceConfig, *, pool: int) -> Settings:
        """The settings of a `[source.consul]` table; ValueError names an address or TLS file
        that cannot be used (`TlsError` for TLS)."""
        config.tls.context()  # the files are checked now, not at the first connection
        return cls(
            addresses=addresses_of(config.addresses),
            token=config.token or None,
            datacenter=config.datacenter or None,
            tls=config.tls,
            wait=config.wait,
            pool=pool,
        )

    @property
    def blocking_timeout(self) -> float:
        """Longer than any answer to a blocking query can take (wait plus Consul's jitter)."""
        return self.wait * 17 / 16 + JITTER_MARGIN

    @property
    def wait_text(self) -> str:
        """The `wait` parameter in Consul's duration syntax."""
        return f"{max(1, round(self.wait * 1000))}ms"


def _index(text: object) -> int:
    """X-Consul-Index as an int; anything else is 0 (the next read is then non-blocking)."""
    try:
        return max(0, int(str(text)))
    except ValueError:
        return 0


class Agents:
    """py-consul clients, one per address, the current one used by every watcher."""

    def __init__(self, settings: Settings, *, requests: RequestCounts | None = None) -> None:
        self.settings = settings
        self.requests = requests if requests is not None else RequestCounts()
        self._clients: list[Any] = []
        self._current = 0

    async def __aenter__(self) -> Agents:
        for address in self.settings.addresses:
            client = consul.aio.Consul(
                host=address.url_host,
                port=address.port,
                scheme=address.scheme,
                dc=self.settings.datacenter,
                verify=str(self.settings.tls.ca_file) if self.settings.tls.ca_file else True,
                cert=self.settings.tls.client_cert,
                connections_limit=self.settings.pool,
                connections_timeout=self.settings.blocking_timeout + 1,
            )
            client.token = self.settings.token  # not CONSUL_HTTP_TOKEN: see the module doc
            self._clients.append(client)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()

    @property
    def address(self) -> Endpoint:
        """The agent in use."""
        return self.settings.addresses[self._current]

    async def _call(
        self,
        what: str,
        request: Callable[[Any], Awaitable[_T]],
        *,
        kind: str,
        blocking: bool,
        needs: str = "",
        access: Access = Access.READ,
    ) -> _T:
        """One request to the current agent; failures become Faults (transport ones fail over)."""
        self.requests.count(kind)
        used = self._current
        address = self.settings.addresses[used]
        timeout = self.settings.blocking_timeout if blocking else QUICK_TIMEOUT
        try:
            async with asyncio.timeout(timeout):
                return await request(self._clients[used])
        except consul.exceptions.ACLPermissionDenied as error:
            raise AclRefusal(self._acl_message(what, needs, str(error), access=access)) from error
        except (consul.exceptions.ConsulException, ValueError, RecursionError) as error:
            # ValueError, RecursionError: an answer that is not JSON lbsync can read (an
            # integer of thousands of digits, nesting deeper than Python's stack)
            raise Unavailable(
                f"Consul at {address} failed {access.gerund} {what}: {error}"
            ) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            if self._current == used:
                self._current = (used + 1) % len(self._clients)
            detail = str(error) or (
                f"no answer within {timeout:g}s"
                if isinstance(error, TimeoutError)
                else type(error).__name__
            )
            raise Unavailable(
                f"Consul unreachable at {address}: {detail}",
                connect=isinstance(error, aiohttp.ClientConnectorError)
                and not isinstance(error, aiohttp.ClientSSLError),  # TLS trouble: back off
            ) from error

    def _acl_message(self, what: str, needs: str, body: str, *, access: Access) -> str:
        if "ACL not found" in body:
            return (
                f"Consul ACL: token not found (wrong, expired or deleted), cannot {access} {what}"
            )
        evidence = f"Consul answered 403 {body.strip() or 'Permission denied'}"
        return self.refusal(what, needs, evidence, access=access)

    def refusal(self, what: str, needs: str, evidence: str, *, access: Access = Access.READ) -> str:
        """An ACL refusal: what could not be read or written, what the token needs, and the
        evidence."""
        who = "the configured token"
        if not self.settings.token:
            who = "no token is configured, so the anonymous token"
        return (
            f"Consul ACL: token missing or not allowed to {access} {what}: {who} needs {needs} "
            f"({evidence})"
        )

    async def _each_agent(
        self,
        what: str,
        request: Callable[[Any], Awaitable[_T]],
        *,
        kind: str,
        needs: str,
        access: Access,
        sent_again: bool,
    ) -> _T:
        """One request, tried on each agent in turn from the current one. A refused connection
        never reached Consul, so any request moves on; after the request may have reached an
        agent (reset, timeout), only one that may be `sent_again` does: a compare-and-swap
        applied twice would report its own write as a conflict."""
        failure: Unavailable | None = None
        for _ in self.settings.addresses:
            try:
                return await self._call(
                    what, request, kind=kind, blocking=False, needs=needs, access=access
                )
            except Unavailable as error:
                if not (error.connect or sent_again):
                    raise
                failure = error
        assert failure is not None
        raise failure

    async def call(
        self,
        what: str,
        request: Callable[[Any], Awaitable[_T]],
        *,
        kind: str,
        needs: str,
        sent_again: bool,
    ) -> _T:
        """One write-like request of another module (`kv/locks.py`), as `write_key_if` sends
        its own: on each agent in turn, counted, failures as Faults."""
        return await self._each_agent(
            what, request, kind=kind, needs=needs, access=Access.WRITE, sent_again=sent_again
        )

    async def read_key(self, key: str) -> tuple[bytes, int] | None:
        """One key's value and ModifyIndex (the `cas` that replaces it), or None when absent."""
        found = await self._each_agent(
            key,
            lambda client: client.kv.get(key),
            kind="kv",
            needs=f'key_prefix "{key}" read',
            access=Access.READ,
            sent_again=True,
        )
        _, item = found
        if item is None:
            return None
        if not isinstance(item, dict):
            raise Unavailable(f"Consul at {self.address}: unexpected KV answer for {key}")
        value = item.get("Value")
        return (value if isinstance(value, bytes) else b""), _index(item.get("ModifyIndex"))

    async def write_key_if(self, key: str, value: bytes, *, cas: int) -> bool:
        """Write a key only while its ModifyIndex is `cas` (0: only if absent); whether it was."""
        written = await self._each_agent(
            key,
            lambda client: client.kv.put(key, value, cas=cas),
            kind="kv-write",
            needs=f'key_prefix "{key}" write',
            access=Access.WRITE,
            sent_again=False,
        )
        return written is True

    async def acl_state(self, what: str) -> AclState:
        """Whether ACLs are on and the token exists; AclRefusal (naming `what`) when it does not."""

        async def read_self(client: Any) -> AclState:
            try:
                await client.acl.token.read_self()
            except consul.exceptions.ACLDisabled:
                return AclState.DISABLED
            except consul.exceptions.ACLPermissionDenied:
                if self.settings.token:
                    raise
                return AclState.ANONYMOUS  # the anonymous token cannot read itself
            return AclState.ACCEPTED

        return await self._call(what, read_self, kind="token", blocking=False)

    async def kv(self, prefix: str, index: int) -> tuple[int, list[tuple[str, bytes | None]]]:
        """A recursive read of the prefix (blocking when index > 0); [] when Consul says 404."""
        reply = await self._call(
            prefix,
            lambda client: client.kv.get(
                prefix,
                index=index or None,
                recurse=True,
                wait=self.settings.wait_text,
                consistency="stale",
            ),
            kind="kv",
            blocking=index > 0,
            needs=f'key_prefix "{prefix}" read',
        )
        found, items = reply
        if items is not None and not (
            isinstance(items, list) and all(isinstance(item, dict) for item in items)
        ):
            raise Unavailable(f"Consul at {self.address}: unexpected KV answer for {prefix}")
        pairs = [
            (
                str(item.get("Key", "")),
                value if isinstance(value := item.get("Value"), bytes) else None,
            )
            for item in items or ()
        ]
        return _index(found), pairs

    async def check_kv_readable(self, prefix: str) -> None:
        """Raise AclRefusal when the token may not read the prefix.

        A recursive read that the ACL filters to nothing answers 404, exactly like an empty
        prefix; a plain read of the prefix key itself answers 403 when it is not allowed.
        """
        await self._call(
            prefix,
            lambda client: client.kv.get(prefix),
            kind="kv",
            blocking=False,
            needs=f'key_prefix "{prefix}" read',
        )

    async def catalog(
        self, index: int, *, dc: str | None = None
    ) -> tuple[int, dict[str, tuple[str, ...]]]:
        """`/v1/catalog/services`: every service name with the union of its instances' tags,
        sorted (Consul lists a union in any order from one answer to the next); of datacenter
        `dc`, else the configured or the agent's own."""
        found, services = await self._call(
            _in("the service catalog", dc),
            lambda client: client.catalog.services(
                index=index or None, wait=self.settings.wait_text, consistency="stale", dc=dc
            ),
            kind="catalog",
            blocking=index > 0,
            needs=CATALOG_NEEDS,
        )
        if not isinstance(services, dict):
            raise Unavailable(f"Consul at {self.address}: unexpected catalog answer")
        return _index(found), {
            str(name): tuple(sorted({str(tag) for tag in tags or ()}))
            for name, tags in services.items()
        }

    async def health(self, service: str, *, dc: str | None = None) -> list[dict[str, Any]]:
        """`/v1/health/service/<svc>` now (not blocking, not stale): all instances with node and
        service checks, of datacenter `dc` (else the configured or the agent's own)."""
        _, nodes = await self._call(
            _in(f"the health of service {service}", dc),
            lambda client: client.health.service(service, dc=dc),
            kind="health-service",
            blocking=False,
            needs=f'service "{service}" read and node_prefix "" read',
        )
        if not isinstance(nodes, list) or not all(isinstance(item, dict) for item in nodes):
            raise Unavailable(f"Consul at {self.address}: unexpected health answer for {service}")
        return nodes

    def _stale_list(
        self, path: str, index: int, dc: str | None
    ) -> Callable[[Any], Awaitable[tuple[object, object]]]:
        """A GET of a listing py-consul has no call for, `stale`, blocking when index > 0, of
        datacenter `dc` (else the configured one): the request `_call` sends to each agent."""

        def request(client: Any) -> Awaitable[tuple[object, object]]:
            params: list[tuple[str, object]] = list(STALE)
            if index:
                params += [("index", index), ("wait", self.settings.wait_text)]
            if dc or client.dc:
                params.append(("dc", dc or client.dc))
            return client.http.get(  # type: ignore[no-any-return]
                CB.json(index=True), path, params=params, headers=client.prepare_headers(None)
            )

        return request

    async def health_state(
        self, index: int, *, dc: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """`/v1/health/state/any` (blocking when index > 0, stale): every check in the
        datacenter (`dc`, else the configured or the agent's own), node and service checks."""
        found, checks = await self._call(
            _in("the health checks", dc),
            self._stale_list("/v1/health/state/any", index, dc),
            kind="health-state",
            blocking=index > 0,
            needs='service_prefix "" read and node_prefix "" read',
        )
        if not isinstance(checks, list) or not all(isinstance(item, dict) for item in checks):
            raise Unavailable(f"Consul at {self.address}: unexpected health state answer")
        return _index(found), checks

    async def config_entries(self, kind: str, index: int) -> tuple[int, list[dict[str, Any]]]:
        """`/v1/config/<kind>` (blocking when index > 0, stale): every config entry of that
        kind. Each kind blocks on its own: a write of another kind does not wake it (seen on
        Consul 1.8.7), although the index is the one of every kind."""
        found, entries = await self._call(
            f"the {kind} config entries",
            self._stale_list(f"/v1/config/{kind}", index, None),
            kind="config",
            blocking=index > 0,
            needs=CATALOG_NEEDS,
        )
        entries = [] if entries is None else entries  # none of that kind
        if not isinstance(entries, list) or not all(isinstance(item, dict) for item in entries):
            raise Unavailable(f"Consul at {self.address}: unexpected {kind} answer")
        return _index(found), entries


def _in(what: str, dc: str | None) -> str:
    """What a request reads, with the datacenter it asks for when that is not the local one."""
    return f"{what} of datacenter {dc}" if dc else what


def addresses_of(texts: Sequence[str]) -> tuple[Endpoint, ...]:
    """Parse the configured addresses (at least one) by the one endpoint rule."""
    if not texts:
        raise ValueError("Consul: at least one address is required")
    return tuple(parse_endpoint(text, ports=CONSUL_PORTS, what="Consul address") for text in texts)
