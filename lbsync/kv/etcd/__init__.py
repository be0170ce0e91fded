"""lbsync's own small asyncio etcd v3 client, over etcd's gRPC-JSON gateway (`/v3/...`, etcd 3.4).

Why not a packaged client (each was tried against etcd 3.4.23 here): `etcd3` 0.12 does not
import with current protobuf, spins a core in its watch thread while etcd is down, and fails
user/password auth on plain connections with current grpcio; `etcd-sdk-python` has the same
auth bug; `etcd3gw` loses a watch silently on restart and hangs on compaction; `aetcd` has no
TLS and never renews its token. The gateway over aiohttp did user/password, re-login, mutual
TLS, restart and compaction correctly, and as fast (write→seen ≈2.5 ms median). Only the
standard library, aiohttp and lbsync's configuration rules (`config.endpoints`, `config.tls`)
are used.

Usage::

    async with EtcdClient(["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
                          username="lbsync", password=secret,
                          tls=TlsFiles(ca_file=ca, cert_file=crt, key_file=key)) as client:
        revision, kvs = await client.range_prefix("lbsync/")
        async with client.watch("lbsync/", revision + 1) as watch:
            async for response in watch:          # events and progress notifications
                ...                               # watch.resume_revision: where to restart

API (`EtcdClient`, every call a coroutine unless marked):

    EtcdClient(endpoints, *, username=None, password=None, tls=TlsFiles(),
               request_timeout=5.0, max_connections=64)
    EtcdClient.from_config(config: EtcdSourceConfig)             # (not a coroutine)
    range_prefix(prefix: str) -> tuple[int, list[KeyValue]]      # (read revision, sorted kvs)
    get(key: str) -> KeyValue | None
    put(key: str, value: bytes | str, lease: int | None = None) -> int          # revision
    delete(key: str) -> int                                       # keys deleted
    delete_prefix(prefix: str) -> int                             # keys deleted
    txn_put_if(key, value, *, expect_mod_revision: int, lease=None) -> tuple[bool, int]
    compact(revision: int, *, physical: bool = False) -> None
    grant(ttl: int) -> int                                        # lease id
    keepalive_once(lease_id: int) -> int                          # TTL, or LeaseExpired
    revoke(lease_id: int) -> None                                 # a gone lease is fine
    keep_alive(lease_id: int, ttl: int) -> NoReturn               # renews every ttl/3
    login() -> None                                               # fresh token now
    watch(prefix, start_revision=0, *, progress_notify=True, idle_timeout=30.0) -> EtcdWatch
                                                                  # (not a coroutine)
    endpoint, endpoints, token                                    # properties

Behaviour:
- Endpoints: a call starts at the endpoint that answered last and tries each once; connection
  failures move on for any call, other transport failures only for idempotent ones (not
  `txn_put_if` or `grant`, whose unknown outcome is raised as `EtcdUnavailable`).
- Auth: the token is fetched lazily and renewed once, transparently, when etcd refuses it
  (simple tokens expire after `--auth-token-ttl` s unused). Opening a watch does the same; a
  running watch refused later raises `TokenExpired`: `await client.login()`, then re-watch.
- Watches raise on every end: `Compacted(compact_revision)` (re-read and re-watch),
  `EtcdUnavailable` (stream broke; `WatchIdle` after `idle_timeout` s without a byte),
  `TokenExpired`, `PermissionDenied`, `WatchCanceled`. Re-open from `watch.resume_revision`:
  past the last event, or past a progress notification's revision.
- Idle watchdog: etcd 3.4 sends progress notifications every
  `--experimental-watch-progress-notify-interval` (default 10 min). The client cannot ask
  for one over the gateway: etcd answers nothing until the request body has ended, so a
  `progress_request` cannot follow the `create_request` on a live stream (tried). The
  watchdog is therefore a deadline on each read, 30 s by default, and etcd should run with
  an interval of ~10 s; with etcd's default a quiet watch raises `WatchIdle` every 30 s and
  is re-opened from `resume_revision`, which costs one request.
- etcd 3.4 lets lease calls and compaction through without a token (an invalid token is
  still refused); key reads, writes and watches need the user's role to cover the key.

Errors are in `errors.py` (`EtcdError` and its taxonomy); values in `messages.py`.
"""

from __future__ import annotations

from lbsync.kv.etcd.client import DEFAULT_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, EtcdClient
from lbsync.kv.etcd.errors import (
    Compacted,
    EtcdAuthError,
    EtcdError,
    EtcdRequestError,
    EtcdUnavailable,
    LeaseExpired,
    PermissionDenied,
    TokenExpired,
    WatchCanceled,
    WatchIdle,
)
from lbsync.kv.etcd.messages import Event, EventType, KeyValue, WatchResponse
from lbsync.kv.etcd.watch import EtcdWatch

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_REQUEST_TIMEOUT",
    "Compacted",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdError",
    "EtcdRequestError",
    "EtcdUnavailable",
    "EtcdWatch",
    "Event",
    "EventType",
    "KeyValue",
    "LeaseExpired",
    "PermissionDenied",
    "TokenExpired",
    "WatchCanceled",
    "WatchIdle",
    "WatchResponse",
]
