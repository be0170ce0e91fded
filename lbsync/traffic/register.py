"""`lbsync register`: one instance in etcd under a lease, kept alive while the command runs.

A deployer runs it once its replica is healthy. On SIGTERM or SIGINT the lease is revoked and
the instance disappears at once; if the command dies, the lease expires and the instance
disappears after the TTL. When etcd forgets the lease (it was down longer than the TTL), the
instance is registered again under a new lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

from lbsync.common.backoff import Backoff
from lbsync.kv.etcd import EtcdClient, EtcdUnavailable, LeaseExpired
from lbsync.model.contract import canonical_json, parse_entry
from lbsync.model.keys import instance_key

log = logging.getLogger("lbsync.traffic.register")

RETRY = Backoff(first=0.2, cap=5.0)


def instance_value(
    *,
    service: str,
    instance_id: str,
    address: str,
    port: int,
    tags: list[str],
    meta: dict[str, str],
    weight: int,
) -> str:
    """The instance's JSON value, checked against the KV contract (ContractError if not)."""
    value = {"address": address, "port": port, "tags": tags, "meta": meta, "weight": weight}
    parse_entry(instance_key(service, instance_id), json.loads(json.dumps(value)))
    return canonical_json(value)


async def register(
    client: EtcdClient,
    *,
    prefix: str,
    service: str,
    instance_id: str,
    value: str,
    ttl: int,
    stop: asyncio.Event,
) -> None:
    """Keep the instance registered until `stop` is set, then revoke its lease."""
    key = prefix + instance_key(service, instance_id)
    rng = random.Random()
    async with client:
        lease: int | None = None
        failures = 0
        while not stop.is_set():
            try:
                lease = await client.grant(ttl)
                await client.put(key, value, lease=lease)
                log.info("registered %s (lease %x, ttl %ds)", key, lease, ttl)
                failures = 0
                keeping = asyncio.create_task(client.keep_alive(lease, ttl))
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({keeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not keeping.done():
                    keeping.cancel()
                    break
                keeping.result()  # raises what ended the keep-alive
            except LeaseExpired:
                log.warning("etcd forgot lease of %s; registering again", key)
            except EtcdUnavailable as error:
                log.warning("etcd unavailable (%s); retrying", error)
                failures += 1
                await asyncio.sleep(RETRY.delay(failures, rng=rng))
        if lease is not None:
            try:
                await client.revoke(lease)
                log.info("deregistered %s", key)
            except EtcdUnavailable as error:
                log.warning("could not revoke the lease (%s): %s goes after %ds", error, key, ttl)
