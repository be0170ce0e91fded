"""Writing to the KV store the configuration names: etcd or Consul, with compare-and-swap.

`split` and `rollout` write through this one small interface, so they work with either store.
Every write of an operator-facing key is a compare-and-swap on the key's revision (etcd's
mod_revision, Consul's ModifyIndex; 0 = the key must not exist yet): a concurrent change is
reported, never overwritten.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from lbsync.config import Config, ConfigError, ConsulSourceConfig
from lbsync.sources.etcd import EtcdClient, EtcdError
from lbsync.sources.etcd.source import EtcdSource

TIMEOUT = 10.0


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
    """Consul KV: `?cas=<ModifyIndex>`."""

    def __init__(self, session: aiohttp.ClientSession, address: str, prefix: str) -> None:
        self.session = session
        self.address = address
        self.prefix = prefix

    async def get(self, key: str) -> Versioned | None:
        url = f"{self.address}/v1/kv/{self.prefix}{key}"
        try:
            async with self.session.get(url) as reply:
                if reply.status == 404:
                    return None
                if reply.status != 200:
                    raise StoreError(
                        f"Consul: reading {self.prefix}{key}: {reply.status} "
                        f"{(await reply.text()).strip()}"
                    )
                (entry,) = await reply.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise StoreError(f"Consul: cannot read {self.prefix}{key}: {error}") from error
        value = base64.b64decode(entry.get("Value") or "").decode()
        return Versioned(value, int(entry["ModifyIndex"]))

    async def put_if(self, key: str, value: str, expect_revision: int) -> bool:
        url = f"{self.address}/v1/kv/{self.prefix}{key}"
        try:
            async with self.session.put(
                url, params={"cas": str(expect_revision)}, data=value.encode()
            ) as reply:
                text = (await reply.text()).strip()
                if reply.status != 200:
                    raise StoreError(f"Consul: writing {self.prefix}{key}: {reply.status} {text}")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise StoreError(f"Consul: cannot write {self.prefix}{key}: {error}") from error
        return text == "true"


def _consul_session(config: ConsulSourceConfig) -> aiohttp.ClientSession:
    headers = {"X-Consul-Token": config.token} if config.token else {}
    context: ssl.SSLContext | None = None
    if config.ca_file or config.cert_file:
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        if config.cert_file and config.key_file:
            context.load_cert_chain(str(config.cert_file), str(config.key_file))
    return aiohttp.ClientSession(
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        connector=aiohttp.TCPConnector(ssl=context) if context else None,
    )


@asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[Store]:
    """The KV store of the configuration: etcd, else Consul (a ConfigError when neither)."""
    if config.etcd_source is not None:
        source = EtcdSource.from_config(config.etcd_source)
        async with source.client() as client:
            yield EtcdStore(client, source.prefix)
    elif config.consul_source is not None:
        consul = config.consul_source
        async with _consul_session(consul) as session:
            yield ConsulStore(session, consul.addresses[0], consul.prefix)
    else:
        raise ConfigError("source: `split` and `rollout` need an etcd or a Consul source")
