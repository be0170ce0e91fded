"""Time and memory of one lbsync cycle for 100, 1,000 and 10,000 servers, per shipped template.

What it measures: the pure, CPU-bound part of what the daemon does each time a source changes,
for the two shipped templates (haproxy.cfg.j2 and nginx.conf.j2):

    parse   lbsync.sources.file.snapshot_of over relative keys -> JSON-like values: entries,
            the raw `kv` texts and the Snapshot, as the services file source builds them
            (no TOML decoding and no file I/O: the values dict is built in memory beforehand)
    merge   lbsync.model.catalog.merge([snapshot]) -> Catalog
    build   lbsync.core.state.build(catalog, mode) -> DesiredState (split math, weights, names)
    render  lbsync.pipeline.render.render(state, template, vars) -> str
    plan    encoding the text to bytes, then lbsync.pipeline.decision.decide(rendered, ...)
            against a running file rendered from the same input except one service's split
            (canary 5 % -> 20 %): for HAProxy (a target with a runtime API) this parses the
            rendered file's layout and compares every backend's servers with the running one's,
            giving a RUNTIME plan of weight changes; for nginx it compares bytes (FULL)

Why: a source yields a whole snapshot on every change, and lbsync rebuilds and re-renders
everything from it, so this cycle bounds how fast a large catalog can follow changes and how
much CPU a busy KV store costs. Validation, writing and reloading run external programs and
are not measured here.

Each input spreads its servers over services of 10 instances (10, 100 and 1,000 services).
Every service has a route (two host names, a path prefix; some with an active check or
another balance algorithm), a split {"groups": {"canary": 5}} and instances tagged canary
(two per service) or stable; a few instances are "critical", and in a few services both
canaries are, so their share is redistributed.

For each size and template the cycle runs once to warm up, then N times (N adapted so that
each size takes a few seconds at most, or --repeat N); it prints the median and p95
(nearest rank) of each step and of the whole cycle in milliseconds, and the rendered size.
Then it runs one cycle per size and template under tracemalloc to report the peak of Python
allocations, and finally prints the process's max RSS (resource.getrusage). Python's
collector is tuned as `lbsync run` tunes it (`daemon/collector.tune`).

    .venv/bin/python bench/cycle.py [--sizes 100,1000,10000] [--repeat N]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from lbsync.config import TargetConfig, parse
from lbsync.core.state import build
from lbsync.daemon import collector
from lbsync.haproxy import layout
from lbsync.model.catalog import merge
from lbsync.model.values import HealthMode, Snapshot
from lbsync.pipeline.decision import Plan, Running, decide
from lbsync.pipeline.render import load_template, render
from lbsync.sources.file import snapshot_of as file_snapshot

SERVERS_PER_SERVICE = 10
CANARIES_PER_SERVICE = 2
DEFAULT_SIZES = (100, 1_000, 10_000)
STEPS = ("parse", "merge", "build", "render", "plan")
SOURCE = "file:/etc/lbsync/services.toml"
# Wall-clock budget for the timed repetitions of one (size, template) pair, in seconds.
BUDGET_SECONDS = 4.0
MIN_REPEAT = 5
MAX_REPEAT = 200


def values_for(servers: int) -> dict[str, object]:
    """The relative keys and JSON-like values of a services file holding `servers` instances."""
    services = max(1, math.ceil(servers / SERVERS_PER_SERVICE))
    values: dict[str, object] = {"settings/owner": "bench", "settings/max_body": 1048576}
    serial = 0
    for index in range(services):
        name = f"svc-{index:05d}"
        route: dict[str, object] = {
            "hosts": [f"{name}.example.com", f"{name}.internal"],
            "path": "/" if index % 2 == 0 else "/api/",
        }
        if index % 3 == 0:
            route["check"] = {"path": "/healthz", "interval_ms": 2000}
        if index % 4 == 1:
            route["balance"] = "leastconn"
        values[f"services/{name}/route"] = route
        values[f"services/{name}/split"] = {"groups": {"canary": 5}}
        count = servers // services + (1 if index < servers % services else 0)
        for number in range(count):
            canary = number < CANARIES_PER_SERVICE
            critical = (index % 10 == 3 and number == 1) or (index % 50 == 7 and canary)
            critical = critical or (not canary and serial % 97 == 13)
            values[f"services/{name}/instances/{name}-{number:02d}"] = {
                "address": f"10.{serial >> 16 & 255}.{serial >> 8 & 255}.{serial & 255}",
                "port": 8080,
                "tags": ["canary" if canary else "stable", "http"],
                "meta": {"version": "v2" if canary else "v1"},
                "weight": 2 if number % 5 == 4 else 1,
                "health": "critical" if critical else "passing",
            }
            serial += 1
    return values


def with_wider_canary(values: dict[str, object]) -> dict[str, object]:
    """The same input with the first service's canary share raised from 5 to 20 %."""
    first = next(key for key in values if key.endswith("/split"))
    return {**values, first: {"groups": {"canary": 20}}}


