"""The etcd client's errors: transient ones to back off and retry, permanent ones to report.

    EtcdError
    ├── EtcdUnavailable      transient: no endpoint answered, a stream broke, no leader
    │   ├── WatchIdle        a watch got no byte for `idle_timeout` seconds
    │   └── TokenExpired     a watch was refused for its token: log in again, then re-watch
    ├── EtcdAuthError        permanent: wrong credentials, or none where etcd requires them
    │   └── PermissionDenied the user's roles do not cover the key range
    ├── Compacted            a watch's start revision is gone: re-read, then watch again
    ├── LeaseExpired         the lease is gone (revoked or its TTL ran out)
    ├── WatchCanceled        the server ended a watch for another reason
    └── EtcdRequestError     the server refused the request itself (misuse or a bug)

Every error raised from a lower-level one chains it (`raise ... from`), so logs keep the cause.
"""

from __future__ import annotations


class EtcdError(Exception):
    """Base of every error the etcd client raises."""


class EtcdUnavailable(EtcdError):
    """Transient: etcd could not be reached or could not serve; retry with a back-off."""


class WatchIdle(EtcdUnavailable):
    """A watch stream received no byte for its idle timeout: a hung server or a cut network."""


class TokenExpired(EtcdUnavailable):
    """etcd refused the auth token of a running watch; `await client.login()` and re-watch.

    Unary calls never raise it: they log in again and retry once by themselves, and so does
    the opening of a watch.
    """


class EtcdAuthError(EtcdError):
    """Permanent: wrong user name or password, or etcd requires credentials and has none."""


class PermissionDenied(EtcdAuthError):
    """Permanent: the authenticated user's roles do not grant this key range."""


class Compacted(EtcdError):
    """A watch started at a revision etcd has compacted away.

    The caller re-reads the prefix (at a new revision) and watches from there; keys deleted
    in the gap show up only as missing from the new read.
    """

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd compacted its history up to revision {compact_revision}")
        self.compact_revision = compact_revision


class LeaseExpired(EtcdError):
    """The lease no longer exists: it was revoked or its TTL ran out before a renewal."""

    def __init__(self, lease_id: int | None, detail: str = "") -> None:
        name = "the lease" if lease_id is None else f"lease {lease_id:x}"
        super().__init__(f"{name} has expired or was revoked" + (f": {detail}" if detail else ""))
        self.lease_id = lease_id


class WatchCanceled(EtcdError):
    """etcd canceled a watch for a reason other than compaction or auth."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"etcd canceled the watch: {reason or 'no reason given'}")
        self.reason = reason


class EtcdRequestError(EtcdError):
    """etcd refused the request itself (gRPC status `code`); retrying will not help."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd refused the request (code {code}): {message}")
        self.code = code
        self.message = message
