"""Writing to the KV store the configuration names: etcd or Consul, with compare-and-swap.

`split`, `rollout` and `register` write through this one small interface, so they work with
either store, over the same clients (TLS, failover, ACL messages) the sources read with.
Every write of an operator-facing key is a compare-and-swap on the key's revision (etcd's
mod_revision, Consul's ModifyIndex; 0 = the key must not exist yet): a concurrent change is
reported, never overwritten.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from lbsync.config import Config, ConfigError, TlsError
from lbsync.kv.consul import POOL_FOR_ONE_OFF_CALLS, Agents, Fault, Settings
from lbsync.kv.etcd import EtcdClient, EtcdError
from lbsync.kv.locks import ConsulLocks, EtcdLocks, Locks


class StoreError(Exception):
    """The store could not be read or written."""


@dataclass(frozen=True)
class Versioned:
    """A key's value and the revision a compare-and-swap must name to replace it."""

    value: str
    revision: int


class Store(Protocol):
    """The few operations `split` and `rollout` need."""

    prefix: str

    async def get(self, key: str) -> Versioned | None:
        """A key (relative to the prefix), or None."""
        ...

    async def put_if(self, key: str, value: str, expect_revision: int) -> bool:
        """Write when the key's revision is still `expect_revision` (0: when it is absent)."""
        ...


class EtcdStore:
    """etcd: a transaction comparing the key's mod_revision."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def get(self, key: str) -> Versioned | None:
        try:
            found = await self.client.get(self.prefix + key)
        except EtcdError as error:
            raise StoreError(f"etcd: cannot read {self.prefix}{key}: {error}") from error
        return None if found is None else Versioned(found.text, found.mod_revision)

    async def put_if(self, key: str, value: str, expect_revision: int) -> bool:
        try:
            written, _ = await self.client.txn_put_if(
                self.prefix + key, value, expect_mod_revision=expect_revision
            )
        except EtcdError as error:
            raise StoreError(f"etcd: cannot write {self.prefix}{key}: {error}") from error
        return written


class ConsulStore:
    """Consul KV: `?cas=<ModifyIndex>`, through the same agents the Consul source reads."""

    def __init__(self, agents: Agents, prefix: str) -> None:
        self.agents = agents
        self.prefix = prefix

    async def get(self, key: str) -> Versioned | None:
        try:
            found = await self.agents.read_key(self.prefix + key)
        except Fault as fault:
            raise StoreError(str(fault)) from fault
        return None if found is None else Versioned(found[0].decode("utf-8", "replace"), found[1])

    async def put_if(self, key: str, value: str, expect_revision: int) -> bool:
        try:
            return await self.agents.write_key_if(
                self.prefix + key, value.encode(), cas=expect_revision
            )
        except Fault as fault:
            raise StoreError(str(fault)) from fault


def locks_for(store: Store) -> Locks | None:
    """Locks on the same store and client (`kv/locks.py`); None for a store of another kind."""
    if isinstance(store, EtcdStore):
        return EtcdLocks(store.client, store.prefix)
    if isinstance(store, ConsulStore):
        return ConsulLocks(store.agents, store.prefix)
    return None


@asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[Store]:
    """The KV store of the configuration: etcd, else Consul (a ConfigError when neither)."""
    if config.etcd_source is not None:
        etcd = config.etcd_source
        try:
            client = EtcdClient.from_config(etcd)
        except (TlsError, ValueError) as error:
            raise ConfigError(f"source.etcd: {error}") from error
        async with client:
            yield EtcdStore(client, etcd.prefix)
    elif config.consul_source is not None:
        consul = config.consul_source
        try:
            settings = Settings.from_config(consul, pool=POOL_FOR_ONE_OFF_CALLS)
        except (TlsError, ValueError) as error:
            raise ConfigError(f"source.consul: {error}") from error
        async with Agents(settings) as agents:
            yield ConsulStore(agents, consul.prefix)
    else:
        raise ConfigError("source: `split` and `rollout` need an etcd or a Consul source")