def describe(key: str) -> str:
    """How the services file names a key in a refusal."""
    return f"/etc/lbsync/services.toml [{key.replace('/', '.')}]"


def snapshot_of(values: dict[str, object]) -> Snapshot:
    """The snapshot the services file source builds from its flattened values."""
    return file_snapshot(values, {}, [], source=SOURCE, describe=describe)


@dataclass(frozen=True)
class Target:
    """A shipped template with the default variables lbsync gives it."""

    name: str
    template: jinja2.Template
    variables: dict[str, Any]
    runtime: bool


def targets() -> list[Target]:
    """Both shipped templates, configured through the public configuration path."""
    document = {
        "source": {"file": {"path": "services.toml"}},
        "target": [
            {
                "name": "haproxy",
                "kind": "haproxy",
                "dest": "/run/lbsync/haproxy.cfg",
                "reload": {"method": "master-cli", "socket": "/run/lbsync/master.sock"},
            },
            {"name": "nginx", "kind": "nginx", "dest": "/run/lbsync/nginx.conf"},
        ],
    }
    config = parse(document, Path("/etc/lbsync/lbsync.toml"))

    def target(config: TargetConfig) -> Target:
        return Target(
            config.name, load_template(config.template), config.vars, runtime=config.runtime
        )

    return [target(each) for each in config.targets]


@dataclass(frozen=True)
class Cycle:
    """One cycle's step times (seconds) and its result."""

    seconds: dict[str, float]
    rendered: bytes
    servers: int


def cycle(
    values: dict[str, object], target: Target, *, running: Running | None, mode: HealthMode
) -> Cycle:
    """parse -> merge -> build -> render -> plan once, timing each step; `running` is on disk
    too."""
    clock: Callable[[], float] = time.perf_counter
    mark = clock()
    snapshot = snapshot_of(values)
    parsed = clock()
    catalog = merge([snapshot])
    merged = clock()
    state = build(catalog, mode)
    built = clock()
    text = render(state, target.template, target.variables)
    rendered_at = clock()
    rendered = text.encode()
    on_disk = None if running is None else running.content
    decided = decide(
        rendered,
        on_disk=on_disk,
        running=running,
        layout=layout.parse(text) if target.runtime else None,
    )
    planned = clock()
    if state.rejected:  # holds the snapshot's and the merge's refusals too
        raise SystemExit(f"bench input was refused: {state.rejected[0]}")
    expected = Plan.RUNTIME if target.runtime else Plan.FULL
    if running is not None and decided.plan is not expected:
        raise SystemExit(f"{target.name}: expected a {expected} plan, got {decided}")
    return Cycle(
        seconds={
            "parse": parsed - mark,
            "merge": merged - parsed,
            "build": built - merged,
            "render": rendered_at - built,
            "plan": planned - rendered_at,
        },
        rendered=rendered,
        servers=sum(len(service.servers) for service in state.exposed),
    )


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (with few samples, p95 is the slowest run)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Row:
    """One (size, template) line of the timing table."""

    servers: int
    target: str
    repeat: int
    median: dict[str, float]
    p95: dict[str, float]
    rendered_kb: float


