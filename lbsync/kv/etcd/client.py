"""`EtcdClient`: the KV, lease and watch calls lbsync needs, over etcd's gRPC-JSON gateway.

The API and the reasons for this client are in the package docstring (`lbsync.kv.etcd`);
failover and re-login live in `transport.py`, the watch stream in `watch.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import NoReturn

from lbsync.config import EtcdSourceConfig, TlsFiles
from lbsync.kv.etcd.errors import EtcdError, EtcdUnavailable, LeaseExpired
from lbsync.kv.etcd.messages import (
    KeyValue,
    b64,
    encode_key,
    header_revision,
    prefix_range,
    to_int,
)
from lbsync.kv.etcd.transport import Transport
from lbsync.kv.etcd.watch import EtcdWatch
from lbsync.kv.requests import RequestCounts

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 30.0
"""A watch that receives no byte for this long raises `WatchIdle` (see `watch.py`)."""
NO_TLS_FILES = TlsFiles()


class EtcdClient:
    """A small asyncio etcd v3 client; use as `async with EtcdClient([...]) as client`."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles = NO_TLS_FILES,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_connections: int = 64,
        requests: RequestCounts | None = None,
    ) -> None:
        """ValueError names an endpoint or TLS file that cannot be used (`TlsError` for TLS)."""
        self._transport = Transport(
            endpoints,
            username=username,
            password=password,
            ssl_context=tls.context(),
            request_timeout=request_timeout,
            max_connections=max_connections,
            requests=requests,
        )

    @classmethod
    def from_config(
        cls, config: EtcdSourceConfig, *, requests: RequestCounts | None = None
    ) -> EtcdClient:
        """The client a `[source.etcd]` table describes (the source, `register` and the
        traffic commands all use this one)."""
        return cls(
            config.endpoints,
            username=config.username,
            password=config.password,
            tls=config.tls,
            request_timeout=config.request_timeout,
            requests=requests,
        )

    async def __aenter__(self) -> EtcdClient:
        await self._transport.open()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._transport.close()

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints, normalised to `scheme://host:port`."""
        return self._transport.endpoints

    @property
    def endpoint(self) -> str:
        """The endpoint that answered last; the next call starts there."""
        return self._transport.endpoint

    @property
    def token(self) -> str | None:
        """The current auth token, None without credentials or before the first call."""
        return self._transport.token

    async def login(self) -> None:
        """Log in again now (after `TokenExpired` from a watch); a no-op without credentials."""
        await self._transport.relogin(self._transport.token)

    async def range_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under `prefix` (sorted by key) and the store revision of the read."""
        data = await self._transport.call("/v3/kv/range", prefix_range(prefix), idempotent=True)
        kvs = data.get("kvs") or []
        if not isinstance(kvs, list):
            raise EtcdError("etcd's range answer has kvs that are not a list")
        return header_revision(data), [KeyValue.from_json(item) for item in kvs]

    async def get(self, key: str) -> KeyValue | None:
        """One key, or None when it does not exist."""
        body = {"key": b64(encode_key(key))}
        data = await self._transport.call("/v3/kv/range", body, idempotent=True)
        kvs = data.get("kvs") or []
        return KeyValue.from_json(kvs[0]) if isinstance(kvs, list) and kvs else None

    async def put(self, key: str, value: bytes | str, lease: int | None = None) -> int:
        """Write a key (attached to `lease` if given); the revision of the write."""
        body = {"key": b64(encode_key(key)), "value": b64(_bytes(value))}
        if lease:
            body["lease"] = str(lease)
        try:
            data = await self._transport.call("/v3/kv/put", body, idempotent=True)
        except LeaseExpired as error:
            raise LeaseExpired(lease, "cannot attach a key to it") from error
        return header_revision(data)

    async def delete(self, key: str) -> int:
        """Delete one key; how many keys were deleted (0 or 1)."""
        body = {"key": b64(encode_key(key))}
        data = await self._transport.call("/v3/kv/deleterange", body, idempotent=True)
        return to_int(data.get("deleted"), "a deleted count")

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; how many were deleted."""
        data = await self._transport.call(
            "/v3/kv/deleterange", prefix_range(prefix), idempotent=True
        )
        return to_int(data.get("deleted"), "a deleted count")

    async def txn_put_if(
        self,
        key: str,
        value: bytes | str,
        *,
        expect_mod_revision: int,
        lease: int | None = None,
    ) -> tuple[bool, int]:
        """Compare-and-swap: write only if the key's mod revision is `expect_mod_revision`.

        0 means the key must not exist (etcd compares a missing key's revisions as 0).
        Returns whether the write happened and the store revision after the transaction.
        Not retried on another endpoint once sent: a repeat would see its own write as a
        conflict, so an unknown outcome raises `EtcdUnavailable` instead.
        """
        encoded = b64(encode_key(key))
        put: dict[str, str] = {"key": encoded, "value": b64(_bytes(value))}
        if lease:
            put["lease"] = str(lease)
        body = {
            "compare": [
                {
                    "target": "MOD",
                    "result": "EQUAL",
                    "key": encoded,
                    "mod_revision": str(expect_mod_revision),
                }
            ],
            "success": [{"request_put": put}],
        }
        try:
            data = await self._transport.call("/v3/kv/txn", body, idempotent=False)
        except LeaseExpired as error:
            raise LeaseExpired(lease, "cannot attach a key to it") from error
        return data.get("succeeded") is True, header_revision(data)

    async def compact(self, revision: int, *, physical: bool = False) -> None:
        """Drop history before `revision` (watches starting earlier get `Compacted`)."""
        body = {"revision": str(revision), "physical": physical}
        await self._transport.call("/v3/kv/compaction", body, idempotent=True)

    async def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds (etcd may raise it to its minimum); its id."""
        data = await self._transport.call("/v3/lease/grant", {"TTL": ttl}, idempotent=False)
        if data.get("error"):
            raise EtcdError(f"etcd refused a lease of {ttl} s: {data['error']}")
        return to_int(data.get("ID"), "a lease ID")

    async def keepalive_once(self, lease_id: int) -> int:
        """Renew a lease once; its TTL in seconds. Raises `LeaseExpired` when it is gone."""
        data = await self._transport.call(
            "/v3/lease/keepalive", {"ID": str(lease_id)}, idempotent=True
        )
        result = data.get("result")
        if not isinstance(result, dict):
            raise EtcdError(f"etcd's keepalive answer for lease {lease_id:x} has no result")
        ttl = to_int(result.get("TTL"), "a lease TTL")
        if ttl <= 0:
            raise LeaseExpired(lease_id)
        return ttl

    async def revoke(self, lease_id: int) -> None:
        """Revoke a lease, deleting its keys; a lease already gone is not an error."""
        try:
            await self._transport.call("/v3/lease/revoke", {"ID": str(lease_id)}, idempotent=True)
        except LeaseExpired:
            log.debug("etcd lease %x was already gone when revoked", lease_id)

    async def keep_alive(self, lease_id: int, ttl: int) -> NoReturn:
        """Renew a lease every `ttl`/3 seconds until cancelled.

        While etcd cannot be reached it tries again sooner (after 1 s, or `ttl`/3 if shorter)
        and logs each failure; raises `LeaseExpired` once etcd says the lease is gone, and
        `EtcdAuthError` for a permanent refusal.
        """
        period = max(ttl / 3, 0.1)
        delay = period
        while True:
            await asyncio.sleep(delay)
            try:
                await self.keepalive_once(lease_id)
            except EtcdUnavailable as error:
                log.warning("renewing etcd lease %x failed, trying again: %s", lease_id, error)
                delay = min(period, 1.0)
            else:
                delay = period

    def watch(
        self,
        prefix: str,
        start_revision: int = 0,
        *,
        progress_notify: bool = True,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> EtcdWatch:
        """Watch every key under `prefix` from `start_revision` (0: from now on).

        `async with client.watch(...) as watch: async for response in watch: ...`;
        see `EtcdWatch`. `idle_timeout=None` disables the watchdog.
        """
        return EtcdWatch(
            self._transport,
            prefix,
            start_revision,
            progress_notify=progress_notify,
            idle_timeout=idle_timeout,
        )


def _bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
