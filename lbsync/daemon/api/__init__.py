"""The status API: read-only HTTP over the daemon's immutable status (docs/api.md).

`server` serves it, `encode` turns the status into JSON; `lbsync status` (`cli.status`) reads it.
"""

from lbsync.daemon.api.server import StatusApi

__all__ = ["StatusApi"]
