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
from collections.abc import AsyncIterator

from lbsync.common.backoff import Backoff
from lbsync.config import EtcdSourceConfig
from lbsync.kv.etcd.client import EtcdClient
from lbsync.kv.etcd.errors import (
    Compacted,
    EtcdError,
    TokenExpired,
    WatchCanceled,
    WatchIdle,
)
from lbsync.kv.etcd.messages import EventType, WatchResponse
from lbsync.kv.requests import RequestCounts
from lbsync.model.held import HeldKeys
from lbsync.model.values import Snapshot

log = logging.getLogger("lbsync.etcd")

RETRY = Backoff(first=0.2, cap=30.0)


class EtcdSource:
    """Snapshots of everything under the configured prefix in etcd."""

    def __init__(self, config: EtcdSourceConfig, *, retry: Backoff = RETRY) -> None:
        """ValueError (`TlsError` for TLS) names an endpoint or a TLS file that cannot be used:
        the client is built now, so a bad file stops the start, not a task later."""
        EtcdClient.from_config(config)  # checks the endpoints and TLS files; opens nothing
        self.config = config
        self.prefix = config.prefix
        self._retry = retry
        self.requests = RequestCounts()  # every request to etcd, by kind, for the metrics

    @property
    def name(self) -> str:
        """The source's name in status and errors."""
        return f"etcd:{','.join(self.config.endpoints)}"

    def describe(self, key: str) -> str:
        """How refusals name a relative key."""
        return f"etcd key {self.prefix}{key}"

    def snapshot(self, held: HeldKeys) -> Snapshot:
        """The snapshot of the keys held."""
        return Snapshot(source=self.name, parts=held.parts())

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Whole snapshots, repeats dropped; one unusable snapshot per outage."""
        last: Snapshot | None = None
        failures = 0
        rng = random.Random()
        async with EtcdClient.from_config(self.config, requests=self.requests) as client:
            while True:
                try:
                    async for snapshot in self._follow(client):
                        failures = 0
                        if snapshot != last:
                            last = snapshot
                            yield snapshot
                except EtcdError as error:
                    message = f"etcd {', '.join(self.config.endpoints)}: {error}"
                    log.warning("%s; retrying", message)
                    if last is None or last.usable:
                        last = Snapshot(source=self.name, usable=False, error=message)
                        yield last
                failures += 1
                await asyncio.sleep(self._retry.delay(failures, rng=rng))

    async def _follow(self, client: EtcdClient) -> AsyncIterator[Snapshot]:
        """Read, then watch; re-read whenever the watch cannot resume. Raises when etcd fails."""
        held = HeldKeys(self.describe)
        while True:
            revision, kvs = await client.range_prefix(self.prefix)
            held.replace((kv.key.removeprefix(self.prefix), kv.value) for kv in kvs)
            yield self.snapshot(held)
            resume = revision + 1
            while True:
                watch = client.watch(self.prefix, resume, idle_timeout=self.config.idle_timeout)
                try:
                    async with watch:
                        async for response in watch:
                            changed = self._held_after(held, response)
                            # what piled up while the last snapshot was being used: one snapshot
                            while (more := await watch.buffered()) is not None:
                                changed = self._held_after(held, more) or changed
                            if changed:
                                yield self.snapshot(held)
                except TokenExpired:
                    await client.login()
                except WatchIdle:
                    log.debug("etcd watch idle; resuming at revision %d", watch.resume_revision)
                except (Compacted, WatchCanceled) as error:
                    log.info("etcd watch ended (%s); reading %s again", error, self.prefix)
                    break
                resume = watch.resume_revision

    def _held_after(self, held: HeldKeys, response: WatchResponse) -> bool:
        """Apply one watch response's events; whether it had any."""
        for event in response.events:
            key = event.kv.key.removeprefix(self.prefix)
            if event.type is EventType.DELETE:
                held.delete(key)
            else:
                held.put(key, event.kv.value)
        return bool(response.events)
