"""Failed requests while lbsync reloads a real proxy under a bounded loopback load.

For HAProxy and nginx: backends, the proxy, and lbsync's daemon on the services file; a load
process with keep-alive and new-connection clients; N structural changes (an instance joins or
leaves), each waited for until the reload is confirmed. Prints requests and failed requests by
reason. Run: `python bench/reloads.py [--reloads 20] [--keepalive 8] [--fresh 8]`.
"""

from __future__ import annotations

import argparse
import asyncio
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

HOST = "shop.example.com"


def services(ports: dict[str, int], with_extra: bool) -> dict[str, dict[str, Any]]:
    names = sorted(ports) if with_extra else sorted(ports)[:-1]
    return {
        "shop": {
            "route": {"hosts": [HOST]},
            "instances": {name: instance(ports[name], "blue") for name in names},
        }
    }


async def measure(kind: str, reloads: int, keepalive: int, fresh: int) -> dict[str, Any]:
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
            site.write_services(services(backends.ports, with_extra=False))
            site.lbsync("once")
            proxy.start()
            process = load.start(site.port, HOST, keepalive, fresh)
            started = time.monotonic()
            try:
                async with running_daemon(site.config()) as daemon:
                    await daemon.wait_for(lambda status: status.ready, 10)
                    for number in range(reloads):
                        document = services(backends.ports, with_extra=number % 2 == 0)
                        status = await next_cycle(
                            daemon, functools.partial(site.write_services, document)
                        )
                        assert status.targets[0].outcome == "applied", status.targets
            finally:
                result = load.stop(process)
            result["seconds"] = round(time.monotonic() - started, 1)
            return result
        finally:
            proxy.stop()
            backends.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--keepalive", type=int, default=8)
    parser.add_argument("--fresh", type=int, default=8)
    arguments = parser.parse_args()
    print(
        f"{arguments.reloads} reloads under {arguments.keepalive} keep-alive and "
        f"{arguments.fresh} new-connection clients"
    )
    print(f"{'proxy':8} {'requests':>9} {'failed':>7} {'seconds':>8}  reasons")
    for kind in ("haproxy", "nginx"):
        result = asyncio.run(measure(kind, arguments.reloads, arguments.keepalive, arguments.fresh))
        print(
            f"{kind:8} {result['requests']:9d} {result['failed']:7d} {result['seconds']:8.1f}  "
            f"{result['reasons'] or '-'}"
        )


if __name__ == "__main__":
    main()
