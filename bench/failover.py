"""Failover between datacenters: how fast traffic leaves a datacenter whose every instance
fails its check, and comes back, through a real HAProxy.

Two real Consul dev agents federated over the WAN on loopback (dc1 local, dc2), the shop
registered in both (two instances in dc1, two in dc2), `lbsync run` as its own process on dc1's
agent with `datacenters = ["dc1", "dc2"]`, a real HAProxy, and a bounded loopback load
(`tests/support/load.py`: keep-alive and new-connection clients) for the whole run.

Each round fails every dc1 check (TTL checks, one PUT each) and measures, from the last PUT's
answer:

- `weights 0`: until HAProxy's `show servers state` gives every dc1 server weight 0 (lbsync
  saw Consul's change and set the weights through the runtime API);
- `first dc2`: until a request sent then is answered by a dc2 instance;

then passes them again and measures the way back (`weights back`, `first dc1`). At the end:
the load's requests and failures, and HAProxy's reloads during the rounds (expected 0).

Run: `python bench/failover.py --rounds 20`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' process helpers: real HAProxy and Consul

from support import load  # noqa: E402
from support.consul import ConsulAgent, federated_agents  # noqa: E402
from support.load import exchange  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.processes import Backends, HAProxy  # noqa: E402

from lbsync.haproxy.mastercli import master_cli  # noqa: E402

HOST = "shop.example.com"
LOCAL = ("dc1-web-1", "dc1-web-2")
REMOTE = ("dc2-web-1", "dc2-web-2")
POLL = 0.001


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> float:
    """Poll until the condition holds; the time it held (perf_counter)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        await asyncio.sleep(POLL)
    return time.perf_counter()


class Probe:
    """One keep-alive client: which instance answers a request sent now."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def answer(self) -> str:
        if self.connection is None:
            self.connection = await asyncio.open_connection("127.0.0.1", self.port)
        request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        status, closing, body = await exchange(*self.connection, request)
        if closing:
            self.connection[1].close()
            self.connection = None
        return body if status == 200 else f"HTTP {status}"

    def answered_by(self, names: tuple[str, ...]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await self.answer() in names

        return check


async def local_weights(proxy: HAProxy) -> list[int]:
    """dc1's servers' weights in the worker."""
    text = await master_cli(proxy.config.with_name("haproxy.sock"), "show servers state shop")
    return [
        int(fields[7])
        for line in text.splitlines()
        if len(fields := line.split()) > 8 and fields[0].isdigit() and fields[3].startswith("dc1")
    ]


async def reloads(proxy: HAProxy) -> int:
    text = await master_cli(proxy.master_socket, "show proc")
    return next(int(line.split()[2]) for line in text.splitlines() if " master " in line)


async def set_local(dc1: ConsulAgent, status: str) -> float:
    for name in LOCAL:
        await dc1.set_check(name, status)
    return time.perf_counter()


def summary(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"{name:<12} median {statistics.median(ordered) * 1000:6.1f}  "
        f"p99 {p99 * 1000:6.1f}  max {ordered[-1] * 1000:6.1f} ms"
    )


async def measure(rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="lbsync-failover-"))
    backends = Backends.start([*LOCAL, *REMOTE])
    run = root / "run"
    run.mkdir()
    proxy = HAProxy(run / "haproxy.cfg", run / "master.sock", free_port())
    process = None
    try:
        with federated_agents(root / "consul") as (dc1, dc2):
            await dc1.kv_put("lbsync/services/shop/route", {"hosts": [HOST]})
            for agent, names in ((dc1, LOCAL), (dc2, REMOTE)):
                for name in names:
                    await agent.register("shop", name, backends.ports[name])
            config = root / "lbsync.toml"
            config.write_text(
                f'[source.consul]\naddresses = ["{dc1.address}"]\n'
                'datacenters = ["dc1", "dc2"]\n\n'
                '[apply]\nmin_wait = "0ms"\n\n[api]\nlisten = "127.0.0.1:0"\n\n'
                f'[[target]]\nkind = "haproxy"\ndest = "{proxy.config}"\n'
                f'reload = {{ method = "master-cli", socket = "{proxy.master_socket}" }}\n'
                f'[target.vars]\nbind = ["127.0.0.1:{proxy.port}"]\n'
            )
            command = [sys.executable, "-m", "lbsync", "-c", str(config)]
            once = await asyncio.create_subprocess_exec(
                *command, "once", stderr=asyncio.subprocess.DEVNULL
            )
            await asyncio.wait_for(once.wait(), 120)
            proxy.start()
            process = await asyncio.create_subprocess_exec(
                *command, "run", stderr=(root / "lbsync.log").open("wb")
            )
            probe = Probe(proxy.port)

            async def drained() -> bool:
                return not any(await local_weights(proxy))

            async def back() -> bool:
                return all(await local_weights(proxy))

            await set_local(dc1, "critical")  # a warm-up round, untimed: the daemon runs
            await until(drained, timeout=60)
            await set_local(dc1, "passing")
            await until(back)
            await until(probe.answered_by(LOCAL))
            before = await reloads(proxy)
            running = load.start(proxy.port, HOST, keepalive=4, fresh=2, limit=600)
            figures: dict[str, list[float]] = {
                "weights 0": [],
                "first dc2": [],
                "weights back": [],
                "first dc1": [],
            }
            for _ in range(rounds):
                sent = await set_local(dc1, "critical")
                figures["weights 0"].append(await until(drained) - sent)
                figures["first dc2"].append(await until(probe.answered_by(REMOTE)) - sent)
                sent = await set_local(dc1, "passing")
                figures["weights back"].append(await until(back) - sent)
                figures["first dc1"].append(await until(probe.answered_by(LOCAL)) - sent)
            tallied = load.stop(running)
            after = await reloads(proxy)
            print(f"{rounds} rounds of failing every dc1 check, then passing them:")
            for name, seconds in figures.items():
                print(summary(name, seconds))
            print(
                f"load: {tallied['requests']} requests, {tallied['failed']} failed "
                f"{tallied['reasons'] or ''}; HAProxy reloads during the rounds: {after - before}"
            )
    finally:
        if process is not None and process.returncode is None:
            process.terminate()
            await process.wait()
        proxy.stop()
        backends.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(measure(arguments.rounds))


if __name__ == "__main__":
    main()
