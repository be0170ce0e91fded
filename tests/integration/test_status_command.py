"""`lbsync status` against a running daemon, and `--log-format json` on a real apply."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable

from support.api import api_url
from support.processes import Backends, HAProxy
from support.shop import shop, start_shop
from support.site import Site, running_daemon

from lbsync.pipeline.report import Outcome


async def lbsync(site: Site, *args: str) -> tuple[int, str, str]:
    return await site.lbsync_async(*args)


async def test_lbsync_status_prints_what_the_running_daemon_believes(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    ports = start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        await daemon.wait_for(lambda s: s.ready, 10)
        site.write_services(shop(ports, {"blue": 90, "green": 10}, green_health="critical"))
        await daemon.wait_for(
            lambda s: bool(s.events) and s.events[-1].outcome is Outcome.APPLIED, 10
        )

        code, out, err = await lbsync(site, "status", "--api", url)
        assert code == 0, err
        rows = [line.split() for line in out.splitlines()]
        assert ["green", "10.0%", "0.0%", "0.0%", "0/1"] in rows, out
        assert ["blue", "90.0%", "100.0%", "100.0%", "2/2"] in rows, out
        endpoint = f"127.0.0.1:{ports['green-1']}"
        assert ["green-1", endpoint, "green", "critical", "(not", "eligible)", "0", "0.0%"] in rows
        assert rows[-1][:2] == ["haproxy", "applied"] and rows[-1][2] in {"full", "runtime"}, out
        assert f"file:{site.services}" in out and "usable" in out

        code, out, _ = await lbsync(site, "status", "--api", url, "--json")
        assert code == 0
        document = json.loads(out)
        (service,) = document["services"]
        assert [g["eligible"] for g in service["groups"]] == [2, 0]

        code, _, err = await lbsync(site, "status")  # [api] listen has port 0 in tests
        assert code == 1 and "pass --api" in err
    code, _, err = await lbsync(site, "status", "--api", url)
    assert code == 1 and url in err  # nobody answers any more


def test_json_logs_carry_each_apply_with_outcome_and_timings(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    ports = start_shop(site, proxy, backends)
    site.write_services(shop(ports, {"blue": 50, "green": 50}))
    result = site.lbsync("--log-format", "json", "once")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    (apply,) = [line for line in lines if line.get("event") == "apply"]
    assert (apply["target"], apply["outcome"]) == ("haproxy", "applied")
    assert apply["plan"] in {"full", "runtime"} and {"render", "total"} <= set(apply["seconds"])
    assert apply["level"] == "info" and apply["message"].startswith("target=haproxy outcome=")


def test_a_port_in_use_stops_lbsync_run_at_once_with_a_clear_message(
    haproxy_site: tuple[Site, HAProxy],
) -> None:
    site, _ = haproxy_site
    site.write_services({})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "lbsync", "-c", str(site.config_path), "run"],
            env={**os.environ, "LBSYNC_API_LISTEN": f"127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"lbsync: api.listen: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr and not site.dest.exists()


async def test_lbsync_health_is_the_daemons_probe_as_an_exit_status(
    haproxy_site: tuple[Site, HAProxy], backends: Callable[[list[str]], Backends]
) -> None:
    site, proxy = haproxy_site
    start_shop(site, proxy, backends)
    async with running_daemon(site.config()) as daemon:
        url = await api_url(daemon)
        code, out, err = await lbsync(site, "health", "--api", url)
        assert (code, out.strip()) == (0, f"{url}/healthz: 200 'ok'"), err
        await daemon.wait_for(lambda s: s.ready, 10)
        code, out, err = await lbsync(site, "health", "--api", url, "--ready")
        assert (code, out.strip()) == (0, f"{url}/readyz: 200 'ready'"), err
        # the light entry point of the image's HEALTHCHECK says the same
        light = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lbsync.cli.health", "--api", url, stdout=asyncio.subprocess.PIPE
        )
        said, _ = await asyncio.wait_for(light.communicate(), 30)
        assert (light.returncode, said.decode().strip()) == (0, f"{url}/healthz: 200 'ok'")
    code, _, err = await lbsync(site, "health", "--api", url)
    assert code == 1 and f"{url}: no answer" in err  # nobody answers any more
