"""The blue/green shop the status API and dashboard tests run: three backends, one split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from support.processes import Backends, HAProxy
from support.servicesfile import instance
from support.site import Site

HOST = "shop.example.com"
NAMES = ["blue-1", "blue-2", "green-1"]


def shop(
    ports: dict[str, int],
    split: dict[str, float],
    green_health: str = "passing",
    rollout: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The services file's content: blue-1 and blue-2 tagged blue, green-1 tagged green, and
    the record `lbsync rollout` keeps in `services/shop/rollout` when given."""
    return {
        "shop": {
            **({"rollout": rollout} if rollout else {}),
            "route": {"hosts": [HOST], "path": "/"},
            "split": {"by": "tag", "groups": split},
            "instances": {
                "blue-1": instance(ports["blue-1"], "blue"),
                "blue-2": instance(ports["blue-2"], "blue"),
                "green-1": instance(ports["green-1"], "green", health=green_health),
            },
        }
    }


def start_shop(
    site: Site, proxy: HAProxy, backends: Callable[[list[str]], Backends]
) -> dict[str, int]:
    """HAProxy running the 90/10 shop, written by `lbsync once` before any daemon starts."""
    ports = backends(NAMES).ports
    site.write_services(shop(ports, {"blue": 90, "green": 10}))
    assert site.lbsync("once").returncode == 1  # written; no HAProxy to reload yet
    proxy.start()
    return ports
