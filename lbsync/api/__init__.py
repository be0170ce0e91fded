"""The status API: read-only HTTP over the daemon's immutable status (docs/api.md).

`server` serves it, `encode` turns the status into JSON, `client` is `lbsync status`.
"""

from lbsync.api.server import StatusApi, parse_listen

__all__ = ["StatusApi", "parse_listen"]
