"""The KV contract's key names, relative to a source's prefix (docs/kv-contract.md).

Every module that reads or writes a key by name takes it from here, so a name is spelt once.
"""

from __future__ import annotations

from typing import Final

SERVICES: Final = "services"
SETTINGS: Final = "settings"
ROUTE: Final = "route"
SPLIT: Final = "split"
INSTANCES: Final = "instances"
ROLLOUT: Final = "rollout"
SPLIT_HISTORY: Final = "split-history"
ROLLOUT_DRIVER: Final = "rollout-driver"


def route_key(service: str) -> str:
    """How a service is exposed."""
    return f"{SERVICES}/{service}/{ROUTE}"


def split_key(service: str) -> str:
    """A service's traffic split."""
    return f"{SERVICES}/{service}/{SPLIT}"


def instance_key(service: str, instance_id: str) -> str:
    """One instance of a service (etcd and the services file; Consul's catalog has its own)."""
    return f"{SERVICES}/{service}/{INSTANCES}/{instance_id}"


def rollout_key(service: str) -> str:
    """A service's rollout record, written by `lbsync rollout` and shown by the status."""
    return f"{SERVICES}/{service}/{ROLLOUT}"


def driver_key(service: str) -> str:
    """Who drives a service's rollout: held by one daemon at a time (`kv/locks.py`)."""
    return f"{SERVICES}/{service}/{ROLLOUT_DRIVER}"


def history_key(service: str) -> str:
    """The recorded changes of a service's split, written by `lbsync split`."""
    return f"{SERVICES}/{service}/{SPLIT_HISTORY}"


def is_contract_key(key: str) -> bool:
    """Whether a relative key falls under the contract (as opposed to a raw-only key)."""
    return key.split("/", 1)[0] in (SERVICES, SETTINGS)
