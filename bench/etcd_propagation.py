"""etcd put -> new configuration written: how long a change takes to reach the file.

A real etcd, lbsync's daemon with an etcd source and one target, and N sequential puts that
each give one instance a new port and weight; the time from the put's answer to the daemon's
status after the cycle that wrote the file, median and p99. Two targets: `haproxy` (validated
by `haproxy -c` each time, as in production) and `generic` (no validator: the source and the
pipeline alone).
Run: `python bench/etcd_propagation.py [--puts 200]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: a real etcd on a free port

from support.etcd import EtcdServer  # noqa: E402
from support.site import running_daemon  # noqa: E402

from lbsync.config import load  # noqa: E402
from lbsync.sources.etcd import EtcdClient  # noqa: E402

GENERIC_TEMPLATE = (
    "{% for s in all_services %}{% for x in s.servers %}{{ x.name }} {{ x.endpoint }} "
    "{{ x.weight }}\n{% endfor %}{% endfor %}"
)


def write_config(root: Path, etcd: EtcdServer, kind: str) -> Path:
    target = f'[[target]]\nkind = "{kind}"\ndest = "{root / "out.cfg"}"\n'
    if kind == "generic":
        (root / "t.j2").write_text(GENERIC_TEMPLATE)
        target += f'template = "{root / "t.j2"}"\n'
    else:
        target += '[target.vars]\nbind = ["127.0.0.1:1"]\n'
    path = root / "lbsync.toml"
    path.write_text(
        f'[source.etcd]\nendpoints = ["{etcd.url}"]\n\n'
        f'[apply]\nmin_wait = "0ms"\nmax_wait = "1s"\n\n{target}'
    )
    return path


async def measure(kind: str, puts: int) -> list[float]:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        etcd = EtcdServer(root=root / "etcd")
        etcd.start()
        try:
            config = load(write_config(root, etcd, kind), environ={})
            dest = root / "out.cfg"
            async with EtcdClient([etcd.url]) as client:
                await client.put("lbsync/services/shop/route", json.dumps({"hosts": ["a.b"]}))
                for n in range(3):
                    value = {"address": "127.0.0.1", "port": 9000 + n, "weight": 1}
                    await client.put(f"lbsync/services/shop/instances/i{n}", json.dumps(value))
                latencies = []
                async with running_daemon(config) as daemon:
                    await daemon.wait_for(lambda status: status.ready, 10)
                    for n in range(puts):
                        port = 10000 + n  # a new port for i0 with every put: a unique marker
                        value = {"address": "127.0.0.1", "port": port, "weight": 1 + n % 5}
                        marker = f"127.0.0.1:{port} "
                        await client.put("lbsync/services/shop/instances/i0", json.dumps(value))
                        written = time.perf_counter()
                        await daemon.wait_for(
                            lambda _, m=marker: m in dest.read_text(),  # type: ignore[misc]
                            10,
                        )
                        latencies.append(time.perf_counter() - written)
                return latencies
        finally:
            etcd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--puts", type=int, default=200)
    arguments = parser.parse_args()
    print(f"etcd put -> file written, {arguments.puts} sequential puts, ms")
    print(f"{'target':8} {'median':>7} {'p99':>7} {'max':>7}")
    for kind in ("generic", "haproxy"):
        latencies = sorted(asyncio.run(measure(kind, arguments.puts)))
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"{kind:8} {statistics.median(latencies) * 1000:7.1f} {p99 * 1000:7.1f} "
            f"{latencies[-1] * 1000:7.1f}"
        )


if __name__ == "__main__":
    main()
