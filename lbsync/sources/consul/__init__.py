"""Consul as a source: the KV contract under a prefix, and catalog instances with their health.

`ConsulSource` is the Source; `run` holds its watchers, `mapping` the pure catalog-to-entries
functions, `parts` the snapshot's composition by part, `watch` the blocking-query loop; the
py-consul clients with failover and ACL checks are `kv.consul`'s.
"""

from lbsync.sources.consul.run import ConsulSourceError
from lbsync.sources.consul.source import ConsulSource

__all__ = ["ConsulSource", "ConsulSourceError"]
