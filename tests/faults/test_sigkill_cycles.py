"""lbsync SIGKILLed at random points of at least 100 apply cycles next to a running HAProxy.

Each round starts `lbsync run`, streams changes into the services file (weights, instances
joining and leaving, a route's path: runtime plans and reloads alike) and kills lbsync at a
random moment once it has applied something. After every kill the destination is one whole
file HAProxy accepts; at the end a restarted lbsync converges and HAProxy's servers equal the
file's.
"""

from __future__ import annotations

import functools
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults.figures import Figures
from support.processes import Backends, HAProxy, master_cli
from support.servicesfile import instance, services_toml, write_atomically
from support.site import Site, running_daemon, until_live
from support.waiting import wait_until

from lbsync.haproxy import layout
from lbsync.haproxy.runtime import check, parse_servers_state

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

HOST = "shop.example.com"
CYCLES = 100
ROUND_LIMIT = 60
START_TIMEOUT = 30.0


def started(log: Path) -> bool:
    """Whether the daemon writing this log is running (it logs that before its first cycle)."""
    return "lbsync started" in log.read_text()


def applied(log: Path) -> int:
    """Cycles this daemon's log says went live."""
    return log.read_text().count("outcome=applied")


def services(rng: random.Random, ports: dict[str, int]) -> dict[str, Any]:
    """A random catalog: which instances exist, their weights, and the route's path."""
    names = [name for name in ports if rng.random() < 0.8] or ["blue-1"]
    path = "/shop" if rng.random() < 0.1 else "/"  # mostly runtime plans, now and then a reload
    return {
        "shop": {
            "route": {"hosts": [HOST], "path": path},
            "instances": {
                name: instance(ports[name], name.split("-")[0], weight=rng.randrange(0, 5))
                for name in names
            },
        }
    }


def haproxy_accepts(path: Path) -> bool:
    return subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True).returncode == 0


@dataclass
class Rounds:
    """What the kill rounds did and found."""

    cycles: int = 0
    kills: int = 0
    invalid: int = 0
    exits: int = 0


def kill_rounds(site: Site, rng: random.Random, ports: dict[str, int]) -> Rounds:
    """Start, feed and SIGKILL `lbsync run` until it has applied `CYCLES` cycles in all."""
    found = Rounds()
    for round_number in range(ROUND_LIMIT):
        if found.cycles >= CYCLES:
            break
        log = site.root / f"lbsync-{round_number}.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "lbsync", "-c", str(site.config_path), "run"],
                stdout=subprocess.DEVNULL,
                stderr=output,
            )
        wait_until(functools.partial(started, log), START_TIMEOUT, "lbsync to start")
        give_up = time.monotonic() + START_TIMEOUT
        kill_at: float | None = None
        while kill_at is None or time.monotonic() < kill_at:
            write_atomically(site.services, services_toml(services(rng, ports)))
            # pacing the writer, not synchronising: bursts, and gaps longer than min_wait
            time.sleep(rng.choice([0.005, 0.01, 0.02, 0.09]))
            if kill_at is None and applied(log) > 0:
                kill_at = time.monotonic() + rng.uniform(0.0, 4.0)
            assert time.monotonic() < give_up, f"lbsync applied nothing: {log.read_text()}"
        found.exits += process.poll() is not None  # it must still run when the kill comes
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        found.kills += 1
        found.cycles += applied(log)
        whole = site.dest.read_text().startswith("# Rendered by lbsync")
        found.invalid += not (whole and haproxy_accepts(site.dest))
        assert "Traceback" not in log.read_text(), log.read_text()
    return found


async def test_sigkill_at_random_points_of_many_cycles_leaves_whole_files_and_a_restart_converges(
    haproxy_site: tuple[Site, HAProxy],
    backends: Callable[[list[str]], Backends],
    figures: Figures,
) -> None:
    site, proxy = haproxy_site
    ports = backends(["blue-1", "blue-2", "green-1", "green-2"]).ports
    rng = random.Random(11)
    write_atomically(site.services, services_toml(services(rng, ports)))
    site.lbsync("once")
    proxy.start()
    rounds = kill_rounds(site, rng, ports)
    figures.add(
        "SIGKILL during cycles",
        faults_injected=rounds.kills,
        cycles=rounds.cycles,
        invalid_files_written=rounds.invalid,
        daemon_exits=rounds.exits,
    )
    assert (rounds.invalid, rounds.exits) == (0, 0)
    assert rounds.cycles >= CYCLES, f"only {rounds.cycles} cycles in {ROUND_LIMIT} rounds"

    write_atomically(site.services, services_toml(services(rng, ports)))
    async with running_daemon(site.config()) as daemon:
        expected = site.lbsync("render").stdout
        await until_live(daemon, site.dest, lambda text: text == expected, timeout=30)
    on_file = layout.parse(site.dest.read_text())
    seen = parse_servers_state(master_cli(site.master_socket, "@1 show servers state"))
    result = check(on_file.backends, seen)
    assert result.problems == (), result.problems
