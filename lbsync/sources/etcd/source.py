"""The etcd source: the KV contract under a prefix, as whole snapshots.

Read the prefix, then watch from the next revision and apply events to the held copy; after a
compaction, a restart of the watch from an unknown point, or a reconnection, read the whole
prefix again and replace the copy, so a delete made while lbsync was not watching is never lost.
While etcd cannot be reached the source yields one unusable snapshot (the last good one stays
in force), backs off with jitter and starts over; it never yields an empty state because etcd
is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from lbsync.config import EtcdSourceConfig
from lbsync.model.contract import ParseCache
from lbsync.model.values import Snapshot
from lbsync.sources.etcd.client import EtcdClient
from lbsync.sources.etcd.errors import (
    Compacted,
    EtcdError,
    TokenExpired,
    WatchCanceled,
    WatchIdle,
)
from lbsync.sources.etcd.messages import EventType

log = logging.getLogger("lbsync.etcd")

RETRY_FIRST = 0.2


class EtcdSource:
    """Snapshots of everything under `prefix` in etcd."""

    def __init__(
        self,
        *,
        endpoints: Sequence[str],
        prefix: str = "lbsync/",
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        request_timeout: float = 5.0,
        idle_timeout: float = 30.0,
        retry_max: float = 30.0,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.prefix = prefix
        self._credentials = (username, password)
        self._tls = (ca_file, cert_file, key_file)
        self._request_timeout = request_timeout
        self._idle_timeout = idle_timeout
        self._retry_max = retry_max
        self._parse_cache = ParseCache()

    @classmethod
    def from_config(cls, config: EtcdSourceConfig) -> EtcdSource:
        """The source a `[source.etcd]` table describes."""
        return cls(
            endpoints=config.endpoints,
            prefix=config.prefix,
            username=config.username,
            password=config.password,
            ca_file=config.ca_file,
            cert_file=config.cert_file,
            key_file=config.key_file,
            request_timeout=config.request_timeout,
            idle_timeout=config.idle_timeout,
        )

    @property
    def name(self) -> str:
        """The source's name in status and errors."""
        return f"etcd:{','.join(self.endpoints)}"

    def client(self) -> EtcdClient:
        """A client for this source's cluster (also used by `register` and `split`)."""
        username, password = self._credentials
        ca_file, cert_file, key_file = self._tls
        return EtcdClient(
            list(self.endpoints),
            username=username,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            request_timeout=self._request_timeout,
        )

    def snapshot(self, values: dict[str, bytes]) -> Snapshot:
        """The snapshot of the keys held (full keys -> values)."""
        raw = {
            key.removeprefix(self.prefix): value.decode("utf-8", errors="replace")
            for key, value in values.items()
        }
        entries, rejected = self._parse_cache.parse(
            raw, describe=lambda key: f"etcd key {self.prefix}{key}"
        )
        return Snapshot(
            source=self.name, entries=entries, rejected=rejected, raw=tuple(sorted(raw.items()))
        )

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Whole snapshots, repeats dropped; one unusable snapshot per outage."""
        last: Snapshot | None = None
        delay = RETRY_FIRST
        async with self.client() as client:
            while True:
                try:
                    async for snapshot in self._follow(client):
                        delay = RETRY_FIRST
                        if snapshot != last:
                            last = snapshot
                            yield snapshot
                except EtcdError as error:
                    message = f"etcd {', '.join(self.endpoints)}: {error}"
                    log.warning("%s; retrying", message)
                    if last is None or last.usable:
                        last = Snapshot(source=self.name, usable=False, error=message)
                        yield last
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(self._retry_max, delay * 2)

    async def _follow(self, client: EtcdClient) -> AsyncIterator[Snapshot]:
        """Read, then watch; re-read whenever the watch cannot resume. Raises when etcd fails."""
        while True:
            revision, kvs = await client.range_prefix(self.prefix)
            values = {kv.key: kv.value for kv in kvs}
            yield self.snapshot(values)
            resume = revision + 1
            while True:
                watch = client.watch(self.prefix, resume, idle_timeout=self._idle_timeout)
                try:
                    async with watch:
                        async for response in watch:
                            for event in response.events:
                                if event.type is EventType.DELETE:
                                    values.pop(event.kv.key, None)
                                else:
                                    values[event.kv.key] = event.kv.value
                            if response.events:
                                yield self.snapshot(values)
                except TokenExpired:
                    await client.login()
                except WatchIdle:
                    log.debug("etcd watch idle; resuming at revision %d", watch.resume_revision)
                except (Compacted, WatchCanceled) as error:
                    log.info("etcd watch ended (%s); reading %s again", error, self.prefix)
                    break
                resume = watch.resume_revision
