"""Status API latency with 10,000 servers in 1,000 services while changes stream in.

What it measures, in one process serving the real `StatusApi` (aiohttp, the encoder and its
worker thread) on loopback:

- the encode cost per change, timed directly: a change of one service (the others keep their
  `ServiceState` objects, as an incremental core hands them over) and a whole new state
  (every object new, as a core that rebuilds everything does); beside them the whole
  document encoded from scratch, which is what every request cost before;
- then, for `--seconds` per mode, a status published `--rate` times a second (`incremental`:
  one service changed each time; `rebuild`: two whole states in turn) while three client
  processes each ask one endpoint (`/v1/status`, `/metrics`, `/healthz`) `--requests` times
  a second, one request at a time on a kept connection (10 dashboards, or 150 Prometheus
  servers scraping every 15 s, ask less often than the default 10/s): p50, p99 (nearest
  rank) and max of each, from sending the request to the last byte of the answer;
- the event loop's longest stall (a probe task sleeping 2 ms and timing how late it wakes),
  first on an idle loop (what the machine itself adds), then while serving, with the
  garbage collector's pauses beside it;
- how stale an answer can be: from a status being published to the API serving it.

The daemon's own pipeline (build, render) is not run: its cost is bench/cycle.py's and does
not depend on the API. Clients are separate processes so their JSON reading does not
share the served loop.

    .venv/bin/python bench/api.py [--servers 10000] [--seconds 20] [--rate 50] [--mode both]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import aiohttp

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the tests' in-memory catalog

from support.memory import catalog_values, snapshot_of  # noqa: E402

from lbsync.core.state import DesiredState, build  # noqa: E402
from lbsync.daemon.api import StatusApi  # noqa: E402
from lbsync.daemon.api.document import EncodedStatus, encode_status  # noqa: E402
from lbsync.daemon.api.encode import status_json  # noqa: E402
from lbsync.daemon.status import SourceStatus, Status  # noqa: E402
from lbsync.model.catalog import merge  # noqa: E402
from lbsync.model.values import HealthMode  # noqa: E402
from lbsync.pipeline.decision import Plan  # noqa: E402
from lbsync.pipeline.report import ApplyReport, Outcome  # noqa: E402

INSTANCES = 10
ENDPOINTS = ("/v1/status", "/metrics", "/healthz")
PROBE_SECONDS = 0.002


def state_of(servers: int, *, weight: int = 1) -> DesiredState:
    """Services of INSTANCES instances (a 10 % canary split each; `weight` is one stable
    instance's), built."""
    values = catalog_values(max(1, servers // INSTANCES), INSTANCES, weight=weight)
    return build(merge([snapshot_of(values)]), HealthMode.PASSING)


def one_changed(state: DesiredState, serial: int) -> DesiredState:
    """The state with one service's first server reweighted: a new object for it alone."""
    services = list(state.services)
    index = serial % len(services)
    service = services[index]
    first = replace(service.servers[0], weight=1 + serial % 200)
    services[index] = replace(service, servers=(first, *service.servers[1:]))
    return replace(state, services=tuple(services))


def cycled(status: Status, state: DesiredState) -> Status:
    report = ApplyReport("haproxy", Outcome.APPLIED, Plan.RUNTIME, time.time(), {"total": 0.01})
    return status.with_cycle(state, (report,))


def nearest_rank(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def figures(samples: Sequence[float]) -> str:
    """p50 / p99 / max in milliseconds."""
    if not samples:
        return "no samples"
    ms = [sample * 1000 for sample in samples]
    return (
        f"p50 {nearest_rank(ms, 0.5):7.2f}  p99 {nearest_rank(ms, 0.99):7.2f}  max {max(ms):7.2f}"
    )


def encode_costs(base: DesiredState, other: DesiredState) -> None:
    """Time encode_status for one-service changes and for whole new states."""
    status = Status(started_at=time.time(), sources=(SourceStatus("bench", True, True),))
    current = encode_status(cycled(status, base), None)
    single: list[float] = []
    state = base
    for serial in range(100):
        state = one_changed(state, serial)
        started = time.perf_counter()
        current = encode_status(cycled(current.status, state), current)
        single.append(time.perf_counter() - started)
    whole: list[float] = []
    for target in (other, base, other):
        started = time.perf_counter()
        current = encode_status(cycled(current.status, target), current)
        whole.append(time.perf_counter() - started)
    scratch: list[float] = []
    for _ in range(3):
        started = time.perf_counter()
        json.dumps(status_json(current.status, now=time.time()))
        scratch.append(time.perf_counter() - started)
    print(f"encode, one service changed (100 changes):  {figures(single)} ms")
    print(f"encode, every service new (3 states):        {figures(whole)} ms")
    print(
        f"whole document from scratch (3 times):       {figures(scratch)} ms (per request before)"
    )


async def client(url: str, seconds: float, rate: float) -> list[float]:
    """GETs of one URL on a kept connection, `rate` a second (or back to back when one takes
    longer), for `seconds`; each one's latency."""
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                assert response.status == 200, (url, response.status)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
    return latencies


async def serve(
    mode: str, *, base: DesiredState, other: DesiredState, args: argparse.Namespace
) -> None:
    """Publish changes at the rate while the clients ask; print the figures of one mode."""
    source = SourceStatus("bench", synced=True, usable=True, changed_at=time.time())
    current = [cycled(Status(started_at=time.time(), sources=(source,)), base)]
    api = StatusApi(lambda: current[0], listen="127.0.0.1:0")
    await api.start()
    serving = asyncio.create_task(api.serve())
    await asyncio.to_thread(encode_status, current[0], None)  # warm up the thread pool
    api.publish(current[0])
    lags: list[float] = []
    stale: list[float] = []
    published: dict[int, float] = {}
    done = asyncio.Event()

    async def probe() -> None:
        served: EncodedStatus | None = None
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(PROBE_SECONDS)
            now = time.perf_counter()
            lags.append(max(0.0, now - started - PROBE_SECONDS))
            if api.publisher.current is not served:
                served = api.publisher.current
                at = published.pop(id(served.status), None)
                if at is not None:
                    stale.append(now - at)

    async def change() -> None:
        serial = 0
        while not done.is_set():
            await asyncio.sleep(1 / args.rate)
            state = current[0].state
            assert state is not None
            if mode == "incremental":
                state = one_changed(state, serial)
            else:
                state = other if state is base else base
            current[0] = cycled(current[0], state)
            published[id(current[0])] = time.perf_counter()
            api.publish(current[0])
            api.observe(current[0])
            serial += 1

    pauses: list[float] = []
    collecting: list[float] = []

    def timed_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting.append(time.perf_counter())
        elif collecting:
            pauses.append(time.perf_counter() - collecting.pop())

    gc.callbacks.append(timed_collection)
    tasks = [asyncio.create_task(probe()), asyncio.create_task(change())]
    clients = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            f"{api.url}{path}",
            "--seconds",
            str(args.seconds),
            stdout=asyncio.subprocess.PIPE,
        )
        for path in ENDPOINTS
    ]
    answers = [await process.communicate() for process in clients]
    done.set()
    gc.callbacks.remove(timed_collection)
    await asyncio.gather(*tasks)
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    print(
        f"\n{mode}: {args.rate}/s changes for {args.seconds:.0f} s, "
        f"{sum(len(s.servers) for s in base.services)} servers"
    )
    for path, (stdout, _) in zip(ENDPOINTS, answers, strict=True):
        latencies = json.loads(stdout)
        print(f"  {path:<11} {len(latencies):6d} requests  {figures(latencies)} ms")
    print(f"  loop stall  {len(lags):6d} probes    {figures(lags)} ms")
    print(f"  gc pauses   {len(pauses):6d} runs      {figures(pauses)} ms")
    print(f"  staleness   {len(stale):6d} served    {figures(stale)} ms (published -> served)")


async def stall_alone(seconds: float) -> list[float]:
    """The probe on an idle loop: how late this machine wakes a task with nothing else to do."""
    lags: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await asyncio.sleep(PROBE_SECONDS)
        lags.append(max(0.0, time.perf_counter() - started - PROBE_SECONDS))
    return lags


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--mode", choices=("incremental", "rebuild", "both"), default="both")
    parser.add_argument("--requests", type=float, default=10.0, help="per endpoint, a second")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        print(json.dumps(asyncio.run(client(args.client, args.seconds, args.requests))))
        return 0
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    idle = asyncio.run(stall_alone(args.seconds))
    print(f"loop stall, idle loop ({args.seconds:.0f} s):                {figures(idle)} ms")
    base, other = state_of(args.servers), state_of(args.servers, weight=3)
    encode_costs(base, other)
    modes = ("incremental", "rebuild") if args.mode == "both" else (args.mode,)
    for mode in modes:
        asyncio.run(serve(mode, base=base, other=other, args=args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