def measure(servers: int, target: Target, *, repeat: int | None, mode: HealthMode) -> Row:
    """Warm up once, then time `repeat` cycles (or as many as fit the budget)."""
    values = values_for(servers)
    gc.collect()
    started = time.perf_counter()
    warm = cycle(values, target, running=None, mode=mode)
    warm_seconds = time.perf_counter() - started
    if warm.servers != servers:
        raise SystemExit(f"expected {servers} servers in the state, got {warm.servers}")
    variant = cycle(with_wider_canary(values), target, running=None, mode=mode)
    running = Running(
        variant.rendered,
        layout.parse(variant.rendered.decode()) if target.runtime else None,
        validated=True,
    )
    if repeat is None:
        repeat = int(min(MAX_REPEAT, max(MIN_REPEAT, BUDGET_SECONDS / max(warm_seconds, 1e-6))))
    samples: dict[str, list[float]] = {step: [] for step in (*STEPS, "total")}
    for _ in range(repeat):
        gc.collect()
        result = cycle(values, target, running=running, mode=mode)
        if result.rendered != warm.rendered:
            raise SystemExit(f"{target.name}: rendering is not deterministic")
        for step, seconds in result.seconds.items():
            samples[step].append(seconds)
        samples["total"].append(sum(result.seconds.values()))
    return Row(
        servers=servers,
        target=target.name,
        repeat=repeat,
        median={step: statistics.median(times) * 1000 for step, times in samples.items()},
        p95={step: percentile(times, 0.95) * 1000 for step, times in samples.items()},
        rendered_kb=len(warm.rendered) / 1024,
    )


def peak_memory(servers: int, target: Target, mode: HealthMode) -> int:
    """Peak bytes of Python allocations during one whole cycle (input values excluded)."""
    values = values_for(servers)
    gc.collect()
    tracemalloc.start()
    try:
        cycle(values, target, running=None, mode=mode)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def max_rss_mib() -> float:
    """The process's max resident set size so far, in MiB (ru_maxrss: KiB on Linux)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[str] = ()) -> str:
    """A plain aligned text table: the `text` columns left-aligned, the others right-aligned."""
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if name in text else cell.rjust(width)
            for name, cell, width in zip(header, cells, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def sizes_argument(text: str) -> tuple[int, ...]:
    """`100,1000,10000` (underscores allowed) -> (100, 1000, 10000)."""
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def positive(text: str) -> int:
    """A positive integer argument."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=sizes_argument,
        default=DEFAULT_SIZES,
        help="numbers of servers, comma-separated (default: 100,1000,10000)",
    )
    parser.add_argument(
        "--repeat",
        type=positive,
        default=None,
        help=f"timed cycles per size and template (default: as many as fit "
        f"{BUDGET_SECONDS:g} s, {MIN_REPEAT}-{MAX_REPEAT})",
    )
    args = parser.parse_args(argv)
    collector.tune()  # as `lbsync run` does
    mode = HealthMode.PASSING
    shipped = targets()
    began = time.perf_counter()

    print(
        f"lbsync cycle benchmark: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{SERVERS_PER_SERVICE} servers per service"
    )
    rows = [
        measure(servers, target, repeat=args.repeat, mode=mode)
        for servers in args.sizes
        for target in shipped
    ]
    for title, pick in (("median", "median"), ("p95 (nearest rank)", "p95")):
        print(f"\n{title} of the timed cycles after one warm-up, ms\n")
        print(
            table(
                ["servers", "template", "runs", *STEPS, "total", "rendered KB"],
                [
                    [
                        f"{row.servers:,}",
                        row.target,
                        str(row.repeat),
                        *(f"{getattr(row, pick)[step]:.2f}" for step in (*STEPS, "total")),
                        f"{row.rendered_kb:,.0f}",
                    ]
                    for row in rows
                ],
                text=("template",),
            )
        )

    print("\npeak of Python allocations during one cycle (tracemalloc), MiB\n")
    peaks = [
        [f"{servers:,}", *(f"{peak_memory(servers, t, mode) / 2**20:.1f}" for t in shipped)]
        for servers in args.sizes
    ]
    print(table(["servers", *(t.name for t in shipped)], peaks))
    print(f"\nmax RSS of the process: {max_rss_mib():.1f} MiB")
    print(f"benchmark wall time: {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
