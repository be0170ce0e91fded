"""The Consul source: KV contract under a prefix, plus catalog instances and their health.

Three blocking queries (see `watch`) and one reader report into one place; every batch of
changes is composed into a whole snapshot and yielded when it differs. The snapshot is composed
by part (`parts.compose`): only the parts of the services a change touched are made again, the
others are the last snapshot's objects, so the merge and the desired state redo only those:

- `token`: once at start, `/v1/acl/token/self`; a configured token that Consul does not know
  is reported at once, before any read could look like "everything was deleted";
- `kv`: recursive read of the prefix (blocking, stale); only the keys whose value changed are
  parsed again, and only their parts are new (`model.held`);
- `catalog`: `/v1/catalog/services` (blocking, stale), for the `lbsync.route=` tags, which
  services exist, and its index (a re-registration the health state cannot show moves it);
- `health`: `/v1/health/state/any` (blocking, stale): every check, to see which services moved;
- `service-splitter`, `service-resolver` (with `config_entries`): `/v1/config/<kind>`
  (blocking, stale), every entry of that kind, for the splits they give (`entries.py`);
- `reader`: `/v1/health/service/<svc>` (not blocking, not stale) for the exposed services
  that moved (`changes.py` says which), one at a time; and every exposed service at the start,
  after a fault, when an index goes backwards, on a catalog move nothing explains, and every
  `resync` seconds.

So the source holds at most four connections to its agent (`kv.consul.SOURCE_POOL`), however
many services it exposes (one more for Fabio's key, two more for the config entries), and a
change costs reads of the services it touched and the composition of their parts.

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
from lbsync.kv.consul import SOURCE_POOL, Agents, Settings
from lbsync.kv.requests import RequestCounts
from lbsync.model.values import Snapshot
from lbsync.sources.consul.run import Watchers

RESYNC: Final = 300.0
RETRY: Final = Backoff(first=0.1, cap=30.0)


class ConsulSource:
    """Yields whole snapshots of the KV prefix and the exposed services' instances."""

    def __init__(
        self,
        config: ConsulSourceConfig,
        *,
        retry: Backoff = RETRY,
        resync: float = RESYNC,
    ) -> None:
        """`resync`: seconds between full reads of every exposed service. ValueError
        (`TlsError` for TLS) names an address or TLS file that cannot be used."""
        if resync <= 0:
            raise ValueError("source.consul: resync must be positive")
        self.config = config
        self.prefix = config.prefix
        self.resync = resync
        self.requests = RequestCounts()  # every request to Consul, by kind, for the metrics
        self._retry = retry
        # one connection more for the blocking read of Fabio's key, when it is followed, and
        # three for each datacenter to fail over to (its two blocking queries and its reader),
        # and two for the splitter and resolver config entries
        failover = max(0, len(config.datacenters) - 1)
        pool = SOURCE_POOL + (config.fabio_config is not None) + 3 * failover
        pool += 2 * config.config_entries
        self._settings = Settings.from_config(config, pool=pool)
        self._watchers: Watchers | None = None

    @property
    def name(self) -> str:
        """The source's name in status and errors."""
        return f"consul:{self._settings.addresses[0]}"

    @property
    def watched(self) -> frozenset[str]:
        """The exposed services followed right now."""
        return self._watchers.watched if self._watchers else frozenset()

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        """Whole snapshots, the first once everything was read (or a fault), then per change."""
        async with Agents(self._settings, requests=self.requests) as agents:
            watchers = Watchers(
                agents,
                name=self.name,
                prefix=self.prefix,
                retry=self._retry,
                resync=self.resync,
                fabio_key=self.config.fabio_config,
                datacenters=self.config.datacenters,
                config_entries=self.config.config_entries,
            )
            self._watchers = watchers
            try:
                async for snapshot in watchers.snapshots():
                    yield snapshot
            finally:
                self._watchers = None
                await watchers.close()
