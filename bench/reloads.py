"""Failed requests while lbsync changes a real proxy under a bounded loopback load.

For HAProxy and nginx: real backends, the proxy, lbsync's daemon on the services file, and a
load process with keep-alive and new-connection clients. A sequence of changes, each waited
for until lbsync confirmed it, spread evenly: weight shifts (blue-1's weight), instances joining
and leaving (blue-3), and structural changes (a host name added to or removed from the route).
HAProxy takes the weights and the joins and leaves through its runtime API and reloads for the
structural ones; nginx reloads for every change. Prints requests, failed requests by reason,
how each change was applied, HAProxy's reload count, and seconds.
Run: `python bench/reloads.py [--weights 100] [--joins 20] [--structural 20] [--keepalive 32]
[--fresh 8]`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: real proxies, backends, load

from support import load  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.processes import Backends, HAProxy, Nginx  # noqa: E402
from support.servicesfile import instance  # noqa: E402
from support.site import Site, next_cycle, running_daemon  # noqa: E402

from lbsync.pipeline.report import Outcome  # noqa: E402

HOST = "shop.example.com"


def services(
    ports: dict[str, int], *, weight: int, extra: bool, extra_host: bool
) -> dict[str, dict[str, Any]]:
    names = ["b1", "b2", "b3"] if extra else ["b1", "b2"]
    instances = {name: instance(ports[name], "blue") for name in names}
    instances["b1"]["weight"] = weight
    hosts = [HOST, f"www.{HOST}"] if extra_host else [HOST]
    return {"shop": {"route": {"hosts": hosts}, "instances": instances}}


def schedule(weights: int, joins: int, structural: int) -> list[str]:
    """The kinds of change in order, each kind spread evenly over the run."""
    spread = [
        ((n + 0.5) / count, kind)
        for kind, count in (("weight", weights), ("join", joins), ("structural", structural))
        for n in range(count)
    ]
    return [kind for _, kind in sorted(spread)]


def documents(ports: dict[str, int], kinds: list[str]) -> list[dict[str, dict[str, Any]]]:
    weight, extra, extra_host = 1, False, False
    result = []
    for kind in kinds:
        if kind == "weight":
            weight = 1 + weight % 5
        elif kind == "join":
            extra = not extra
        else:
            extra_host = not extra_host
        result.append(services(ports, weight=weight, extra=extra, extra_host=extra_host))
    return result


async def measure(kind: str, kinds: list[str], *, keepalive: int, fresh: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        site = Site(root=Path(root), kind=kind, port=free_port())
        site.write_config()
        backends = Backends.start(["b1", "b2", "b3"])
        proxy: HAProxy | Nginx
        if kind == "haproxy":
            proxy = HAProxy(config=site.dest, master_socket=site.master_socket, port=site.port)
        else:
            proxy = Nginx(config=site.dest, port=site.port, pidfile=site.pidfile)
        try:
            site.write_services(services(backends.ports, weight=1, extra=False, extra_host=False))
            site.lbsync("once")
            proxy.start()
            reloads = proxy.reloads() if isinstance(proxy, HAProxy) else 0
            plans: collections.Counter[str] = collections.Counter()
            process = load.start(site.port, HOST, keepalive, fresh)
            started = time.monotonic()
            try:
                async with running_daemon(site.config()) as daemon:
                    await daemon.wait_for(lambda status: status.ready, 10)
                    for document in documents(backends.ports, kinds):
                        status = await next_cycle(
                            daemon, functools.partial(site.write_services, document)
                        )
                        report = status.targets[0]
                        assert report.outcome is Outcome.APPLIED, status.targets
                        plans[str(report.plan)] += 1
            finally:
                result = load.stop(process)
            result["seconds"] = round(time.monotonic() - started, 1)
            result["plans"] = dict(plans)
            if isinstance(proxy, HAProxy):
                result["reloads"] = proxy.reloads() - reloads
            return result
        finally:
            proxy.stop()
            backends.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=int, default=100)
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--structural", type=int, default=20)
    parser.add_argument("--keepalive", type=int, default=32)
    parser.add_argument("--fresh", type=int, default=8)
    arguments = parser.parse_args()
    kinds = schedule(arguments.weights, arguments.joins, arguments.structural)
    print(
        f"{arguments.weights} weight shifts, {arguments.joins} joins/leaves, "
        f"{arguments.structural} structural changes under {arguments.keepalive} keep-alive and "
        f"{arguments.fresh} new-connection clients"
    )
    print(f"{'proxy':8} {'requests':>9} {'failed':>7} {'seconds':>8}  applied as / reasons")
    for kind in ("haproxy", "nginx"):
        result = asyncio.run(
            measure(kind, kinds, keepalive=arguments.keepalive, fresh=arguments.fresh)
        )
        reloads = f", HAProxy reloads {result['reloads']}" if "reloads" in result else ""
        print(
            f"{kind:8} {result['requests']:9d} {result['failed']:7d} {result['seconds']:8.1f}  "
            f"{result['plans']}{reloads}  {result['reasons'] or '-'}"
        )


if __name__ == "__main__":
    main()
