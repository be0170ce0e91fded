"""The Consul source: KV contract under a prefix, plus catalog instances and their health.

Watchers, each a blocking-query loop (see `watch`), report into one place; every change is
composed into a whole snapshot (see `mapping.compose`) and yielded when it differs:

- `token`: once at start, `/v1/acl/token/self`; a configured token that Consul does not know
  is reported at once, before any read could look like "everything was deleted";
- `kv`: recursive read of the prefix;
- `catalog`: `/v1/catalog/services`, for the `lbsync.route=` tags and which services exist;
- one `/v1/health/service/<svc>` per exposed service present in the catalog, started and
  stopped as that set changes, so open blocking queries grow with exposed services only.

The ACL trap: with a default-deny ACL and a missing or unknown token, Consul answers 403, or
404 for a recursive KV read and `{}` for the catalog, which looks like everything was deleted.
So an empty KV read is confirmed by a plain read of the prefix key (403 when not allowed), and
an empty catalog (a live cluster always lists the `consul` service) counts as an ACL refusal
unless ACLs are disabled. Either way the snapshot is unusable with an error naming the problem,
never an empty usable one. Limitation: a token that may read a service but not its nodes makes
that service's health answer empty, which cannot be told from "no instance"; grant
`node_prefix "" { policy = "read" }` with `service_prefix` read.

Faults: the first fault of an outage yields one unusable snapshot (the pipeline keeps the last
good one); more faults of the same kind are not repeated; once every watcher reads again, a
usable snapshot follows. The first usable snapshot waits until every watcher has read once, so
it never shows a route without its instances.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from lbsync.common.backoff import Backoff
from lbsync.config import ConsulSourceConfig
from lbsync.kv.consul import Agents, Settings
from lbsync.model.values import Snapshot
from lbsync.sources.consul.run import Watchers

DEFAULT_MAX_SERVICES: Final = 512
POOL_SPARE: Final = 4  # KV, catalog, and the short ACL reads beside them
RETRY: Final = Backoff(first=0.1, cap=30.0)


class ConsulSource:
    """Yields whole snapshots of the KV prefix and the exposed services' instances."""

    def __init__(
        self,
        config: ConsulSourceConfig,
        *,
        retry: Backoff = RETRY,
        max_services: int = DEFAULT_MAX_SERVICES,
    ) -> None:
        """`max_services` bounds the health watches, hence the connection pool's size.
        ValueError (`TlsError` for TLS) names an address or TLS file that cannot be used."""
        if max_services < 1:
            raise ValueError("source.consul: max_services must be at least 1")
        self.config = config
        self.prefix = config.prefix
        self.max_services = max_services
        self._retry = retry
        self._settings = Settings.from_config(config, pool=max_services + POOL_SPARE)
        self._watchers: Watchers | None = None

    @property
    def name(self) -> str:
        """The source's name in status and errors."""
        return f"consul:{self._settings.addresses[0]}"

    @property
    def watched(self) -> frozenset[str]:
        """Services with an open health watch right now (for status, and to test the bound)."""
        return self._watchers.watched if self._watchers else frozenset()

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Whole snapshots, the first once everything was read (or a fault), then per change."""
        async with Agents(self._settings) as agents:
            watchers = Watchers(
                agents,
                name=self.name,
                prefix=self.prefix,
                max_services=self.max_services,
                retry=self._retry,
            )
            self._watchers = watchers
            try:
                async for snapshot in watchers.snapshots():
                    yield snapshot
            finally:
                self._watchers = None
                await watchers.close()
