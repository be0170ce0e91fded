"""Locks on the KV store that die with their holder: one holder at a time per key.

A rollout's driver holds `services/<svc>/rollout-driver` while it drives, so that of all the
daemons watching the same store exactly one advances the rollout, and another takes over once
the holder is gone:

- etcd: the key is created (only if absent) attached to a lease of `ttl` seconds, kept alive
  every `ttl / 3`; when the holder dies its lease expires after `ttl` and the key goes with it.
- Consul: a session with a TTL, `Behavior = delete` and no lock delay acquires the key, and is
  renewed every `ttl / 2`; Consul invalidates a session not renewed within its TTL (it may wait
  up to twice the TTL, its documented bound) and deletes the key. Consul refuses session TTLs
  under 10 s, so a shorter `ttl` is raised to 10 s there.

A holder that cannot renew for a whole `ttl` (the store unreachable) must assume the lock is
lost, since another may have it by then: `HeldLock.lost` is set and the holder stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import consul.exceptions

from lbsync.kv.consul import Agents, Fault
from lbsync.kv.etcd import EtcdClient, EtcdError
from lbsync.kv.etcd.errors import LeaseExpired

log = logging.getLogger(__name__)

CONSUL_MIN_TTL = 10


class LockError(Exception):
    """The store could not be asked for the lock."""


@dataclass
class HeldLock:
    """A lock this process holds until it releases it or `lost` is set."""

    key: str
    holder: str
    ttl: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    keeper: asyncio.Task[None] | None = None
    releaser: Callable[[], Awaitable[None]] | None = None

    async def release(self) -> None:
        """Stop renewing and give the key up (the store forgets it within the TTL anyway)."""
        if self.keeper is not None:
            self.keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keeper
        if self.releaser is not None and not self.lost.is_set():
            try:
                await self.releaser()
            except (LockError, EtcdError, Fault) as error:
                log.warning("could not release %s (it expires by itself): %s", self.key, error)
        self.lost.set()


class Locks(Protocol):
    """Taking a lock on a key of the store (relative to its prefix)."""

    async def acquire(self, key: str, holder: str, ttl: float) -> HeldLock | None:
        """The lock when it was free, None when someone holds it; LockError on a store fault."""
        ...


async def _keep(
    lock: HeldLock, renew: Callable[[], Awaitable[bool]], *, period: float, patience: float
) -> None:
    """Renew every `period` until cancelled; `lost` once the store says the lock is gone, or
    once no renewal succeeded for `patience` seconds."""
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(period)
        try:
            alive = await renew()
        except (LockError, EtcdError, Fault) as error:
            if time.monotonic() - renewed >= patience:
                log.warning(
                    "lock %s: not renewed for %.0fs (%s): given up", lock.key, patience, error
                )
                lock.lost.set()
                return
            log.warning("lock %s: renewing failed, trying again: %s", lock.key, error)
            continue
        if not alive:
            log.warning("lock %s: the store no longer holds it for %s", lock.key, lock.holder)
            lock.lost.set()
            return
        renewed = time.monotonic()


class EtcdLocks:
    """Locks as keys attached to leases."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def acquire(self, key: str, holder: str, ttl: float) -> HeldLock | None:
        try:
            lease = await self.client.grant(max(1, round(ttl)))
            written, _ = await self.client.txn_put_if(
                self.prefix + key, holder, expect_mod_revision=0, lease=lease
            )
            if not written:
                await self.client.revoke(lease)
                return None
        except EtcdError as error:
            raise LockError(f"etcd: cannot take {self.prefix}{key}: {error}") from error

        async def renew() -> bool:
            try:
                await self.client.keepalive_once(lease)
            except LeaseExpired:
                return False
            return True

        async def release() -> None:
            await self.client.revoke(lease)

        lock = HeldLock(key=key, holder=holder, ttl=ttl, releaser=release)
        lock.keeper = asyncio.create_task(_keep(lock, renew, period=ttl / 3, patience=ttl * 2 / 3))
        return lock


class ConsulLocks:
    """Locks as keys acquired by sessions."""

    def __init__(self, agents: Agents, prefix: str) -> None:
        self.agents = agents
        self.prefix = prefix

    async def _session(self, holder: str, ttl: int) -> str:
        async def create(client: Any) -> object:
            found: object = await client.session.create(
                name=f"lbsync {holder}"[:128], behavior="delete", ttl=ttl, lock_delay=0
            )
            return found

        found = await self.agents.call(
            "a session", create, kind="session", needs='session_prefix "" write', sent_again=False
        )
        if not isinstance(found, str) or not found:
            raise LockError(f"Consul at {self.agents.address}: no session id in its answer")
        return found

    async def acquire(self, key: str, holder: str, ttl: float) -> HeldLock | None:
        seconds = max(CONSUL_MIN_TTL, round(ttl))
        path = self.prefix + key
        needs = f'key_prefix "{path}" write, session_prefix "" write'
        try:
            session = await self._session(holder, seconds)
            taken = await self.agents.call(
                path,
                lambda client: client.kv.put(path, holder.encode(), acquire=session),
                kind="kv-write",
                needs=needs,
                sent_again=False,
            )
            if taken is not True:
                await self._destroy(session)
                return None
        except Fault as error:
            raise LockError(str(error)) from error

        async def renew() -> bool:
            async def ask(client: Any) -> bool:
                try:
                    await client.session.renew(session)
                except consul.exceptions.NotFound:
                    return False
                return True

            return await self.agents.call(
                "a session renewal", ask, kind="session", needs=needs, sent_again=True
            )

        async def release() -> None:
            await self._destroy(session)  # `delete` behaviour: the key goes with it

        lock = HeldLock(key=key, holder=holder, ttl=float(seconds), releaser=release)
        lock.keeper = asyncio.create_task(
            _keep(lock, renew, period=seconds / 2, patience=seconds * 2 / 3)
        )
        return lock

    async def _destroy(self, session: str) -> None:
        try:
            await self.agents.call(
                "a session",
                lambda client: client.session.destroy(session),
                kind="session",
                needs='session_prefix "" write',
                sent_again=True,
            )
        except Fault as error:
            raise LockError(str(error)) from error
