"""Consul as a source: the KV contract under a prefix, and catalog instances with their health.

`ConsulSource` is the Source; `mapping` holds the pure catalog-to-entries functions, `watch`
the blocking-query loop, `agents` the py-consul clients with failover and ACL checks.
"""

from lbsync.sources.consul.source import ConsulSource, ConsulSourceError

__all__ = ["ConsulSource", "ConsulSourceError"]
